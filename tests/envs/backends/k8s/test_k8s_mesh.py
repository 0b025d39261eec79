"""The k8s backend over real HTTP: a fake Kubernetes API and a fake Prometheus on 127.0.0.1.

The fakes check what the real servers would insist on (paths, verbs, content types, query
parameters, bodies, PromQL text) and answer with the errors the backend must survive or report
(409, 429, 500, 503, 404, 403, unreachable). No cluster is involved.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest
import yaml

from envs.backends.base import BackendError, LatencySpike, LoadSpec
from envs.backends.k8s import (
    APPLY_PATCH_CONTENT_TYPE,
    REPORT_MARKER,
    K8sMesh,
    RetryPolicy,
    istio_queries,
    service_stats,
)
from envs.backends.report import LoadReport
from envs.istio import ConnectionPool, DestinationRule, HttpSettings, TcpSettings, ValidationError
from envs.sockshop import SERVICES, Protocol, endpoint_names

NS = "sockshop-2"
DATA = Path(__file__).resolve().parents[4] / "tests" / "data"


def _strict(schema: Any) -> Any:
    """Objects with listed properties reject unknown fields (API-server strict validation)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


_DR_TEXT = (DATA / "istio-destinationrule-v1.schema.yaml").read_text()
#: Istio's DestinationRule v1 spec schema (tests/data, see its header): every apply body the
#: backend sends is checked against it by the fake API server.
DR_SPEC_VALIDATOR = jsonschema.Draft7Validator(_strict(json.loads("".join(
    ln for ln in _DR_TEXT.splitlines(True) if not ln.startswith("#")))["properties"]["spec"]))
DR_PATH = f"/apis/networking.istio.io/v1/namespaces/{NS}/destinationrules"
FAST = RetryPolicy(max_attempts=4, backoff_s=0.25, max_backoff_s=1.0)


# ---------------------------------------------------------------------------------------------
# A tiny threaded HTTP server
# ---------------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class Server:
    """Serves ``handle(request) -> Answer`` on 127.0.0.1 and records every request."""

    def __init__(self, handle: Callable[[Request], Answer]):
        self.requests: list[Request] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                req = Request(self.command, split.path, parse_qs(split.query),
                              {k.lower(): v for k, v in self.headers.items()},
                              self.rfile.read(length) if length else b"")
                server.requests.append(req)
                try:
                    ans = handle(req)
                except (AssertionError, jsonschema.ValidationError) as exc:  # a check failed
                    ans = Answer(599, {"message": f"fake server check failed: {exc}"})
                data = (ans.body if isinstance(ans.body, bytes) else
                        ans.body.encode() if isinstance(ans.body, str) else
                        json.dumps(ans.body).encode())
                self.send_response(ans.status)
                self.send_header("Content-Type", ans.content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in ans.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        for verb in ("GET", "POST", "PATCH", "PUT", "DELETE"):
            setattr(Handler, f"do_{verb}", Handler._serve)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------------------------------------
# The fake Kubernetes API
# ---------------------------------------------------------------------------------------------


def dr(name: str, pool: dict[str, Any] | None = None, host: str | None = None,
       **meta: Any) -> dict[str, Any]:
    """A stored DestinationRule with server-managed metadata."""
    spec: dict[str, Any] = {"host": host or name}
    if pool is not None:
        spec["trafficPolicy"] = {"connectionPool": pool}
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": NS, "resourceVersion": "7", "uid": "u-" + name,
                         "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z",
                         "managedFields": [{"manager": "meshtune", "operation": "Apply"}], **meta},
            "spec": spec}


