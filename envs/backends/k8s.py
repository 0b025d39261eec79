"""The ``k8s`` backend: one SockShop namespace (``sockshop-K``) on a real Kubernetes cluster.

What it does, and through which API (no shell, no ``kubectl``):

* **DestinationRules** through the Kubernetes Python client: every write is a server-side apply
  (``PATCH`` with ``Content-Type: application/apply-patch+yaml``, ``fieldManager=meshtune``,
  ``force=true``) on ``/apis/networking.istio.io/v1/namespaces/{ns}/destinationrules/{name}``.
  When the backend opens it lists the namespace's DestinationRules (the *snapshot*); ``close``
  — also from ``atexit`` and from ``with K8sMesh(...)`` on an exception — applies the snapshot
  back. RBAC grants no ``delete``: a rule meshtune created and must take away is applied
  without ``trafficPolicy.connectionPool`` (Istio's defaults), which for connection pools is
  the same as no rule. After each apply the answer is checked: if another field manager still
  owns connection-pool fields meshtune left out, the rule is not what was asked and the apply
  fails (re-apply the base with ``--server-side --field-manager=meshtune``).
* **Load** through Locust as an in-cluster ``batch/v1`` Job the backend creates in the
  namespace and waits for (:func:`locust_job_manifest`; the locustfile is the ConfigMap
  ``locustfile`` that ``meshtune cluster render`` writes). The Job's pod has a sidecar, like the
  ingress gateway it stands in for, so the front-end's rule acts on its calls and every hop is
  reported by a source sidecar. The locustfile prints one ``MESHTUNE_LOCUST_REPORT {json}`` line;
  the backend reads it from the pod's log.
* **Metrics** through ``prometheus-api-client`` on Istio's standard metrics, scoped to the
  namespace, over the load's own time window shifted by ``metrics_lag_s`` (scrape interval +
  Envoy's stats flush): request counts and failures with ``reporter="source"`` (client-side
  503s never reach the destination's proxy), UO / UF from ``response_flags``, p99 with
  ``histogram_quantile`` over ``istio_request_duration_milliseconds_bucket``. TCP services
  (MongoDB, MySQL, Redis, AMQP) count connections (``istio_tcp_connections_opened_total``) and,
  as in the simulator, have no p99 (Istio has no TCP request duration). Retries come from
  Envoy's ``envoy_cluster_upstream_rq_retry``, exported because the rendered pods carry a
  ``proxyStatsMatcher`` annotation. An empty or failed query is an error.
* **Health**: ``GET {ingress_url}/catalogue`` must answer 200.

Every call is retried with exponential backoff on 409, 429 (``Retry-After`` honoured), 5xx,
an unreachable server and an empty Prometheus answer; then a :class:`BackendError` names what
failed. Other errors (400, 403, 404, 422) fail at once.

The kubernetes client and prometheus-api-client are imported only when a K8sMesh is built, so
the simulator path never loads them.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import json
import math
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

from envs import istio
from envs.backends.base import BackendError, LoadSpec
from envs.backends.report import EndpointStats, LoadReport, ServiceStats
from envs.sockshop import ENTRY_SERVICE, SERVICE_BY_NAME, SERVICE_NAMES, SERVICES, Protocol

T = TypeVar("T")

DR_GROUP = "networking.istio.io"
DR_VERSION = "v1"
DR_PLURAL = "destinationrules"
FIELD_MANAGER = "meshtune"
APPLY_PATCH_CONTENT_TYPE = "application/apply-patch+yaml"

DEFAULT_NAMESPACE_PREFIX = "sockshop-"
#: Where ``meshtune cluster render`` puts Prometheus (namespace ``meshtune-monitoring``).
DEFAULT_PROMETHEUS_URL = "http://prometheus.meshtune-monitoring.svc:9090"
#: The front-end inside the cluster; ``{namespace}`` is filled in.
DEFAULT_INGRESS_URL = "http://front-end.{namespace}.svc.cluster.local"

LOCUST_IMAGE = "locustio/locust:2.47.0"
LOCUSTFILE_CONFIGMAP = "locustfile"
LOCUSTFILE_KEY = "locustfile.py"
LOAD_RUNNER_SERVICE_ACCOUNT = "load-runner"
LOCUST_CONTAINER = "locust"
LOAD_JOB_LABEL = "meshtune.io/load"
#: Time a load Job may take beyond ``load_timeout_s``: scheduling, image pull, sidecar drain.
JOB_SLACK_S = 180
#: The marker of the one line of the Locust pod's log that carries the report.
REPORT_MARKER = "MESHTUNE_LOCUST_REPORT "

#: Pod annotation that makes the sidecars export the Envoy stats the backend queries.
PROXY_STATS_ANNOTATION = "proxy.istio.io/config"
PROXY_STATS_CONFIG = {
    "proxyStatsMatcher": {
        "inclusionSuffixes": ["upstream_rq_retry", "upstream_rq_retry_overflow",
                              "upstream_rq_pending_overflow"],
    },
}

#: Server-managed metadata that must not go back into an apply body.
_SERVER_METADATA = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields",
                    "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds")
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_FQDN = re.compile(r"^(?P<svc>[a-z0-9-]+)\.(?P<ns>[a-z0-9-]+)\.svc\.cluster\.local$")


# ---------------------------------------------------------------------------------------------
# Retries
# ---------------------------------------------------------------------------------------------


#: The longest server-requested ``Retry-After`` wait honoured, seconds.
MAX_RETRY_AFTER_S = 60.0


class _TransientError(Exception):
    """An error worth retrying; ``retry_after_s`` is the server's wish, if it said one."""

    def __init__(self, detail: str, retry_after_s: float | None = None):
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class _PermanentError(Exception):
    """An error that retrying cannot fix (bad request, forbidden, not found, invalid)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: waits ``backoff_s``, 2·``backoff_s``, … capped at ``max_backoff_s``
    (or the server's ``Retry-After`` when longer), at most ``max_attempts`` calls in all."""

    max_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("backoff_s and max_backoff_s must be non-negative")

    def run(self, what: str, call: Callable[[], T],
            classify: Callable[[Exception], Exception | None],
            sleep: Callable[[float], None]) -> T:
        """``call()`` until it succeeds; ``classify`` turns a client's exception into
        _TransientError / _PermanentError (None: not a client error, e.g. a bug — re-raised
        as it is). Raises BackendError naming ``what`` when it gives up. A ``Retry-After``
        longer than the backoff is honoured up to :data:`MAX_RETRY_AFTER_S`."""
        delay = self.backoff_s
        for attempt in range(1, self.max_attempts + 1):
            try:
                return call()
            except Exception as exc:  # classified right below; the rest is re-raised
                kind = exc if isinstance(exc, (_TransientError, _PermanentError)) else classify(exc)
                if kind is None:
                    raise
                if isinstance(kind, _PermanentError):
                    raise BackendError(f"{what} failed: {kind}") from exc
                if attempt == self.max_attempts:
                    raise BackendError(f"{what} failed after {attempt} attempts: "
                                       f"{kind}") from exc
                wait = min(delay, self.max_backoff_s)
                retry_after = getattr(kind, "retry_after_s", None)
                if retry_after is not None:
                    wait = max(wait, min(retry_after, MAX_RETRY_AFTER_S))
                sleep(wait)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover


