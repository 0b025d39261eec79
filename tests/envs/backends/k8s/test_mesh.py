"""``K8sMesh`` (``envs.backends.k8s.mesh``) over real HTTP: a fake Kubernetes API and a fake
Prometheus on 127.0.0.1 (``_fakes.py``). No cluster is involved."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from envs.backends.base import BackendError, LatencySpike, LoadSpec
from envs.backends.k8s.loadjob import REPORT_MARKER
from envs.backends.k8s.manifests import BACKEND_RULES
from envs.backends.k8s.mesh import K8sMesh
from envs.backends.report import LoadReport
from envs.istio import DestinationRule
from envs.reward import SloObjective, slo_score
from envs.sockshop import SERVICES, endpoint_names
from envs.sockshop.slo import ROUTE_SLO_MS
from tests.envs.backends.k8s._fakes import (
    CARTS_POOL,
    DR_PATH,
    END,
    FAST,
    LOCUST_LOG,
    LOCUST_REPORT,
    NS,
    Answer,
    Clock,
    FakeKube,
    FakePrometheus,
    Request,
    Server,
    Sleeps,
    closed_port_url,
    dr,
    mesh,
)
from tests.envs.backends.local.test_causes import check_invariants

# ---------------------------------------------------------------------------------------------
# Restore: close, context manager, atexit, rollback
# ---------------------------------------------------------------------------------------------


def test_close_restores_the_snapshot(kube: Any) -> None:
    original = {"tcp": {"maxConnections": 100, "connectTimeout": "30ms"}}
    fake = FakeKube([dr("carts", original, annotations={
        "kubectl.kubernetes.io/last-applied-configuration": "{}", "owner": "x"})])
    server = kube(fake)
    m = mesh(server.url)
    m.apply([DestinationRule("carts", "carts", CARTS_POOL),
             DestinationRule("orders", "orders", CARTS_POOL)])
    n = len(server.requests)
    m.close()
    restored = {r.path.rsplit("/", 1)[1]: yaml.safe_load(r.body) for r in server.requests[n:]}
    assert restored["carts"]["spec"]["trafficPolicy"]["connectionPool"] == original
    assert restored["carts"]["metadata"]["annotations"] == {"owner": "x"}
    assert restored["orders"]["spec"] == {"host": "orders"}  # created: pool taken away
    assert fake.rules["carts"]["spec"]["trafficPolicy"]["connectionPool"] == original
    m.close()  # idempotent
    assert len(server.requests) == n + 2
    with pytest.raises(BackendError, match="closed"):
        m.apply([])


def test_context_manager_restores_after_an_exception(kube: Any) -> None:
    fake = FakeKube([dr("carts", {"tcp": {"maxConnections": 100}})])
    server = kube(fake)
    with pytest.raises(RuntimeError, match="boom"), mesh(server.url) as m:
        m.apply([DestinationRule("carts", "carts", CARTS_POOL)])
        assert fake.rules["carts"]["spec"]["trafficPolicy"]["connectionPool"]["tcp"][
            "maxConnections"] == 5
        raise RuntimeError("boom")
    assert fake.rules["carts"]["spec"]["trafficPolicy"]["connectionPool"] == {
        "tcp": {"maxConnections": 100}}


def test_restore_is_registered_with_atexit(kube: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[Callable[[], None]] = []
    monkeypatch.setattr("atexit.register", registered.append)
    monkeypatch.setattr("atexit.unregister", registered.remove)
    fake = FakeKube([dr("carts", {"tcp": {"maxConnections": 100}})])
    server = kube(fake)
    m = mesh(server.url)
    assert len(registered) == 1
    m.apply([DestinationRule("carts", "carts", CARTS_POOL)])
    registered[0]()  # what the interpreter runs at exit
    assert fake.rules["carts"]["spec"]["trafficPolicy"]["connectionPool"] == {
        "tcp": {"maxConnections": 100}}
    assert registered == []  # close unregistered it


def test_a_failed_restore_at_exit_is_reported(kube: Any, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    registered: list[Callable[[], None]] = []
    monkeypatch.setattr("atexit.register", registered.append)
    monkeypatch.setattr("atexit.unregister", registered.remove)
    fake = FakeKube([dr("carts", {"tcp": {"maxConnections": 100}})])
    server = kube(fake)
    m = mesh(server.url)
    m.apply([DestinationRule("carts", "carts", CARTS_POOL)])
    fake.fail("PATCH", DR_PATH + "/carts", 403)
    registered[0]()
    assert "restoring sockshop-2 at exit failed" in capsys.readouterr().err


def test_failed_apply_rolls_back_what_it_changed(kube: Any) -> None:
    fake = FakeKube([dr("carts", {"tcp": {"maxConnections": 100}}),
                     dr("user", {"tcp": {"maxConnections": 3}})])
    fake.fail("PATCH", DR_PATH + "/user", 403)
    server = kube(fake)
    m = mesh(server.url)
    with pytest.raises(BackendError, match=r"user failed: HTTP 403.*rolled back 1 rule"):
        m.apply([DestinationRule("carts", "carts", CARTS_POOL),
                 DestinationRule("user", "user", CARTS_POOL)])
    assert [name for name, _ in fake.patches(server)] == ["carts", "user", "carts"]
    assert fake.rules["carts"]["spec"]["trafficPolicy"]["connectionPool"] == {
        "tcp": {"maxConnections": 100}}
    assert m.current_documents()["carts"]["spec"]["trafficPolicy"]["connectionPool"] == {
        "tcp": {"maxConnections": 100}}
    m.close()


# ---------------------------------------------------------------------------------------------
# Health
# ---------------------------------------------------------------------------------------------


def test_health_check_is_get_catalogue(kube: Any) -> None:
    server = kube(FakeKube([]))
    status = {"code": 200}
    front = Server(lambda req: Answer(status["code"] if req.path == "/catalogue" else 404, []))
    try:
        m = mesh(server.url, ingress_url=front.url)
        assert m.healthy()
        status["code"] = 503
        assert not m.healthy()
        assert [r.path for r in front.requests] == ["/catalogue", "/catalogue"]
        m.close()
    finally:
        front.close()
    dead = mesh(server.url, ingress_url=closed_port_url())
    assert not dead.healthy()
    dead.close()


def test_default_ingress_is_the_in_cluster_front_end(kube: Any) -> None:
    server = kube(FakeKube([]))
    m = mesh(server.url)
    assert m.ingress_url == f"http://front-end.{NS}.svc.cluster.local"
    m.close()


# ---------------------------------------------------------------------------------------------
# Load and metrics
# ---------------------------------------------------------------------------------------------


def test_run_load_creates_a_job_and_reads_istio_metrics(load_setup: Any) -> None:
    m, fake, _, prom, sleeps = load_setup
    report = m.run_load(LoadSpec(users=10, requests=180, hatch_rate_per_s=5.0), seed=7)
    job = next(iter(fake.jobs.values()))
    container = job["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("-u") + 1] == "10" and args[args.index("-r") + 1] == "5"
    assert args[args.index("--host") + 1] == f"http://front-end.{NS}.svc.cluster.local"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert json.loads(env.pop("MESHTUNE_SLO_MS")) == ROUTE_SLO_MS
    assert env == {"MESHTUNE_TOTAL_REQUESTS": "180", "MESHTUNE_SEED": "7",
                   "MESHTUNE_QUIT_SIDECAR": "1", "MESHTUNE_DRAIN_S": "15"}  # closed: no rate
    # polled until done, then waited for the metrics to settle: END + 10 s lag
    assert sleeps.calls[:2] == [2.0, 2.0]
    assert prom.seen and set(prom.seen) == {
        "http_requests", "http_failed", "http_uo", "http_uf", "http_ut", "http_reset",
        "http_urx", "http_p99", "http_duration_ms", "http_duration_n", "http_pool_ms",
        "tcp_requests", "tcp_failed", "tcp_uo", "tcp_uf", "tcp_ut", "tcp_reset", "retries",
        "retry_overflow"}
    assert report.backend == "k8s" and report.users == 10
    assert report.num_abandoned == 0 and report.latency_mean_ms is None  # not in this report
    assert report.duration_s == pytest.approx(40.4)
    orders = report.endpoints["POST /orders"]
    assert (orders.num_requests, orders.num_failures, orders.p99_ms) == (20, 5, 880.0)
    assert orders.rps == pytest.approx(20 / 40.4)
    carts = report.services["carts"]
    assert (carts.num_requests, carts.uo_count, carts.uf_count) == (100, 4, 0)
    assert carts.error_ratio == pytest.approx(0.1)
    assert carts.p99_ms == 250.0 and carts.retry_count == 3  # not sockshop-9's 999
    # the causes from response_flags, attempts = first tries + retries, demand per pod
    assert (carts.ut_count, carts.reset_count, carts.urx_count) == (1, 2, 3)
    assert carts.num_attempts == 103 and carts.retry_overflow_count == 1
    assert carts.mean_ms == pytest.approx(4000.0)
    window_s = math.ceil(40.4)
    assert carts.in_flight_per_pool == pytest.approx(60.0 / window_s)  # front-end's pod
    catalogue = report.services["catalogue"]
    assert (catalogue.num_requests, catalogue.error_ratio, catalogue.p99_ms) == (101, 0.0, 251.0)
    assert report.services["queue-master"] == report.services["queue-master"].__class__(
        "queue-master", 0, None, 0.0, 0, 0, 0, num_attempts=0, ut_count=0, reset_count=0,
        urx_count=0, retry_overflow_count=0, in_flight_per_pool=0.0)
    mongo = report.services["carts-db"]
    assert (mongo.num_requests, mongo.uf_count, mongo.p99_ms) == (30, 1, None)
    assert mongo.mean_ms is None and mongo.in_flight_per_pool is None
    for s in report.services.values():
        if s.num_requests:
            check_invariants(s)
    assert set(report.services) == {s.name for s in SERVICES}
    assert set(report.endpoints) <= set(endpoint_names())  # the simulator's endpoint names
    assert report.extra["job"] == "locust-00001"
    assert LoadReport.from_dict(json.loads(report.to_json())) == report  # no NaN, round-trips


def test_faults_are_refused(kube: Any) -> None:
    server = kube(FakeKube([]))
    m = mesh(server.url)
    spike = (LatencySpike("carts", 0.0, 1.0, 2.0),)
    with pytest.raises(BackendError, match="cannot inject faults"):
        m.run_load(LoadSpec(users=1, requests=10, faults=spike), seed=0)
    with pytest.raises(BackendError, match="cannot inject faults"):
        m.run_load(LoadSpec(users=0, requests=10, mode="open", arrival_rate_rps=5.0,
                            faults=spike), seed=0)
    assert not any(r.method == "POST" for r in server.requests)
    m.close()


#: What the locustfile reports for an open load of 180 requests (cluster/load/locustfile.py):
#: 40 recorded requests, 5 failed, 30 within their SLO, 5 sessions abandoned (8 requests each).
OPEN_REPORT: dict[str, Any] = {
    **LOCUST_REPORT, "mode": "open", "reached_total": True, "abandoned": 40, "errors": [],
    "latency_mean_ms": 170.75, "latency_p99_ms": 880.0, "rate_rps": 60.0,
    "sessions_arrived": 9, "max_lag_ms": 3.5,
    "endpoints": [{**row, "num_good": good}
                  for row, good in zip(LOCUST_REPORT["endpoints"], (18, 12), strict=True)]}


def log_of(report: dict[str, Any]) -> str:
    return f"Starting Locust 2.47.0\n{REPORT_MARKER}{json.dumps(report)}\n"


def test_open_load_runs_and_reports_what_the_objective_needs(kube: Any) -> None:
    """An open load: the Job carries the rate and drives arrivals with one Locust user; the
    report has the local backend's open-loop fields, so it scores as a local report would."""
    fake = FakeKube([], locust_log=log_of(OPEN_REPORT), job_polls_before_done=2)
    server = kube(fake)
    prom_server = Server(FakePrometheus(window_s=41, eval_time=END + 10.0))
    sleeps = Sleeps()
    m = K8sMesh(2, kube_api_url=server.url, prometheus_url=prom_server.url, sleep=sleeps,
                clock=Clock(END - 5.0, sleeps), retry=FAST, metrics_lag_s=10.0)
    try:
        report = m.run_load(LoadSpec(users=0, requests=180, mode="open",
                                     arrival_rate_rps=60.0), seed=7)
    finally:
        m.close()
        prom_server.close()
    container = next(iter(fake.jobs.values()))["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("-u") + 1] == "1" and args[args.index("-r") + 1] == "1"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MESHTUNE_RATE_RPS"] == "60.0" and env["MESHTUNE_TOTAL_REQUESTS"] == "180"
    assert env["MESHTUNE_SEED"] == "7" and json.loads(env["MESHTUNE_SLO_MS"]) == ROUTE_SLO_MS
    assert report.users == 0  # open loop, as LoadReport and the local backend have it
    assert (report.num_requests, report.num_failures, report.num_abandoned) == (40, 5, 40)
    assert report.offered_requests == 80 and report.num_good == 30
    assert report.endpoints["POST /orders"].num_good == 12
    assert (report.latency_mean_ms, report.latency_p99_ms) == (170.75, 880.0)
    assert {k: report.extra[k] for k in ("rate_rps", "sessions_arrived", "max_lag_ms")} == {
        "rate_rps": 60.0, "sessions_arrived": 9, "max_lag_ms": 3.5}
    # failed 5 + abandoned 40 + late (40 - 5 - 30 = 5), of 80 offered
    assert slo_score(report) == pytest.approx(-100.0 * (5 + 40 + 5) / 80)
    assert SloObjective(late_weight=0.5).score(report) == pytest.approx(
        -100.0 * (5 + 40 + 0.5 * 5) / 80)
    assert report.good_pct == pytest.approx(100.0 * 30 / 80)
    assert LoadReport.from_dict(json.loads(report.to_json())) == report