class FakeKube:
    """DestinationRules, Jobs, pods and logs of one namespace, with injectable failures."""

    def __init__(self, rules: list[dict[str, Any]], locust_log: str = "",
                 job_polls_before_done: int = 1, job_outcome: str = "succeeded"):
        self.rules = {r["metadata"]["name"]: r for r in rules}
        self.failures: list[tuple[str, str, Answer]] = []  # (method, path prefix, answer)
        self.foreign_pool: dict[str, dict[str, Any]] = {}
        self.locust_log = locust_log
        self.job_polls_before_done = job_polls_before_done
        self.job_outcome = job_outcome
        self.jobs: dict[str, dict[str, Any]] = {}
        self.status_reads = 0

    def fail(self, method: str, path: str, status: int, times: int = 1,
             headers: dict[str, str] | None = None) -> None:
        for _ in range(times):
            self.failures.append((method, path, Answer(status, {
                "kind": "Status", "status": "Failure", "message": f"injected {status}",
                "code": status}, headers or {})))

    def __call__(self, req: Request) -> Answer:
        for i, (method, prefix, answer) in enumerate(self.failures):
            if req.method == method and req.path.startswith(prefix):
                del self.failures[i]
                return answer
        assert req.headers.get("accept", "").startswith("application/json"), req.headers
        if req.path == DR_PATH and req.method == "GET":
            return Answer(200, {"apiVersion": "networking.istio.io/v1",
                                "kind": "DestinationRuleList", "metadata": {},
                                "items": list(self.rules.values())})
        if req.path.startswith(DR_PATH + "/") and req.method == "PATCH":
            return self._apply(req)
        if req.path == f"/apis/batch/v1/namespaces/{NS}/jobs" and req.method == "POST":
            return self._create_job(req)
        if req.path.startswith(f"/apis/batch/v1/namespaces/{NS}/jobs/") and req.method == "GET":
            return self._job_status(req)
        if req.path == f"/api/v1/namespaces/{NS}/pods" and req.method == "GET":
            job = req.query["labelSelector"][0].removeprefix("job-name=")
            assert job in self.jobs, req.query
            return Answer(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {},
                                "items": [{"metadata": {"name": f"{job}-pod", "namespace": NS}}]})
        if req.path.startswith(f"/api/v1/namespaces/{NS}/pods/") and req.path.endswith("/log"):
            assert req.query.get("container") == ["locust"], req.query
            return Answer(200, self.locust_log, content_type="text/plain")
        return Answer(404, {"kind": "Status", "message": f"no route {req.method} {req.path}",
                            "code": 404})

    def _apply(self, req: Request) -> Answer:
        name = req.path.rsplit("/", 1)[1]
        assert req.headers["content-type"] == APPLY_PATCH_CONTENT_TYPE, req.headers
        assert req.query.get("fieldManager") == ["meshtune"], req.query
        assert req.query.get("force") == ["true"], req.query
        body = yaml.safe_load(req.body)
        assert body["apiVersion"] == "networking.istio.io/v1", body
        assert body["kind"] == "DestinationRule", body
        assert body["metadata"]["name"] == name, body
        assert body["metadata"]["namespace"] == NS, body
        assert "resourceVersion" not in body["metadata"], "an apply body must not pin a version"
        assert "managedFields" not in body["metadata"], body
        assert "status" not in body, body
        DR_SPEC_VALIDATOR.validate(body["spec"])  # Istio's CRD schema
        stored = json.loads(json.dumps(body))
        if name in self.foreign_pool:  # fields another manager owns survive the apply
            policy = stored["spec"].setdefault("trafficPolicy", {})
            pool = policy.setdefault("connectionPool", {})
            for section, values in self.foreign_pool[name].items():
                pool.setdefault(section, {}).update(values)
        stored["metadata"].update(resourceVersion="8", uid="u-" + name, managedFields=[
            {"manager": "meshtune", "operation": "Apply"},
            *([{"manager": "kubectl-client-side-apply", "operation": "Update"}]
              if name in self.foreign_pool else [])])
        self.rules[name] = stored
        return Answer(200, stored)

    def _create_job(self, req: Request) -> Answer:
        assert req.headers["content-type"] == "application/json", req.headers
        job = json.loads(req.body)
        assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1", job
        assert job["metadata"]["generateName"] == "locust-", job["metadata"]
        name = f"locust-{len(self.jobs) + 1:05d}"
        job["metadata"].update(name=name, uid="job-uid")
        self.jobs[name] = job
        return Answer(201, job)

    def _job_status(self, req: Request) -> Answer:
        parts = req.path.split("/")
        name = parts[-2] if parts[-1] == "status" else parts[-1]
        job = self.jobs[name]
        self.status_reads += 1
        done = self.status_reads > self.job_polls_before_done
        status = {self.job_outcome: 1} if done else {"active": 1}
        return Answer(200, {**job, "status": status})

    def patches(self, server: Server) -> list[tuple[str, dict[str, Any]]]:
        return [(r.path.rsplit("/", 1)[1], yaml.safe_load(r.body))
                for r in server.requests if r.method == "PATCH"]


