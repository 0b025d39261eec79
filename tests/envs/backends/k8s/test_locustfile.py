"""The shipped locustfile (``cluster/load/locustfile.py``) run by real Locust, in a subprocess,
against a fake SockShop front-end on 127.0.0.1: the closed loop (the reference loop in order,
seeded item choices, the stop at the total) and the open loop (sessions arriving on the local
backend's seeded Poisson schedule, a failed catalogue abandoning the session), each read back
through the backend's own parsing (``envs.backends.k8s.loadjob``). Nothing listens beyond
127.0.0.1 (Locust runs headless: no web UI)."""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from envs.backends.base import BackendError
from envs.backends.k8s.loadjob import endpoint_stats, parse_locust_report, run_figures
from envs.backends.k8s.manifests import DEFAULT_LOCUSTFILE
from envs.backends.local.arrivals import arrival_offsets
from envs.sockshop import CATALOGUE, LOAD_TEST_LOOP
from envs.sockshop.slo import ROUTE_SLO_MS

ITEMS = [{"id": i.item_id, "price": i.price} for i in CATALOGUE]


@dataclass(frozen=True)
class Seen:
    """One request the fake front-end received: when (``time.monotonic``, s), from which client
    port (one per connection), and what."""

    at: float
    port: int
    method: str
    path: str
    authorization: str
    body: bytes


@dataclass
class FrontEnd:
    """The fake front-end's address and what it received."""

    port: int
    seen: list[Seen]


