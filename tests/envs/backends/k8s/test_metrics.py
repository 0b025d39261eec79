"""Istio's PromQL queries and their parsing into service statistics
(``envs.backends.k8s.metrics``), without any server."""

from __future__ import annotations

import math

import pytest

from envs.backends.base import BackendError
from envs.backends.k8s.metrics import istio_queries, service_stats
from tests.envs.backends.k8s._fakes import NS, sample


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
