"""The local backend's cause and demand channels without processes: the open load's seeded
schedule, faults as the load generator takes them, and how Envoy's counters (as Prometheus
holds them) become :class:`~envs.backends.report.ServiceStats`, with the invariants of the
report contract."""

from __future__ import annotations

import itertools
import math
import statistics
from typing import Any

import pytest

from envs.backends.base import LatencySpike, LoadSpec, ServiceDown
from envs.backends.local.arrivals import arrival_offsets, nearest_rank
from envs.backends.local.mesh import fault_documents
from envs.backends.local.prom import MeshMetrics
from envs.backends.report import ServiceStats

FE = "front-end"
OUT_CARTS = "outbound|80||carts.sock-shop.svc.cluster.local"
OUT_CARTS_DB = "outbound|27017||carts-db.sock-shop.svc.cluster.local"


def check_invariants(s: ServiceStats) -> None:
    """The report contract's invariants of one destination (every cause measured; the demand
    may be None: the k8s backend has none for TCP)."""
    for v in (s.num_attempts, s.ut_count, s.reset_count, s.urx_count, s.retry_overflow_count):
        assert v is not None and v >= 0, s
    assert s.in_flight_per_pool is None or s.in_flight_per_pool >= 0, s
    assert s.num_attempts >= s.num_requests, s
    assert s.uo_count + s.uf_count + s.ut_count + s.reset_count <= s.num_attempts, s
    assert s.retry_count <= s.num_attempts, s
    assert s.urx_count <= s.num_requests and s.retry_overflow_count <= s.num_requests, s
    assert 0.0 <= s.error_ratio <= 1.0, s


def test_open_load_schedule_is_poisson_at_a_ninth_of_the_rate_and_seeded():
    rate = 60.0 / 9
    gaps = [b - a for a, b in itertools.pairwise(
        [0.0, *itertools.islice(arrival_offsets(rate, seed=3), 20_000)])]
    # 20 000 exponential gaps: the mean's relative standard error is 1/sqrt(20 000) = 0.7 %
    assert statistics.fmean(gaps) == pytest.approx(1 / rate, rel=0.025)
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.04)
    first = list(itertools.islice(arrival_offsets(rate, seed=3), 5))
    assert first == list(itertools.islice(arrival_offsets(rate, seed=3), 5))
    assert first != list(itertools.islice(arrival_offsets(rate, seed=4), 5))
    with pytest.raises(ValueError):
        next(arrival_offsets(0.0, seed=0))


def test_nearest_rank_p99():
    values = [float(v) for v in range(1, 201)]
    assert nearest_rank(values, 0.99) == 198.0  # ceil(0.99 * 200) = 198th value
    assert nearest_rank([5.0], 0.99) == 5.0
    with pytest.raises(ValueError):
        nearest_rank([], 0.99)


def test_faults_become_load_generator_documents_and_bad_ones_are_refused():
    load = LoadSpec(0, 90, mode="open", arrival_rate_rps=30.0,
                    faults=(ServiceDown("carts", 1.0, 3.0), LatencySpike("user", 0.0, 9.0, 4.0)))
    assert fault_documents(load) == [
        {"service": "carts", "kind": "down", "start_s": 1.0, "end_s": 3.0, "factor": 1.0},
        {"service": "user", "kind": "slow", "start_s": 0.0, "end_s": 9.0, "factor": 4.0}]
    for bad in (ServiceDown("nope", 0.0, 1.0), ServiceDown("carts", 2.0, 1.0),
                LatencySpike("carts", 0.0, 1.0, 0.0)):
        with pytest.raises(ValueError):
            fault_documents(LoadSpec(2, 10, faults=(bad,)))


# ----- Prometheus → ServiceStats, on the counters of a measured run (carts down 2 s of a
# closed load on this Envoy; `issues show 13`): numbers as Envoy reported them ---------------

def _series(name: str, value: float, **labels: str) -> tuple[dict[str, str], float]:
    return {"__name__": name, "replica": "9", **labels}, value


def _cluster(proxy: str, cluster: str, **stats: float) -> list[tuple[dict[str, str], float]]:
    return [_series(f"envoy_cluster_{k}", v, proxy=proxy, cluster_name=cluster)
            for k, v in stats.items()]


