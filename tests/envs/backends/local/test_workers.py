"""Envoy worker threads per sidecar (``envoy_workers``): the option's validation, and a replica
whose Envoys run 2 workers (Istio's default) starts and measures a step. The end-to-end test
starts real Envoy, Locust and Prometheus on replica :data:`REPLICA` and leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from envs.backends.base import BackendError, LoadSpec
from envs.backends.lease import pid_alive
from envs.backends.local import LocalMesh
from envs.backends.local import envoy_config as ec
from envs.backends.local.ports import HOST, ReplicaPorts
from envs.backends.local.supervisor import busy_ports, read_state
from envs.istio import ConnectionPool, DestinationRule, TcpSettings
from tests.envs.backends.local.test_e2e import _children_of, check_report

REPLICA = 11


@pytest.mark.parametrize("bad", [0, -1, ec.MAX_ENVOY_WORKERS + 1, 1.5, "2", True, None])
def test_bad_worker_counts_are_refused_in_one_line_before_anything_starts(bad):
    with pytest.raises(ValueError, match="envoy_workers must be an int") as err:
        ec.check_envoy_workers(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="envoy_workers must be an int"):
        LocalMesh(replica=REPLICA, envoy_workers=bad)
    assert read_state(REPLICA) is None  # nothing was started


def test_good_worker_counts_and_the_default_are_istios():
    assert ec.DEFAULT_ENVOY_WORKERS == 2
    assert [ec.check_envoy_workers(n) for n in (1, 2, ec.MAX_ENVOY_WORKERS)] == \
        [1, 2, ec.MAX_ENVOY_WORKERS]


def test_the_supervisor_refuses_a_bad_worker_count_with_a_usage_error():
    out = subprocess.run([sys.executable, "-m", "envs.backends.local.supervisor", "--replica",
                          str(REPLICA), "--envoy-workers", "0"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith(
        f"envoy_workers must be an int in 1..{ec.MAX_ENVOY_WORKERS} (Envoy worker threads per "
        "sidecar; Istio runs 2), got 0")
    assert "Traceback" not in out.stderr
    assert read_state(REPLICA) is None


@pytest.mark.slow
def test_two_workers_start_measure_a_step_and_pin_the_replica():
    carts_one = DestinationRule(name="carts", host="carts", connection_pool=ConnectionPool(
        tcp=TcpSettings(max_connections=1)))
    mesh = LocalMesh(replica=REPLICA, start=True, envoy_workers=2, rules=[carts_one])
    children = _children_of(mesh.state.pid)
    try:
        assert mesh.state.envoy_workers == 2 and mesh.state.adaptive_concurrency is None
        for proxy in ec.PROXIES:
            with urllib.request.urlopen(f"http://{HOST}:{ec.admin_port(mesh.ports, proxy)}"
                                        "/server_info", timeout=5) as resp:
                info = json.loads(resp.read())
            assert int(info["command_line_options"]["concurrency"]) == 2, proxy
        report = mesh.run_load(LoadSpec(users=8, requests=240, hatch_rate_per_s=20.0), seed=3)
        check_report(report)
        assert report.num_requests > 0 and report.services["carts"].num_requests > 0
        # no adaptive concurrency filter: its stats are not there
        with urllib.request.urlopen(f"http://{HOST}:{ec.admin_port(mesh.ports, 'catalogue')}"
                                    "/stats?filter=adaptive_concurrency", timeout=5) as resp:
            assert resp.read().strip() == b""
        # attaching with another worker count is refused and leaves the replica as it was
        with pytest.raises(BackendError, match="runs Envoy with 2 worker"):
            LocalMesh(replica=REPLICA, start=False, envoy_workers=1)
        with pytest.raises(BackendError, match="adaptive concurrency off"):
            LocalMesh(replica=REPLICA, start=False, adaptive_concurrency=True)
        assert mesh.healthy() and mesh.rules == (carts_one,)
    finally:
        mesh.close()
    assert read_state(REPLICA) is None
    assert busy_ports(list(ReplicaPorts(REPLICA).all_ports())) == []
    assert not any(pid_alive(c) for c in children)
