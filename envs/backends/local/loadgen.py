"""The reference SockShop load test, driven by real Locust (library mode) against an ingress.

Two load shapes (``envs.backends.base.LoadSpec.mode``):

* **closed** (the notebook's): ``--users`` virtual users each run the 9-request loop of
  ``envs.sockshop.LOAD_TEST_LOOP`` again and again with no wait, all logged in as the one shared
  customer. Like the simulator (and Locust's ``--reset-stats``), statistics are reset once every
  user has hatched. If the ``GET /catalogue`` answer is not the item list, the loop's task
  raises and Locust restarts it: counted in ``task_errors``. Between the hatch and the counted
  window every user pauses for ``--pause-s`` seconds (longer than two Prometheus scrape
  intervals): the Envoys' counters stand still across the window's start, so the last scrape
  before it is an exact starting point for the Prometheus view of the same requests Locust
  counts — also when a failing configuration answers a whole run in a fraction of a second.
  The window starts from an idle mesh instead of a warm one; a closed loop is back in its
  steady state within one loop.
* **open** (``--rate R``): sessions arrive as a Poisson process of ``R / 9`` sessions per second
  (seeded: ``arrivals.arrival_offsets``), each a fresh Locust user (its own connections) that runs
  the 9-request loop once and leaves. A session whose ``GET /catalogue`` fails (no item list)
  gives up: its 8 unsent requests are *abandoned* (counted while recording). The window starts
  at the first scheduled arrival on an idle mesh; ``max_lag_ms`` says how late the latest
  session started against its schedule (the generator keeping up).

Either way the run stops when ``--requests`` requests have been counted (a request-event hook;
Locust has no total-request option). A second hook keeps every recorded request's outcome and
exact response time (the population of Locust's statistics: reset with them), from which come
each endpoint's ``num_good`` (successful and within ``envs.sockshop.slo.slo_ms`` of its name —
per request, not from Locust's rounded histogram) and the aggregated mean and nearest-rank p99.

Faults (``--faults``, JSON list of ``{"service", "kind": "down"|"slow", "start_s", "end_s",
"factor"}``) are switched on and off through the services host's control endpoint
(``--control``) at their offsets from the counted window's start, as the simulator times them.
The caller (``LocalMesh.run_load``) clears every fault afterwards, whatever happened.

Run in its own process, as a script (Locust monkey-patches the standard library with gevent,
which must happen before anything imports ``ssl``, so not through the package's ``__init__``):
``python envs/backends/local/loadgen.py --host URL (--users N | --rate R) --requests N --seed S
--out FILE``. Writes one JSON document: per-endpoint Locust statistics and ``num_good``,
Locust's failure messages (``errors``), the wall-clock start and end of the counted window,
``task_errors``, ``abandoned``, ``latency_mean_ms``, ``latency_p99_ms`` and, open loop,
``sessions_arrived`` and ``max_lag_ms``.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402  (after the monkey-patching)
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from collections import defaultdict  # noqa: E402
from typing import Any, ClassVar  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.pool  # noqa: E402
from locust import FastHttpUser, constant, events, task  # noqa: E402
from locust.env import Environment  # noqa: E402

from envs.backends.local.arrivals import arrival_offsets, nearest_rank  # noqa: E402
from envs.sockshop import CUSTOMER, LOAD_TEST_LOOP  # noqa: E402
from envs.sockshop.slo import slo_ms  # noqa: E402

_STEP = {s.route: s for s in LOAD_TEST_LOOP}
#: Requests of one session (the reference loop).
LOOP_LEN = len(LOAD_TEST_LOOP)


class _Run:
    """Shared state of the run (Locust users are classes, so it lives at module level)."""

    gate = gevent.event.Event()  # set: users may send; cleared during the pause

    seed = 0
    requests = 0
    counted = 0
    task_errors = 0
    users_started = 0
    started_at: float | None = None
    ended_at: float | None = None
    stopping = False
    open_loop = False
    abandoned = 0  # requests of sessions that gave up (open loop)
    sessions_arrived = 0
    max_lag_s = 0.0
    fault_errors: ClassVar[list[str]] = []
    session_errors: ClassVar[list[str]] = []
    # every recorded request (Locust's statistics' population): name -> [(ok, ms), ...]
    outcomes: ClassVar[dict[str, list[tuple[bool, float]]]] = defaultdict(list)


class SockShopUser(FastHttpUser):
    """One virtual user of the reference load test."""

    wait_time = constant(0)

    def on_start(self) -> None:
        """Give the user its own seeded generator (item choices)."""
        self.rng = random.Random(_Run.seed * 100_003 + _Run.users_started)
        _Run.users_started += 1

    def _send(self, method: str, path: str, route: str, **kwargs: Any) -> None:
        _Run.gate.wait()
        self.client.request(method, path, name=_STEP[route].name, **kwargs)

    @task
    def shop(self) -> None:
        """The 9-request loop."""
        _Run.gate.wait()
        with self.client.get("/catalogue", name=_STEP["GET /catalogue"].name,
                             catch_response=True) as resp:
            try:
                items = json.loads(resp.text or "")
                item_id = str(self.rng.choice(items)["id"])
            except (ValueError, TypeError, KeyError, IndexError):
                items = None
        if items is None:
            if _Run.open_loop:  # the session gives up; its other requests are never sent
                if not _Run.stopping:
                    _Run.abandoned += LOOP_LEN - 1
                return
            _Run.task_errors += 1
            return  # the task raised: Locust starts it again
        self._send("GET", "/", "GET /")
        self._send("GET", "/login", "GET /login", auth=CUSTOMER)
        self._send("GET", "/category.html", "GET /category.html")
        _Run.gate.wait()
        self.client.get(f"/detail.html?id={item_id}",
                        name=_STEP["GET /detail.html"].name.format(item=item_id))
        self._send("DELETE", "/cart", "DELETE /cart")
        self._send("POST", "/cart", "POST /cart", json={"id": item_id, "quantity": 1})
        self._send("GET", "/basket.html", "GET /basket.html")
        self._send("POST", "/orders", "POST /orders")


def _entry_stats(entry: Any, duration_s: float) -> dict[str, Any]:
    n = entry.num_requests
    outcomes = _Run.outcomes.get(entry.name, [])
    if len(outcomes) != n or sum(not ok for ok, _ in outcomes) != entry.num_failures:
        raise RuntimeError(f"request hook and Locust disagree on {entry.name}: {len(outcomes)} "
                           f"vs {n} requests")
    objective = slo_ms(entry.name)  # ValueError for a name outside the reference loop

    def pct(q: float) -> float | None:
        return float(entry.get_response_time_percentile(q)) if n else None

    return {
        "name": entry.name, "num_requests": n, "num_failures": entry.num_failures,
        "avg_ms": float(entry.avg_response_time) if n else None,
        "min_ms": float(entry.min_response_time) if n and entry.min_response_time is not None
        else None,
        "max_ms": float(entry.max_response_time) if n else None,
        "median_ms": float(entry.median_response_time) if n else None,
        "p95_ms": pct(0.95), "p99_ms": pct(0.99),
        "rps": n / duration_s if duration_s > 0 else 0.0,
        "num_good": sum(1 for ok, ms in outcomes if ok and ms <= objective),
    }


def _record(name: str, response_time: float, exception: Any = None, **_: Any) -> None:
    """Request-event hook: keep the outcome and exact response time (ms) of every request
    Locust's statistics record."""
    _Run.outcomes[name].append((exception is None, float(response_time)))


