"""Per-service figures of one load window, from the replica's Prometheus (PromQL over the
Envoys' stats, through ``prometheus-api-client``).

What is read (Envoy stat → :class:`~envs.backends.report.ServiceStats` field), always summed
over every calling proxy (the ``reporter="source"`` view) and over the callee's inbound cluster
where Istio also enforces the pool:

* ``num_requests``: HTTP — ``vhost.<dest>.vcluster.all.upstream_rq_<code>`` (one per caller
  request, after retries, local 503s included); TCP — ``upstream_cx_total`` of the callers'
  outbound clusters (connections, as Istio reports TCP);
* ``error_ratio``: HTTP — share of those with code >= 500; TCP — (``upstream_cx_connect_fail``
  + ``upstream_cx_overflow``) / connections;
* ``p99_ms``: HTTP — ``histogram_quantile(0.99, ...)`` of the virtual cluster's
  ``upstream_rq_time``; TCP — None (opaque TCP has no request duration, as in Istio);
* ``uo_count``: HTTP — ``upstream_rq_pending_overflow`` + ``upstream_rq_active_overflow``;
  TCP — ``upstream_cx_overflow`` (a refused connection);
* ``uf_count``: ``upstream_cx_connect_fail`` (connect timeouts included);
* ``retry_count``: ``upstream_rq_retry`` of the callers' outbound clusters.

Counts are exact differences of the counters between the window's start and end: Prometheus'
``increase()`` extrapolates to the window's edges, which inflates a 10–20 s window's counts by
5–10 %, too much to compare with Locust. Both ends are instants at which the counters stand
still (the load generator pauses every user across the window's start, and the window's end is
read after the load has stopped and a scrape has followed), so the last scrape before each is
exact. Counters are only reset when a cluster is replaced (an ``apply``), which never happens
inside a load window; ``resets()`` over the window checks that, and a reset is a
:class:`BackendError`. The p99 is Prometheus' ``histogram_quantile`` interpolation
(:func:`histogram_quantile`) over the latency buckets' growth between the same two instants, so
counts and latencies describe the same requests. A query that fails or returns nothing is a
``BackendError``, never a default.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from prometheus_api_client import PrometheusApiClientException, PrometheusConnect

from envs.backends.base import BackendError
from envs.backends.local.topology import is_tcp
from envs.backends.report import ServiceStats
from envs.sockshop import SERVICE_NAMES

#: Envoy counters read at the window's start and end.
COUNTERS = (
    "envoy_vhost_vcluster_upstream_rq",
    "envoy_cluster_upstream_rq_pending_overflow",
    "envoy_cluster_upstream_rq_active_overflow",
    "envoy_cluster_upstream_cx_connect_fail",
    "envoy_cluster_upstream_cx_overflow",
    "envoy_cluster_upstream_cx_total",
    "envoy_cluster_upstream_rq_retry",
)
_LATENCY_BUCKETS = "envoy_vhost_vcluster_upstream_rq_time_bucket"

Series = dict[tuple[tuple[str, str], ...], float]


def _key(metric: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(metric.items()))


def destination_of(labels: dict[str, str]) -> str | None:
    """The destination service a cluster or virtual-host series is about (None: not ours).

    ``outbound|80||carts.ns.svc.cluster.local`` → carts; ``inbound|80||`` on proxy P → P;
    virtual host ``carts_db`` → carts-db.
    """
    if "envoy_virtual_host" in labels:
        name = labels["envoy_virtual_host"].replace("_", "-")
        return name if name in SERVICE_NAMES else None
    cluster = labels.get("cluster_name", "")
    if cluster.startswith("outbound|"):
        host = cluster.split("||", 1)[1] if "||" in cluster else ""
        name = host.split(".", 1)[0]
        return name if name in SERVICE_NAMES else None
    if cluster.startswith("inbound|"):
        proxy = labels.get("proxy", "")
        return proxy if proxy in SERVICE_NAMES else None
    return None


class MeshMetrics:
    """PromQL queries against one replica's Prometheus."""

    def __init__(self, url: str, replica: int) -> None:
        self.url = url
        self.replica = replica
        self._prom = PrometheusConnect(url=url, disable_ssl=True)

    def query(self, promql: str, at: float) -> list[dict[str, Any]]:
        """An instant query at time ``at`` (s since the epoch); errors are BackendErrors."""
        try:
            result = self._prom.custom_query(promql, params={"time": f"{at:.3f}"})
        except (PrometheusApiClientException, OSError, ValueError) as exc:
            raise BackendError(f"Prometheus query failed ({self.url}): {promql}: {exc}") from exc
        if not isinstance(result, list):
            raise BackendError(f"Prometheus answered {result!r} to {promql}")
        return result

    def _selector(self, names: tuple[str, ...]) -> str:
        return f'{{__name__=~"{"|".join(names)}",replica="{self.replica}"}}'

    def values_at(self, selector: str, at: float) -> Series:
        """Every series of ``selector`` as of the instant ``at`` (its last scrape at or before
        ``at``), by full label set."""
        return {_key(r["metric"]): float(r["value"][1]) for r in self.query(selector, at)}

    def counters(self, at: float) -> Series:
        """Every counter of :data:`COUNTERS` at the instant ``at``, by full label set."""
        values = self.values_at(self._selector(COUNTERS), at)
        if not values:
            raise BackendError(f"Prometheus at {self.url} has no Envoy counters of replica "
                               f"{self.replica} around {at:.1f} (is it scraping?)")
        return values

    def check_no_reset(self, start: float, end: float) -> None:
        """Raise BackendError if any counter was reset inside [start, end]."""
        window = max(1, math.ceil(end - start))
        reset = []
        for name in COUNTERS:  # one query each: resets() drops the metric name
            rows = self.query(f'resets({name}{{replica="{self.replica}"}}[{window}s]) > 0', end)
            reset += [f"{name} {r['metric'].get('cluster_name', r['metric'].get('proxy', ''))}"
                      for r in rows]
        if reset:
            raise BackendError("Envoy counters were reset during the load window (a cluster "
                               f"was replaced mid-run): {sorted(reset)[:5]}")

    def p99_ms(self, start: float, end: float) -> dict[str, float]:
        """p99 request duration (ms) per HTTP destination over the window, from the latency
        buckets' growth between the same two instants the counts use."""
        sel = f'{_LATENCY_BUCKETS}{{replica="{self.replica}",envoy_virtual_cluster="all"}}'
        before, after = self.values_at(sel, start), self.values_at(sel, end)
        growth: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
        for key, v1 in after.items():
            labels = dict(key)
            dest = destination_of(labels)
            if dest is not None:
                growth[dest][float(labels["le"])] += v1 - before.get(key, 0.0)
        out: dict[str, float] = {}
        for dest, buckets in growth.items():
            value = histogram_quantile(0.99, sorted(buckets.items()))
            if value is not None:
                out[dest] = value
        return out

    def connect_ms_quantiles(self, start: float, end: float,
                             quantiles: tuple[float, ...] = (0.5, 0.9, 0.99),
                             ) -> dict[str, float | None]:
        """Quantiles of the time to set up one sidecar → sidecar connection (TCP + mTLS),
        ms, over every outbound cluster (``upstream_cx_connect_ms``) in the window: the real
        counterpart of the simulator's connect-cost profile. None without a new connection."""
        sel = f'envoy_cluster_upstream_cx_connect_ms_bucket{{replica="{self.replica}"}}'
        before, after = self.values_at(sel, start), self.values_at(sel, end)
        growth: dict[float, float] = defaultdict(float)
        for key, v1 in after.items():
            labels = dict(key)
            if labels.get("cluster_name", "").startswith("outbound|"):
                growth[float(labels["le"])] += v1 - before.get(key, 0.0)
        if not growth:
            return {f"p{round(q * 100)}": None for q in quantiles}
        buckets = sorted(growth.items())
        return {f"p{round(q * 100)}": histogram_quantile(q, buckets) for q in quantiles}

    def service_stats(self, start: float, end: float, duration_s: float = 0.0) -> dict[str, ServiceStats]:
        """Every SockShop service's figures over the window [start, end] (see the module
        docstring)."""
        self.check_no_reset(start, end)
        before = self.counters(start)
        after = self.counters(end)
        totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for key, v1 in after.items():
            labels = dict(key)
            dest = destination_of(labels)
            if dest is None:
                continue
            delta = v1 - before.get(key, 0.0)
            if delta < 0:
                raise BackendError(f"counter {labels.get('__name__')} of {dest} went down "
                                   f"({before.get(key)} → {v1}) inside the load window")
            name = labels["__name__"]
            outbound = labels.get("cluster_name", "").startswith("outbound|")
            if name == "envoy_vhost_vcluster_upstream_rq":
                if labels.get("envoy_virtual_cluster") != "all":
                    continue
                totals[dest]["requests"] += delta
                if int(labels.get("envoy_response_code", "0")) >= 500:
                    totals[dest]["errors"] += delta
            elif name == "envoy_cluster_upstream_cx_total":
                if outbound:
                    totals[dest]["connections"] += delta
            elif name == "envoy_cluster_upstream_cx_overflow":
                if is_tcp(dest):
                    totals[dest]["uo"] += delta
            elif name in ("envoy_cluster_upstream_rq_pending_overflow",
                          "envoy_cluster_upstream_rq_active_overflow"):
                if not is_tcp(dest):
                    totals[dest]["uo"] += delta
            elif name == "envoy_cluster_upstream_cx_connect_fail":
                totals[dest]["uf"] += delta
            elif name == "envoy_cluster_upstream_rq_retry" and outbound:
                totals[dest]["retries"] += delta
        p99 = self.p99_ms(start, end)
        stats: dict[str, ServiceStats] = {}
        for service in SERVICE_NAMES:
            t = totals[service]
            if is_tcp(service):
                n = round(t["connections"])
                bad = t["uf"] + t["uo"]
                p99_ms = None
            else:
                n = round(t["requests"])
                bad = t["errors"]
                p99_ms = p99.get(service) if n else None
                if n and p99_ms is None:
                    raise BackendError(f"{service} saw {n} requests but Prometheus has no "
                                       "latency histogram for it")
            stats[service] = ServiceStats(
                name=service, num_requests=n, p99_ms=p99_ms,
                error_ratio=(bad / n) if n else 0.0, uo_count=round(t["uo"]),
                uf_count=round(t["uf"]), retry_count=round(t["retries"]))
        return stats



def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative ``(upper bound, count)`` buckets
    sorted by bound (the last one ``+Inf``): linear interpolation inside the bucket holding the
    rank; the largest finite bound when the rank falls in ``+Inf``. None without observations.
    """
    if not buckets or not math.isinf(buckets[-1][0]):
        raise ValueError("buckets must be sorted and end with the +Inf bucket")
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower
