"""Envoy's adaptive concurrency filter on the local mesh: its parameters and their JSON, where
the filter goes, the method that declares it (and refuses the simulator), and, with real Envoy,
Locust and Prometheus on replica :data:`REPLICA`, that it is active and blocks requests."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest

from envs.backends.base import LatencySpike, LoadSpec
from envs.backends.lease import pid_alive
from envs.backends.local import LocalMesh
from envs.backends.local import envoy_config as ec
from envs.backends.local.ports import HOST, ReplicaPorts
from envs.backends.local.supervisor import busy_ports, read_state
from envs.backends.local.topology import GATEWAY, is_tcp
from envs.backends.sim import SimMesh
from envs.scenarios import steady
from rl.controllers import AdaptiveConcurrencyController
from rl.evaluation.closed_loop import run_scenario
from tests.envs.backends.local.test_e2e import _children_of, _locust_503s

REPLICA = 12
NS = "sock-shop"
FILTER = "envoy.filters.http.adaptive_concurrency"


def _http_filters(listener: dict) -> list[str]:
    typed = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return [f["name"] for f in typed.get("http_filters", [])]


def test_defaults_are_the_documented_gradient_controller():
    assert ec.AdaptiveConcurrency().http_filter() == {
        "name": FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.adaptive_concurrency.v3"
                     ".AdaptiveConcurrency",
            "gradient_controller_config": {
                "sample_aggregate_percentile": {"value": 90.0},
                "concurrency_limit_params": {"max_concurrency_limit": 1000,
                                             "concurrency_update_interval": "0.1s"},
                "min_rtt_calc_params": {"interval": "60s", "request_count": 50,
                                        "jitter": {"value": 10.0}, "min_concurrency": 3,
                                        "buffer": {"value": 25.0}}},
            "concurrency_limit_exceeded_status": {"code": 503}}}
    params = ec.AdaptiveConcurrency(update_interval_s=0.25, min_rtt_interval_s=1.5)
    limits = params.http_filter()["typed_config"]["gradient_controller_config"]
    assert limits["concurrency_limit_params"]["concurrency_update_interval"] == "0.25s"
    assert limits["min_rtt_calc_params"]["interval"] == "1.5s"


@pytest.mark.parametrize("value, message", [
    ({"sample_percentile": 0}, "sample_percentile must be in"),
    ({"max_concurrency_limit": 0}, "max_concurrency_limit must be an int"),
    ({"max_concurrency_limit": 2.5}, "max_concurrency_limit must be an int"),
    ({"update_interval_s": 0}, "update_interval_s must be > 0"),
    ({"min_rtt_interval_s": 0.0001}, "min_rtt_interval_s must be >= 0.001"),
    ({"jitter_pct": 101}, "jitter_pct must be in"),
    ({"buffer_pct": float("nan")}, "buffer_pct must be a finite number"),
    ({"limit_exceeded_status": 200}, "limit_exceeded_status must be an int in 400..599"),
    ({"min_concurrency": True}, "min_concurrency must be an int"),
    ({"max_limit": 5}, r"unknown field\(s\) \['max_limit'\]"),
    ("on", "adaptive_concurrency must be None, True or a mapping"),
])
def test_bad_parameters_are_refused_in_one_line_before_anything_starts(value, message):
    with pytest.raises(ValueError, match=message) as err:
        ec.AdaptiveConcurrency.from_value(value)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=message):
        LocalMesh(replica=REPLICA, adaptive_concurrency=value)
    assert read_state(REPLICA) is None


def test_from_value_round_trips_and_off_means_none():
    params = ec.AdaptiveConcurrency(max_concurrency_limit=7, sample_percentile=50)
    assert ec.AdaptiveConcurrency.from_value(params.to_dict()) == params
    assert ec.AdaptiveConcurrency.from_value(json.loads(json.dumps(params.to_dict()))) == params
    assert ec.AdaptiveConcurrency.from_value(True) == ec.AdaptiveConcurrency()
    assert ec.AdaptiveConcurrency.from_value(None) is None
    assert ec.AdaptiveConcurrency.from_value(False) is None


def test_the_filter_sits_before_the_router_on_http_callees_inbound_listeners_only(
        tmp_path):
    ports = ReplicaPorts(REPLICA)
    for proxy in ec.PROXIES:
        plain = ec.listeners_for(proxy, [], ports, NS)
        with_filter = ec.listeners_for(proxy, [], ports, NS, None, ec.AdaptiveConcurrency())
        for a, b in zip(plain, with_filter, strict=True):
            if a["name"] == "inbound" and proxy != GATEWAY and not is_tcp(proxy):
                assert _http_filters(b) == [FILTER, "envoy.filters.http.router"]
                assert _http_filters(a) == ["envoy.filters.http.router"]
            else:
                assert a == b, (proxy, a["name"])
    # the filter's stats pass the sidecars' stats matcher
    stats = ec.bootstrap("catalogue", ports, tmp_path)["stats_config"]
    assert {"prefix": ec.ADAPTIVE_CONCURRENCY_STATS} in \
        stats["stats_matcher"]["inclusion_list"]["patterns"]


def test_the_method_declares_the_filter_and_the_simulator_refuses_it():
    method = AdaptiveConcurrencyController({"max_concurrency_limit": 50})
    assert method.name == "adaptive_concurrency"
    assert method.reset(steady(60.0, 2), {"carts": None}) == {}  # Istio's defaults
    assert method.backend_kwargs() == {"adaptive_concurrency": ec.AdaptiveConcurrency(
        max_concurrency_limit=50).to_dict()}
    sim = SimMesh(warm=False)
    with pytest.raises(ValueError, match="backend 'sim' does not model Envoy's adaptive "
                                         "concurrency filter") as err:
        run_scenario(sim, steady(60.0, 2), method, seed=0, step_s=1.0)
    assert "\n" not in str(err.value)
    # the one-line error of the command line too (no traceback)
    code = ("from envs.backends.sim import SimMesh; from rl.controllers import "
            "AdaptiveConcurrencyController as A; A().check_backend(SimMesh(warm=False))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "does not model Envoy's adaptive concurrency" in out.stderr


def _blocked(mesh: LocalMesh) -> dict[str, int]:
    """``rq_blocked`` of every HTTP service's sidecar, from its admin."""
    out = {}
    for proxy in ec.PROXIES:
        if proxy == GATEWAY or is_tcp(proxy):
            continue
        url = (f"http://{HOST}:{ec.admin_port(mesh.ports, proxy)}/stats?format=json"
               "&filter=adaptive_concurrency")
        with urllib.request.urlopen(url, timeout=5) as resp:
            stats = {s["name"]: s.get("value") for s in json.loads(resp.read())["stats"]}
        assert f"{ec.ADAPTIVE_CONCURRENCY_STATS}concurrency_limit" in stats, (proxy, stats)
        assert f"{ec.ADAPTIVE_CONCURRENCY_STATS}min_rtt_msecs" in stats, (proxy, stats)
        out[proxy] = int(stats[f"{ec.ADAPTIVE_CONCURRENCY_STATS}rq_blocked"])
    return out


