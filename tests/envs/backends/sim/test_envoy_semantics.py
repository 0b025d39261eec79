"""Envoy / Istio connection-pool semantics of the simulator, one test per rule.

Each test sets one DestinationRule and checks the counters that rule must move (and the ones it
must not), so that a wrong model of the rule fails it. Reference: istio-envoy.md.
"""

from __future__ import annotations

import pytest

from envs.backends.base import LoadSpec
from envs.backends.sim import SimMesh
from envs.istio import ConnectionPool, DestinationRule, TcpKeepalive, TcpSettings
from tests.envs.backends.sim._support import rule

LOAD = LoadSpec(users=20, requests=900)


@pytest.fixture(scope="module")
def mesh() -> SimMesh:
    return SimMesh()


def run(mesh: SimMesh, rules: list[DestinationRule], load: LoadSpec = LOAD, seed: int = 3):
    mesh.apply(rules)
    return mesh.run_load(load, seed)


@pytest.fixture(scope="module")
def default_report(mesh: SimMesh):
    return run(mesh, [])


def test_defaults_have_no_circuit_breaking(default_report) -> None:
    for s in default_report.services.values():
        assert s.uo_count == 0 and s.uf_count == 0 and s.retry_count == 0, s


def test_pending_overflow_is_503_uo_and_never_retried(mesh: SimMesh) -> None:
    r = run(mesh, [rule("carts", tcp_max_connections=1, http_http1_max_pending_requests=1)])
    carts = r.services["carts"]
    assert carts.uo_count > 20
    assert carts.retry_count == 0  # overflow 503s are never retried
    assert carts.uf_count == 0
    # DELETE /cart passes carts' status through: its failures are the overflow 503s
    assert r.endpoints["DELETE /cart"].num_failures > 0


@pytest.fixture(scope="module")
def meshes(mesh: SimMesh) -> dict[int, SimMesh]:
    """The simulator by Envoy worker threads per sidecar (2 is the default)."""
    return {1: SimMesh(envoy_workers=1), 2: mesh}


@pytest.mark.parametrize("workers", [1, 2])
def test_over_max_connections_waits_as_pending(meshes: dict[int, SimMesh], workers: int,
                                               default_report) -> None:
    # catalogue has one caller (the front-end), so its one pool carries every request: one
    # connection per Envoy worker (a worker with no connection opens one even at the limit)
    r = run(meshes[workers], [rule("catalogue", tcp_max_connections=1)])
    assert r.services["catalogue"].uo_count == 0
    assert r.services["catalogue"].error_ratio == 0.0
    assert r.extra["task_errors"] == 0
    # HTTP/1.1: one request per connection at a time, the others wait as pending
    assert r.extra["peak_connections"]["catalogue"] == workers
    assert r.extra["peak_inbound_connections"]["catalogue"] == workers
    assert r.extra["peak_inbound_requests"]["catalogue"] == workers
    assert default_report.extra["peak_inbound_requests"]["catalogue"] > 1
    assert r.services["catalogue"].p99_ms > default_report.services["catalogue"].p99_ms


def test_active_requests_at_http2_max_requests_are_503_uo(mesh: SimMesh) -> None:
    r = run(mesh, [rule("carts", http_http2_max_requests=1)])
    carts = r.services["carts"]
    assert carts.uo_count > 0
    assert carts.retry_count == 0
    # front-end's and orders' sidecars each let one request through
    assert r.extra["peak_inbound_requests"]["carts"] <= 2


def test_short_connect_timeout_fails_uf_and_is_retried(mesh: SimMesh) -> None:
    ok = run(mesh, [rule("carts", tcp_connect_timeout_ms=100)])
    assert ok.services["carts"].uf_count == 0
    r = run(mesh, [rule("carts", tcp_connect_timeout_ms=1)])
    carts = r.services["carts"]
    assert carts.uf_count > 0
    assert carts.retry_count > 0


@pytest.mark.parametrize("seed", range(40))
def test_uf_is_retried_at_most_twice_per_request(mesh: SimMesh, seed: int) -> None:
    # one user, one GET /catalogue: the front-end's first connection to catalogue
    r = run(mesh, [rule("catalogue", tcp_connect_timeout_ms=1)], LoadSpec(users=1, requests=1),
            seed)
    cat = r.services["catalogue"]
    assert cat.retry_count <= 2
    # every retry follows a connect failure; the last failure is returned only after 2 retries
    assert cat.uf_count in (cat.retry_count, cat.retry_count + 1)
    if cat.uf_count == cat.retry_count + 1:
        assert cat.retry_count == 2
        assert cat.error_ratio == 1.0


def test_uf_retries_use_all_attempts_sometimes(mesh: SimMesh) -> None:
    counts = set()
    for seed in range(40):
        r = run(mesh, [rule("catalogue", tcp_connect_timeout_ms=1)],
                LoadSpec(users=1, requests=1), seed)
        counts.add(r.services["catalogue"].retry_count)
    assert counts == {0, 1, 2}


def test_retries_over_max_retries_are_skipped(mesh: SimMesh) -> None:
    def totals(rules: list[DestinationRule]) -> tuple[int, int, int, int]:
        errors = retries = uf = overflows = 0
        for seed in range(8):
            r = run(mesh, rules, seed=seed)
            carts = r.services["carts"]
            errors += round(carts.error_ratio * carts.num_requests)
            retries += carts.retry_count
            uf += carts.uf_count
            overflows += r.extra["retry_overflows"].get("carts", 0)
        return errors, retries, uf, overflows

    f_errors, f_retries, f_uf, f_overflows = totals([rule("carts", tcp_connect_timeout_ms=1)])
    c_errors, c_retries, c_uf, c_overflows = totals(
        [rule("carts", tcp_connect_timeout_ms=1, http_max_retries=1)])
    assert f_overflows == 0 < c_overflows
    assert c_retries < f_retries
    # a skipped retry returns the original error: more connect failures end as errors
    assert c_errors / c_uf > 1.5 * f_errors / f_uf


