"""Faults of a local mesh replica, injected into real runs (real Envoy, Locust, Prometheus on
127.0.0.1): an attached holder SIGKILLed (its configuration is put back by the supervisor, and
its lease is freed), a sidecar or Prometheus killed in the middle of a step (the step raises one
line naming the dead process; never a report), Prometheus frozen mid-step (one line naming it
as not answering). After each test no process or port of the replica is left.

Replicas :data:`HOLDER_REPLICA` and :data:`STEP_REPLICA` are brought up by ``meshtune mesh up``
with :data:`ORIGINAL` as their configuration, as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from envs.backends.base import BackendError
from envs.backends.lease import pid_alive
from envs.backends.local import LocalMesh
from envs.backends.local import envoy_config as ec
from envs.backends.local.ports import ReplicaPorts
from envs.backends.local.supervisor import ReplicaState, busy_ports, read_state
from envs.cli import main as cli_main
from envs.istio import ConnectionPool, DestinationRule, TcpSettings, cluster_name, write_rules

pytestmark = pytest.mark.slow

#: Replica of the holder tests and of the mid-step tests (port blocks no other test uses).
HOLDER_REPLICA = 31
STEP_REPLICA = 32
#: The configuration the replicas come up with: carts' pool capped at 7 connections.
ORIGINAL = [DestinationRule(name="carts", host="carts",
                            connection_pool=ConnectionPool(tcp=TcpSettings(max_connections=7)))]
ORIGINAL_CARTS = 7
#: A holder's change: carts capped at 2.
CHANGED_CARTS = 2

#: A holder process: attaches to the replica (leasing it first), applies carts = 2, says so and
#: waits to be killed.
_HOLDER = """
import sys, time
from envs.backends.lease import acquire_replica
from envs.backends.local import LocalMesh
from envs.istio import ConnectionPool, DestinationRule, TcpSettings
lease = acquire_replica(int(sys.argv[1]), label="holder to be killed")
m = LocalMesh(replica=lease.replica, start=False)
m.apply([DestinationRule(name="carts", host="carts",
                         connection_pool=ConnectionPool(tcp=TcpSettings(max_connections=2)))])
print("applied", flush=True)
time.sleep(600)
"""


def _wait(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.2)
    return bool(predicate())


def live_carts_limit(replica: int) -> int:
    """The front-end sidecar's live ``max_connections`` towards carts (Envoy's /clusters)."""
    admin = ec.admin_port(ReplicaPorts(replica), "front-end")
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/clusters?format=json",
                                timeout=5) as resp:
        statuses = json.loads(resp.read())["cluster_statuses"]
    cluster = next(c for c in statuses if c["name"] == cluster_name("carts"))
    return int(cluster["circuit_breakers"]["thresholds"][0]["max_connections"])


def _children(pid: int) -> dict[str, int]:
    """The supervisor's children by the name it gives them (``envoy-carts``, ``prometheus``)."""
    out: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != pid:
            continue
        args = [a.decode() for a in argv if a]
        if "--service-node" in args:
            out[f"envoy-{args[args.index('--service-node') + 1]}"] = int(entry.name)
        elif args and args[0].endswith("prometheus"):
            out["prometheus"] = int(entry.name)
    return out


@pytest.fixture
def replica_up(tmp_path: Path) -> Iterator[Callable[[int], ReplicaState]]:
    """``meshtune mesh up --replica K --rules <ORIGINAL>``; every replica brought up is brought
    down afterwards, and its port block must then be free."""
    rules_file = tmp_path / "original.yaml"
    write_rules(rules_file, ORIGINAL)
    started: list[int] = []

    def up(replica: int) -> ReplicaState:
        assert busy_ports(list(ReplicaPorts(replica).all_ports())) == [], \
            f"replica {replica}'s port block is taken: another run uses it"
        assert cli_main(["mesh", "up", "--replica", str(replica), "--rules",
                         str(rules_file)]) == 0
        started.append(replica)
        state = read_state(replica)
        assert state is not None and live_carts_limit(replica) == ORIGINAL_CARTS
        return state

    yield up
    for replica in started:
        cli_main(["mesh", "down", "--replica", str(replica)])
        assert read_state(replica) is None
        assert _wait(lambda r=replica: busy_ports(list(ReplicaPorts(r).all_ports())) == [], 15)


def _start_holder(replica: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(replica)],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "applied"
    return proc


def test_a_killed_holders_configuration_is_put_back_by_the_supervisor(replica_up) -> None:
    state = replica_up(HOLDER_REPLICA)
    holder = _start_holder(HOLDER_REPLICA)
    try:
        assert live_carts_limit(HOLDER_REPLICA) == CHANGED_CARTS
        holder.kill()  # SIGKILL: no close(), no atexit
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    # nobody else touches the replica: its supervisor notices the dead holder on its own
    assert _wait(lambda: live_carts_limit(HOLDER_REPLICA) == ORIGINAL_CARTS, 10)
    assert read_state(HOLDER_REPLICA) == state  # the same replica, not restarted
    log = Path(state.run_dir).parent / "supervisor.log"
    assert _wait(lambda: f"holder gone without closing: LocalMesh of pid {holder.pid}"
                 in log.read_text(), 5)
    assert list((Path(state.run_dir) / "holders").glob("*.json")) == []
    # the next holder finds the original configuration, and puts it back when it closes
    nxt = LocalMesh(replica=HOLDER_REPLICA, start=False)
    assert nxt.rules == tuple(ORIGINAL)
    nxt.apply([])
    nxt.close()
    assert live_carts_limit(HOLDER_REPLICA) == ORIGINAL_CARTS


