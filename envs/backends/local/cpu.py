"""The processor-sharing CPU the services host gives each service: ``cores`` cores shared
equally by the jobs on it, each at most one core, realised with asyncio timers (no CPU is
burnt: the work is modelled, exactly as the simulator models it).

Timer lateness. asyncio's timers wake late: on Linux the event loop waits in ``epoll_wait``,
whose timeout Python rounds *up* to the next whole millisecond, so a timer set ``d`` ms ahead
fires ~0.5–1 ms after ``d`` (0.81 ms on average on the 2-core development machine, for
``asyncio.sleep(0.0053)``). A job's completion, and with it the next step of its request,
would be that much late at every CPU burst: ~0.8 ms per burst, ~5 ms over the six bursts of a
``GET /catalogue``, ~14 ms over a ``POST /orders`` — time the simulator, which models the same
work, does not add (``scripts/latency_breakdown.py`` at 10 req/s measured the local mesh
×1.2–1.4 slower than the simulator on the front-end's own pages before this was corrected).
:class:`ProcessorSharing` therefore measures how late its own timers fire (an exponentially
weighted mean, :data:`LATENESS_WEIGHT`) and sets each timer that much early; a timer that fires
completes every job whose remaining time is within that lead, so completions land on their
due time on average instead of always after it.
"""

from __future__ import annotations

import asyncio

#: Weight of the newest lateness sample in the running mean of the timers' lateness.
LATENESS_WEIGHT = 0.1
#: The largest lead a timer is set early by, ms: a bound against a stalled loop (a lateness of
#: tens of ms is a busy machine, not the timer's resolution, and must not make jobs finish early).
MAX_LEAD_MS = 2.0


class ProcessorSharing:
    """A CPU of ``cores`` cores shared equally by the jobs on it, each at most one core.

    ``await cpu.run(work_ms)`` returns when ``work_ms`` milliseconds of one core's work are done.
    Exactly the simulator's model, with real time: on every arrival or completion the rates are
    recomputed and one timer is set for the next completion, early by the timers' measured
    lateness (module docstring).
    """

    def __init__(self, cores: float) -> None:
        if cores <= 0:
            raise ValueError(f"cores must be positive, got {cores}")
        self.cores = cores
        self._jobs: dict[asyncio.Future[None], float] = {}
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0  # loop time the pending timer was set for, s
        #: running mean of how late this CPU's timers fire, ms (the lead they are set early by)
        self.lateness_ms = 0.0

    def _rate(self) -> float:
        n = len(self._jobs)
        return min(1.0, self.cores / n) if n else 0.0

    def _advance(self, now: float) -> None:
        done_ms = (now - self._last) * 1000.0 * self._rate()
        self._last = now
        for fut in self._jobs:
            self._jobs[fut] -= done_ms

    def _lead_ms(self) -> float:
        return min(self.lateness_ms, MAX_LEAD_MS)

    def _settle(self, tolerance_ms: float = 1e-6) -> None:
        """Complete the jobs with at most ``tolerance_ms`` of wall time left, then set one timer
        for the next completion, ``_lead_ms`` early."""
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        rate = self._rate()
        for fut, left in list(self._jobs.items()):
            if left <= max(1e-6, tolerance_ms * rate):
                del self._jobs[fut]
                if not fut.done():
                    fut.set_result(None)
        if self._jobs:
            delay_ms = min(self._jobs.values()) / self._rate()
            self._timer_when = loop.time() + max(0.0, delay_ms - self._lead_ms()) / 1000.0
            self._timer = loop.call_at(self._timer_when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        late_ms = (now - self._timer_when) * 1000.0
        self.lateness_ms += LATENESS_WEIGHT * (late_ms - self.lateness_ms)
        self._advance(now)
        # the timer was set early by the lead: a job due within it is due now
        self._settle(tolerance_ms=self._lead_ms())

    async def run(self, work_ms: float) -> None:
        """Occupy the CPU for ``work_ms`` ms of one core's work (shared with other jobs)."""
        if work_ms <= 0:
            return
        loop = asyncio.get_running_loop()
        self._advance(loop.time())
        fut: asyncio.Future[None] = loop.create_future()
        self._jobs[fut] = work_ms
        self._settle()
        try:
            await fut
        finally:
            if fut in self._jobs:  # cancelled before done
                self._advance(loop.time())
                del self._jobs[fut]
                self._settle()
