"""The processor-sharing CPU the services host gives each service: ``cores`` cores shared
equally by the jobs on it, each at most one core, realised with asyncio timers (no CPU is
burnt: the work is modelled, exactly as the simulator models it).
"""

from __future__ import annotations

import asyncio


class ProcessorSharing:
    """A CPU of ``cores`` cores shared equally by the jobs on it, each at most one core.

    ``await cpu.run(work_ms)`` returns when ``work_ms`` milliseconds of one core's work are done.
    Exactly the simulator's model, with real time: on every arrival or completion the rates are
    recomputed and one timer is set for the next completion.
    """

    def __init__(self, cores: float) -> None:
        if cores <= 0:
            raise ValueError(f"cores must be positive, got {cores}")
        self.cores = cores
        self._jobs: dict[asyncio.Future[None], float] = {}
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def _rate(self) -> float:
        n = len(self._jobs)
        return min(1.0, self.cores / n) if n else 0.0

    def _advance(self, now: float) -> None:
        done_ms = (now - self._last) * 1000.0 * self._rate()
        self._last = now
        for fut in self._jobs:
            self._jobs[fut] -= done_ms

    def _settle(self) -> None:
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fut, left in list(self._jobs.items()):
            if left <= 1e-6:
                del self._jobs[fut]
                if not fut.done():
                    fut.set_result(None)
        if self._jobs:
            delay_s = min(self._jobs.values()) / self._rate() / 1000.0
            self._timer = loop.call_later(delay_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._advance(asyncio.get_running_loop().time())
        self._settle()

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