def test_a_killed_ray_holders_lease_is_freed_and_its_configuration_put_back(replica_up) -> None:
    """The holder is a Ray actor (like an env runner) leasing the replica from the cluster's
    lease table: killed, its lease is freed and its replica's configuration put back."""
    ray = pytest.importorskip("ray")
    from envs.backends.lease import acquire_replica, freed_leases

    replica_up(HOLDER_REPLICA)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
             namespace="meshtune-test-holder-faults")
    try:
        @ray.remote(num_cpus=0)
        class Holder:
            def attach(self, replica: int) -> int:
                self.lease = acquire_replica(replica, label="ray holder")
                self.mesh = LocalMesh(replica=replica, start=False)
                self.mesh.apply([DestinationRule(
                    name="carts", host="carts",
                    connection_pool=ConnectionPool(tcp=TcpSettings(max_connections=2)))])
                return os.getpid()

        holder = Holder.remote()
        pid = ray.get(holder.attach.remote(HOLDER_REPLICA))
        assert live_carts_limit(HOLDER_REPLICA) == CHANGED_CARTS
        ray.kill(holder, no_restart=True)
        assert _wait(lambda: not pid_alive(pid), 30)
        assert _wait(lambda: live_carts_limit(HOLDER_REPLICA) == ORIGINAL_CARTS, 10)
        lease = acquire_replica(HOLDER_REPLICA)  # freed: the holder's pid is gone
        try:
            assert [r for r, h in freed_leases() if "ray holder" in h] == [HOLDER_REPLICA]
            assert LocalMesh(replica=HOLDER_REPLICA, start=False).rules == tuple(ORIGINAL)
        finally:
            lease.release()
    finally:
        ray.shutdown()


def _step_in_thread(env: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = env.step(0)
        except BaseException as exc:  # the test inspects it
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _env(replica: int) -> Any:
    from envs.mesh_env import MeshEnv
    from envs.scenarios import steady

    # MeshEnv's open-loop sessions, 4 s steps: long enough to hit one in the middle
    return MeshEnv({"backend": "local", "replica": replica, "scenarios": [steady(20.0, 3)],
                    "step_s": 4.0, "episode_len": 3, "init": "istio_default"})


def _wait_for_locust(run_dir: str, timeout_s: float = 30) -> bool:
    """Whether a Locust run of this replica (its loadgen) is running, within ``timeout_s``."""
    def running() -> bool:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmd = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"loadgen.py" in cmd and run_dir.encode() in cmd:
                    return True
        return False
    return _wait(running, timeout_s)


@pytest.mark.parametrize("victim", ["envoy-carts", "envoy-ingress", "prometheus"])
def test_a_process_killed_mid_step_is_one_line_naming_it(replica_up, victim: str) -> None:
    state = replica_up(STEP_REPLICA)
    ports = list(ReplicaPorts(STEP_REPLICA).all_ports())
    env = _env(STEP_REPLICA)
    try:
        env.reset(seed=0)
        children = _children(state.pid)
        assert victim in children, sorted(children)
        thread, out = _step_in_thread(env)
        assert _wait_for_locust(state.run_dir)
        time.sleep(1.5)  # inside the counted window
        os.kill(children[victim], signal.SIGKILL)
        thread.join(timeout=120)
        assert not thread.is_alive()
        error = out.get("error")
        # never a report: the step raises, naming the process and how it ended
        assert isinstance(error, BackendError), out
        message = str(error)
        assert "\n" not in message
        assert message.startswith(f"local replica {STEP_REPLICA} went down: {victim} was "
                                  "killed by SIGKILL"), message
    finally:
        env.close()
    # the supervisor stopped every process of the replica: nothing is left, no port bound
    assert read_state(STEP_REPLICA) is None
    assert _wait(lambda: not pid_alive(state.pid), 15)
    assert _wait(lambda: busy_ports(ports) == [], 15), busy_ports(ports)
    assert _children(state.pid) == {}


def test_a_frozen_prometheus_mid_step_is_one_line_naming_it(replica_up) -> None:
    state = replica_up(STEP_REPLICA)
    env = _env(STEP_REPLICA)
    prometheus = _children(state.pid)["prometheus"]
    try:
        env.reset(seed=0)
        thread, out = _step_in_thread(env)
        assert _wait_for_locust(state.run_dir)
        os.kill(prometheus, signal.SIGSTOP)  # alive, listening, answering nothing
        try:
            thread.join(timeout=120)
            assert not thread.is_alive()
        finally:
            os.kill(prometheus, signal.SIGCONT)
        error = out.get("error")
        assert isinstance(error, BackendError), out
        assert str(error) == (f"Prometheus of replica {STEP_REPLICA} at http://127.0.0.1:"
                              f"{ReplicaPorts(STEP_REPLICA).prometheus} did not answer within "
                              "10 s (hung or stopped?)")
        # the replica itself is still up, and the env gives its configuration back
    finally:
        env.close()
    assert read_state(STEP_REPLICA) == state
    assert live_carts_limit(STEP_REPLICA) == ORIGINAL_CARTS
