"""Envoy worker threads in the simulator (issue 13, item 4): ``SimMesh(envoy_workers=N)``.

With N workers an HTTP pool may hold ``max(maxConnections, N)`` connections (Envoy's per-worker
pools); N = 1 is the simulator as it was before, bit for bit; TCP pools stay exact.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from envs.backends import make_backend
from envs.backends.base import LoadSpec
from envs.backends.sim import SimMesh
from envs.backends.sim.mesh import DEFAULT_ENVOY_WORKERS, http_connection_cap
from envs.istio import ConnectionPool, DestinationRule, HttpSettings, TcpSettings
from envs.mesh_env import MeshEnv
from tests.envs.backends.sim._support import rule

#: The closed load of ``benchmarks/bench_envoy_workers.py``.
BENCH_LOAD = LoadSpec(users=16, requests=1200, hatch_rate_per_s=20.0)


def _rule(service: str, max_connections: int, **http: int) -> DestinationRule:
    return DestinationRule(name=service, host=service, connection_pool=ConnectionPool(
        tcp=TcpSettings(max_connections=max_connections),
        http=HttpSettings(**http) if http else None))


#: (rules, load, seed) run by the kernel before ``envoy_workers`` existed (commit 3cbccdd) and
#: the SHA-256 of each report's ``to_dict()`` (JSON, sorted keys; the issue-13 extra keys
#: ``peak_connections`` / ``peak_inbound_connections`` left out): cluster platform, several
#: small ``maxConnections`` (where 2 workers would change the run), closed and open loads.
GOLDEN = [
    ([_rule("carts", 1)], BENCH_LOAD, 0,
     "e4878317e7f8adaf2a45c155ad34a9c0fed9545e2735d31e67f0198ff7dd5190"),
    ([_rule("carts", 1), _rule("user", 1), _rule("catalogue", 2)],
     LoadSpec(users=30, requests=1500), 1,
     "4c329692cbfc93fca4aec2ccff519ed556d654ed0f481cff0651cd78adb87e44"),
    ([_rule("orders", 1, http1_max_pending_requests=2), _rule("carts", 3)],
     LoadSpec(users=20, requests=900), 2,
     "9b60595edac98f12164a7ce360506a49ba95a126f44beec98a792e75f7883c46"),
    ([_rule("catalogue", 1, max_requests_per_connection=1), _rule("carts-db", 1)],
     LoadSpec(users=0, requests=1000, mode="open", arrival_rate_rps=80.0), 3,
     "b9e2d96c42f6920311cf54088b1ca624acd72a5623b4a8e2d8d5ff33f4766a9b"),
]


def _digest(report) -> str:  # type: ignore[no-untyped-def]
    d = report.to_dict()
    d["extra"].pop("peak_connections")
    d["extra"].pop("peak_inbound_connections")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


@pytest.fixture(scope="module")
def meshes() -> dict[int, SimMesh]:
    return {w: SimMesh(envoy_workers=w) for w in (1, 2, 3)}


def test_default_is_istios_two_workers() -> None:
    assert DEFAULT_ENVOY_WORKERS == 2
    assert SimMesh(warm=False).envoy_workers == 2


@pytest.mark.parametrize("case", range(len(GOLDEN)))
def test_one_worker_is_the_previous_kernel_bit_for_bit(meshes: dict[int, SimMesh],
                                                       case: int) -> None:
    rules, load, seed, want = GOLDEN[case]
    meshes[1].apply(rules)
    assert _digest(meshes[1].run_load(load, seed)) == want
    # and two workers do change these runs (each has a pool at maxConnections 1)
    meshes[2].apply(rules)
    assert _digest(meshes[2].run_load(load, seed)) != want


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_max_connections_1_holds_one_connection_per_worker(meshes: dict[int, SimMesh],
                                                            workers: int) -> None:
    # carts is called by the front-end's and orders' sidecars: each pool holds `workers`
    meshes[workers].apply([_rule("carts", 1)])
    r = meshes[workers].run_load(BENCH_LOAD, 0)
    assert r.extra["peak_connections"]["carts"] == workers
    assert r.extra["peak_inbound_connections"]["carts"] == workers
    assert r.services["carts"].uo_count == 0


def test_max_connections_10_is_the_same_with_one_or_two_workers(
        meshes: dict[int, SimMesh]) -> None:
    for w in (1, 2):
        meshes[w].apply([_rule("carts", 10), _rule("user", 10)])
    one, two = (meshes[w].run_load(LoadSpec(users=30, requests=1500), 4) for w in (1, 2))
    assert one.to_dict() == two.to_dict()
    assert 1 < one.extra["peak_connections"]["carts"] <= 10


def test_tcp_pools_stay_exact(meshes: dict[int, SimMesh]) -> None:
    # Envoy's TCP proxy checks the shared circuit breaker before its pool: no per-worker slack;
    # carts' Mongo driver opens more than one connection at the default limit
    load = LoadSpec(users=30, requests=1500)
    meshes[1].apply([])
    assert meshes[1].run_load(load, 5).extra["peak_connections"]["carts-db"] > 1
    for w in (1, 2):
        meshes[w].apply([rule("carts-db", tcp_max_connections=1)])
    one, two = (meshes[w].run_load(load, 5) for w in (1, 2))
    assert one.extra["peak_connections"]["carts-db"] == 1
    assert two.extra["peak_connections"]["carts-db"] == 1
    assert one.services["carts-db"].uo_count > 0


def test_cap_is_max_of_limit_and_workers() -> None:
    assert http_connection_cap(1, 2) == 2
    assert http_connection_cap(2, 3) == 3
    assert http_connection_cap(10, 2) == 10
    assert http_connection_cap(7, 1) == 7


@pytest.mark.parametrize("bad", [0, -1, 65, 1.5, "2", True, None])
def test_bad_worker_count_is_a_one_line_error(bad: object) -> None:
    with pytest.raises(ValueError, match="envoy_workers must be an int") as err:
        SimMesh(envoy_workers=bad, warm=False)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="envoy_workers must be an int"):
        make_backend("sim", envoy_workers=bad)


def test_workers_flow_from_backend_kwargs() -> None:
    env = MeshEnv({"backend": "sim", "backend_kwargs": {"envoy_workers": 1}})
    try:
        assert env.backend.envoy_workers == 1
    finally:
        env.close()
    env = MeshEnv({"backend": "sim"})
    try:
        assert env.backend.envoy_workers == DEFAULT_ENVOY_WORKERS
    finally:
        env.close()