#: A report key the test leaves out.
MISSING = object()


@pytest.mark.parametrize(("change", "message"), [
    ({"mode": MISSING}, "predates open loads"),  # a locustfile ConfigMap from before: closed run
    ({"reached_total": False, "total_requests": 97},
     "did not reach 180 requests within the run-time limit \\(counted 97\\)"),
    ({"errors": ["open-loop session 3 failed: OSError()"]}, "reported 1 error.*session 3"),
    ({"abandoned": -8}, "counts -8 abandoned"),
    ({"sessions_arrived": None}, "lacks a figure"),
    ({"abandoned": MISSING}, "lacks a figure.*abandoned"),
    ({"endpoints": [{**r, "num_good": None} for r in OPEN_REPORT["endpoints"]]},
     "does not count requests within their SLO"),
    ({"endpoints": [{**r, "num_good": 21} for r in OPEN_REPORT["endpoints"]]},
     "counts 21 requests within their SLO of 20"),
])
def test_a_doubtful_open_report_is_an_error(kube: Any, change: dict[str, Any],
                                            message: str) -> None:
    doc = {**OPEN_REPORT, **change}
    doc = {k: v for k, v in doc.items() if v is not MISSING}
    server = kube(FakeKube([], locust_log=log_of(doc)))
    m = mesh(server.url)
    with pytest.raises(BackendError, match=message):
        m.run_load(LoadSpec(users=0, requests=180, mode="open", arrival_rate_rps=60.0), seed=7)
    m.close()


