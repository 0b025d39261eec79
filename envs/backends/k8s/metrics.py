"""Istio's metrics of one load run, read from Prometheus: the PromQL and its parsing.

:func:`istio_queries` writes the queries of one load run, scoped to a SockShop namespace and the
run's window: request counts and failures with ``reporter="source"`` (client-side 503s never
reach the destination's proxy), UO / UF from ``response_flags``, p99 with ``histogram_quantile``
over ``istio_request_duration_milliseconds_bucket``; TCP services (MongoDB, MySQL, Redis, AMQP)
count connections (``istio_tcp_connections_opened_total``) and, as in the simulator, have no
p99. Retries come from Envoy's ``envoy_cluster_upstream_rq_retry``, exported because the pods
carry the :data:`PROXY_STATS_ANNOTATION`. :func:`service_stats` turns the answers into one
:class:`~envs.backends.report.ServiceStats` per service.
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
PROXY_STATS_CONFIG = {
    "proxyStatsMatcher": {
        "inclusionSuffixes": ["upstream_rq_retry", "upstream_rq_retry_overflow",
                              "upstream_rq_pending_overflow"],
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