@pytest.fixture
def kube() -> Any:
    servers: list[Server] = []

    def start(fake: FakeKube) -> Server:
        server = Server(fake)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.close()


class Sleeps:
    """Records the backend's sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def mesh(server_url: str, sleeps: Sleeps | None = None, **kw: Any) -> K8sMesh:
    kw.setdefault("prometheus_url", closed_port_url())
    return K8sMesh(2, kube_api_url=server_url, sleep=sleeps or Sleeps(), retry=FAST,
                   settle_s=3.0, **kw)


CARTS_POOL = ConnectionPool(tcp=TcpSettings(max_connections=5, connect_timeout_ms=1500),
                            http=HttpSettings(http1_max_pending_requests=7, max_retries=2))


# ---------------------------------------------------------------------------------------------
# DestinationRules: snapshot, apply, restore
# ---------------------------------------------------------------------------------------------


def test_open_snapshots_the_namespace_rules(kube: Any) -> None:
    fake = FakeKube([dr("carts", {"tcp": {"maxConnections": 100}}), dr("user")])
    server = kube(fake)
    m = mesh(server.url)
    assert [r.method + " " + r.path for r in server.requests] == [f"GET {DR_PATH}"]
    assert set(m.snapshot) == {"carts", "user"}
    carts = m.snapshot["carts"]
    assert carts["spec"]["trafficPolicy"]["connectionPool"] == {"tcp": {"maxConnections": 100}}
    assert "resourceVersion" not in carts["metadata"]
    assert "managedFields" not in carts["metadata"]
    m.close()
    assert [r.method for r in server.requests] == ["GET"]  # nothing changed, nothing to restore


def test_apply_is_server_side_apply_of_every_rule(kube: Any) -> None:
    fake = FakeKube([dr("carts", {"tcp": {"maxConnections": 100}}),
                     dr("user", {"http": {"maxRetries": 9}}, labels={"team": "a"})])
    server = kube(fake)
    sleeps = Sleeps()
    m = mesh(server.url, sleeps)
    m.apply([DestinationRule("carts", "carts.sock-shop.svc.cluster.local", CARTS_POOL),
             DestinationRule("catalogue", "catalogue", ConnectionPool(
                 http=HttpSettings(http2_max_requests=50)))])
    patches = dict(fake.patches(server))
    assert set(patches) == {"carts", "catalogue", "user"}
    # carts: the pool as Istio spells it, host moved to this replica's namespace
    assert patches["carts"]["spec"] == {
        "host": f"carts.{NS}.svc.cluster.local",
        "trafficPolicy": {"connectionPool": {
            "tcp": {"maxConnections": 5, "connectTimeout": "1500ms"},
            "http": {"http1MaxPendingRequests": 7, "maxRetries": 2}}}}
    # catalogue had no rule: created by the same apply
    assert patches["catalogue"]["spec"]["trafficPolicy"]["connectionPool"] == {
        "http": {"http2MaxRequests": 50}}
    # user was not named: it keeps its labels but loses its pool (Istio's defaults)
    assert patches["user"]["spec"] == {"host": "user"}
    assert patches["user"]["metadata"]["labels"] == {"team": "a"}
    assert sleeps.calls == [3.0]  # settle once for istiod's push
    # applying the same rules again sends nothing
    n = len(server.requests)
    m.apply([DestinationRule("carts", "carts", CARTS_POOL),
             DestinationRule("catalogue", "catalogue", ConnectionPool(
                 http=HttpSettings(http2_max_requests=50)))])
    assert len([r for r in server.requests[n:] if r.method == "PATCH"]) == 1  # carts' host form
    m.close()


def test_invalid_rules_are_rejected_before_any_request(kube: Any) -> None:
    server = kube(FakeKube([]))
    m = mesh(server.url)
    bad = DestinationRule("carts", "carts", ConnectionPool(tcp=TcpSettings(max_connections=-1)))
    with pytest.raises(ValidationError, match="maxConnections"):
        m.apply([bad])
    with pytest.raises(ValueError, match="not a SockShop service"):
        m.apply([DestinationRule("db", "postgres", CARTS_POOL)])
    with pytest.raises(ValueError, match="two DestinationRules"):
        m.apply([DestinationRule("carts", "carts", CARTS_POOL),
                  DestinationRule("carts", "carts", CARTS_POOL)])
    assert [r.method for r in server.requests] == ["GET"]
    m.close()


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


def test_retries_409_429_and_500_with_backoff(kube: Any) -> None:
    fake = FakeKube([])
    path = DR_PATH + "/carts"
    fake.fail("PATCH", path, 409)
    fake.fail("PATCH", path, 429, headers={"Retry-After": "2"})
    fake.fail("PATCH", path, 500)
    server = kube(fake)
    sleeps = Sleeps()
    m = mesh(server.url, sleeps)
    m.apply([DestinationRule("carts", "carts", CARTS_POOL)])
    assert [r.method for r in server.requests] == ["GET", "PATCH", "PATCH", "PATCH", "PATCH"]
    # backoff 0.25, then 0.5 raised to Retry-After 2 s, then 1.0; then the settle wait
    assert sleeps.calls == [0.25, 2.0, 1.0, 3.0]
    assert fake.rules["carts"]["spec"]["trafficPolicy"]["connectionPool"]["tcp"][
        "maxConnections"] == 5
    m.close()


def test_gives_up_after_max_attempts_and_names_the_rule(kube: Any) -> None:
    fake = FakeKube([])
    fake.fail("PATCH", DR_PATH + "/carts", 503, times=10)
    server = kube(fake)
    m = mesh(server.url)
    with pytest.raises(BackendError, match=rf"DestinationRule {NS}/carts failed after 4 "
                                           r"attempts: HTTP 503: injected 503"):
        m.apply([DestinationRule("carts", "carts", CARTS_POOL)])
    assert sum(r.method == "PATCH" for r in server.requests) == 4
    m.close()


@pytest.mark.parametrize("status", [403, 404, 422])
def test_client_errors_fail_at_once(kube: Any, status: int) -> None:
    fake = FakeKube([])
    fake.fail("GET", DR_PATH, status)
    server = kube(fake)
    with pytest.raises(BackendError, match=rf"listing DestinationRules in {NS} failed: "
                                           rf"HTTP {status}"):
        mesh(server.url)
    assert len(server.requests) == 1


def test_unreachable_api_is_a_backend_error() -> None:
    sleeps = Sleeps()
    with pytest.raises(BackendError, match="cannot reach the Kubernetes API"):
        K8sMesh(2, kube_api_url=closed_port_url(), sleep=sleeps, retry=FAST)
    assert sleeps.calls == [0.25, 0.5, 1.0]


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


def test_fields_owned_by_another_manager_are_detected(kube: Any) -> None:
    fake = FakeKube([dr("carts", {"tcp": {"maxConnections": 100}})])
    fake.foreign_pool["carts"] = {"tcp": {"maxConnections": 100}}
    server = kube(fake)
    m = mesh(server.url)
    with pytest.raises(BackendError, match="kubectl-client-side-apply"):
        m.apply([DestinationRule("carts", "carts", ConnectionPool(
            http=HttpSettings(max_retries=1)))])
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

START, END = 1_800_000_000.0, 1_800_000_040.4
LOCUST_REPORT = {
    "start_time": START, "end_time": END, "total_requests": 180, "seed": 7,
    "endpoints": [
        {"method": "GET", "name": "/catalogue", "num_requests": 20, "num_failures": 0,
         "avg_ms": 41.5, "min_ms": 10.0, "max_ms": 120.0, "median_ms": 38.0, "p95_ms": 90.0,
         "p99_ms": 110.0},
        {"method": "POST", "name": "/orders", "num_requests": 20, "num_failures": 5,
         "avg_ms": 300.0, "min_ms": 100.0, "max_ms": 900.0, "median_ms": 280.0, "p95_ms": 800.0,
         "p99_ms": 880.0},
    ],
}
LOCUST_LOG = ("[2026] INFO/locust.main: Starting Locust 2.47.0\nName  # reqs\n"
              + REPORT_MARKER + json.dumps(LOCUST_REPORT) + "\n[2026] INFO shutting down\n")
HTTP = [s.name for s in SERVICES if s.protocol is Protocol.HTTP]
TCP = [s.name for s in SERVICES if s.protocol is Protocol.TCP]
CALLED_HTTP = [s for s in HTTP if s != "queue-master"]  # queue-master is off the request path


def sample(labels: dict[str, str], value: float) -> dict[str, Any]:
    return {"metric": labels, "value": [END + 10, repr(value)]}


class FakePrometheus:
    """Answers the backend's PromQL, checking each query's text against what Istio's metrics
    need; ``empty`` names queries that answer no series, ``errors`` status codes to answer
    first."""

    def __init__(self, window_s: int, eval_time: float):
        self.window = f"[{window_s}s]"
        self.eval_time = f"{eval_time:.3f}"
        self.empty: set[str] = set()
        self.errors: list[int] = []
        self.seen: list[str] = []

    def __call__(self, req: Request) -> Answer:
        assert req.path == "/api/v1/query", req.path
        if self.errors:
            return Answer(self.errors.pop(0), {"status": "error", "error": "injected"})
        query = req.query["query"][0]
        assert req.query["time"] == [self.eval_time], req.query
        assert self.window in query, query
        kind = self.classify(query)
        self.seen.append(kind)
        if kind in self.empty:
            return Answer(200, {"status": "success",
                                "data": {"resultType": "vector", "result": []}})
        return Answer(200, {"status": "success",
                            "data": {"resultType": "vector", "result": self.result(kind)}})

    def classify(self, q: str) -> str:
        if "envoy_cluster" in q:
            assert f'namespace="{NS}"' in q, q
            assert r'cluster_name=~"outbound\\|[0-9]+\\|\\|[^.]+\\.' + NS in q, q
            assert q.startswith("sum by (cluster_name) (increase(envoy_cluster_upstream_rq_retry{")
            return "retries"
        assert f'reporter="source",destination_service_namespace="{NS}"' in q, q
        proto = "tcp" if "istio_tcp_connections_opened_total" in q else "http"
        if q.startswith("histogram_quantile(0.99, sum by (destination_service_name, le) "
                        "(rate(istio_request_duration_milliseconds_bucket{"):
            return "http_p99"
        assert q.startswith("sum by (destination_service_name) (increase("), q
        if ' or (0 * ' not in q:
            return f"{proto}_requests"
        if 'response_flags=~"(.*,)?UO(,.*)?"' in q:
            return f"{proto}_uo"
        if 'response_flags=~"(.*,)?UF(,.*)?"' in q:
            return f"{proto}_uf"
        if proto == "http":
            assert 'response_code!~"[123].."' in q, q
        else:
            assert 'response_flags!="-"' in q, q
        return f"{proto}_failed"

    def result(self, kind: str) -> list[dict[str, Any]]:
        def per(services: list[str], f: Callable[[int], float]) -> list[dict[str, Any]]:
            return [sample({"destination_service_name": s}, f(i)) for i, s in
                    enumerate(services)]

        def clusters(services: list[str], f: Callable[[int], float]) -> list[dict[str, Any]]:
            out = [sample({"cluster_name": f"outbound|{p}||{s}.{NS}.svc.cluster.local"}, f(i))
                   for i, (s, p) in enumerate((s.name, s.port) for s in SERVICES
                                              if s.name in services)]
            # another namespace's cluster must be ignored
            out.append(sample({"cluster_name": "outbound|80||carts.sockshop-9.svc.cluster.local"},
                              999.0))
            return out

        return {
            "http_requests": lambda: per(CALLED_HTTP, lambda i: 100.0 + i),
            "http_failed": lambda: per(CALLED_HTTP, lambda i: 10.0 if i == 0 else 0.0),
            "http_uo": lambda: per(CALLED_HTTP, lambda i: 4.0 if i == 0 else 0.0),
            "http_uf": lambda: per(CALLED_HTTP, lambda i: 0.0),
            "http_p99": lambda: per(CALLED_HTTP, lambda i: 250.0 + i),
            "tcp_requests": lambda: per(TCP, lambda i: 30.4),
            "tcp_failed": lambda: per(TCP, lambda i: 0.0),
            "tcp_uo": lambda: per(TCP, lambda i: 0.0),
            "tcp_uf": lambda: per(TCP, lambda i: 1.0),
            "retries": lambda: clusters(HTTP + TCP, lambda i: 3.0 if i == 0 else 0.0),
        }[kind]()


class Clock:
    """Unix time that moves only when the backend sleeps."""

    def __init__(self, now: float, sleeps: Sleeps):
        self.now, self.sleeps, self.seen = now, sleeps, 0

    def __call__(self) -> float:
        self.now += sum(self.sleeps.calls[self.seen:])
        self.seen = len(self.sleeps.calls)
        return self.now


@pytest.fixture
def load_setup(kube: Any) -> Any:
    fake = FakeKube([], locust_log=LOCUST_LOG, job_polls_before_done=2)
    server = kube(fake)
    prom = FakePrometheus(window_s=41, eval_time=END + 10.0)
    prom_server = Server(prom)
    sleeps = Sleeps()
    m = K8sMesh(2, kube_api_url=server.url, prometheus_url=prom_server.url, sleep=sleeps,
                clock=Clock(END - 5.0, sleeps), retry=FAST, metrics_lag_s=10.0,
                poll_interval_s=2.0)
    yield m, fake, server, prom, sleeps
    m.close()
    prom_server.close()


def test_run_load_creates_a_job_and_reads_istio_metrics(load_setup: Any) -> None:
    m, fake, _, prom, sleeps = load_setup
    report = m.run_load(LoadSpec(users=10, requests=180, hatch_rate_per_s=5.0), seed=7)
    job = next(iter(fake.jobs.values()))
    container = job["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("-u") + 1] == "10" and args[args.index("-r") + 1] == "5"
    assert args[args.index("--host") + 1] == f"http://front-end.{NS}.svc.cluster.local"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {"MESHTUNE_TOTAL_REQUESTS": "180", "MESHTUNE_SEED": "7",
                   "MESHTUNE_QUIT_SIDECAR": "1", "MESHTUNE_DRAIN_S": "15"}
    # polled until done, then waited for the metrics to settle: END + 10 s lag
    assert sleeps.calls[:2] == [2.0, 2.0]
    assert prom.seen and set(prom.seen) == {
        "http_requests", "http_failed", "http_uo", "http_uf", "http_p99", "tcp_requests",
        "tcp_failed", "tcp_uo", "tcp_uf", "retries"}
    assert report.backend == "k8s" and report.users == 10
    assert report.duration_s == pytest.approx(40.4)
    orders = report.endpoints["POST /orders"]
    assert (orders.num_requests, orders.num_failures, orders.p99_ms) == (20, 5, 880.0)
    assert orders.rps == pytest.approx(20 / 40.4)
    carts = report.services["carts"]
    assert (carts.num_requests, carts.uo_count, carts.uf_count) == (100, 4, 0)
    assert carts.error_ratio == pytest.approx(0.1)
    assert carts.p99_ms == 250.0 and carts.retry_count == 3  # not sockshop-9's 999
    catalogue = report.services["catalogue"]
    assert (catalogue.num_requests, catalogue.error_ratio, catalogue.p99_ms) == (101, 0.0, 251.0)
    assert report.services["queue-master"] == report.services["queue-master"].__class__(
        "queue-master", 0, None, 0.0, 0, 0, 0)
    mongo = report.services["carts-db"]
    assert (mongo.num_requests, mongo.uf_count, mongo.p99_ms) == (30, 1, None)
    assert set(report.services) == {s.name for s in SERVICES}
    assert set(report.endpoints) <= set(endpoint_names())  # the simulator's endpoint names
    assert report.extra["job"] == "locust-00001"
    assert LoadReport.from_dict(json.loads(report.to_json())) == report  # no NaN, round-trips


def test_empty_prometheus_answer_is_an_error(load_setup: Any) -> None:
    m, _, _, prom, _ = load_setup
    prom.empty.add("retries")
    with pytest.raises(BackendError, match=r"Prometheus query retries for sockshop-2 failed "
                                           r"after 4 attempts: no series for sum by"):
        m.run_load(LoadSpec(users=10, requests=180), seed=7)
    assert prom.seen.count("retries") == 4


def test_prometheus_errors_are_retried_then_succeed(load_setup: Any) -> None:
    m, _, _, prom, _ = load_setup
    prom.errors = [503, 500]
    report = m.run_load(LoadSpec(users=10, requests=180), seed=7)
    assert report.services["carts"].num_requests == 100


def test_prometheus_bad_query_fails_at_once(load_setup: Any) -> None:
    m, _, _, prom, _ = load_setup
    prom.errors = [400]
    with pytest.raises(BackendError, match="HTTP Status Code 400"):
        m.run_load(LoadSpec(users=10, requests=180), seed=7)
    assert prom.seen == []


def test_unreachable_prometheus_is_an_error(kube: Any) -> None:
    server = kube(FakeKube([], locust_log=LOCUST_LOG))
    sleeps = Sleeps()
    m = K8sMesh(2, kube_api_url=server.url, prometheus_url=closed_port_url(), sleep=sleeps,
                clock=Clock(END, sleeps), retry=FAST)
    with pytest.raises(BackendError, match="cannot reach Prometheus"):
        m.run_load(LoadSpec(users=10, requests=180), seed=7)
    m.close()


def test_failed_job_is_an_error_with_its_log(kube: Any) -> None:
    server = kube(FakeKube([], locust_log="Traceback: locustfile broke\n", job_outcome="failed"))
    m = mesh(server.url)
    with pytest.raises(BackendError, match=r"(?s)Locust Job sockshop-2/locust-00001 failed.*"
                                           r"locustfile broke"):
        m.run_load(LoadSpec(users=10, requests=180), seed=7)
    m.close()


def test_job_without_report_line_is_an_error(kube: Any) -> None:
    server = kube(FakeKube([], locust_log="no report here\n"))
    m = mesh(server.url)
    with pytest.raises(BackendError, match="no MESHTUNE_LOCUST_REPORT line"):
        m.run_load(LoadSpec(users=10, requests=180), seed=7)
    m.close()


def test_job_timeout_is_an_error(kube: Any) -> None:
    server = kube(FakeKube([], job_polls_before_done=10**9))
    sleeps = Sleeps()
    m = K8sMesh(2, kube_api_url=server.url, prometheus_url=closed_port_url(), sleep=sleeps,
                clock=Clock(0.0, sleeps), retry=FAST, load_timeout_s=10.0, poll_interval_s=30.0)
    with pytest.raises(BackendError, match="did not finish within 190 s"):
        m.run_load(LoadSpec(users=10, requests=180), seed=7)
    m.close()


def test_unsupported_loads_are_refused(kube: Any) -> None:
    server = kube(FakeKube([]))
    m = mesh(server.url)
    with pytest.raises(BackendError, match="closed-loop"):
        m.run_load(LoadSpec(users=0, requests=10, mode="open", arrival_rate_rps=5.0), seed=0)
    with pytest.raises(BackendError, match="cannot inject faults"):
        m.run_load(LoadSpec(users=1, requests=10,
                            faults=(LatencySpike("carts", 0.0, 1.0, 2.0),)), seed=0)
    assert not any(r.method == "POST" for r in server.requests)
    m.close()


# ---------------------------------------------------------------------------------------------
# Pure parts
# ---------------------------------------------------------------------------------------------


def test_called_service_without_p99_is_an_error() -> None:
    results = {k: [] for k in istio_queries(NS, 30)}
    results["http_requests"] = [sample({"destination_service_name": "carts"}, 12.0)]
    for k in ("http_failed", "http_uo", "http_uf"):
        results[k] = [sample({"destination_service_name": "carts"}, 0.0)]
    results["http_p99_ms"] = [sample({"destination_service_name": "carts"}, math.nan)]
    with pytest.raises(BackendError, match="12 http requests to carts in sockshop-2 but no p99"):
        service_stats(results, NS)
    results["http_p99_ms"] = [sample({"destination_service_name": "carts"}, 80.0)]
    stats = service_stats(results, NS)
    assert stats["carts"].p99_ms == 80.0 and stats["user"].num_requests == 0


def test_queries_refuse_a_namespace_that_is_not_a_label() -> None:
    with pytest.raises(ValueError, match="DNS-1123"):
        istio_queries('x"} or vector(1) #', 30)


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
    from envs.cli.cluster import BACKEND_RULES

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


def test_retry_policy_reraises_bugs_and_caps_retry_after() -> None:
    from envs.backends.k8s import MAX_RETRY_AFTER_S, _TransientError

    sleeps = Sleeps()

    def bug() -> None:
        raise TypeError("a bug, not an API error")

    with pytest.raises(TypeError, match="a bug"):
        FAST.run("call", bug, lambda exc: None, sleeps)
    calls = iter([_TransientError("busy", retry_after_s=3600.0)])

    def busy_once() -> str:
        exc = next(calls, None)
        if exc is not None:
            raise exc
        return "ok"

    assert FAST.run("call", busy_once, lambda exc: None, sleeps) == "ok"
    assert sleeps.calls == [MAX_RETRY_AFTER_S]
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