def test_max_requests_per_connection_1_connects_every_request(mesh: SimMesh,
                                                              default_report) -> None:
    r = run(mesh, [rule("carts", http_max_requests_per_connection=1)])
    opened = r.extra["connections_opened"]["carts"]
    assert opened >= r.services["carts"].num_requests - 25  # ~one per request
    assert default_report.extra["connections_opened"].get("carts", 0) < 30


def test_idle_timeout_closes_idle_connections(mesh: SimMesh, default_report) -> None:
    r = run(mesh, [rule("payment", http_idle_timeout_ms=1)])
    # payment is called once per order, far apart: every call finds its connection closed
    assert r.extra["connections_opened"]["payment"] >= r.services["payment"].num_requests - 5
    assert default_report.extra["connections_opened"].get("payment", 0) <= 3


def test_keepalive_changes_nothing_on_healthy_links(mesh: SimMesh, default_report) -> None:
    ka = TcpKeepalive(probes=1, time_ms=1000, interval_ms=1000)
    rules = [DestinationRule(name=s, host=s, connection_pool=ConnectionPool(
        tcp=TcpSettings(tcp_keepalive=ka))) for s in ("carts", "carts-db", "user", "front-end")]
    assert run(mesh, rules).to_dict() == default_report.to_dict()


def test_http_settings_have_no_effect_on_tcp_destinations(mesh: SimMesh,
                                                          default_report) -> None:
    rules = [rule(s, http_http1_max_pending_requests=1, http_http2_max_requests=1,
                  http_max_requests_per_connection=1, http_max_retries=1, http_idle_timeout_ms=1)
             for s in ("carts-db", "user-db", "session-db", "catalogue-db", "orders-db",
                       "rabbitmq")]
    assert run(mesh, rules).to_dict() == default_report.to_dict()


def test_tcp_max_connections_refuses_over_limit_connections(mesh: SimMesh) -> None:
    r = run(mesh, [rule("carts-db", tcp_max_connections=1)])
    db = r.services["carts-db"]
    assert db.uo_count > 0  # connection attempts refused by the TCP proxy
    # carts answers 500 when its driver cannot connect
    assert r.services["carts"].error_ratio > 0
    assert r.endpoints["DELETE /cart"].num_failures > 0


def test_redis_single_connection_is_not_limited_by_max_connections(mesh: SimMesh,
                                                                   default_report) -> None:
    # the front-end multiplexes every session command on one redis connection
    r = run(mesh, [rule("session-db", tcp_max_connections=1)])
    assert r.to_dict() == default_report.to_dict()


@pytest.mark.parametrize("workers", [1, 2])
def test_limits_hold_per_calling_sidecar(meshes: dict[int, SimMesh], workers: int) -> None:
    # user is called by the front-end and by orders; each sidecar's pool may hold one
    # connection per Envoy worker
    r = run(meshes[workers], [rule("user", tcp_max_connections=1)],
            LoadSpec(users=30, requests=1500))
    assert r.services["user"].uo_count == 0
    assert r.extra["peak_connections"]["user"] == workers
    # two callers: at most 2 × workers requests reach user's sidecar at once, of which its
    # inbound pool (maxConnections 1 too) serves `workers`
    assert r.extra["peak_inbound_requests"]["user"] == 2 * workers
    assert r.extra["peak_inbound_connections"]["user"] == workers
    # catalogue has a single caller (the front-end): never more than one per worker
    r = run(meshes[workers], [rule("catalogue", tcp_max_connections=1)])
    assert r.extra["peak_inbound_requests"]["catalogue"] == workers


def test_unset_fields_are_istio_defaults(mesh: SimMesh, default_report) -> None:
    from envs.istio import DEFAULT_CONNECT_TIMEOUT_MS, INT32_MAX

    empty = [DestinationRule(name="carts", host="carts",
                             connection_pool=ConnectionPool(tcp=TcpSettings()))]
    assert run(mesh, empty).to_dict() == default_report.to_dict()
    zeros = [rule("carts", tcp_max_connections=0, http_max_retries=0,
                  http_http1_max_pending_requests=0, http_http2_max_requests=0)]
    assert run(mesh, zeros).to_dict() == default_report.to_dict()
    big = [rule("carts", tcp_max_connections=INT32_MAX,
                tcp_connect_timeout_ms=DEFAULT_CONNECT_TIMEOUT_MS)]
    assert run(mesh, big).to_dict() == default_report.to_dict()


def test_seed_style_random_configs_always_complete(mesh: SimMesh) -> None:
    # the notebook's initial configurations: six fields drawn from 1..100 on every service but the
    # front-end; every run must finish with exactly the requested count, reproducibly
    import random

    from envs.sockshop import SERVICE_NAMES

    rng = random.Random(7)
    for trial in range(40):
        rules = [rule(s, tcp_max_connections=rng.randint(1, 100),
                      tcp_connect_timeout_ms=rng.randint(1, 100),
                      http_http1_max_pending_requests=rng.randint(1, 100),
                      http_http2_max_requests=rng.randint(1, 100),
                      http_max_requests_per_connection=rng.randint(1, 100),
                      http_max_retries=rng.randint(1, 100))
                 for s in SERVICE_NAMES if s != "front-end"]
        users = rng.randint(10, 20)
        load = LoadSpec(users=users, requests=80 * users)
        r = run(mesh, rules, load, trial)
        assert r.num_requests == 80 * users
        assert run(mesh, rules, load, trial).to_dict() == r.to_dict()
