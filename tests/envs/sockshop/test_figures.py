"""Tests of envs.sockshop.figures: SockShop's per-service figures cover the topology they
describe, and both backends read this one copy."""

from __future__ import annotations

import envs.sockshop as sockshop
from envs.sockshop import figures, loadtest, topology
from envs.sockshop.topology import ROUTES, SERVICE_BY_NAME, SERVICES, Call, Parallel, Protocol, Step


def _calls(caller: str, steps: tuple[Step, ...]) -> list[tuple[str, Call]]:
    """(caller, call) of every call in ``steps``, depth first."""
    found: list[tuple[str, Call]] = []
    for step in steps:
        for call in step.calls if isinstance(step, Parallel) else (step,):
            found.append((caller, call))
            found.extend(_calls(call.service, call.then))
    return found


ALL_CALLS = [pair for route in ROUTES.values() for pair in _calls("front-end", route.steps)]


def test_cores_are_the_cpu_limits_and_one_core_without_one() -> None:
    assert set(figures.SERVICE_PROFILES) == set(SERVICE_BY_NAME)
    for service in SERVICES:
        expected = service.cpu_limit_m / 1000 if service.cpu_limit_m is not None else 1.0
        assert figures.SERVICE_PROFILES[service.name].cores == expected, service.name


def test_every_operation_and_route_has_its_work() -> None:
    assert {(c.service, c.operation) for _, c in ALL_CALLS} == set(figures.OPERATION_WORK_MS)
    assert set(figures.FRONTEND_WORK_MS) == set(ROUTES)
    assert set(figures.OPERATION_CONT_MS) <= set(figures.OPERATION_WORK_MS)
    assert set(figures.FRONTEND_CRASH_ON) <= {(c.service, c.operation)
                                              for caller, c in ALL_CALLS if caller == "front-end"}
    assert set(figures.FRONTEND_CRASH_ON.values()) <= {"sidecar_503", "any_failure"}


def test_every_tcp_call_has_its_driver() -> None:
    tcp_pairs = {(caller, c.service) for caller, c in ALL_CALLS
                 if SERVICE_BY_NAME[c.service].protocol is Protocol.TCP}
    assert tcp_pairs == set(figures.DRIVERS)
    assert all(d.max_connections == 1 for d in figures.DRIVERS.values() if d.multiplexed)


def test_crash_back_off_grows_to_its_cap() -> None:
    assert 0 < figures.FRONTEND_RESTART_MS < figures.CRASH_BACKOFF_BASE_MS
    assert figures.CRASH_BACKOFF_BASE_MS < figures.CRASH_BACKOFF_CAP_MS


def test_the_simulator_reads_these_figures_from_their_one_home() -> None:
    from envs.backends.sim import graph, mesh, profile

    assert graph.figures is figures and mesh.figures is figures
    for name in ("SERVICE_PROFILES", "OPERATION_WORK_MS", "OPERATION_CONT_MS",
                 "FRONTEND_WORK_MS", "DRIVERS", "FRONTEND_CRASH_ON", "CART_FOUND_REREADS",
                 "FRONTEND_RESTART_MS", "CRASH_BACKOFF_BASE_MS", "CRASH_BACKOFF_CAP_MS"):
        assert hasattr(figures, name), name
        assert not hasattr(profile, name), f"profile.{name}: a second home for a figure"


def test_the_package_re_exports_topology_and_load_test() -> None:
    for name in sockshop.__all__:
        home = topology if hasattr(topology, name) else loadtest
        assert getattr(sockshop, name) is getattr(home, name), name
