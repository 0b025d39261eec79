"""SockShop's reference load test (microservices-demo/load-test) for Locust 2.x, for meshtune.

Shipped to the cluster as the ConfigMap ``locustfile`` (``meshtune cluster render``) and run by
the Job the ``k8s`` backend creates. It must stay standalone: the Locust image has no meshtune.

The reference loop, with no wait: ``GET /catalogue`` (pick a random item) → ``GET /`` →
``GET /login`` (Basic ``user:password``) → ``GET /category.html`` →
``GET /detail.html?id=<item>`` → ``DELETE /cart`` → ``POST /cart`` → ``GET /basket.html`` →
``POST /orders``. As in the original, a catalogue answer that is not a JSON list of items ends
the loop early (the original raised there).

Two load shapes, as in the local backend's ``envs/backends/local/loadgen.py``:

* **closed** (no ``MESHTUNE_RATE_RPS``): Locust's ``-u`` users each run the loop again and
  again. User k draws its items from ``Random(seed * 1_000_003 + k)``.
* **open** (``MESHTUNE_RATE_RPS`` set; run it with ``-u 1``): one driver user makes sessions
  arrive as a Poisson process of ``rate / 9`` sessions per second — the same seeded schedule as
  the local backend's (exponential gaps from ``Random(seed * 7_919 + 1)``). Session k is a fresh
  user (its own connections, items from ``Random(seed * 100_003 + k)``) that runs the loop once
  and leaves. A session whose ``GET /catalogue`` fails (no item list) gives up: its 8 unsent
  requests are *abandoned* (counted until the run stops). The run's window starts at the
  schedule's start; ``max_lag_ms`` says how late the latest session started against its
  schedule (the generator keeping up).

Environment:
    MESHTUNE_TOTAL_REQUESTS: stop the runner once this many requests completed, over all users
        (Locust 2 has no total-request option). Requests already in flight may finish after.
        Locust's ``--run-time`` stops a run that never gets there (``reached_total`` false).
    MESHTUNE_SEED: seed of the item choices and, open loop, of the arrivals.
    MESHTUNE_RATE_RPS: open loop: offered requests per second (positive); absent: closed loop.
    MESHTUNE_SLO_MS: JSON object, latency objective in ms per route (``"GET /detail.html"``:
        request names without their query string). If set, every row counts ``num_good``: its
        successful requests answered within the objective (per request, exact response time).
    MESHTUNE_QUIT_SIDECAR: ``1`` asks the Istio sidecar to exit when Locust quits, so the Job
        completes (``POST 127.0.0.1:15020/quitquitquit``).
    MESHTUNE_DRAIN_S: seconds to wait before that, so Prometheus scrapes the sidecar's final
        counters (the load pod's sidecar is the source reporter of every front-end request).

At exit it prints one line to stdout: ``MESHTUNE_LOCUST_REPORT {json}`` with ``mode``
(``closed``/``open``), the run's start and end (Unix seconds), ``reached_total``, one row per
request name (counts, ``num_good``; avg/min/max/median/p95/p99 in ms), ``latency_mean_ms`` and
the nearest-rank ``latency_p99_ms`` over every recorded request, ``abandoned`` (requests) and
``errors`` (what went wrong in the run itself: a broken session, a request name without an
objective; non-empty means the figures cannot be trusted); open loop also ``rate_rps``,
``sessions_arrived`` and ``max_lag_ms``.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import os
import random
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.pool
from locust import HttpUser, User, constant, events, task
from locust.exception import StopUser

REPORT_MARKER = "MESHTUNE_LOCUST_REPORT "
QUIT_SIDECAR_URL = "http://127.0.0.1:15020/quitquitquit"
AUTHORIZATION = "Basic " + base64.b64encode(b"user:password").decode()
#: Requests of one session (the reference loop).
LOOP_LEN = 9
#: Seed factors of the open loop, the local backend's (``arrivals.STREAM_SEED_FACTOR`` and the
#: session item choices of ``loadgen.run_open``): the same seed gives the same sessions.
STREAM_SEED_FACTOR = 7_919
SESSION_SEED_FACTOR = 100_003


def _rate_rps(text: str | None) -> float | None:
    """``MESHTUNE_RATE_RPS`` as offered requests per second; None (closed loop) if unset."""
    if text is None or text == "":
        return None
    try:
        rate = float(text)
    except ValueError:
        rate = math.nan
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"MESHTUNE_RATE_RPS must be a positive number, got {text!r}")
    return rate


def _slo_ms(text: str | None) -> dict[str, float] | None:
    """``MESHTUNE_SLO_MS`` as route -> objective in ms; None if unset."""
    if text is None or text == "":
        return None
    table = json.loads(text)
    if not isinstance(table, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and v > 0
            for k, v in table.items()):
        raise ValueError(f"MESHTUNE_SLO_MS must map routes to positive ms, got {text[:200]!r}")
    return {k: float(v) for k, v in table.items()}


TOTAL_REQUESTS = int(os.environ.get("MESHTUNE_TOTAL_REQUESTS", "0"))
SEED = int(os.environ.get("MESHTUNE_SEED", "0"))
RATE_RPS = _rate_rps(os.environ.get("MESHTUNE_RATE_RPS"))
OPEN_LOOP = RATE_RPS is not None
SLO_MS = _slo_ms(os.environ.get("MESHTUNE_SLO_MS"))
QUIT_SIDECAR = os.environ.get("MESHTUNE_QUIT_SIDECAR", "0") == "1"
DRAIN_S = float(os.environ.get("MESHTUNE_DRAIN_S", "0"))

_user_numbers = itertools.count()
_run: dict[str, Any] = {"requests": 0, "stopping": False, "reached_total": False,
                        "start_time": None, "end_time": None, "environment": None,
                        "arrivals_started": False, "abandoned": 0, "sessions_arrived": 0,
                        "max_lag_s": 0.0, "errors": []}
#: (method, name) -> [(succeeded, response time ms), ...] of every request Locust recorded.
_outcomes: dict[tuple[str, str], list[tuple[bool, float]]] = defaultdict(list)
#: The open loop's running sessions (killed when the run stops).
_sessions = gevent.pool.Group()


def arrival_offsets(session_rate_per_s: float, seed: int) -> Iterator[float]:
    """Arrival times (s after the window's start) of the open loop's sessions: a Poisson process
    of ``session_rate_per_s`` per second, exponential gaps from
    ``Random(seed * STREAM_SEED_FACTOR + 1)``; endless, the first one gap after 0."""
    rng = random.Random(seed * STREAM_SEED_FACTOR + 1)
    t = 0.0
    while True:
        t += rng.expovariate(session_rate_per_s)
        yield t


def nearest_rank(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of non-empty ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _stop(reached_total: bool) -> None:
    """End the run once: note when and why, and quit the runner (from its own greenlet)."""
    if _run["stopping"]:
        return
    _run["stopping"] = True
    _run["reached_total"] = reached_total
    _run["end_time"] = time.time()
    gevent.spawn(_run["environment"].runner.quit)


class SockShopUser(HttpUser):
    """One virtual user running the reference loop: back to back (closed loop), or once as an
    arriving session (open loop; then sessions are made by :class:`OpenLoopArrivals`)."""

    abstract = OPEN_LOOP
    wait_time = constant(0)

    def on_start(self) -> None:
        self.rng = random.Random(SEED * 1_000_003 + next(_user_numbers))

    @task
    def reference_loop(self) -> None:
        self.run_loop()

    def run_loop(self) -> bool:
        """The 9 requests; False if the catalogue answer had no item list (the loop ended
        there, after 1 request)."""
        catalogue = self.client.get("/catalogue")
        try:
            item_id = self.rng.choice(catalogue.json())["id"]
        except (ValueError, TypeError, KeyError, IndexError):
            return False
        self.client.get("/")
        self.client.get("/login", headers={"Authorization": AUTHORIZATION})
        self.client.get("/category.html")
        self.client.get(f"/detail.html?id={item_id}")
        self.client.delete("/cart")
        self.client.post("/cart", json={"id": item_id, "quantity": 1})
        self.client.get("/basket.html")
        self.client.post("/orders")
        return True


def _session(environment: Any, k: int) -> None:
    """Open-loop session ``k``: a fresh user runs the loop once; if it gives up at the
    catalogue, its other 8 requests are abandoned. A session that breaks ends the run."""
    try:
        user = SockShopUser(environment)
        user.rng = random.Random(SEED * SESSION_SEED_FACTOR + k)
        try:
            if not user.run_loop() and not _run["stopping"]:
                _run["abandoned"] += LOOP_LEN - 1
        finally:
            user.client.close()
    except Exception as exc:
        _run["errors"].append(f"open-loop session {k} failed: {exc!r}")
        _stop(reached_total=False)


class OpenLoopArrivals(User):
    """Open loop: the one driver user. Its task starts the sessions on their Poisson schedule
    and runs until the run stops."""

    abstract = not OPEN_LOOP
    wait_time = constant(0)

    @task
    def arrive(self) -> None:
        if _run["stopping"]:
            raise StopUser  # the run is over; Locust would call the task again
        if _run["arrivals_started"]:
            _run["errors"].append("the open loop needs exactly one Locust user (-u 1): a "
                                  "second driver would double the rate")
            _stop(reached_total=False)
            return
        _run["arrivals_started"] = True
        if not self.environment.host:
            _run["errors"].append("no --host given")
            _stop(reached_total=False)
            return
        SockShopUser.host = self.environment.host  # the runner sets it on its classes only
        assert RATE_RPS is not None  # OPEN_LOOP
        t0 = time.monotonic()
        _run["start_time"] = time.time()
        for k, offset in enumerate(arrival_offsets(RATE_RPS / LOOP_LEN, SEED)):
            delay = t0 + offset - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            if _run["stopping"]:
                raise StopUser
            _run["max_lag_s"] = max(_run["max_lag_s"], time.monotonic() - t0 - offset)
            _run["sessions_arrived"] += 1
            _sessions.spawn(_session, self.environment, k)


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    _run["environment"] = environment


@events.test_start.add_listener
def _on_test_start(**_: Any) -> None:
    _run["start_time"] = time.time()  # open loop: replaced by the schedule's start


@events.request.add_listener
def _on_request(request_type: str, name: str, response_time: float,
                exception: Any = None, **_: Any) -> None:
    _outcomes[(request_type, name)].append((exception is None, float(response_time)))
    _run["requests"] += 1
    if TOTAL_REQUESTS and _run["requests"] >= TOTAL_REQUESTS and not _run["stopping"]:
        _stop(reached_total=True)


@events.test_stopping.add_listener
def _on_test_stopping(**_: Any) -> None:
    _run["stopping"] = True  # also at --run-time: no more arrivals or abandonments
    if len(_sessions):
        _sessions.kill(block=True, timeout=10)


@events.test_stop.add_listener
def _on_test_stop(**_: Any) -> None:
    if _run["end_time"] is None:
        _run["end_time"] = time.time()


def _num_good(method: str, name: str, entry: Any) -> int | None:
    """Successful requests of the row within their route's objective; None without
    ``MESHTUNE_SLO_MS``. A row the hook and Locust disagree on, or without an objective, is a
    run error."""
    outcomes = _outcomes.get((method, name), [])
    if (len(outcomes) != entry.num_requests
            or sum(not ok for ok, _ in outcomes) != entry.num_failures):
        _run["errors"].append(f"request hook and Locust disagree on {method} {name}: "
                              f"{len(outcomes)} vs {entry.num_requests} requests")
    if SLO_MS is None:
        return None
    route = f"{method} {name.split('?', 1)[0]}"
    if route not in SLO_MS:
        _run["errors"].append(f"no latency objective for {method} {name} (route {route})")
        return None
    return sum(1 for ok, ms in outcomes if ok and ms <= SLO_MS[route])


def report(environment: Any) -> dict[str, Any]:
    """The run's figures as the JSON object of the report line (module docstring)."""
    rows = []
    for (name, method), entry in sorted(environment.stats.entries.items()):
        n = entry.num_requests
        rows.append({
            "method": method, "name": name, "num_requests": n,
            "num_failures": entry.num_failures,
            "num_good": _num_good(method, name, entry),
            "avg_ms": entry.avg_response_time if n else None,
            "min_ms": entry.min_response_time if n else None,
            "max_ms": entry.max_response_time if n else None,
            "median_ms": entry.median_response_time if n else None,
            "p95_ms": entry.get_response_time_percentile(0.95) if n else None,
            "p99_ms": entry.get_response_time_percentile(0.99) if n else None,
        })
    times = [ms for rows_ in _outcomes.values() for _, ms in rows_]
    doc: dict[str, Any] = {
        "mode": "open" if OPEN_LOOP else "closed",
        "start_time": _run["start_time"], "end_time": _run["end_time"],
        "reached_total": _run["reached_total"], "total_requests": _run["requests"],
        "seed": SEED, "endpoints": rows, "abandoned": _run["abandoned"],
        "latency_mean_ms": sum(times) / len(times) if times else None,
        "latency_p99_ms": nearest_rank(times, 0.99) if times else None,
        "errors": list(_run["errors"]),
    }
    if OPEN_LOOP:
        doc.update(rate_rps=RATE_RPS, sessions_arrived=_run["sessions_arrived"],
                   max_lag_ms=1000.0 * _run["max_lag_s"])
    return doc


@events.quitting.add_listener
def _on_quitting(environment: Any, **_: Any) -> None:
    sys.stdout.write(REPORT_MARKER + json.dumps(report(environment)) + "\n")
    sys.stdout.flush()
    if QUIT_SIDECAR:
        time.sleep(DRAIN_S)
        request = urllib.request.Request(QUIT_SIDECAR_URL, method="POST")
        try:
            urllib.request.urlopen(request, timeout=5).close()
        except OSError as exc:  # the Job still ends at activeDeadlineSeconds
            sys.stderr.write(f"could not stop the Istio sidecar: {exc}\n")
