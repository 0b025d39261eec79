"""DestinationRule documents (``envs.backends.k8s.rules``) as the fake Kubernetes API receives them:
cleaned snapshots, server-side apply bodies, validation before any request, fields another
manager owns."""

from __future__ import annotations

from typing import Any

import pytest

from envs.backends.base import BackendError
from envs.istio import ConnectionPool, DestinationRule, HttpSettings, TcpSettings, ValidationError
from tests.envs.backends.k8s._fakes import (
    CARTS_POOL,
    DR_PATH,
    NS,
    FakeKube,
    Sleeps,
    dr,
    mesh,
)


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


def test_fields_owned_by_another_manager_are_detected(kube: Any) -> None:
    fake = FakeKube([dr("carts", {"tcp": {"maxConnections": 100}})])
    fake.foreign_pool["carts"] = {"tcp": {"maxConnections": 100}}
    server = kube(fake)
    m = mesh(server.url)
    with pytest.raises(BackendError, match="kubectl-client-side-apply"):
        m.apply([DestinationRule("carts", "carts", ConnectionPool(
            http=HttpSettings(max_retries=1)))])
    m.close()