def _post_fault(control: str, fault: dict[str, Any], on: bool) -> None:
    body = json.dumps({**fault, "on": on}).encode()
    request = urllib.request.Request(f"{control}/fault", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()
    except OSError as exc:
        _Run.fault_errors.append(f"{fault} on={on}: {exc}")


def _schedule_faults(faults: list[dict[str, Any]], control: str | None) -> list[Any]:
    """Switch each fault on at ``start_s`` and off at ``end_s`` after now (the window's
    start); returns the timers (killed when the load stops)."""
    if faults and control is None:
        raise ValueError("faults need the services host's control URL")
    timers = []
    for fault in faults:
        timers.append(gevent.spawn_later(float(fault["start_s"]), _post_fault, control, fault,
                                         True))
        timers.append(gevent.spawn_later(float(fault["end_s"]), _post_fault, control, fault,
                                         False))
    return timers


def _aggregate() -> dict[str, float | None]:
    times = [ms for rows in _Run.outcomes.values() for _, ms in rows]
    if not times:
        return {"latency_mean_ms": None, "latency_p99_ms": None}
    return {"latency_mean_ms": sum(times) / len(times),
            "latency_p99_ms": nearest_rank(times, 0.99)}


def run(host: str, users: int, requests: int, hatch_rate_per_s: float, seed: int,
        max_seconds: float, reset_after_hatch: bool, pause_s: float,
        faults: list[dict[str, Any]] | None = None, control: str | None = None,
        ) -> dict[str, Any]:
    """Drive the closed load and return the report document (see the module docstring)."""
    _Run.seed, _Run.requests = seed, requests
    _Run.gate.set()
    env = Environment(user_classes=[SockShopUser], host=host, events=events)
    runner = env.create_local_runner()
    env.events.request.add_listener(_record)
    timers: list[Any] = []

    def resume() -> None:
        gevent.sleep(pause_s)
        env.stats.reset_all()
        _Run.outcomes.clear()
        _Run.counted = 0
        _Run.task_errors = 0
        _Run.started_at = time.time()
        timers.extend(_schedule_faults(faults or [], control))
        _Run.gate.set()

    def on_spawned(user_count: int, **_: Any) -> None:
        if reset_after_hatch:
            _Run.gate.clear()
            gevent.spawn(resume)

    def on_request(**_: Any) -> None:
        if _Run.stopping or not _Run.gate.is_set():
            return
        _Run.counted += 1
        if _Run.counted >= _Run.requests:
            _Run.stopping = True
            _Run.ended_at = time.time()
            gevent.spawn(runner.quit)

    env.events.spawning_complete.add_listener(on_spawned)
    env.events.request.add_listener(on_request)
    if not reset_after_hatch:
        _Run.started_at = time.time()
        timers.extend(_schedule_faults(faults or [], control))
    runner.start(users, spawn_rate=hatch_rate_per_s)
    timer = gevent.spawn_later(max_seconds, runner.quit)
    runner.greenlet.join()
    timer.kill()
    gevent.killall(timers)
    return _document(env, requests, max_seconds, users=users)


def run_open(host: str, rate_rps: float, requests: int, seed: int, max_seconds: float,
             faults: list[dict[str, Any]] | None = None, control: str | None = None,
             ) -> dict[str, Any]:
    """Drive the open load (sessions arriving at ``rate_rps / 9`` per second) and return the
    report document (see the module docstring)."""
    _Run.seed, _Run.requests, _Run.open_loop = seed, requests, True
    _Run.gate.set()
    SockShopUser.host = host  # Locust's runner sets it on the users it spawns; these are ours
    env = Environment(user_classes=[SockShopUser], host=host, events=events)
    runner = env.create_local_runner()  # records the statistics; its own users never start
    env.events.request.add_listener(_record)
    done = gevent.event.Event()

    def on_request(**_: Any) -> None:
        if _Run.stopping:
            return
        _Run.counted += 1
        if _Run.counted >= _Run.requests:
            _Run.stopping = True
            _Run.ended_at = time.time()
            done.set()

    env.events.request.add_listener(on_request)
    sessions = gevent.pool.Group()

    def session(k: int) -> None:
        try:
            user = SockShopUser(env)
            user.rng = random.Random(seed * 100_003 + k)
            try:
                user.shop()
            finally:
                user.client.client.close()
        except Exception as exc:  # a broken session ends the run with its error
            _Run.session_errors.append(repr(exc))
            done.set()

    arrivals = arrival_offsets(rate_rps / LOOP_LEN, seed)
    t0 = time.monotonic()
    _Run.started_at = time.time()

    def arrive() -> None:
        for k, offset in enumerate(arrivals):
            delay = t0 + offset - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            if _Run.stopping:
                return
            _Run.max_lag_s = max(_Run.max_lag_s, time.monotonic() - t0 - offset)
            _Run.sessions_arrived += 1
            sessions.spawn(session, k)

    timers = _schedule_faults(faults or [], control)
    arriver = gevent.spawn(arrive)
    done.wait(timeout=max_seconds)
    _Run.stopping = True
    arriver.kill()
    gevent.killall(timers)
    sessions.kill(block=True, timeout=10)
    runner.quit()
    doc = _document(env, requests, max_seconds, users=0)
    doc.update(sessions_arrived=_Run.sessions_arrived, max_lag_ms=1000.0 * _Run.max_lag_s,
               rate_rps=rate_rps)
    return doc


def _document(env: Environment, requests: int, max_seconds: float, users: int,
              ) -> dict[str, Any]:
    """The report document of a finished load (RuntimeError if it did not finish)."""
    if _Run.session_errors:
        raise RuntimeError(f"{len(_Run.session_errors)} open-loop sessions failed: "
                           f"{_Run.session_errors[:3]}")
    if _Run.ended_at is None:
        raise RuntimeError(f"load did not reach {requests} requests in {max_seconds:.0f} s "
                           f"(counted {_Run.counted})")
    if _Run.fault_errors:
        raise RuntimeError(f"could not switch faults: {_Run.fault_errors}")
    start = _Run.started_at if _Run.started_at is not None else _Run.ended_at
    duration_s = max(_Run.ended_at - start, 1e-9)
    return {
        "started_at": start, "ended_at": _Run.ended_at, "duration_s": duration_s,
        "users": users, "task_errors": _Run.task_errors, "abandoned": _Run.abandoned,
        "endpoints": [_entry_stats(e, duration_s) for e in env.stats.entries.values()],
        "errors": [{"name": e.name, "error": str(e.error), "occurrences": e.occurrences}
                   for e in env.stats.errors.values()],
        **_aggregate(),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    shape = parser.add_mutually_exclusive_group(required=True)
    shape.add_argument("--users", type=int, help="closed loop: concurrent users")
    shape.add_argument("--rate", type=float, help="open loop: offered requests per second")
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--hatch-rate", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--no-reset-after-hatch", action="store_true")
    parser.add_argument("--pause-s", type=float, default=2.5,
                        help="pause between the hatch and the counted window, seconds")
    parser.add_argument("--faults", default="[]",
                        help="JSON list of faults (see the module docstring)")
    parser.add_argument("--control", default=None,
                        help="URL of the services host's control endpoint (for faults)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    faults = json.loads(args.faults)
    try:
        if args.rate is not None:
            doc = run_open(args.host, args.rate, args.requests, args.seed, args.max_seconds,
                           faults, args.control)
        else:
            doc = run(args.host, args.users, args.requests, args.hatch_rate, args.seed,
                      args.max_seconds, not args.no_reset_after_hatch, args.pause_s, faults,
                      args.control)
    except (RuntimeError, ValueError) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 1
    with open(args.out, "w") as fh:
        json.dump(doc, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