class QuietServer(ThreadingHTTPServer):
    """A threaded HTTP server that does not print the resets of connections Locust drops (the
    sessions still open when a run stops are killed)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture
def front_end() -> Iterator[Callable[[Callable[[int], bool]], FrontEnd]]:
    """Start a fake front-end on 127.0.0.1 (HTTP/1.1, keep-alive): ``GET /catalogue`` answers
    the item list, or 503 where ``fail_catalogue(k)`` is true for the k-th catalogue request
    (from 0); ``POST /orders`` answers 406 (a declined payment: a failure Locust counts)."""
    servers: list[ThreadingHTTPServer] = []

    def start(fail_catalogue: Callable[[int], bool]) -> FrontEnd:
        seen: list[Seen] = []
        lock = threading.Lock()
        catalogues = [0]

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # a session keeps its connection: port = session

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    seen.append(Seen(time.monotonic(), self.client_address[1], self.command,
                                     self.path, self.headers.get("Authorization", ""), body))
                    status = {"DELETE": 202, "POST": 201}.get(self.command, 200)
                    data = json.dumps({}).encode()
                    if self.path == "/catalogue":
                        k = catalogues[0]
                        catalogues[0] += 1
                        status, data = ((503, b"overflow") if fail_catalogue(k)
                                        else (200, json.dumps(ITEMS).encode()))
                    elif self.path == "/orders":
                        status = 406
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        for verb in ("GET", "POST", "DELETE"):
            setattr(Handler, f"do_{verb}", Handler._serve)
        httpd = QuietServer(("127.0.0.1", 0), Handler)
        servers.append(httpd)
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return FrontEnd(httpd.server_port, seen)

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def run_locust(port: int, users: int, env: dict[str, str], cwd: Path,
               run_time_s: int = 60) -> subprocess.CompletedProcess[str]:
    """The locustfile under real Locust, headless, as the load Job runs it."""
    return subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(DEFAULT_LOCUSTFILE), "--headless",
         "-u", str(users), "-r", str(users), "--host", f"http://127.0.0.1:{port}",
         "--run-time", f"{run_time_s}s", "--exit-code-on-error", "0", "--only-summary"],
        env={**os.environ, "MESHTUNE_QUIT_SIDECAR": "0", **env}, capture_output=True,
        text=True, timeout=120, cwd=cwd)


def test_locustfile_runs_the_reference_loop(front_end: Any, tmp_path: Path) -> None:
    """Closed loop: the reference loop in order, seeded item choices, the stop at the total,
    the report line with each endpoint's requests within their SLO."""
    fe = front_end(lambda k: False)
    loops, seed = 3, 11
    run = run_locust(fe.port, 1, {"MESHTUNE_TOTAL_REQUESTS": str(9 * loops),
                                  "MESHTUNE_SEED": str(seed),
                                  "MESHTUNE_SLO_MS": json.dumps(ROUTE_SLO_MS)}, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    report = parse_locust_report(run.stdout)
    endpoints, duration_s = endpoint_stats(report)
    assert 0 < duration_s < 60  # stopped at the total, not by --run-time
    assert report["mode"] == "closed" and report["reached_total"] is True
    assert sum(e.num_requests for e in endpoints.values()) == 9 * loops
    assert endpoints["POST /orders"].num_failures == loops
    assert sum(e.num_failures for e in endpoints.values()) == loops
    # a fake on loopback answers within every SLO: the good ones are the successful ones
    assert endpoints["POST /orders"].num_good == 0
    assert all(e.num_good == e.num_requests - e.num_failures for e in endpoints.values())
    figures = run_figures(report, "closed", 9 * loops)
    assert figures["num_abandoned"] == 0 and figures["extra"] == {}
    assert 0 < figures["latency_mean_ms"] <= figures["latency_p99_ms"]
    rng = random.Random(seed * 1_000_003)
    expected: list[str] = []
    for _ in range(loops):
        item = rng.choice(ITEMS)["id"]
        expected += [s.name.format(item=item) for s in LOAD_TEST_LOOP]
    assert [f"{s.method} {s.path}" for s in fe.seen[:9 * loops]] == expected
    logins = [s.authorization for s in fe.seen if s.path == "/login"]
    assert logins and all(a == "Basic " + base64.b64encode(b"user:password").decode()
                          for a in logins)
    carts = [json.loads(s.body) for s in fe.seen if (s.method, s.path) == ("POST", "/cart")]
    assert carts[0] == {"id": expected[4].split("=", 1)[1], "quantity": 1}


def test_locustfile_open_loop_arrivals_and_abandoned_sessions(front_end: Any,
                                                              tmp_path: Path) -> None:
    """Open loop: sessions arrive on the local backend's seeded Poisson schedule at rate / 9
    per second, each on its own connection; a session whose catalogue fails sends nothing else
    and its 8 other requests count as abandoned; the run stops at the total."""
    fe = front_end(lambda k: k % 3 == 1)  # every third session's catalogue fails
    rate_rps, seed, total = 54.0, 5, 120  # 6 sessions/s; about 19 sessions, 3 s
    run = run_locust(fe.port, 1, {"MESHTUNE_TOTAL_REQUESTS": str(total),
                                  "MESHTUNE_SEED": str(seed),
                                  "MESHTUNE_RATE_RPS": str(rate_rps),
                                  "MESHTUNE_SLO_MS": json.dumps(ROUTE_SLO_MS)}, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    report = parse_locust_report(run.stdout)
    endpoints, duration_s = endpoint_stats(report)
    figures = run_figures(report, "open", total)  # raises on errors or an unreached total
    assert report["mode"] == "open" and report["rate_rps"] == rate_rps
    recorded = sum(e.num_requests for e in endpoints.values())
    assert recorded >= total and duration_s < 30

    # sessions: one connection each, split at its catalogue (a port may be reused later)
    sessions: dict[int, list[list[Seen]]] = defaultdict(list)
    for s in fe.seen:
        if s.path == "/catalogue" or not sessions[s.port]:
            sessions[s.port].append([])
        sessions[s.port][-1].append(s)
    runs = sorted((r for rs in sessions.values() for r in rs), key=lambda r: r[0].at)
    assert all(r[0].path == "/catalogue" for r in runs)
    loop = [st.route for st in LOAD_TEST_LOOP]
    failed = [r for k, r in enumerate(runs) if k % 3 == 1]  # the server's fail_catalogue
    assert len(failed) >= 4
    assert all(len(r) == 1 for r in failed)  # a failed catalogue ends the session
    for r in runs:
        routes = [f"{s.method} {s.path.split('?')[0]}" for s in r]
        assert routes == loop[:len(routes)]
    partial = [r for r in runs if 1 < len(r) < 9]
    assert len(runs) - len(failed) - len(partial) >= 6  # complete sessions
    # cut short only by the stop: still running at the end of the traffic
    assert all(r[-1].at >= fe.seen[-1].at - 1.5 for r in partial), partial

    # abandoned: 8 per failed session, counted until the stop (one may fail just after it)
    failed_recorded = endpoints["GET /catalogue"].num_failures
    assert failed_recorded in (len(failed), len(failed) - 1)
    assert figures["num_abandoned"] % 8 == 0
    assert 8 * (failed_recorded - 1) <= figures["num_abandoned"] <= 8 * failed_recorded

    # arrivals: the catalogue requests follow the seeded schedule of rate / 9 per second
    # (sessions that arrived just before the stop may be killed before their first request)
    arrived = figures["extra"]["sessions_arrived"]
    schedule = list(islice(arrival_offsets(rate_rps / 9, seed), 1000))
    assert len(runs) <= arrived
    assert abs(arrived - sum(o <= duration_s for o in schedule)) <= 3  # arrived until the stop
    # each session's first request when the schedule says, never early, at most a little late
    # (this 2-core machine may be busy: the generator's lag is reported, and bounded here)
    starts = [r[0].at for r in runs]
    for k in range(1, len(runs)):
        late_s = (starts[k] - starts[0]) - (schedule[k] - schedule[0])
        assert -0.25 < late_s < 1.0, (k, late_s)
    measured_per_s = (len(runs) - 1) / (starts[-1] - starts[0])
    assert measured_per_s == pytest.approx(rate_rps / 9, rel=0.5)
    assert 0 <= figures["extra"]["max_lag_ms"] < 1000
    assert 0 < figures["latency_mean_ms"] <= figures["latency_p99_ms"]


def test_locustfile_stops_an_open_loop_at_the_run_time_limit(front_end: Any,
                                                              tmp_path: Path) -> None:
    """An open load that cannot reach its total in time reports so; the backend refuses it."""
    fe = front_end(lambda k: False)
    run = run_locust(fe.port, 1, {"MESHTUNE_TOTAL_REQUESTS": "100000", "MESHTUNE_SEED": "1",
                                  "MESHTUNE_RATE_RPS": "45"}, tmp_path, run_time_s=2)
    assert run.returncode == 0, run.stderr[-2000:]
    report = parse_locust_report(run.stdout)
    assert report["reached_total"] is False and 0 < report["sessions_arrived"] < 40
    with pytest.raises(BackendError, match="did not reach 100000 requests"):
        run_figures(report, "open", 100000)


@pytest.mark.parametrize("rate", ["0", "-3", "nan", "fast"])
def test_locustfile_refuses_a_bad_rate(rate: str, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(DEFAULT_LOCUSTFILE), "--headless",
         "-u", "1", "-r", "1", "--host", "http://127.0.0.1:9", "--run-time", "5s"],
        env={**os.environ, "MESHTUNE_RATE_RPS": rate}, capture_output=True, text=True,
        timeout=60, cwd=tmp_path)
    assert run.returncode != 0
    assert "MESHTUNE_RATE_RPS must be a positive number" in run.stderr, run.stderr[-2000:]
