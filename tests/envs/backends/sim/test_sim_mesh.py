"""SimMesh as a backend: the Backend protocol, the load test, SockShop's own behaviour, faults,
determinism and the ``meshtune simulate`` command."""

from __future__ import annotations

import json

import pytest

from envs.backends import make_backend
from envs.backends.base import Backend, LatencySpike, LoadSpec, ServiceDown
from envs.backends.sim import SimMesh
from envs.cli import main
from envs.istio import ConnectionPool, DestinationRule, TcpSettings
from envs.sockshop import CATALOGUE, PAYMENT_LIMIT, SHIPPING_COST, endpoint_names

HOLY = next(i for i in CATALOGUE if i.price + SHIPPING_COST > PAYMENT_LIMIT)
HOLY_DETAIL = f"GET /detail.html?id={HOLY.item_id}"


def timeout_rule(service: str, ms: int) -> DestinationRule:
    return DestinationRule(name=service, host=service, connection_pool=ConnectionPool(
        tcp=TcpSettings(connect_timeout_ms=ms)))


@pytest.fixture(scope="module")
def mesh() -> SimMesh:
    return SimMesh()


# ----- the Backend protocol ------------------------------------------------------------------

def test_is_the_registered_sim_backend() -> None:
    m = make_backend("sim")
    assert isinstance(m, SimMesh) and isinstance(m, Backend)
    assert m.compile_s > 0


def test_apply_rejects_unknown_services_and_keeps_config(mesh: SimMesh) -> None:
    good = [timeout_rule("carts", 50)]
    mesh.apply(good)
    with pytest.raises(ValueError, match="nosuch"):
        mesh.apply([timeout_rule("catalogue", 5), timeout_rule("nosuch", 5)])
    assert mesh.rules == tuple(good)
    mesh.apply([])


def test_close_restores_the_initial_config() -> None:
    initial = [timeout_rule("user", 30)]
    m = SimMesh(initial, warm=False)
    m.apply([timeout_rule("carts", 2)])
    m.close()
    assert m.rules == tuple(initial)
    m.close()  # idempotent
    assert m.rules == tuple(initial)


def test_healthy_default_and_broken(mesh: SimMesh) -> None:
    mesh.apply([])
    assert mesh.healthy()
    # a 1 ms connect timeout everywhere: the cold connections of GET /catalogue fail
    # (deterministic: the check uses a fixed seed)
    mesh.apply([timeout_rule(s, 1) for s in ("front-end", "session-db")])
    assert not mesh.healthy()
    assert not mesh.healthy()
    mesh.apply([])


def test_invalid_faults_are_rejected(mesh: SimMesh) -> None:
    with pytest.raises(ValueError, match="nosuch"):
        mesh.run_load(LoadSpec(5, 50, faults=(ServiceDown("nosuch", 0, 1),)), 0)
    with pytest.raises(ValueError, match="window"):
        mesh.run_load(LoadSpec(5, 50, faults=(ServiceDown("carts", 2, 1),)), 0)


# ----- the load test -------------------------------------------------------------------------

def test_stops_at_exactly_the_requested_count(mesh: SimMesh) -> None:
    mesh.apply([])
    for n in (1, 9, 10, 777):
        r = mesh.run_load(LoadSpec(users=7, requests=n), 1)
        assert r.num_requests == n


def test_report_has_every_endpoint_and_service(mesh: SimMesh) -> None:
    r = mesh.run_load(LoadSpec(users=20, requests=1600), 0)
    assert tuple(r.endpoints) == endpoint_names()
    assert len(r.services) == 14
    assert r.users == 20 and r.backend == "sim"
    e = r.endpoints["GET /login"]
    assert e.min_ms <= e.median_ms <= e.p95_ms <= e.p99_ms <= e.max_ms
    assert e.rps == pytest.approx(e.num_requests / r.duration_s)
    # requests by endpoint follow the 9-step loop
    for name in ("GET /", "GET /login", "POST /orders"):
        assert abs(r.endpoints[name].num_requests - 1600 / 9) < 25
    json.loads(r.to_json())