AFTER = [
    # carts (HTTP): callers front-end and orders, carts' own inbound cluster refusing
    *_cluster(FE, OUT_CARTS, upstream_rq_total=286, upstream_rq_retry=154,
              upstream_rq_retry_limit_exceeded=74, upstream_rq_time_sum=5900.0,
              upstream_rq_time_count=132),
    *_cluster("orders", OUT_CARTS, upstream_rq_total=58, upstream_rq_retry=26,
              upstream_rq_retry_limit_exceeded=13, upstream_rq_time_sum=1400.0,
              upstream_rq_time_count=32),
    *_cluster("carts", "inbound|80||", upstream_rq_total=77,
              upstream_rq_pending_failure_eject=267, upstream_cx_connect_fail=267,
              upstream_cx_destroy_remote_with_active_rq=2),
    _series("envoy_vhost_vcluster_upstream_rq", 77, proxy=FE, envoy_virtual_host="carts",
            envoy_virtual_cluster="all", envoy_response_code="200"),
    _series("envoy_vhost_vcluster_upstream_rq", 55, proxy=FE, envoy_virtual_host="carts",
            envoy_virtual_cluster="all", envoy_response_code="503"),
    _series("envoy_vhost_vcluster_upstream_rq", 32, proxy="orders",
            envoy_virtual_host="carts", envoy_virtual_cluster="all",
            envoy_response_code="503"),
    # carts-db (TCP): carts' tcp_proxy, carts-db's inbound refusing
    *_cluster("carts", OUT_CARTS_DB, upstream_cx_total=70, upstream_cx_connect_fail=12,
              upstream_cx_overflow=3),
    *_cluster("carts-db", "inbound|27017||", upstream_cx_total=70, upstream_cx_connect_fail=68,
              upstream_cx_destroy_remote=68),
]


class _FakeProm(MeshMetrics):
    """A MeshMetrics whose Prometheus holds zeros at ``start`` and :data:`AFTER` at ``end``."""

    def __init__(self) -> None:
        self.url, self.replica = "fake", 9

    def query(self, promql: str, at: float) -> list[dict[str, Any]]:
        if promql.startswith("resets("):
            return []
        if promql.startswith("avg_over_time"):
            return [{"metric": {"proxy": "carts", "cluster_name": OUT_CARTS_DB},
                     "value": [at, "2.5"]}]
        if "bucket" in promql:
            out = []
            for code_n, le in ((0 if at < 50 else 164, "50"), (0 if at < 50 else 164, "+Inf")):
                out.append({"metric": {"__name__": "envoy_vhost_vcluster_upstream_rq_time_bucket",
                                       "proxy": FE, "envoy_virtual_host": "carts",
                                       "envoy_virtual_cluster": "all", "le": le},
                            "value": [at, str(code_n)]})
            return out
        rows = [(labels, v if at >= 50 else 0.0) for labels, v in AFTER]
        if "upstream_rq_time_sum{" in promql:
            rows = [r for r in rows if r[0]["__name__"] == "envoy_cluster_upstream_rq_time_sum"]
        return [{"metric": labels, "value": [at, str(v)]} for labels, v in rows]


def test_envoy_counters_become_causes_and_demand_per_destination():
    stats = _FakeProm().service_stats(10.0, 60.0, duration_s=4.0)
    carts = stats["carts"]
    assert carts.num_requests == 164 and carts.error_ratio == pytest.approx(87 / 164)
    assert carts.num_attempts == 286 + 58 == 164 + carts.retry_count  # first tries + retries
    assert carts.reset_count == 267 + 2  # refused connects + the in-flight resets, callee side
    assert (carts.uo_count, carts.uf_count, carts.ut_count) == (0, 0, 0)
    assert carts.urx_count == 87 and carts.retry_overflow_count == 0
    assert carts.mean_ms == pytest.approx(7300.0 / 164)
    # Little's law per calling pool: front-end's pool held 5 900 request-ms over 4 s
    assert carts.in_flight_per_pool == pytest.approx(5900.0 / 4000.0)
    db = stats["carts-db"]
    # a TCP request is a connection asked for: opened (70) or refused by the pool (3)
    assert db.num_requests == db.num_attempts == 73
    assert db.uo_count == 3 and db.reset_count == 68
    # the 12 outbound connect failures are carts-db's refusals seen from the caller: counted
    # once, on carts-db's side (UF is a connect timeout between the sidecars)
    assert db.uf_count == 0
    assert db.error_ratio == pytest.approx(71 / 73) and db.in_flight_per_pool == 2.5
    for s in stats.values():
        if s.num_requests:
            check_invariants(s)
    assert math.isclose(stats["user"].error_ratio, 0.0) and stats["user"].num_attempts == 0