def test_an_open_report_for_a_closed_load_is_an_error(kube: Any) -> None:
    server = kube(FakeKube([], locust_log=log_of(OPEN_REPORT)))
    m = mesh(server.url)
    with pytest.raises(BackendError, match="of mode 'closed', the Locust report is of mode 'open'"):
        m.run_load(LoadSpec(users=10, requests=180), seed=7)
    m.close()


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_k8s_backend_is_registered_and_lazy() -> None:
    import subprocess
    import sys

    from envs.backends.registry import BACKENDS

    assert BACKENDS["k8s"] == "envs.backends.k8s:K8sMesh"
    code = ("import sys, envs.backends, envs.backends.k8s; "
            "print('kubernetes' in sys.modules, 'prometheus_api_client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]


# ---------------------------------------------------------------------------------------------
# RBAC: the rendered Role grants what the backend uses, and nothing it does not
# ---------------------------------------------------------------------------------------------


def permission(req: Request, existing: set[str]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) a request needs, as the API server authorises it."""
    parts = req.path.strip("/").split("/")
    if parts[0] == "api":  # /api/v1/namespaces/{ns}/{resource}[/{name}[/{sub}]]
        group, rest = "", parts[4:]
    else:  # /apis/{group}/{version}/namespaces/{ns}/{resource}[/{name}[/{sub}]]
        group, rest = parts[1], parts[5:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) == 3 else "")
    if req.method == "GET":
        return {(group, resource, "get" if len(rest) > 1 else "list")}
    if req.method == "POST":
        return {(group, resource, "create")}
    if req.method == "PATCH":
        # server-side apply of an absent object creates it
        return {(group, resource, "patch")} | (
            set() if rest[1] in existing else {(group, resource, "create")})
    raise AssertionError(f"unexpected verb {req.method} {req.path}")


def test_rendered_role_covers_exactly_what_the_backend_calls(kube: Any) -> None:
    fake = FakeKube([dr("carts", {"tcp": {"maxConnections": 100}})], locust_log=LOCUST_LOG)
    server = kube(fake)
    prom_server = Server(FakePrometheus(window_s=41, eval_time=END + 10.0))
    sleeps = Sleeps()
    m = K8sMesh(2, kube_api_url=server.url, prometheus_url=prom_server.url, sleep=sleeps,
                clock=Clock(END, sleeps), retry=FAST)
    m.apply([DestinationRule("carts", "carts", CARTS_POOL),
             DestinationRule("orders", "orders", CARTS_POOL)])
    m.run_load(LoadSpec(users=10, requests=180), seed=7)
    m.close()
    prom_server.close()
    existing = {"carts"}
    used: set[tuple[str, str, str]] = set()
    for req in server.requests:
        used |= permission(req, existing)
        if req.method == "PATCH":
            existing.add(req.path.rsplit("/", 1)[1])
    granted = {(g, r, v) for rule in BACKEND_RULES for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    assert used <= granted, used - granted
    assert granted - used == {("networking.istio.io", "destinationrules", "get")}