def test_same_seed_same_report(mesh: SimMesh) -> None:
    load = LoadSpec(users=15, requests=600)
    a = mesh.run_load(load, 42).to_dict()
    assert mesh.run_load(load, 42).to_dict() == a
    assert mesh.run_load(load, 43).to_dict() != a


def test_stats_reset_after_hatching() -> None:
    load = LoadSpec(users=40, requests=400)
    reset = SimMesh(warm=False).run_load(load, 0)
    counted = SimMesh(reset_stats_after_hatch=False, warm=False).run_load(load, 0)
    # hatching 40 users takes 7.8 s; the reset run measures only the full load
    assert reset.endpoints["GET /"].avg_ms > 1.5 * counted.endpoints["GET /"].avg_ms


def test_more_users_more_latency_same_throughput(mesh: SimMesh) -> None:
    mesh.apply([])
    r20 = mesh.run_load(LoadSpec(users=20, requests=1200), 0)
    r60 = mesh.run_load(LoadSpec(users=60, requests=1200), 0)
    # the front-end is the bottleneck: throughput saturates, latency grows with users
    assert r60.total_rps == pytest.approx(r20.total_rps, rel=0.15)
    assert r60.endpoints["GET /"].avg_ms > 2 * r20.endpoints["GET /"].avg_ms


def test_open_loop_follows_the_arrival_rate(mesh: SimMesh) -> None:
    r = mesh.run_load(LoadSpec(users=0, requests=1800, mode="open", arrival_rate_rps=45.0), 5)
    assert r.users == 0
    assert r.total_rps == pytest.approx(45.0, rel=0.12)
    # well below capacity: static pages are fast
    assert r.endpoints["GET /"].avg_ms < 60


# ----- SockShop's behaviour ------------------------------------------------------------------

def test_payment_declines_only_the_holy_sock_for_a_lone_user(mesh: SimMesh) -> None:
    mesh.apply([])
    r = mesh.run_load(LoadSpec(users=1, requests=9 * 60), 11)
    # alone, the cart holds exactly the loop's item: orders is 406 iff it is the Holy sock
    assert r.endpoints[HOLY_DETAIL].num_requests > 0
    assert r.endpoints["POST /orders"].num_failures == r.endpoints[HOLY_DETAIL].num_requests
    assert r.extra["payment_declines"] == r.endpoints[HOLY_DETAIL].num_requests
    assert r.endpoints["POST /cart"].num_failures == 0


def test_shared_cart_races_fail_post_cart(mesh: SimMesh) -> None:
    mesh.apply([])
    r = mesh.run_load(LoadSpec(users=50, requests=3000), 2)
    fails = r.endpoints["POST /cart"].num_failures
    assert fails > 0
    # every POST /cart failure is a race (a few races may still be in flight at the stop)
    assert fails <= r.extra["cart_race_failures"] <= fails + 5
    # orders pays whatever the shared cart holds (others' DELETEs and adds interleave), so the
    # declines no longer match the user's own Holy-sock loops as they do for a lone user
    declines = holy = 0
    for seed in range(3):
        r = mesh.run_load(LoadSpec(users=50, requests=3000), seed)
        declines += r.extra["payment_declines"]
        holy += r.endpoints[HOLY_DETAIL].num_requests
    assert declines != holy
    assert declines > 0


def test_static_pages_touch_only_the_front_end(mesh: SimMesh) -> None:
    mesh.apply([])
    r = mesh.run_load(LoadSpec(users=1, requests=9 * 5), 0)
    api = sum(r.endpoints[n].num_requests for n in
              ("GET /catalogue", "GET /login", "DELETE /cart", "POST /cart", "POST /orders"))
    assert r.extra["db_operations"]["session-db"] == api
    assert r.services["front-end"].num_requests == 45