def _retry_after_s(headers: Any) -> float | None:
    """The ``Retry-After`` header in seconds, if present and numeric."""
    if not headers:
        return None
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _classify_kube(exc: Exception) -> Exception | None:
    """Kubernetes client errors: 409/429/5xx and connection errors are transient."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message = exc.reason or ""
        with contextlib.suppress(ValueError, TypeError):
            message = json.loads(exc.body or "").get("message", message)
        detail = f"HTTP {status}: {message}"
        if status in (409, 429) or status >= 500 or status == 0:
            return _TransientError(detail, _retry_after_s(exc.headers))
        return _PermanentError(detail)
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return _TransientError(f"cannot reach the Kubernetes API: {exc}")
    return None


def _classify_prometheus(exc: Exception) -> Exception | None:
    """Prometheus errors: 429/5xx, connection errors and empty answers are transient."""
    import requests
    from prometheus_api_client.exceptions import PrometheusApiClientException

    if isinstance(exc, PrometheusApiClientException):
        match = re.search(r"HTTP Status Code (\d+)", str(exc))
        status = int(match.group(1)) if match else 0
        if status == 429 or status >= 500:
            return _TransientError(str(exc))
        return _PermanentError(str(exc))
    if isinstance(exc, requests.exceptions.RequestException):
        return _TransientError(f"cannot reach Prometheus: {exc}")
    return None


# ---------------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------------


def clean_document(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A DestinationRule as read from the API, reduced to what an apply may send back: no
    status, no server-managed metadata, no kubectl last-applied annotation."""
    out = {k: copy.deepcopy(v) for k, v in doc.items() if k in ("apiVersion", "kind", "spec")}
    meta = {k: copy.deepcopy(v) for k, v in (doc.get("metadata") or {}).items()
            if k not in _SERVER_METADATA}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != _LAST_APPLIED}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    out["metadata"] = meta
    out["apiVersion"] = f"{DR_GROUP}/{DR_VERSION}"
    out["kind"] = istio.KIND
    return out


def without_connection_pool(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with ``spec.trafficPolicy.connectionPool`` removed: Istio's default pools."""
    out = copy.deepcopy(dict(doc))
    spec = out.setdefault("spec", {})
    policy = spec.get("trafficPolicy")
    if isinstance(policy, dict):
        policy.pop("connectionPool", None)
        if not policy:
            spec.pop("trafficPolicy", None)
    return out


def connection_pool_of(doc: Mapping[str, Any]) -> Any:
    """``spec.trafficPolicy.connectionPool`` of a document (None when absent)."""
    policy = (doc.get("spec") or {}).get("trafficPolicy") or {}
    return policy.get("connectionPool") if isinstance(policy, dict) else None


def rule_documents(rules: Sequence[istio.DestinationRule], namespace: str) -> list[dict[str, Any]]:
    """The apply bodies of ``rules`` in ``namespace``, validated as istiod's webhook would.

    A host naming a SockShop service in another namespace (``carts.sock-shop.svc.cluster
    .local``) is moved to ``namespace``; short hosts resolve in the rule's namespace already.

    Raises:
        istio.ValidationError: a rule istiod would reject.
        ValueError: a host that is not a SockShop service, or two rules with the same name.
    """
    docs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for rule in rules:
        if rule.service not in SERVICE_BY_NAME:
            raise ValueError(f"DestinationRule {rule.name!r}: host {rule.host!r} is not a "
                             f"SockShop service (one of {', '.join(SERVICE_NAMES)})")
        if rule.name in seen:
            raise ValueError(f"two DestinationRules are named {rule.name!r}")
        seen.add(rule.name)
        doc = clean_document(istio.to_document(rule))
        doc["metadata"]["namespace"] = namespace
        fqdn = _FQDN.match(rule.host)
        if fqdn and fqdn["ns"] != namespace:
            doc["spec"]["host"] = f"{fqdn['svc']}.{namespace}.svc.cluster.local"
        elif "." in rule.host and not fqdn:
            raise ValueError(f"DestinationRule {rule.name!r}: host {rule.host!r} is neither a "
                             "short service name nor <service>.<namespace>.svc.cluster.local")
        docs.append(doc)
    if docs:  # the webhook's rules, on exactly what will be sent
        istio.parse_rules(yaml.safe_dump_all(docs, sort_keys=False), source="apply")
    return docs


def neutral_document(name: str, host: str, namespace: str) -> dict[str, Any]:
    """A DestinationRule with no traffic policy: Istio's default connection pools."""
    return {"apiVersion": f"{DR_GROUP}/{DR_VERSION}", "kind": istio.KIND,
            "metadata": {"name": name, "namespace": namespace}, "spec": {"host": host}}


# ---------------------------------------------------------------------------------------------
# The load Job
# ---------------------------------------------------------------------------------------------


def locust_job_manifest(namespace: str, users: int, requests: int, seed: int,
                        hatch_rate_per_s: float, *, image: str = LOCUST_IMAGE,
                        run_time_limit_s: int = 900, sidecar_drain_s: int = 15,
                        generate_name: str = "locust-",
                        name: str | None = None) -> dict[str, Any]:
    """The ``batch/v1`` Job that runs the reference load test once against the front-end.

    ``users`` concurrent users, ``requests`` requests in total (the locustfile stops the runner
    there), item choices seeded with ``seed``. Locust's own ``--run-time`` and the Job's
    ``activeDeadlineSeconds`` bound a run that never reaches ``requests``. The pod carries the
    Istio sidecar; the proxy is up before Locust starts (``holdApplicationUntilProxyStarts``) and
    the locustfile asks it to exit at the end so the Job completes — ``sidecar_drain_s`` after
    the load, so that Prometheus scrapes the sidecar's final counters first.
    """
    if users <= 0 or requests <= 0 or hatch_rate_per_s <= 0 or run_time_limit_s <= 0:
        raise ValueError("users, requests, hatch_rate_per_s and run_time_limit_s must be "
                         f"positive, got {users}, {requests}, {hatch_rate_per_s}, "
                         f"{run_time_limit_s}")
    proxy_config = {"holdApplicationUntilProxyStarts": True, **PROXY_STATS_CONFIG}
    meta: dict[str, Any] = {"namespace": namespace,
                            "labels": {"app": "locust", LOAD_JOB_LABEL: "true"}}
    if name is not None:
        meta["name"] = name
    else:
        meta["generateName"] = generate_name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": run_time_limit_s + sidecar_drain_s + 120,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {
                    "labels": {"app": "locust", LOAD_JOB_LABEL: "true"},
                    "annotations": {PROXY_STATS_ANNOTATION: json.dumps(proxy_config)},
                },
                "spec": {
                    "serviceAccountName": LOAD_RUNNER_SERVICE_ACCOUNT,
                    "automountServiceAccountToken": False,
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": LOCUST_CONTAINER,
                        "image": image,
                        "args": [
                            "-f", f"/mnt/locust/{LOCUSTFILE_KEY}", "--headless",
                            "--host", f"http://{ENTRY_SERVICE}.{namespace}.svc.cluster.local",
                            "-u", str(users), "-r", _number(hatch_rate_per_s),
                            "--run-time", f"{run_time_limit_s}s",
                            "--exit-code-on-error", "0", "--only-summary",
                        ],
                        "env": [
                            {"name": "MESHTUNE_TOTAL_REQUESTS", "value": str(requests)},
                            {"name": "MESHTUNE_SEED", "value": str(seed)},
                            {"name": "MESHTUNE_QUIT_SIDECAR", "value": "1"},
                            {"name": "MESHTUNE_DRAIN_S", "value": str(sidecar_drain_s)},
                        ],
                        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"},
                                      "limits": {"cpu": "1", "memory": "512Mi"}},
                        "volumeMounts": [{"name": "locustfile", "mountPath": "/mnt/locust",
                                          "readOnly": True}],
                    }],
                    "volumes": [{"name": "locustfile",
                                 "configMap": {"name": LOCUSTFILE_CONFIGMAP}}],
                },
            },
        },
    }


