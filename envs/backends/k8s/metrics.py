"""Istio's metrics of one load run, read from Prometheus: the PromQL and its parsing.

:func:`istio_queries` writes the queries of one load run, scoped to a SockShop namespace and the
run's window, all with ``reporter="source"`` (client-side 503s never reach the destination's
proxy), per ``destination_service_name``:

* ``num_requests`` / failures: ``istio_requests_total`` (failed: ``response_code`` not 1xx–3xx);
  TCP services (MongoDB, MySQL, Redis, AMQP) count connections
  (``istio_tcp_connections_opened_total``, failed: ``response_flags`` other than ``-``) and, as
  in the simulator, have no p99 and no duration;
* the causes, from the ``response_flags`` of those requests (the source sidecar's flags of the
  request's final outcome): ``uo_count`` ``UO`` (circuit breaker: pending queue, connection or
  request limit), ``uf_count`` ``UF`` (connect failure), ``ut_count`` ``UT`` (timeout),
  ``reset_count`` ``UC`` or ``UR`` (the destination terminated the connection / reset the
  request), ``urx_count`` ``URX`` (retries exhausted). A flag set is a comma-separated list
  (``URX,UF``): each query matches its flag anywhere in it;
* p99: ``histogram_quantile(0.99)`` over ``istio_request_duration_milliseconds_bucket``;
  ``mean_ms``: the same histogram's ``_sum / _count`` (per request as the caller's sidecar saw
  it, its retries included — Istio has no per-attempt duration);
* ``in_flight_per_pool``: Little's law per calling pod (one pod = one sidecar = one connection
  pool to the destination): the growth of ``istio_request_duration_milliseconds_sum`` by
  (destination, ``pod``) over the window, divided by the window, the largest over the pods;
* from Envoy's own cluster statistics of the callers' sidecars (``outbound|<port>||<dest>…``),
  exported because the pods carry :data:`PROXY_STATS_ANNOTATION` (Istio's
  ``proxyStatsMatcher``; ``docs/cluster.md`` shows the YAML): ``retry_count``
  ``envoy_cluster_upstream_rq_retry`` and ``retry_overflow_count``
  ``envoy_cluster_upstream_rq_retry_overflow``;
* ``num_attempts``: first tries + retries = ``num_requests + retry_count`` (a TCP connection
  is attempted once: tcp_proxy does not retry, its clusters count no retries).

:func:`service_stats` turns the answers into one :class:`~envs.backends.report.ServiceStats` per
service.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from envs.backends.base import BackendError
from envs.backends.report import ServiceStats
from envs.sockshop import SERVICES, Protocol

#: Pod annotation that makes the sidecars export the Envoy stats the backend queries.
PROXY_STATS_ANNOTATION = "proxy.istio.io/config"
#: Envoy cluster statistics the sidecars export beside Istio's standard metrics: the ones the
#: backend queries (retries, retries not sent) and the circuit-breaker, connect and demand
#: counters an operator reads beside them (``docs/cluster.md``, section 7).
PROXY_STATS_CONFIG = {
    "proxyStatsMatcher": {
        "inclusionSuffixes": ["upstream_rq_retry", "upstream_rq_retry_overflow",
                              "upstream_rq_retry_limit_exceeded",
                              "upstream_rq_pending_overflow", "upstream_cx_overflow",
                              "upstream_cx_connect_fail", "upstream_cx_connect_timeout",
                              "upstream_rq_active", "upstream_rq_pending_active"],
    },
}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

HTTP_SERVICES = tuple(s.name for s in SERVICES if s.protocol is Protocol.HTTP)
TCP_SERVICES = tuple(s.name for s in SERVICES if s.protocol is Protocol.TCP)


def _flag(flag: str) -> str:
    """A PromQL regex matching a ``response_flags`` value that contains ``flag``."""
    return f'response_flags=~"(.*,)?{flag}(,.*)?"'


def istio_queries(namespace: str, window_s: int) -> dict[str, str]:
    """The PromQL queries of one load run, by name.

    ``*_requests``, ``*_failed`` and the flag counts (``*_uo``, ``*_uf``, ``*_ut``,
    ``*_reset``, ``http_urx``) are per ``destination_service_name``; all but ``*_requests`` add
    ``0 *`` the totals so a service that was called but never failed reads 0 rather than being
    absent. ``http_duration_ms`` / ``http_duration_n`` are the request-duration histogram's sum
    and count per destination, ``http_pool_ms`` its sum per (destination, calling ``pod``).
    ``retries`` and ``retry_overflow`` are per Envoy ``cluster_name`` of the callers' sidecars
    in the namespace.
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
    reset = ',response_flags=~"(.*,)?(UC|UR)(,.*)?"'
    duration = "istio_request_duration_milliseconds"
    queries = {
        "http_requests": http_count(),
        "http_failed": f"{http_count(failed_http)} or (0 * {http_count()})",
        "http_p99_ms": (f"histogram_quantile(0.99, sum by (destination_service_name, le) "
                        f"(rate({duration}_bucket{{{http}}}{w})))"),
        "http_duration_ms": f"{by} (increase({duration}_sum{{{http}}}{w}))",
        "http_duration_n": f"{by} (increase({duration}_count{{{http}}}{w}))",
        "http_pool_ms": (f"sum by (destination_service_name, pod) "
                         f"(increase({duration}_sum{{{http}}}{w}))"),
        "tcp_requests": tcp_count(),
        "tcp_failed": f"{tcp_count(failed_tcp)} or (0 * {tcp_count()})",
        "retries": (f"sum by (cluster_name) (increase(envoy_cluster_upstream_rq_retry"
                    f"{{{cluster}}}{w}))"),
        "retry_overflow": (f"sum by (cluster_name) (increase("
                           f"envoy_cluster_upstream_rq_retry_overflow{{{cluster}}}{w}))"),
    }
    flags = {"uo": "," + _flag("UO"), "uf": "," + _flag("UF"), "ut": "," + _flag("UT"),
             "reset": reset}
    for cause, extra in flags.items():
        queries[f"http_{cause}"] = f"{http_count(extra)} or (0 * {http_count()})"
        queries[f"tcp_{cause}"] = f"{tcp_count(extra)} or (0 * {tcp_count()})"
    queries["http_urx"] = f"{http_count(',' + _flag('URX'))} or (0 * {http_count()})"
    return queries


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
                  namespace: str, window_s: float) -> dict[str, ServiceStats]:
    """Turn the answers to :func:`istio_queries` into one :class:`ServiceStats` per service;
    ``window_s``: the window the queries cover, s (the divisor of Little's law).

    A service with no series at all was not called in the window (0 requests, no p99). An HTTP
    service that was called must have a p99, a duration and every flag count, a TCP service its
    failure and flag counts; otherwise the answer is inconsistent and a BackendError says so.
    TCP services have no p99 and no duration (Istio has none for TCP), as in the simulator.
    """
    if not window_s > 0:
        raise ValueError(f"window_s must be positive, got {window_s}")

    def by_service(name: str) -> dict[str, float]:
        return {s["metric"].get("destination_service_name", ""): _float(s, name)
                for s in results[name]}

    def by_cluster(name: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in results[name]:
            svc = _cluster_service(s["metric"].get("cluster_name", ""), namespace)
            if svc is not None:
                out[svc] = out.get(svc, 0.0) + _float(s, name)
        return out

    retries, retry_overflow = by_cluster("retries"), by_cluster("retry_overflow")
    pool_ms: dict[str, float] = {}
    for s in results["http_pool_ms"]:
        svc = s["metric"].get("destination_service_name", "")
        pool_ms[svc] = max(pool_ms.get(svc, 0.0), _float(s, "http_pool_ms"))
    p99 = by_service("http_p99_ms")
    duration_ms, duration_n = by_service("http_duration_ms"), by_service("http_duration_n")
    stats: dict[str, ServiceStats] = {}
    for prefix, services in (("http", HTTP_SERVICES), ("tcp", TCP_SERVICES)):
        total = by_service(f"{prefix}_requests")
        causes = ["failed", "uo", "uf", "ut", "reset"] + (["urx"] if prefix == "http" else [])
        counts = {k: by_service(f"{prefix}_{k}") for k in causes}
        for svc in services:
            n = round(total.get(svc, 0.0))
            r = round(retries.get(svc, 0.0))
            if n == 0:
                stats[svc] = ServiceStats(svc, 0, None, 0.0, 0, 0, r, num_attempts=r,
                                          ut_count=0, reset_count=0, urx_count=0,
                                          retry_overflow_count=round(
                                              retry_overflow.get(svc, 0.0)),
                                          in_flight_per_pool=0.0 if prefix == "http" else None)
                continue
            needed = [(k, counts[k]) for k in causes]
            if prefix == "http":
                needed += [("p99", p99), ("duration", duration_ms),
                           ("duration count", duration_n)]
            missing = [k for k, d in needed if svc not in d or math.isnan(d[svc])]
            if missing:
                raise BackendError(f"Prometheus reports {n} {prefix} requests to {svc} in "
                                   f"{namespace} but no {', '.join(missing)} for it")
            c = {k: round(v[svc]) for k, v in counts.items()}
            http = prefix == "http"
            stats[svc] = ServiceStats(
                name=svc, num_requests=n, p99_ms=p99[svc] if http else None,
                error_ratio=min(1.0, max(0.0, counts["failed"][svc] / total[svc])),
                uo_count=c["uo"], uf_count=c["uf"], retry_count=r, num_attempts=n + r,
                mean_ms=(duration_ms[svc] / duration_n[svc]
                         if http and duration_n[svc] > 0 else None),
                ut_count=c["ut"], reset_count=c["reset"], urx_count=c.get("urx", 0),
                retry_overflow_count=round(retry_overflow.get(svc, 0.0)),
                in_flight_per_pool=(pool_ms.get(svc, 0.0) / (1000.0 * window_s)
                                    if http else None))
    return stats