def test_catalogue_down_answers_200_and_restarts_the_loop(mesh: SimMesh) -> None:
    mesh.apply([])
    r = mesh.run_load(LoadSpec(users=5, requests=200, faults=(ServiceDown("catalogue", 0, 1e6),)),
                      0)
    cat = r.endpoints["GET /catalogue"]
    assert cat.num_requests == 200 and cat.num_failures == 0
    assert r.extra["task_errors"] == 200
    assert r.endpoints["GET /"].num_requests == 0
    # a down service refuses / resets: counted as resets, not as connect failures (issue 12)
    assert r.services["catalogue"].reset_count > 0
    assert r.services["catalogue"].uf_count == 0


def test_service_down_window_fails_callers_with_resets(mesh: SimMesh) -> None:
    mesh.apply([])
    load = LoadSpec(users=10, requests=1500, faults=(ServiceDown("carts", 4.0, 6.0),))
    r = mesh.run_load(load, 0)
    assert r.services["carts"].reset_count > 0
    assert r.services["carts"].retry_count > 0
    assert r.endpoints["DELETE /cart"].num_failures > 0
    # outside the window carts works again: most DELETEs succeed
    assert r.endpoints["DELETE /cart"].failure_pct < 50


def test_latency_spike_slows_and_orders_wait_times_out(mesh: SimMesh) -> None:
    mesh.apply([])
    base = mesh.run_load(LoadSpec(users=10, requests=900), 0)
    slow = mesh.run_load(LoadSpec(users=10, requests=900,
                                  faults=(LatencySpike("user", 0, 1e6, 3.0),)), 0)
    assert slow.endpoints["GET /login"].avg_ms > base.endpoints["GET /login"].avg_ms
    # payment 20 000x slower: orders gives up after 5 s and answers 500
    stuck = mesh.run_load(LoadSpec(users=10, requests=400,
                                   faults=(LatencySpike("payment", 0, 1e6, 20_000.0),)), 0)
    assert stuck.extra["order_wait_timeouts"] > 0
    assert stuck.endpoints["POST /orders"].num_failures > 0
    assert stuck.endpoints["POST /orders"].min_ms >= 5000


# ----- meshtune simulate -----------------------------------------------------------------------

def test_cli_prints_the_locust_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--users", "5", "--requests", "90", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "GET /login" in out and "Aggregated" in out and "p99" in out