def _number(value: float) -> str:
    """A number as a short command-line string (``5`` rather than ``5.0``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def parse_locust_report(log: str) -> dict[str, Any]:
    """The JSON report of the last ``MESHTUNE_LOCUST_REPORT`` line of a Locust pod's log.

    Raises:
        BackendError: no such line, or it is not the expected JSON.
    """
    lines = [ln for ln in log.splitlines() if ln.startswith(REPORT_MARKER)]
    if not lines:
        tail = "\n".join(log.splitlines()[-20:])
        raise BackendError(f"the Locust log has no {REPORT_MARKER.strip()} line; its end:\n"
                           f"{tail}")
    try:
        report = json.loads(lines[-1][len(REPORT_MARKER):])
        float(report["start_time"]), float(report["end_time"])
        list(report["endpoints"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BackendError(f"malformed Locust report line: {lines[-1][:200]!r}") from exc
    return report


def endpoint_stats(report: Mapping[str, Any]) -> tuple[dict[str, EndpointStats], float]:
    """Locust's rows as :class:`EndpointStats` (keyed ``METHOD name``) and the run's duration."""
    duration_s = float(report["end_time"]) - float(report["start_time"])
    if duration_s <= 0:
        raise BackendError(f"the Locust report has a non-positive duration ({duration_s} s)")
    out: dict[str, EndpointStats] = {}
    for row in report["endpoints"]:
        key = f"{row['method']} {row['name']}"
        n = int(row["num_requests"])
        times: dict[str, float | None] = {}
        for field in ("avg_ms", "min_ms", "max_ms", "median_ms", "p95_ms", "p99_ms"):
            value = row.get(field)
            if n > 0 and value is None:
                raise BackendError(f"Locust row {key!r} has {n} requests but no {field}")
            times[field] = float(value) if n > 0 else None
        out[key] = EndpointStats(name=key, num_requests=n, num_failures=int(row["num_failures"]),
                                 rps=n / duration_s, **times)
    return out, duration_s


# ---------------------------------------------------------------------------------------------
# Istio metrics
# ---------------------------------------------------------------------------------------------

HTTP_SERVICES = tuple(s.name for s in SERVICES if s.protocol is Protocol.HTTP)
TCP_SERVICES = tuple(s.name for s in SERVICES if s.protocol is Protocol.TCP)


def _flag(flag: str) -> str:
    """A PromQL regex matching a ``response_flags`` value that contains ``flag``."""
    return f'response_flags=~"(.*,)?{flag}(,.*)?"'


def istio_queries(namespace: str, window_s: int) -> dict[str, str]:
    """The PromQL queries of one load run, by name.

    ``*_requests``/``*_failed``/``*_uo``/``*_uf`` are per ``destination_service_name``;
    ``*_failed``, ``*_uo`` and ``*_uf`` add ``0 *`` the totals so a service that was called but
    never failed reads 0 rather than being absent. ``retries`` is per Envoy ``cluster_name`` of
    the callers' sidecars in the namespace.
    """
    w = f"[{int(window_s)}s]"
    http = f'reporter="source",destination_service_namespace="{namespace}"'
    by = "sum by (destination_service_name)"

    def http_count(extra: str = "") -> str:
        return f"{by} (increase(istio_requests_total{{{http}{extra}}}{w}))"

    def tcp_count(extra: str = "") -> str:
        return f"{by} (increase(istio_tcp_connections_opened_total{{{http}{extra}}}{w}))"

    # Envoy cluster names of the namespace's services: outbound|80||carts.<ns>.svc.cluster.local
    # (a PromQL string, so every regex backslash is doubled; a namespace is a DNS label, so it
    # has no regex metacharacter).
    if not _DNS_LABEL.match(namespace):
        raise ValueError(f"namespace must be a DNS-1123 label, got {namespace!r}")
    ns_re = namespace
    cluster = (f'namespace="{namespace}",cluster_name=~"outbound\\\\|[0-9]+\\\\|\\\\|[^.]+'
               f'\\\\.{ns_re}\\\\.svc\\\\.cluster\\\\.local"')
    failed_http = ',response_code!~"[123].."'
    failed_tcp = ',response_flags!="-"'
    return {
        "http_requests": http_count(),
        "http_failed": f"{http_count(failed_http)} or (0 * {http_count()})",
        "http_uo": f"{http_count(',' + _flag('UO'))} or (0 * {http_count()})",
        "http_uf": f"{http_count(',' + _flag('UF'))} or (0 * {http_count()})",
        "http_p99_ms": (f"histogram_quantile(0.99, sum by (destination_service_name, le) "
                        f"(rate(istio_request_duration_milliseconds_bucket{{{http}}}{w})))"),
        "tcp_requests": tcp_count(),
        "tcp_failed": f"{tcp_count(failed_tcp)} or (0 * {tcp_count()})",
        "tcp_uo": f"{tcp_count(',' + _flag('UO'))} or (0 * {tcp_count()})",
        "tcp_uf": f"{tcp_count(',' + _flag('UF'))} or (0 * {tcp_count()})",
        "retries": (f"sum by (cluster_name) (increase(envoy_cluster_upstream_rq_retry"
                    f"{{{cluster}}}{w}))"),
    }


def _cluster_service(cluster_name: str, namespace: str) -> str | None:
    """``carts`` for ``outbound|80||carts.<namespace>.svc.cluster.local``, else None."""
    match = re.fullmatch(r"outbound\|\d+\|\|([^.]+)\.([^.]+)\.svc\.cluster\.local", cluster_name)
    if match and match.group(2) == namespace:
        return match.group(1)
    return None


def _float(sample: Mapping[str, Any], query_name: str) -> float:
    """The value of one instant-vector sample."""
    try:
        return float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise BackendError(f"Prometheus answered {query_name} with a malformed sample "
                           f"{sample!r}") from exc


def service_stats(results: Mapping[str, Sequence[Mapping[str, Any]]],
                  namespace: str) -> dict[str, ServiceStats]:
    """Turn the answers to :func:`istio_queries` into one :class:`ServiceStats` per service.

    A service with no series at all was not called in the window (0 requests, no p99). An HTTP
    service that was called must have a p99 and failure counts, a TCP service its failure
    counts; otherwise the answer is inconsistent and a BackendError says so. TCP services have
    no p99 (Istio has no TCP request duration), as in the simulator.
    """
    def by_service(name: str) -> dict[str, float]:
        return {s["metric"].get("destination_service_name", ""): _float(s, name)
                for s in results[name]}

    retries: dict[str, float] = {}
    for s in results["retries"]:
        svc = _cluster_service(s["metric"].get("cluster_name", ""), namespace)
        if svc is not None:
            retries[svc] = retries.get(svc, 0.0) + _float(s, "retries")
    p99 = by_service("http_p99_ms")
    stats: dict[str, ServiceStats] = {}
    for prefix, services in (("http", HTTP_SERVICES), ("tcp", TCP_SERVICES)):
        total = by_service(f"{prefix}_requests")
        failed, uo, uf = (by_service(f"{prefix}_{k}") for k in ("failed", "uo", "uf"))
        for svc in services:
            n = round(total.get(svc, 0.0))
            if n == 0:
                stats[svc] = ServiceStats(svc, 0, None, 0.0, 0, 0, round(retries.get(svc, 0.0)))
                continue
            needed = [("failed", failed), ("UO", uo), ("UF", uf)]
            if prefix == "http":
                needed.append(("p99", p99))
            missing = [k for k, d in needed if svc not in d or math.isnan(d[svc])]
            if missing:
                raise BackendError(f"Prometheus reports {n} {prefix} requests to {svc} in "
                                   f"{namespace} but no {', '.join(missing)} for it")
            stats[svc] = ServiceStats(
                name=svc, num_requests=n, p99_ms=p99[svc] if prefix == "http" else None,
                error_ratio=min(1.0, max(0.0, failed[svc] / total[svc])),
                uo_count=round(uo[svc]), uf_count=round(uf[svc]),
                retry_count=round(retries.get(svc, 0.0)))
    return stats


# ---------------------------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------------------------


class K8sMesh:
    """One SockShop replica: the namespace ``{namespace_prefix}{replica}`` of a cluster.

    Args:
        replica: the replica index K (namespace ``sockshop-K``), leased by the env.
        namespace_prefix: prefix of the SockShop namespaces.
        prometheus_url: Prometheus that scrapes the namespace's sidecars.
        ingress_url: base URL of the front-end for the health check; ``{namespace}`` is filled
            in. Default: the front-end Service inside the cluster.
        kube_api_url: the API server's URL without credentials (``kubectl proxy``, tests);
            default: the in-cluster ServiceAccount, else the local kubeconfig.
        locust_image: image of the load Job.
        settle_s: wait after an apply for istiod to push the change to the sidecars.
        metrics_lag_s: how much later than the load Prometheus sees it (scrape interval +
            Envoy's stats flush); the query window is shifted by it.
        load_timeout_s: the longest a load may run before it is abandoned.
        poll_interval_s: how often the Job's status is read.
        request_timeout_s: timeout of each HTTP call.
        retry: the backoff policy of every API and Prometheus call.
        sleep, clock: injectable for tests (seconds; ``clock`` is Unix time).
    """

    name = "k8s"

    def __init__(self, replica: int, namespace_prefix: str = DEFAULT_NAMESPACE_PREFIX,
                 prometheus_url: str = DEFAULT_PROMETHEUS_URL, ingress_url: str | None = None,
                 kube_api_url: str | None = None, locust_image: str = LOCUST_IMAGE,
                 settle_s: float = 3.0, metrics_lag_s: float = 10.0,
                 load_timeout_s: float = 900.0, poll_interval_s: float = 2.0,
                 request_timeout_s: float = 10.0, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time):
        if not isinstance(replica, int) or isinstance(replica, bool) or replica < 0:
            raise ValueError(f"replica must be a non-negative int, got {replica!r}")
        for label, value in (("settle_s", settle_s), ("metrics_lag_s", metrics_lag_s)):
            if value < 0:
                raise ValueError(f"{label} must be non-negative, got {value}")
        for label, value in (("load_timeout_s", load_timeout_s),
                             ("poll_interval_s", poll_interval_s),
                             ("request_timeout_s", request_timeout_s)):
            if value <= 0:
                raise ValueError(f"{label} must be positive, got {value}")
        self.replica = replica
        self.namespace = f"{namespace_prefix}{replica}"
        self.ingress_url = (ingress_url or DEFAULT_INGRESS_URL).format(
            namespace=self.namespace).rstrip("/")
        self.prometheus_url = prometheus_url.rstrip("/")
        self.locust_image = locust_image
        self.settle_s, self.metrics_lag_s = settle_s, metrics_lag_s
        self.load_timeout_s, self.poll_interval_s = load_timeout_s, poll_interval_s
        self.request_timeout_s = request_timeout_s
        self.retry = retry or RetryPolicy()
        self._sleep, self._clock = sleep, clock
        self._closed = False
        self._api_client = _kube_api_client(kube_api_url)
        from kubernetes import client
        from prometheus_api_client import PrometheusConnect

        self._custom = client.CustomObjectsApi(self._api_client)
        self._batch = client.BatchV1Api(self._api_client)
        self._core = client.CoreV1Api(self._api_client)
        self._prometheus = PrometheusConnect(url=self.prometheus_url, disable_ssl=True,
                                             retry=False, timeout=request_timeout_s)
        #: name -> the document as found when the backend opened (cleaned for re-apply).
        try:
            self.snapshot: dict[str, dict[str, Any]] = self._list_rules()
        except BackendError:
            self._release_clients()
            raise
        #: name -> the document meshtune believes is in the cluster now.
        self._current: dict[str, dict[str, Any]] = copy.deepcopy(self.snapshot)
        atexit.register(self._close_at_exit)

    # -- context manager / atexit ------------------------------------------------------------

    def __enter__(self) -> K8sMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _close_at_exit(self) -> None:
        """Restore at interpreter exit; a failure is reported on stderr (nothing can raise)."""
        try:
            self.close()
        except BackendError as exc:
            sys.stderr.write(f"meshtune k8s backend: restoring {self.namespace} at exit "
                             f"failed: {exc}\n")

    # -- DestinationRules --------------------------------------------------------------------

    def _kube(self, what: str, call: Callable[[], T]) -> T:
        return self.retry.run(what, call, _classify_kube, self._sleep)

    def _list_rules(self) -> dict[str, dict[str, Any]]:
        """The namespace's DestinationRules, cleaned, by name."""
        answer = self._kube(
            f"listing DestinationRules in {self.namespace}",
            lambda: self._custom.list_namespaced_custom_object(
                DR_GROUP, DR_VERSION, self.namespace, DR_PLURAL,
                _request_timeout=self.request_timeout_s))
        items = answer.get("items") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise BackendError(f"listing DestinationRules in {self.namespace}: the answer has "
                               f"no items list: {str(answer)[:200]}")
        return {d["metadata"]["name"]: clean_document(d) for d in items}

    def _server_side_apply(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """One server-side apply; returns the object as the server stored it."""
        name = doc["metadata"]["name"]
        answer = self._kube(
            f"server-side apply of DestinationRule {self.namespace}/{name}",
            lambda: self._custom.patch_namespaced_custom_object(
                DR_GROUP, DR_VERSION, self.namespace, DR_PLURAL, name, dict(doc),
                field_manager=FIELD_MANAGER, force=True,
                _content_type=APPLY_PATCH_CONTENT_TYPE,
                _request_timeout=self.request_timeout_s))
        if not isinstance(answer, dict):
            raise BackendError(f"server-side apply of {self.namespace}/{name}: unexpected "
                               f"answer {str(answer)[:200]}")
        sent, stored = connection_pool_of(doc), connection_pool_of(answer)
        if sent != stored:
            managers = sorted({m.get("manager", "?") for m in
                               (answer.get("metadata") or {}).get("managedFields") or []}
                              - {FIELD_MANAGER})
            raise BackendError(
                f"DestinationRule {self.namespace}/{name}: after the apply its connectionPool "
                f"is {stored!r}, not the {sent!r} meshtune sent; other field managers "
                f"{managers} own fields of it. Re-apply the rendered rules with "
                "`kubectl apply --server-side --field-manager=meshtune --force-conflicts`.")
        return answer

    def _apply_documents(self, desired: Mapping[str, dict[str, Any]]) -> None:
        """Apply every document that differs from the current one; on a failure, apply back
        what was changed and raise."""
        changed: list[str] = []
        try:
            for name in sorted(desired):
                if desired[name] == self._current.get(name):
                    continue
                self._server_side_apply(desired[name])
                changed.append(name)
        except BackendError as exc:
            undo_errors = []
            for name in changed:
                previous = self._current.get(name) or without_connection_pool(desired[name])
                try:
                    self._server_side_apply(previous)
                except BackendError as undo:
                    undo_errors.append(str(undo))
            note = (f"; rolled back {len(changed)} rule(s)" if not undo_errors else
                    f"; rolling back failed too: {'; '.join(undo_errors)}")
            raise BackendError(f"{exc}{note}") from exc
        self._current.update(copy.deepcopy(dict(desired)))

    def apply(self, rules: Sequence[istio.DestinationRule]) -> None:
        """Make ``rules`` the namespace's connection pools (see :class:`Backend`).

        Rules of the namespace that ``rules`` does not name keep their other fields and lose
        their connection pool. Waits ``settle_s`` for istiod to push the change.

        Raises:
            ValueError (istio.ValidationError): a rule istiod would reject; nothing is sent.
            BackendError: the API failed; what was changed is applied back first.
        """
        self._check_open()
        docs = {d["metadata"]["name"]: d for d in rule_documents(rules, self.namespace)}
        desired: dict[str, dict[str, Any]] = {}
        for name in set(self._current) | set(docs):
            desired[name] = docs.get(name) or without_connection_pool(self._current[name])
        self._apply_documents(desired)
        self._sleep(self.settle_s)

    def current_documents(self) -> dict[str, dict[str, Any]]:
        """What meshtune believes the namespace's DestinationRules are now, by name."""
        return copy.deepcopy(self._current)

    # -- health ------------------------------------------------------------------------------

    def healthy(self) -> bool:
        """``GET {ingress_url}/catalogue`` answers 200 within ``request_timeout_s``."""
        self._check_open()
        try:
            with urllib.request.urlopen(f"{self.ingress_url}/catalogue",
                                        timeout=self.request_timeout_s) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    # -- load --------------------------------------------------------------------------------

    def run_load(self, load: LoadSpec, seed: int) -> LoadReport:
        """Run the reference load test as a Job in the namespace, then read Prometheus.

        Raises:
            BackendError: an open-loop load or faults (not supported here), the Job failed or
                timed out, its report is missing, or a metric query failed.
        """
        self._check_open()
        if load.mode != "closed":
            raise BackendError("the k8s backend runs closed-loop loads only (Locust users); "
                               f"got mode={load.mode!r}")
        if load.faults:
            raise BackendError(f"the k8s backend cannot inject faults, got {list(load.faults)}")
        body = locust_job_manifest(self.namespace, load.users, load.requests, seed,
                                   load.hatch_rate_per_s, image=self.locust_image,
                                   run_time_limit_s=math.ceil(self.load_timeout_s))
        created = self._kube(f"creating the Locust Job in {self.namespace}",
                             lambda: self._batch.create_namespaced_job(
                                 self.namespace, body,
                                 _headers={"Content-Type": "application/json"},
                                 _request_timeout=self.request_timeout_s))
        job = created.metadata.name
        self._wait_for_job(job)
        report = parse_locust_report(self._job_log(job))
        endpoints, duration_s = endpoint_stats(report)
        start, end = float(report["start_time"]), float(report["end_time"])
        services, eval_time = self._query_services(start, end)
        return LoadReport(endpoints=endpoints, services=services, duration_s=duration_s,
                          users=load.users, backend=self.name,
                          extra={"namespace": self.namespace, "job": job,
                                 "prometheus_eval_time": eval_time})

    def _wait_for_job(self, job: str) -> None:
        limit_s = self.load_timeout_s + JOB_SLACK_S
        deadline = self._clock() + limit_s
        while True:
            status = self._kube(f"reading Job {self.namespace}/{job}",
                                lambda: self._batch.read_namespaced_job_status(
                                    job, self.namespace,
                                    _request_timeout=self.request_timeout_s)).status
            if status is not None and (status.succeeded or 0) >= 1:
                return
            if status is not None and (status.failed or 0) >= 1:
                raise BackendError(f"Locust Job {self.namespace}/{job} failed; its log:\n"
                                   f"{self._job_log(job)[-2000:]}")
            if self._clock() > deadline:
                raise BackendError(f"Locust Job {self.namespace}/{job} did not finish within "
                                   f"{limit_s:.0f} s (load_timeout_s + {JOB_SLACK_S} s for "
                                   "scheduling, image pull and the sidecar's drain)")
            self._sleep(self.poll_interval_s)

    def _job_log(self, job: str) -> str:
        pods = self._kube(f"listing the pods of Job {self.namespace}/{job}",
                          lambda: self._core.list_namespaced_pod(
                              self.namespace, label_selector=f"job-name={job}",
                              _request_timeout=self.request_timeout_s)).items
        if not pods:
            raise BackendError(f"Job {self.namespace}/{job} has no pod")
        pod = pods[-1].metadata.name
        return self._kube(f"reading the log of pod {self.namespace}/{pod}",
                          lambda: self._core.read_namespaced_pod_log(
                              pod, self.namespace, container=LOCUST_CONTAINER,
                              _request_timeout=self.request_timeout_s))

    # -- metrics -----------------------------------------------------------------------------

    def _query(self, name: str, query: str, eval_time: float) -> list[dict[str, Any]]:
        def call() -> list[dict[str, Any]]:
            result = self._prometheus.custom_query(query, params={"time": f"{eval_time:.3f}"})
            if not result:
                raise _TransientError(f"no series for {query}")
            return result

        return self.retry.run(f"Prometheus query {name} for {self.namespace}", call,
                              _classify_prometheus, self._sleep)

    def _query_services(self, start: float, end: float) -> tuple[dict[str, ServiceStats], float]:
        """Service stats over [start, end] as Prometheus sees it ``metrics_lag_s`` later."""
        eval_time = end + self.metrics_lag_s
        wait = eval_time - self._clock()
        if wait > 0:
            self._sleep(wait)
        window_s = max(1, math.ceil(end - start))
        queries = istio_queries(self.namespace, window_s)
        results = {name: self._query(name, q, eval_time) for name, q in queries.items()}
        return service_stats(results, self.namespace), eval_time

    # -- close -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(f"K8sMesh for {self.namespace} is closed")

    def close(self) -> None:
        """Apply the snapshot back (rules meshtune created lose their connection pool) and
        release the clients. Idempotent.

        Raises:
            BackendError: the restore failed; the error names the rules left changed.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._close_at_exit)
        try:
            restore = {name: self.snapshot.get(name) or without_connection_pool(doc)
                       for name, doc in self._current.items()}
            self._apply_documents(restore)
        finally:
            self._release_clients()

    def _release_clients(self) -> None:
        """Close the HTTP sessions of the Kubernetes and Prometheus clients."""
        with contextlib.suppress(Exception):  # closing pools cannot lose data
            self._prometheus.close()
        with contextlib.suppress(Exception):
            self._api_client.close()


def _kube_api_client(kube_api_url: str | None) -> Any:
    """An ApiClient with client-side retries off (the backend retries itself)."""
    from kubernetes import client, config

    if kube_api_url is not None:
        configuration = client.Configuration(host=kube_api_url.rstrip("/"))
    else:
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            try:
                config.load_kube_config(client_configuration=configuration)
            except (config.ConfigException, OSError) as exc:
                raise BackendError("no Kubernetes credentials: not in a pod with a "
                                   f"ServiceAccount and no usable kubeconfig ({exc})") from exc
    configuration.retries = False
    return client.ApiClient(configuration)

