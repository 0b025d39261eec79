"""Per-service figures of one load window, from the replica's Prometheus (PromQL over the
Envoys' own statistics, through ``prometheus-api-client``).

Every destination D is seen from two kinds of Envoy cluster: the **outbound** cluster
``outbound|<port>||D…`` in every caller's sidecar (the caller's connection pool to D, with D's
DestinationRule limits, behind Istio's default retry policy), and D's own **inbound** cluster
``inbound|<port>||`` in D's sidecar (the callee-side pool in front of D's application, where
Istio applies the same limits). All counts are sums over D's callers (the
``reporter="source"`` view) and are exact differences over the window (see below).

HTTP destinations — an *attempt* is one try of the callers' routers (first try or retry):

* ``num_requests``: ``vhost.<D>.vcluster.all.upstream_rq_<code>`` (one per caller request,
  after retries, local 503s included); ``error_ratio``: the share of those with code >= 500;
* ``p99_ms``: ``histogram_quantile(0.99)`` of the virtual cluster's ``upstream_rq_time``;
* ``num_attempts``: outbound ``upstream_rq_total`` (attempts given a connection) +
  ``upstream_rq_pending_overflow`` + ``upstream_rq_active_overflow`` (attempts the pool
  rejected: not in ``upstream_rq_total``) + ``upstream_rq_pending_failure_eject`` (attempts
  failed while waiting for a connection that could not be set up: not in it either) — checked
  on this Envoy: rq_total = first tries + ``upstream_rq_retry``;
* ``uo_count`` (UO): ``upstream_rq_pending_overflow`` (``http1MaxPendingRequests``) +
  ``upstream_rq_active_overflow`` (``http2MaxRequests``), outbound and inbound. Not
  ``upstream_cx_overflow``: for HTTP/1.1 a connection over ``maxConnections`` is not opened and
  the request waits as pending — it is rejected only when the pending queue overflows, which
  ``upstream_rq_pending_overflow`` counts (``upstream_cx_overflow`` counts the times the
  connection limit was hit, often several per request);
* ``uf_count`` (UF), per attempt: outbound ``upstream_rq_pending_failure_eject`` — attempts
  failed because the caller's sidecar could not set up a connection to D's sidecar (refused,
  or ``connectTimeout`` expired: Envoy counts a connect timeout in both
  ``upstream_cx_connect_fail`` and ``upstream_cx_connect_timeout``). Per connection
  (``upstream_cx_connect_fail``) would under-count: one failed connection fails every attempt
  waiting for it;
* ``ut_count`` (UT): outbound ``upstream_rq_timeout`` + ``upstream_rq_per_try_timeout``, inbound
  ``upstream_rq_timeout`` (0 unless a route sets a timeout: Istio's default routes set none);
* ``reset_count``: inbound ``upstream_rq_pending_failure_eject`` (D's application refused the
  connection: a service down) + inbound ``upstream_cx_destroy_remote_with_active_rq`` (D's
  application dropped a connection with a request in flight; HTTP/1: one request per
  connection). The caller's sidecar gets a 503 for each, which Istio's retry policy retries;
* ``urx_count`` (URX): outbound ``upstream_rq_retry_limit_exceeded`` (requests that wanted
  another retry after their ``num_retries``: they fail with the last attempt's answer);
* ``retry_overflow_count``: outbound ``upstream_rq_retry_overflow`` (retries not sent: the
  cluster's ``maxRetries`` circuit breaker or retry budget); ``retry_count``: outbound
  ``upstream_rq_retry``;
* ``mean_ms``: outbound ``upstream_rq_time`` sum / count (Envoy times a request from the end
  of the caller's request to the end of the answer, pending wait and retries included);
* ``in_flight_per_pool``: Little's law per calling sidecar's outbound cluster — the growth of
  its ``upstream_rq_time`` sum (total request-milliseconds spent in that pool) over the load's
  duration — and the largest over D's callers. The window starts and ends idle, so this is
  the time-averaged number of requests in flight (active + pending) in that pool.

TCP destinations — the "request" is a connection a caller's tcp_proxy asks for (tcp_proxy
makes one connect attempt and never retries, so ``num_attempts = num_requests``):

* ``num_requests``: outbound ``upstream_cx_total`` + ``upstream_cx_overflow`` (opened or
  refused by the pool; an overflowed connection is never opened, so it is not in
  ``upstream_cx_total``);
* ``uo_count``: ``upstream_cx_overflow``, outbound and inbound;
* ``uf_count``: outbound ``upstream_cx_connect_timeout`` (a connection to D's sidecar that did
  not finish TCP + mTLS in time). Other outbound connect failures are D's own refusals: D's
  sidecar accepts, its tcp_proxy cannot reach the application and closes — counted in
  ``reset_count`` on D's side, not twice;
* ``reset_count``: inbound ``upstream_cx_destroy_remote`` (D's application refused a
  connection — Envoy counts a refused connect there too — or dropped an established one; the
  SockShop DB servers never close a connection on their own);
* ``error_ratio``: ``(uo + uf + reset) / num_requests``; ``p99_ms``, ``mean_ms``: None (opaque
  TCP has no request duration, as in Istio); ``ut``, ``urx``, ``retry_overflow``, retries: 0
  (tcp_proxy has no request timeout and no retry);
* ``in_flight_per_pool``: ``avg_over_time`` of the outbound ``upstream_cx_active`` gauge over
  the load's duration (one sample per scrape, each second), the largest over D's callers:
  connections in use per pool, against ``tcp.maxConnections``.

Invariants (checked by the tests on every report): ``uo + uf + ut + reset <= num_attempts``
(disjoint attempts: outbound rejections and connect failures never reach D's sidecar; D's
sidecar's rejections and refusals are attempts the outbound pool had sent),
``retry_count <= num_attempts``, ``urx`` and ``retry_overflow <= num_requests``,
``0 <= error_ratio <= 1``.

Counts are exact differences of the counters between the window's start and end: Prometheus'
``increase()`` extrapolates to the window's edges, which inflates a 10–20 s window's counts by
5–10 %, too much to compare with Locust. Both ends are instants at which the counters stand
still (the load generator pauses every user across the window's start, an open load starts on
an idle mesh, and the window's end is read after the load has stopped and a scrape has
followed), so the last scrape before each is exact. Counters are only reset when a cluster is
replaced (an ``apply``), which never happens inside a load window; ``resets()`` over the window
checks that, and a reset is a :class:`BackendError`. The p99 is Prometheus'
``histogram_quantile`` interpolation (:func:`histogram_quantile`) over the latency buckets'
growth between the same two instants, so counts and latencies describe the same requests. A
query that fails or returns nothing is a ``BackendError``, never a default.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import requests
import urllib3
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from envs.backends.base import BackendError
from envs.backends.local.topology import is_tcp
from envs.backends.report import ServiceStats
from envs.sockshop import SERVICE_NAMES

#: Seconds a query may take before Prometheus counts as unreachable (a query of one load window
#: answers in well under a second on the shared 2 cores).
QUERY_TIMEOUT_S = 10.0
#: Envoy counters read at the window's start and end.
COUNTERS = (
    "envoy_vhost_vcluster_upstream_rq",
    "envoy_cluster_upstream_rq_total",
    "envoy_cluster_upstream_rq_pending_overflow",
    "envoy_cluster_upstream_rq_active_overflow",
    "envoy_cluster_upstream_rq_pending_failure_eject",
    "envoy_cluster_upstream_rq_timeout",
    "envoy_cluster_upstream_rq_per_try_timeout",
    "envoy_cluster_upstream_rq_retry",
    "envoy_cluster_upstream_rq_retry_overflow",
    "envoy_cluster_upstream_rq_retry_limit_exceeded",
    "envoy_cluster_upstream_rq_time_sum",
    "envoy_cluster_upstream_rq_time_count",
    "envoy_cluster_upstream_cx_total",
    "envoy_cluster_upstream_cx_overflow",
    "envoy_cluster_upstream_cx_connect_fail",
    "envoy_cluster_upstream_cx_connect_timeout",
    "envoy_cluster_upstream_cx_destroy_remote",
    "envoy_cluster_upstream_cx_destroy_remote_with_active_rq",
)
#: Which counters (short names, ``envoy_cluster_`` dropped) feed which field, per direction
#: and protocol (module docstring).
_HTTP_SUMS: dict[str, tuple[tuple[str, str], ...]] = {
    "attempts": (("out", "upstream_rq_total"), ("out", "upstream_rq_pending_overflow"),
                 ("out", "upstream_rq_active_overflow"),
                 ("out", "upstream_rq_pending_failure_eject")),
    "uo": (("out", "upstream_rq_pending_overflow"), ("out", "upstream_rq_active_overflow"),
           ("in", "upstream_rq_pending_overflow"), ("in", "upstream_rq_active_overflow")),
    "uf": (("out", "upstream_rq_pending_failure_eject"),),
    "ut": (("out", "upstream_rq_timeout"), ("out", "upstream_rq_per_try_timeout"),
           ("in", "upstream_rq_timeout")),
    "reset": (("in", "upstream_rq_pending_failure_eject"),
              ("in", "upstream_cx_destroy_remote_with_active_rq")),
    "urx": (("out", "upstream_rq_retry_limit_exceeded"),),
    "retry_overflow": (("out", "upstream_rq_retry_overflow"),),
    "retries": (("out", "upstream_rq_retry"),),
    "time_sum": (("out", "upstream_rq_time_sum"),),
    "time_count": (("out", "upstream_rq_time_count"),),
}
_TCP_SUMS: dict[str, tuple[tuple[str, str], ...]] = {
    "attempts": (("out", "upstream_cx_total"), ("out", "upstream_cx_overflow")),
    "uo": (("out", "upstream_cx_overflow"), ("in", "upstream_cx_overflow")),
    "uf": (("out", "upstream_cx_connect_timeout"),),
    "reset": (("in", "upstream_cx_destroy_remote"),),
}
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

    def __init__(self, url: str, replica: int, timeout_s: float = QUERY_TIMEOUT_S) -> None:
        self.url = url
        self.replica = replica
        self.timeout_s = timeout_s
        # no retries: a Prometheus that does not answer is an error at once, not in minutes
        self._prom = PrometheusConnect(url=url, disable_ssl=True,
                                       retry=Retry(total=False))

    def query(self, promql: str, at: float) -> list[dict[str, Any]]:
        """An instant query at time ``at`` (s since the epoch); errors are BackendErrors (one
        line: a Prometheus that refuses the connection or does not answer within
        ``timeout_s`` is named as unreachable, never read as an empty result)."""
        try:
            result = self._prom.custom_query(promql, params={"time": f"{at:.3f}"},
                                             timeout=self.timeout_s)  # type: ignore[arg-type]
        except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as exc:
            # (no retries: urllib3's own errors come through unwrapped)
            if isinstance(exc, requests.Timeout | urllib3.exceptions.ReadTimeoutError):
                raise BackendError(f"Prometheus of replica {self.replica} at {self.url} did "
                                   f"not answer within {self.timeout_s:g} s (hung or "
                                   "stopped?)") from exc
            raise BackendError(f"Prometheus of replica {self.replica} at {self.url} is "
                               "unreachable (connection refused: not running?)") from exc
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

    def _pool_time_ms(self, start: float, end: float) -> dict[tuple[str, str], float]:
        """Growth of each outbound cluster's ``upstream_rq_time`` sum (request-ms) over the
        window, by (destination, calling proxy)."""
        out: dict[tuple[str, str], float] = defaultdict(float)
        sel = f'envoy_cluster_upstream_rq_time_sum{{replica="{self.replica}"}}'
        before, after = self.values_at(sel, start), self.values_at(sel, end)
        for key, v1 in after.items():
            labels = dict(key)
            dest = destination_of(labels)
            if dest is not None and labels.get("cluster_name", "").startswith("outbound|"):
                out[(dest, labels.get("proxy", ""))] += v1 - before.get(key, 0.0)
        return out

    def tcp_connections_in_use(self, start: float, end: float) -> dict[str, float]:
        """Per TCP destination, the largest over its callers' outbound clusters of the
        time-averaged ``upstream_cx_active`` gauge over [start, end] (connections)."""
        window_ms = max(1, round(1000 * (end - start)))
        rows = self.query(f'avg_over_time(envoy_cluster_upstream_cx_active{{replica='
                          f'"{self.replica}"}}[{window_ms}ms])', end)
        out: dict[str, float] = {}
        for row in rows:
            labels = row["metric"]
            dest = destination_of(labels)
            if (dest is not None and is_tcp(dest)
                    and labels.get("cluster_name", "").startswith("outbound|")):
                out[dest] = max(out.get(dest, 0.0), float(row["value"][1]))
        return out

    def service_stats(self, start: float, end: float, duration_s: float,
                      ) -> dict[str, ServiceStats]:
        """Every SockShop service's figures over the window [start, end] (see the module
        docstring); ``duration_s``: the load's own duration from ``start`` (the divisor of
        Little's law; the window's tail after it is idle)."""
        if not duration_s > 0:
            raise ValueError(f"duration_s must be positive, got {duration_s}")
        self.check_no_reset(start, end)
        before = self.counters(start)
        after = self.counters(end)
        # (dest, direction, short counter name) -> delta; vcluster requests by code apart
        deltas: dict[tuple[str, str, str], float] = defaultdict(float)
        requests: dict[str, float] = defaultdict(float)
        errors: dict[str, float] = defaultdict(float)
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
            if name == "envoy_vhost_vcluster_upstream_rq":
                if labels.get("envoy_virtual_cluster") == "all":
                    requests[dest] += delta
                    if int(labels.get("envoy_response_code", "0")) >= 500:
                        errors[dest] += delta
                continue
            cluster = labels.get("cluster_name", "")
            direction = ("out" if cluster.startswith("outbound|")
                         else "in" if cluster.startswith("inbound|") else None)
            if direction is not None:
                deltas[(dest, direction, name.removeprefix("envoy_cluster_"))] += delta
        p99 = self.p99_ms(start, end)
        pool_ms = self._pool_time_ms(start, end)
        tcp_in_use = self.tcp_connections_in_use(start, start + duration_s)

        def total(dest: str, sums: dict[str, tuple[tuple[str, str], ...]], field: str) -> int:
            return round(sum(deltas[(dest, d, c)] for d, c in sums.get(field, ())))

        stats: dict[str, ServiceStats] = {}
        for service in SERVICE_NAMES:
            if is_tcp(service):
                attempts = total(service, _TCP_SUMS, "attempts")
                uo, uf = total(service, _TCP_SUMS, "uo"), total(service, _TCP_SUMS, "uf")
                reset = total(service, _TCP_SUMS, "reset")
                stats[service] = ServiceStats(
                    name=service, num_requests=attempts, p99_ms=None,
                    error_ratio=(uo + uf + reset) / attempts if attempts else 0.0,
                    uo_count=uo, uf_count=uf, retry_count=0, num_attempts=attempts,
                    mean_ms=None, ut_count=0, reset_count=reset, urx_count=0,
                    retry_overflow_count=0, in_flight_per_pool=tcp_in_use.get(service, 0.0))
                continue
            n = round(requests[service])
            p99_ms = p99.get(service) if n else None
            if n and p99_ms is None:
                raise BackendError(f"{service} saw {n} requests but Prometheus has no "
                                   "latency histogram for it")
            timed = deltas[(service, "out", "upstream_rq_time_count")]
            pools = [ms for (dest, _proxy), ms in pool_ms.items() if dest == service]
            stats[service] = ServiceStats(
                name=service, num_requests=n, p99_ms=p99_ms,
                error_ratio=errors[service] / n if n else 0.0,
                uo_count=total(service, _HTTP_SUMS, "uo"),
                uf_count=total(service, _HTTP_SUMS, "uf"),
                retry_count=total(service, _HTTP_SUMS, "retries"),
                num_attempts=total(service, _HTTP_SUMS, "attempts"),
                mean_ms=deltas[(service, "out", "upstream_rq_time_sum")] / timed if timed
                else None,
                ut_count=total(service, _HTTP_SUMS, "ut"),
                reset_count=total(service, _HTTP_SUMS, "reset"),
                urx_count=total(service, _HTTP_SUMS, "urx"),
                retry_overflow_count=total(service, _HTTP_SUMS, "retry_overflow"),
                in_flight_per_pool=max(pools, default=0.0) / (1000.0 * duration_s))
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
