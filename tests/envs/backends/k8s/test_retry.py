"""Retries of the k8s backend (``envs.backends.k8s.retry``): backoff, ``Retry-After``, and which
Kubernetes API and Prometheus errors are retried, over real HTTP against the fakes."""

from __future__ import annotations

from typing import Any

import pytest

from envs.backends.base import BackendError, LoadSpec
from envs.backends.k8s.mesh import K8sMesh
from envs.backends.k8s.retry import MAX_RETRY_AFTER_S, RetryPolicy, TransientError
from envs.istio import DestinationRule
from tests.envs.backends.k8s._fakes import (
    CARTS_POOL,
    DR_PATH,
    END,
    FAST,
    LOCUST_LOG,
    NS,
    Clock,
    FakeKube,
    Sleeps,
    closed_port_url,
    mesh,
)

# ---------------------------------------------------------------------------------------------
# Kubernetes API errors
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Prometheus errors
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The policy itself
# ---------------------------------------------------------------------------------------------


def test_retry_policy_reraises_bugs_and_caps_retry_after() -> None:
    sleeps = Sleeps()

    def bug() -> None:
        raise TypeError("a bug, not an API error")

    with pytest.raises(TypeError, match="a bug"):
        FAST.run("call", bug, lambda exc: None, sleeps)
    calls = iter([TransientError("busy", retry_after_s=3600.0)])

    def busy_once() -> str:
        exc = next(calls, None)
        if exc is not None:
            raise exc
        return "ok"

    assert FAST.run("call", busy_once, lambda exc: None, sleeps) == "ok"
    assert sleeps.calls == [MAX_RETRY_AFTER_S]
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