@pytest.mark.slow
def test_a_tiny_limit_with_a_slowed_callee_blocks_requests_with_503s():
    tiny = ec.AdaptiveConcurrency(max_concurrency_limit=1, min_concurrency=1,
                                  min_rtt_request_count=5)
    mesh = LocalMesh(replica=REPLICA, start=True, adaptive_concurrency=tiny.to_dict())
    children = _children_of(mesh.state.pid)
    try:
        assert mesh.state.adaptive_concurrency == tiny.to_dict()
        assert sum(_blocked(mesh).values()) == 0  # active, nothing blocked yet
        load = LoadSpec(users=10, requests=200, hatch_rate_per_s=20.0,
                        faults=(LatencySpike("catalogue", 0.0, 120.0, 10.0),))
        report = mesh.run_load(load, seed=2)
        blocked = _blocked(mesh)
        assert sum(blocked.values()) > 0, blocked
        assert _locust_503s(report) > 0
        # Prometheus scraped the filter's counter too (tag-extracted: the listener's prefix)
        query = ("sum(envoy_http_adaptive_concurrency_gradient_controller_rq_blocked"
                 f'{{replica="{REPLICA}"}})')
        url = (f"http://{HOST}:{mesh.ports.prometheus}/api/v1/query?query="
               + urllib.parse.quote(query))
        with urllib.request.urlopen(url, timeout=5) as resp:
            result = json.loads(resp.read())["data"]["result"]
        assert result and float(result[0]["value"][1]) > 0, result
    finally:
        mesh.close()
    assert read_state(REPLICA) is None
    assert busy_ports(list(ReplicaPorts(REPLICA).all_ports())) == []
    assert not any(pid_alive(c) for c in children)
