"""Istio's PromQL queries and their parsing into service statistics
(``envs.backends.k8s.metrics``), without any server."""

from __future__ import annotations

import math
import re

import pytest

from envs.backends.base import BackendError
from envs.backends.k8s.metrics import PROXY_STATS_CONFIG, istio_queries, service_stats
from tests.envs.backends.k8s._fakes import NS, sample


def test_called_service_without_p99_is_an_error() -> None:
    results = {k: [] for k in istio_queries(NS, 30)}
    results["http_requests"] = [sample({"destination_service_name": "carts"}, 12.0)]
    for k in ("http_failed", "http_uo", "http_uf", "http_ut", "http_reset", "http_urx",
              "http_duration_ms", "http_duration_n"):
        results[k] = [sample({"destination_service_name": "carts"}, 12.0)]
    results["http_p99_ms"] = [sample({"destination_service_name": "carts"}, math.nan)]
    with pytest.raises(BackendError, match="12 http requests to carts in sockshop-2 but no p99"):
        service_stats(results, NS, 30.0)
    results["http_p99_ms"] = [sample({"destination_service_name": "carts"}, 80.0)]
    stats = service_stats(results, NS, 30.0)
    assert stats["carts"].p99_ms == 80.0 and stats["user"].num_requests == 0


def test_queries_refuse_a_namespace_that_is_not_a_label() -> None:
    with pytest.raises(ValueError, match="DNS-1123"):
        istio_queries('x"} or vector(1) #', 30)


def test_every_cause_flag_is_queried_and_a_missing_one_is_an_error() -> None:
    queries = istio_queries(NS, 30)
    for flag, name in (("UO", "http_uo"), ("UF", "http_uf"), ("UT", "http_ut"),
                       ("URX", "http_urx"), ("UO", "tcp_uo")):
        assert f'response_flags=~"(.*,)?{flag}(,.*)?"' in queries[name]
    assert 'response_flags=~"(.*,)?(UC|UR)(,.*)?"' in queries["http_reset"]
    assert "envoy_cluster_upstream_rq_retry_overflow" in queries["retry_overflow"]
    results = {k: [] for k in queries}
    results["http_requests"] = [sample({"destination_service_name": "carts"}, 12.0)]
    for k in ("http_failed", "http_uo", "http_uf", "http_p99_ms", "http_duration_ms",
              "http_duration_n", "http_urx", "http_reset"):
        results[k] = [sample({"destination_service_name": "carts"}, 1.0)]
    with pytest.raises(BackendError, match="no ut"):
        service_stats(results, NS, 30.0)


def test_proxy_stats_matcher_exports_what_the_queries_read() -> None:
    suffixes = PROXY_STATS_CONFIG["proxyStatsMatcher"]["inclusionSuffixes"]
    for query in istio_queries(NS, 30).values():
        for name in re.findall(r"envoy_cluster_(\w+)\{", query):
            assert name in suffixes, name
