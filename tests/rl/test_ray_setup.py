"""rl.ray_setup: a private local Ray on 127.0.0.1 only, every core by default, the dashboard on
loopback with its URL printed, and clear errors for addresses that cannot be reached."""

from __future__ import annotations

import os
import urllib.request

import psutil
import pytest

from rl.ray_setup import (
    SINGLE_MACHINE_ENV,
    RaySetupError,
    init_ray,
    keep_local_ray_on_loopback,
    local_num_cpus,
)


def test_every_core_by_default_and_a_cap() -> None:
    cores = os.cpu_count() or 1
    assert local_num_cpus() == cores
    assert local_num_cpus(1) == 1
    assert local_num_cpus(cores + 10) == cores
    with pytest.raises(RaySetupError, match="--num-cpus must be >= 1"):
        local_num_cpus(0)


def test_loopback_mode_is_kept_unless_a_cluster_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SINGLE_MACHINE_ENV, raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    keep_local_ray_on_loopback()
    assert SINGLE_MACHINE_ENV not in os.environ
    monkeypatch.delenv("RAY_ADDRESS")
    keep_local_ray_on_loopback()
    assert os.environ[SINGLE_MACHINE_ENV] == "0"


@pytest.mark.parametrize(("address", "message"), [
    ("127.0.0.1:9", "cannot reach a Ray cluster at 127.0.0.1:9"),
    ("ray://127.0.0.1:9", "cannot reach a Ray cluster at ray://127.0.0.1:9"),
    ("nonsense", "is not host:port"),
])
def test_an_unreachable_cluster_is_one_clear_error(address: str, message: str) -> None:
    with pytest.raises(RaySetupError, match=message):
        init_ray(address)


def _session_listeners(name: str) -> list[tuple[str, str, int]]:
    """(process, ip, port) of every listening socket of this process and of the Ray processes
    of session ``name``."""
    mine = {psutil.Process().pid} | {c.pid for c in psutil.Process().children(recursive=True)}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(name in part for part in proc.info["cmdline"] or []):
                mine.add(proc.info["pid"])
        except (psutil.Error, TypeError):
            continue
    found = []
    for pid in mine:
        try:
            proc = psutil.Process(pid)
            found += [(proc.name(), c.laddr.ip, c.laddr.port)
                      for c in proc.net_connections(kind="inet") if c.status == "LISTEN"]
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_a_private_local_ray_listens_on_loopback_only(capsys: pytest.CaptureFixture[str]) -> None:
    import ray

    runtime = init_ray(num_cpus=1)
    try:
        assert runtime.local and runtime.num_cpus == 1
        assert runtime.dashboard_url is not None
        assert runtime.dashboard_url.startswith("http://127.0.0.1:")
        assert f"Ray dashboard: {runtime.dashboard_url}" in capsys.readouterr().err
        with urllib.request.urlopen(runtime.dashboard_url, timeout=10) as reply:
            assert reply.status == 200
        listeners = _session_listeners(ray.get_runtime_context().get_session_name())
        assert len(listeners) >= 3  # GCS, raylet, dashboard at least
        outside = [entry for entry in listeners
                   if entry[1] not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
        assert outside == [], outside
    finally:
        ray.shutdown()