def test_cli_json_with_rules(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "dr.yaml"
    f.write_text("apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                 "metadata: {name: carts}\nspec:\n  host: carts\n  trafficPolicy:\n"
                 "    connectionPool:\n      tcp: {maxConnections: 1}\n"
                 "      http: {http1MaxPendingRequests: 1}\n")
    assert main(["simulate", "--rules", str(f), "--users", "20", "--requests", "400",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["num_requests"] == 400
    assert data["services"]["carts"]["uo_count"] > 0


def test_cli_platform_changes_the_per_hop_costs(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--users", "5", "--requests", "200", "--seed", "1", "--json"]
    reports = {}
    for platform in ("cluster", "loopback"):
        assert main([*argv, "--platform", platform]) == 0
        reports[platform] = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == reports["cluster"]  # the default
    # Loopback hops are cheaper (sub-ms sidecar passes and connects): lower latencies.
    assert reports["loopback"]["endpoints"]["GET /catalogue"]["median_ms"] < \
        reports["cluster"]["endpoints"]["GET /catalogue"]["median_ms"]
    with pytest.raises(SystemExit):
        main([*argv, "--platform", "moon"])


@pytest.mark.parametrize("argv, code, message", [
    (["--users", "-1"], 2, "--users must be positive"),
    (["--requests", "0"], 2, "--requests must be positive"),
    (["--rules", "/no/such/file.yaml"], 1, "cannot read file"),
])
def test_cli_bad_input(argv: list[str], code: int, message: str,
                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", *argv]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_unknown_service(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "dr.yaml"
    f.write_text("apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                 "metadata: {name: x}\nspec:\n  host: nosuch\n  trafficPolicy:\n"
                 "    connectionPool:\n      tcp: {maxConnections: 1}\n")
    assert main(["simulate", "--rules", str(f)]) == 1
    assert "nosuch" in capsys.readouterr().err


def test_pools_grow_when_requests_pile_up(mesh: SimMesh) -> None:
    # payment 20 000x slower: every order leaves a stuck payment call behind, far more calls
    # in flight than the core's first capacity guess for 2 users; the run re-sizes and ends
    mesh.apply([])
    load = LoadSpec(users=2, requests=2000, faults=(LatencySpike("payment", 0, 1e7, 20_000.0),))
    r = mesh.run_load(load, 0)
    assert r.num_requests == 2000
    assert r.extra["order_wait_timeouts"] > 100
    assert mesh.run_load(load, 0).to_dict() == r.to_dict()


def test_open_loop_overload_queues_at_the_front_end(mesh: SimMesh) -> None:
    mesh.apply([])
    light = mesh.run_load(LoadSpec(0, 900, mode="open", arrival_rate_rps=40.0), 1)
    heavy = mesh.run_load(LoadSpec(0, 900, mode="open", arrival_rate_rps=400.0), 1)
    # the front-end saturates near 110 req/s: above it, throughput caps and latency explodes
    assert heavy.total_rps < 160
    assert heavy.endpoints["GET /"].avg_ms > 5 * light.endpoints["GET /"].avg_ms


# ----- front-end crashes -------------------------------------------------------------------------

def overflow_catalogue() -> list[DestinationRule]:
    from envs.istio import HttpSettings

    return [DestinationRule(name="catalogue", host="catalogue", connection_pool=ConnectionPool(
        tcp=TcpSettings(max_connections=1), http=HttpSettings(http1_max_pending_requests=1)))]


def test_sidecar_503_on_catalogue_lookup_crashes_the_front_end() -> None:
    crashing = SimMesh(overflow_catalogue(), warm=False)
    r = crashing.run_load(LoadSpec(users=30, requests=2000), 0)
    assert r.extra["frontend_crashes"] >= 2
    # after the second crash kubelet backs off 10 s: the restart history adds up
    assert r.extra["frontend_down_ms"] >= 2 * 2000 + 10_000
    # while it is down every request fails, static pages included
    assert r.failure_pct > 50
    assert r.services["front-end"].error_ratio > 0.5

    surviving = SimMesh(overflow_catalogue(), frontend_crashes=False, warm=False)
    r = surviving.run_load(LoadSpec(users=30, requests=2000), 0)
    assert r.extra["frontend_crashes"] == 0
    assert r.endpoints["GET /"].num_failures == 0
    assert r.services["catalogue"].uo_count > 0  # the same overflows, answered as 500


def test_any_failed_customer_lookup_crashes_the_front_end(mesh: SimMesh) -> None:
    # user-db down for 1 s: user answers its own (JSON) 500, which front-end's POST /orders
    # still dereferences (jsonBody._links) -> crash, about 2 s of restart
    mesh.apply([])
    r = mesh.run_load(LoadSpec(users=10, requests=900, faults=(ServiceDown("user-db", 3, 4),)),
                      0)
    assert r.extra["frontend_crashes"] >= 1
    assert r.endpoints["GET /category.html"].num_failures > 0


def test_failed_carts_calls_do_not_crash_the_front_end(mesh: SimMesh) -> None:
    # carts' errors are JSON and the front-end calls carts with json: true
    mesh.apply([DestinationRule(name="carts-db", host="carts-db", connection_pool=ConnectionPool(
        tcp=TcpSettings(max_connections=1)))])
    r = mesh.run_load(LoadSpec(users=20, requests=900), 0)
    assert r.endpoints["DELETE /cart"].num_failures > 0
    assert r.extra["frontend_crashes"] == 0
    assert r.endpoints["GET /"].num_failures == 0
    mesh.apply([])
