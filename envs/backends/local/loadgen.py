"""The reference SockShop load test, driven by real Locust (library mode) against an ingress.

Every virtual user runs the 9-request loop of ``envs.sockshop.LOAD_TEST_LOOP`` with no wait,
all logged in as the one shared customer. Like the simulator (and Locust's ``--reset-stats``),
statistics are reset once every user has hatched; the run then stops when ``--requests``
requests have been counted (a request-event hook; Locust has no total-request option). If the
``GET /catalogue`` answer is not the item list, the loop's task raises and Locust restarts it:
counted in ``task_errors``.

Between the hatch and the counted window every user pauses for ``--pause-s`` seconds (longer
than two Prometheus scrape intervals): the Envoys' counters stand still across the window's
start, so the last scrape before it is an exact starting point for the Prometheus view of the
same requests Locust counts — also when a failing configuration answers a whole run in a
fraction of a second. The window starts from an idle mesh instead of a warm one; a closed loop
is back in its steady state within one loop.

Run in its own process, as a script (Locust monkey-patches the standard library with gevent,
which must happen before anything imports ``ssl``, so not through the package's ``__init__``):
``python envs/backends/local/loadgen.py --host URL --users N --requests R --seed S --out FILE``.
Writes one JSON document: per-endpoint Locust statistics, Locust's failure messages
(``errors``), the wall-clock start and end of the counted window, and ``task_errors``.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402  (after the monkey-patching)
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
from locust import FastHttpUser, constant, events, task  # noqa: E402
from locust.env import Environment  # noqa: E402

from envs.sockshop import CUSTOMER, LOAD_TEST_LOOP  # noqa: E402

_STEP = {s.route: s for s in LOAD_TEST_LOOP}


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
    }


def run(host: str, users: int, requests: int, hatch_rate_per_s: float, seed: int,
        max_seconds: float, reset_after_hatch: bool, pause_s: float) -> dict[str, Any]:
    """Drive the load and return the report document (see the module docstring)."""
    _Run.seed, _Run.requests = seed, requests
    _Run.gate.set()
    env = Environment(user_classes=[SockShopUser], host=host, events=events)
    runner = env.create_local_runner()

    def resume() -> None:
        gevent.sleep(pause_s)
        env.stats.reset_all()
        _Run.counted = 0
        _Run.task_errors = 0
        _Run.started_at = time.time()
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
    runner.start(users, spawn_rate=hatch_rate_per_s)
    timer = gevent.spawn_later(max_seconds, runner.quit)
    runner.greenlet.join()
    timer.kill()
    if _Run.ended_at is None:
        raise RuntimeError(f"load did not reach {requests} requests in {max_seconds:.0f} s "
                           f"(counted {_Run.counted})")
    start = _Run.started_at if _Run.started_at is not None else _Run.ended_at
    duration_s = max(_Run.ended_at - start, 1e-9)
    return {
        "started_at": start, "ended_at": _Run.ended_at, "duration_s": duration_s,
        "users": users, "task_errors": _Run.task_errors,
        "endpoints": [_entry_stats(e, duration_s) for e in env.stats.entries.values()],
        "errors": [{"name": e.name, "error": str(e.error), "occurrences": e.occurrences}
                   for e in env.stats.errors.values()],
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--hatch-rate", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--no-reset-after-hatch", action="store_true")
    parser.add_argument("--pause-s", type=float, default=2.5,
                        help="pause between the hatch and the counted window, seconds")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        doc = run(args.host, args.users, args.requests, args.hatch_rate, args.seed,
                  args.max_seconds, not args.no_reset_after_hatch, args.pause_s)
    except RuntimeError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 1
    with open(args.out, "w") as fh:
        json.dump(doc, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
