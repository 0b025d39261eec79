"""``LocalMesh``: the ``local`` backend — SockShop behind real Envoy sidecars on loopback.

A replica (see :mod:`envs.backends.local.supervisor`) runs the services host, a sidecar per
service, the ingress gateway and Prometheus on its own block of 127.0.0.1 ports. ``LocalMesh``
attaches to a replica brought up by ``meshtune mesh up --replica K``, or starts one itself and
stops it again on :meth:`LocalMesh.close`.

* :meth:`apply` translates the DestinationRules with ``envs.istio`` (outbound clusters in every
  caller's sidecar, inbound clusters in the callee's, tcp_proxy listeners for TCP
  destinations), renames the new files into each sidecar's watched directories and returns once
  every Envoy's admin ``/config_dump`` shows the new versions and ``/clusters`` shows the new
  circuit-breaker thresholds. A file Envoy rejects puts the previous files back and raises.
* :meth:`run_load` runs real Locust (:mod:`envs.backends.local.loadgen`) against the ingress —
  closed loop (users) or open loop (Poisson sessions), with the load's faults (a service down,
  a service slowed) switched on and off through the services host — and builds the
  :class:`~envs.backends.report.LoadReport`: endpoints from Locust's statistics and per-request
  SLO counts, services from PromQL over Envoy's own statistics (:mod:`envs.backends.local.prom`).
* a replica brought up by ``meshtune mesh up`` that crashed a moment ago (a sidecar,
  Prometheus or the services host died, and its supervisor ended it: the step running then
  raised a BackendError naming the process) is brought back up as it was by the next
  ``LocalMesh`` of it (:func:`relaunch_replica`: the same options, the configuration it had
  before any holder changed it), and left running, as ``mesh up`` leaves it; this is how a
  restarted env runner of a sweep carries on on its replica. A replica a ``LocalMesh`` started
  itself is started afresh, as before.
* :meth:`close` re-applies the rules found at construction (and stops the replica if it
  started it); it also runs at interpreter exit, after SIGINT, and after SIGTERM (turned into
  ``SystemExit`` when the process had no SIGTERM handler of its own).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from envs.backends.base import BackendError, LatencySpike, LoadSpec, ServiceDown
from envs.backends.lease import pid_alive
from envs.backends.local import envoy_config as ec
from envs.backends.local.ports import HOST, ReplicaPorts
from envs.backends.local.prom import MeshMetrics
from envs.backends.local.supervisor import (
    STOP_GRACE_S,
    CrashedReplica,
    ReplicaState,
    die_with_parent,
    read_exit,
    read_state,
    recent_crash,
    replica_dir,
    state_path,
)
from envs.backends.report import EndpointStats, LoadReport
from envs.istio import DestinationRule, dump_rules, parse_rules, read_rules, write_rules
from envs.sockshop import SERVICE_NAMES, endpoint_names

#: Seconds to wait for Envoy to take new resource files.
APPLY_TIMEOUT_S = 10.0
#: Seconds a replica gets to come up when LocalMesh starts it.
START_TIMEOUT_S = 90.0
#: Seconds after a load's end before its window is read: Envoy flushes histograms every
#: second and Prometheus scrapes every second.
SETTLE_S = 2.5
#: Seconds every Locust user pauses between the hatch and the counted window (see
#: ``loadgen``): more than two scrape intervals, so a scrape sees the counters standing still.
PAUSE_S = 2.5
#: Seconds a client gives the supervisor to notice that one of its processes died (it looks
#: every 0.2 s) before it trusts that the replica is up.
DOWN_GRACE_S = 1.0
#: Seconds a crashed replica's supervisor gets to end its children and free its ports before
#: the replica is started again (its own grace period, and then some).
RELAUNCH_WAIT_S = STOP_GRACE_S + 10.0
#: Seconds between an apply and the next load, so Prometheus has scraped the replaced
#: clusters' fresh counters before the window opens.
APPLY_SETTLE_S = 1.5


def fault_documents(load: LoadSpec) -> list[dict[str, Any]]:
    """``load``'s faults as the load generator takes them (``loadgen --faults``): service,
    kind (``down`` / ``slow``), window in seconds from the counted window's start, factor.
    ValueError for a fault the simulator would reject too."""
    docs = []
    for f in load.faults:
        if f.service not in SERVICE_NAMES:
            raise ValueError(f"fault names unknown service {f.service!r}")
        if not f.end_s > f.start_s >= 0:
            raise ValueError(f"fault window must satisfy 0 <= start_s < end_s, got {f}")
        if isinstance(f, ServiceDown):
            docs.append({"service": f.service, "kind": "down", "start_s": f.start_s,
                         "end_s": f.end_s, "factor": 1.0})
        elif isinstance(f, LatencySpike):
            if not f.factor > 0:
                raise ValueError(f"LatencySpike.factor must be positive, got {f.factor}")
            docs.append({"service": f.service, "kind": "slow", "start_s": f.start_s,
                         "end_s": f.end_s, "factor": float(f.factor)})
        else:
            raise ValueError(f"unsupported fault {f!r}")
    return docs


def _get_json(url: str, timeout_s: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def start_replica(replica: int, rules_file: str | None = None, namespace: str = "sock-shop",
                  seed: int = 0, owned: bool = False,
                  timeout_s: float = START_TIMEOUT_S,
                  envoy_workers: int = ec.DEFAULT_ENVOY_WORKERS,
                  adaptive_concurrency: ec.AdaptiveConcurrency | None = None
                  ) -> tuple[subprocess.Popen[bytes], ReplicaState]:
    """Start replica ``replica``'s supervisor in its own session and wait until it is ready.

    ``owned``: the supervisor dies with this process (``PR_SET_PDEATHSIG``), for a replica
    that only lives as long as its ``LocalMesh``. ``envoy_workers``: worker threads per Envoy;
    ``adaptive_concurrency``: Envoy's filter on every HTTP service's inbound listener (None:
    off). Raises ValueError for a bad ``envoy_workers``, BackendError if the replica is already
    up or does not come up (the supervisor's own error is in the message).
    """
    ec.check_envoy_workers(envoy_workers)
    if read_state(replica) is not None:
        raise BackendError(f"replica {replica} is already up (meshtune mesh down --replica "
                           f"{replica})")
    replica_dir(replica).mkdir(parents=True, exist_ok=True)
    log_path = replica_dir(replica) / "supervisor.log"
    argv = _supervisor_argv(replica, rules_file, namespace, seed, owned, envoy_workers,
                            adaptive_concurrency)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent if owned else None)
    deadline = time.monotonic() + timeout_s
    while True:
        state = read_state(replica)
        if state is not None and state.pid == proc.pid:
            return proc, state
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise BackendError(f"replica {replica} failed to start: " + " | ".join(tail))
        if time.monotonic() > deadline:
            proc.terminate()
            proc.wait()
            raise BackendError(f"replica {replica} not ready after {timeout_s:.0f} s; see "
                               f"{log_path}")
        time.sleep(0.2)


def _supervisor_argv(replica: int, rules_file: str | None, namespace: str, seed: int,
                     owned: bool, envoy_workers: int,
                     adaptive_concurrency: ec.AdaptiveConcurrency | None) -> list[str]:
    """The command line of replica ``replica``'s supervisor (:func:`start_replica`'s args)."""
    argv = [sys.executable, "-m", "envs.backends.local.supervisor", "--replica", str(replica),
            "--namespace", namespace, "--seed", str(seed),
            "--envoy-workers", str(envoy_workers)]
    if adaptive_concurrency is not None:
        argv += ["--adaptive-concurrency", json.dumps(adaptive_concurrency.to_dict())]
    if rules_file:
        argv += ["--rules", str(rules_file)]
    if owned:
        argv.append("--owned")
    return argv


#: Starts a command in its own session and exits at once, printing its pid: the command is then
#: no child of the caller (Ray kills the children of a worker that exits).
_LAUNCHER = ("import subprocess, sys\n"
             "log = open(sys.argv[1], 'ab')\n"
             "p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, "
             "stderr=subprocess.STDOUT, start_new_session=True)\n"
             "print(p.pid)\n")


def _ended_within(pid: int, timeout_s: float) -> bool:
    """Whether process ``pid`` is gone within ``timeout_s`` seconds (polled every 0.1 s)."""
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def relaunch_replica(crash: CrashedReplica, timeout_s: float = START_TIMEOUT_S) -> ReplicaState:
    """Bring the crashed replica ``crash`` back up as it was brought up (its options, the
    configuration it had before any holder changed it), not owned and not a child of this
    process: it keeps running after this process (a Ray worker's children are killed with it),
    as ``meshtune mesh up`` leaves it. Waits for the crashed supervisor to end first.
    BackendError if the old supervisor does not end or the new one does not come up."""
    if not _ended_within(crash.pid, RELAUNCH_WAIT_S):
        raise BackendError(f"supervisor {crash.pid} of crashed local replica {crash.replica} "
                           f"did not end within {RELAUNCH_WAIT_S:.0f} s")
    if read_state(crash.replica) is not None:
        raise BackendError(f"replica {crash.replica} is already up (meshtune mesh down "
                           f"--replica {crash.replica})")
    rules = parse_rules(crash.rules, source=f"exit record of replica {crash.replica}")
    # the rules file stays until the supervisor has read it (it reads it first thing)
    rules_file = replica_dir(crash.replica) / f"relaunch-rules.{os.getpid()}.yaml"
    write_rules(rules_file, rules)
    log_path = replica_dir(crash.replica) / "supervisor.log"
    argv = _supervisor_argv(crash.replica, str(rules_file), crash.namespace, crash.seed, False,
                            crash.envoy_workers,
                            ec.AdaptiveConcurrency.from_value(crash.adaptive_concurrency))
    try:
        launched = subprocess.run([sys.executable, "-c", _LAUNCHER, str(log_path), *argv],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=30, check=False)
        if launched.returncode != 0 or not launched.stdout.strip().isdigit():
            raise BackendError(f"replica {crash.replica}: could not launch its supervisor: "
                               f"{launched.stderr.strip()[-300:]}")
        pid = int(launched.stdout)
        deadline = time.monotonic() + timeout_s
        while True:
            state = read_state(crash.replica)
            if state is not None and state.pid == pid:
                return state
            if not pid_alive(pid):
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise BackendError(f"replica {crash.replica} failed to start: "
                                   + " | ".join(tail))
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGTERM)
                raise BackendError(f"replica {crash.replica} not ready after {timeout_s:.0f} s; "
                                   f"see {log_path}")
            time.sleep(0.2)
    finally:
        with contextlib.suppress(FileNotFoundError):
            rules_file.unlink()


def stop_replica(replica: int, timeout_s: float = 30.0) -> bool:
    """SIGTERM replica ``replica``'s supervisor and wait until it and its state are gone.
    Returns False when the replica was not up."""
    state = read_state(replica)
    if state is None:
        with contextlib.suppress(FileNotFoundError):
            state_path(replica).unlink()  # stale file of a dead supervisor
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGTERM)
    if not _ended_within(state.pid, timeout_s):
        raise BackendError(f"supervisor {state.pid} of replica {replica} did not stop in "
                           f"{timeout_s:.0f} s")
    return True


def replica_down_message(state: ReplicaState) -> str:
    """One line saying that ``state``'s replica is down, and why when its supervisor recorded
    it (a child that died, a signal; :func:`~envs.backends.local.supervisor.read_exit`)."""
    reason = read_exit(state)
    why = (f": {reason}" if reason
           else f" (supervisor {state.pid} gone; logs in {state.run_dir}/logs)")
    return (f"local replica {state.replica} went down{why} (bring it back with `meshtune mesh "
            f"up --replica {state.replica}`)")


def replica_is_up(state: ReplicaState) -> bool:
    """Whether the supervisor that published ``state`` still runs and still publishes it."""
    now = read_state(state.replica)
    return now is not None and now.pid == state.pid and pid_alive(state.pid)


# ----- configuration (module level: the supervisor restores with it too) ----------------------

def mesh_documents(state: ReplicaState, rules: Sequence[DestinationRule],
                   ) -> dict[str, dict[str, Any]]:
    """Every proxy's CDS and LDS discovery documents for ``rules`` on ``state``'s replica.
    ValueError for rules Istio would reject."""
    ports = state.ports
    docs: dict[str, dict[str, Any]] = {}
    for proxy in ec.PROXIES:
        docs[proxy] = {
            "cds": ec.discovery_document(ec.clusters_for(proxy, rules, ports, state.namespace,
                                                         state.tls_dir)),
            "lds": ec.discovery_document(ec.listeners_for(
                proxy, rules, ports, state.namespace, state.tls_dir,
                ec.AdaptiveConcurrency.from_value(state.adaptive_concurrency))),
        }
    return docs


def _write_documents(state: ReplicaState, docs: dict[str, dict[str, Any]]) -> None:
    for proxy, kinds in docs.items():
        base = state.envoy_dir(proxy)
        for kind, doc in kinds.items():
            ec.write_atomically(base / kind / f"{kind}.json", doc)


def _confirm_documents(state: ReplicaState, docs: dict[str, dict[str, Any]]) -> None:
    """Wait until each Envoy's config_dump shows the new versions and /clusters the new
    thresholds."""
    deadline = time.monotonic() + APPLY_TIMEOUT_S
    waiting = set(docs)
    while waiting:
        for proxy in sorted(waiting):
            if _proxy_runs(state, proxy, docs[proxy]):
                waiting.discard(proxy)
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise BackendError(f"Envoy did not take the new configuration within "
                               f"{APPLY_TIMEOUT_S:.0f} s: {sorted(waiting)} (see "
                               f"{state.run_dir}/logs)")
        time.sleep(0.05)


def _proxy_runs(state: ReplicaState, proxy: str, doc: dict[str, Any]) -> bool:
    admin = f"http://{HOST}:{ec.admin_port(state.ports, proxy)}"
    try:
        dump = _get_json(f"{admin}/config_dump")
        clusters = _get_json(f"{admin}/clusters?format=json")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise BackendError(f"admin of {proxy} unreachable: {exc}") from exc
    # the version of the last CDS / LDS update each Envoy accepted
    versions = {c.get("@type", "").rsplit(".", 1)[-1]: c.get("version_info")
                for c in dump.get("configs", [])}
    if (versions.get("ClustersConfigDump") != doc["cds"]["version_info"]
            or versions.get("ListenersConfigDump") != doc["lds"]["version_info"]):
        return False
    live = {c["name"]: c.get("circuit_breakers", {}).get("thresholds", [{}])[0]
            for c in clusters.get("cluster_statuses", [])}
    for cluster in doc["cds"]["resources"]:
        want = cluster["circuit_breakers"]["thresholds"][0]
        got = live.get(cluster["name"])
        if got is None or any(int(got.get(k, -1)) != want[k] for k in
                              ("max_connections", "max_pending_requests", "max_requests",
                               "max_retries")):
            return False
    return True


def apply_to_replica(state: ReplicaState, rules: Sequence[DestinationRule],
                     previous: Sequence[DestinationRule]) -> None:
    """Make ``rules`` the complete configuration of ``state``'s replica (replacing
    ``previous``) and wait until every sidecar runs it; record them in its ``rules.yaml``.
    ValueError for rules Istio would reject (nothing written); BackendError if Envoy does not
    take the files (``previous`` is put back)."""
    docs = mesh_documents(state, rules)
    before = mesh_documents(state, previous)
    _write_documents(state, docs)
    try:
        _confirm_documents(state, docs)
    except BackendError:
        _write_documents(state, before)
        raise
    write_rules(state.rules_path, rules)


# ----- holders: who attached to a replica, and what it found -----------------------------------

def _holders_dir(state: ReplicaState) -> Path:
    return Path(state.run_dir) / "holders"


@contextlib.contextmanager
def _holders_locked(state: ReplicaState) -> Iterator[Path]:
    """The replica's holder records, under an exclusive lock (``flock``) of their directory."""
    directory = _holders_dir(state)
    directory.mkdir(exist_ok=True)
    with open(directory / ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield directory
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, ``/proc/PID/stat`` field 22), to
    tell it from a later process given the same pid; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _holder_alive(record: dict[str, Any]) -> bool:
    pid = int(record["pid"])
    return pid_alive(pid) and process_start_ticks(pid) == record["start_ticks"]


def _read_holders(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    records = []
    for path in directory.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            records.append((path, json.loads(path.read_text())))
    return sorted(records, key=lambda pr: (pr[1]["attached_at"], pr[0].name))


def oldest_holders_rules(run_dir: str | Path) -> list[DestinationRule] | None:
    """The rules the oldest holder record of the replica run in ``run_dir`` found when it
    attached — the configuration before any holder changed it; None when no holder is
    recorded."""
    records = _read_holders(Path(run_dir) / "holders")
    if not records:
        return None
    return parse_rules(records[0][1]["found_rules"], source="holder record")


def _restore_dead_locked(state: ReplicaState, directory: Path) -> list[str]:
    """With the holders' lock held: pop the dead holders from the top of the stack of holders
    (the most recently attached first) and put back the rules the oldest of them found; the
    descriptions of the holders restored. A dead holder below a live one waits for it."""
    records = _read_holders(directory)
    dead: list[tuple[Path, dict[str, Any]]] = []
    while records and not _holder_alive(records[-1][1]):
        dead.append(records.pop())
    if not dead:
        return []
    found = parse_rules(dead[-1][1]["found_rules"], source="holder record")
    apply_to_replica(state, found, read_rules(state.rules_path))
    for path, _ in dead:
        path.unlink()
    return [record["holder"] for _, record in dead]


def restore_dead_holders(state: ReplicaState) -> list[str]:
    """Put back the configuration that holders of ``state``'s replica which died without
    closing (SIGKILL, a crashed Ray actor) had found when they attached — what their
    :meth:`LocalMesh.close` would have done. Returns their descriptions (empty: none dead).
    The supervisor runs this twice a second; :class:`LocalMesh` runs it before it attaches.
    BackendError if Envoy does not take the restored files."""
    if not any(_holders_dir(state).glob("*.json")):
        return []
    with _holders_locked(state) as directory:
        return _restore_dead_locked(state, directory)


def attach_holder(state: ReplicaState, description: str,
                  ) -> tuple[str, list[DestinationRule]]:
    """Register this process as a holder of ``state``'s replica, after restoring what dead
    holders left; returns the record's token and the rules it found (what to put back)."""
    with _holders_locked(state) as directory:
        _restore_dead_locked(state, directory)
        found = read_rules(state.rules_path)
        token = uuid.uuid4().hex
        pid = os.getpid()
        record = {"token": token, "pid": pid, "start_ticks": process_start_ticks(pid),
                  "holder": description, "attached_at": time.time(),
                  "found_rules": dump_rules(found)}
        tmp = directory / f".{token}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, directory / f"{token}.json")
    return token, found


def detach_holder(state: ReplicaState, token: str) -> None:
    """Remove holder record ``token`` (its holder has put its configuration back)."""
    with contextlib.suppress(FileNotFoundError):
        (_holders_dir(state) / f"{token}.json").unlink()


def _exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit (so ``finally`` blocks and ``atexit`` run and the
    replica's configuration is put back) when the process still has the default action (which
    would end it on the spot). Only possible from the main thread; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def _raise(signum: int, _frame: Any) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, _raise)


class LocalMesh:
    """The ``local`` backend (see the module docstring).

    Args:
        replica: the replica index (port block ``21000 + 200·replica``).
        rules: rules to apply right away (None: keep the replica's current ones).
        namespace: namespace of the cluster names (rules' hosts must be in it or bare).
        seed: seed of the services host's work draws when this object starts the replica.
        start: None — attach to a running replica or start one; True — start one (error if up);
            False — attach only (error if down).
        reset_stats_after_hatch: like the simulator's option: count requests only once every
            user has started.
        load_timeout_s: longest a load may run before it is a BackendError.
        envoy_workers: worker threads per Envoy (``--concurrency``; Istio's sidecars run 2).
        adaptive_concurrency: Envoy's adaptive concurrency filter on every HTTP service's
            inbound listener: None / False (off), True (its defaults), a mapping of
            :class:`~envs.backends.local.envoy_config.AdaptiveConcurrency`'s fields or one.
        A replica that is already up must run with the same ``envoy_workers`` and
        ``adaptive_concurrency`` (else BackendError); a bad value is a ValueError in one line.
    """

    name = "local"

    def __init__(self, replica: int = 0, *, rules: Sequence[DestinationRule] | None = None,
                 namespace: str = "sock-shop", seed: int = 0, start: bool | None = None,
                 reset_stats_after_hatch: bool = True, load_timeout_s: float = 300.0,
                 envoy_workers: int = ec.DEFAULT_ENVOY_WORKERS,
                 adaptive_concurrency: Any = None) -> None:
        self.envoy_workers = ec.check_envoy_workers(envoy_workers)
        #: the adaptive concurrency filter the replica runs (None: off)
        self.adaptive_concurrency = ec.AdaptiveConcurrency.from_value(adaptive_concurrency)
        self.ports = ReplicaPorts(replica)
        self.replica = replica
        self.reset_stats_after_hatch = reset_stats_after_hatch
        self.load_timeout_s = load_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False
        state = read_state(replica)
        if state is None:
            if start is False:
                raise BackendError(f"local replica {replica} is not up; start it with "
                                   f"`meshtune mesh up --replica {replica}`")
            crash = recent_crash(replica) if start is None else None
            if crash is not None:  # a `mesh up` replica that just crashed: back as it was
                state = relaunch_replica(crash)
                print(f"[meshtune] local replica {replica} brought back up as it was after it "
                      f"crashed ({crash.reason}); run dir {state.run_dir}", file=sys.stderr,
                      flush=True)
                self._check_mesh_options(state)
            else:
                self._proc, state = start_replica(
                    replica, None, namespace, seed, owned=True,
                    envoy_workers=self.envoy_workers,
                    adaptive_concurrency=self.adaptive_concurrency)
        elif start is True:
            raise BackendError(f"local replica {replica} is already up")
        else:
            self._check_mesh_options(state)
        if state.namespace != namespace:
            if self._proc is not None:
                stop_replica(replica)
            raise BackendError(f"replica {replica} runs namespace {state.namespace!r}, "
                               f"not {namespace!r}")
        self.state = state
        self.namespace = namespace
        self.tls_dir = state.tls_dir
        self.metrics = MeshMetrics(f"http://{HOST}:{self.ports.prometheus}", replica)
        # register as a holder of the replica (after putting back what a holder that died
        # without closing left); what is found now is what close() puts back
        self._holder_token, found = attach_holder(
            state, f"LocalMesh of pid {os.getpid()} ({' '.join(sys.argv[:2])[:120]})")
        self._rules: list[DestinationRule] = found
        self._initial = list(found)
        self._last_apply = 0.0
        # normal exit, an error, SIGINT (KeyboardInterrupt) or SIGTERM: close() puts the rules
        # back (and stops an owned replica; if even that is skipped, the kernel's
        # PR_SET_PDEATHSIG stops it when this process dies)
        atexit.register(self.close)
        _exit_on_sigterm()
        if rules is not None:
            self.apply(rules)

    def _check_mesh_options(self, state: ReplicaState) -> None:
        """BackendError when the running replica's Envoys differ from what was asked for."""
        running = ec.AdaptiveConcurrency.from_value(state.adaptive_concurrency)
        if state.envoy_workers != self.envoy_workers or running != self.adaptive_concurrency:
            raise BackendError(
                f"replica {state.replica} runs Envoy with {state.envoy_workers} worker(s) and "
                f"adaptive concurrency {'off' if running is None else 'on'}, not "
                f"{self.envoy_workers} and {'off' if self.adaptive_concurrency is None else 'on'}"
                f" as asked (or with other filter parameters); restart it: meshtune mesh down "
                f"--replica {state.replica}")

    # ----- configuration -------------------------------------------------------------------

    @property
    def rules(self) -> tuple[DestinationRule, ...]:
        """The DestinationRules currently applied."""
        return tuple(self._rules)

    def _check_alive(self) -> None:
        if self._closed:
            raise BackendError("this LocalMesh is closed")
        if not pid_alive(self.state.pid) or read_state(self.replica) is None:
            raise BackendError(replica_down_message(self.state))

    def apply(self, rules: Sequence[DestinationRule]) -> None:
        """Make ``rules`` the replica's complete configuration and wait until every sidecar
        runs it. ValueError for rules Istio would reject; BackendError if Envoy does not take
        the files (the previous ones are put back)."""
        rules = list(rules)
        mesh_documents(self.state, rules)  # raises ValueError before anything is written
        self._check_alive()
        try:
            apply_to_replica(self.state, rules, self._rules)
        except BackendError:
            self._raise_if_went_down()
            raise
        self._rules = rules
        self._last_apply = time.monotonic()

    # ----- load ----------------------------------------------------------------------------

    def _control(self, method: str, path: str) -> dict[str, Any]:
        """Call the services host's control endpoint (see ``apps``)."""
        request = urllib.request.Request(f"http://{HOST}:{self.ports.control}{path}",
                                         method=method, data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return dict(json.loads(resp.read()))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self._raise_if_went_down()
            raise BackendError(f"services host of replica {self.replica} unreachable: "
                               f"{exc}") from exc

    def reset_services(self) -> None:
        """Start from the simulator's initial state: an empty cart, a front-end that is up
        with a clean crash history."""
        self._control("POST", "/reset")

    def healthy(self) -> bool:
        """The notebook's check: does the front-end answer ``GET /catalogue`` with 200? Like the
        simulator's, it checks the current configuration from a fresh start (a front-end
        still restarting after a crash in the previous run is brought back first)."""
        self._check_alive()
        self.reset_services()
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.ports.ingress}/catalogue",
                                        timeout=10) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            # a dead sidecar is not an unhealthy configuration: name it instead
            self._raise_if_went_down()
            return False

    def _raise_if_went_down(self, grace_s: float = DOWN_GRACE_S) -> None:
        """BackendError naming the cause (:func:`replica_down_message`) if the replica's
        supervisor stopped since it was attached — e.g. because a sidecar or Prometheus died;
        waits up to ``grace_s`` for the supervisor to notice a death that just happened."""
        deadline = time.monotonic() + grace_s
        while replica_is_up(self.state):
            if time.monotonic() >= deadline:
                return
            time.sleep(0.1)
        raise BackendError(replica_down_message(self.state))

    def run_load(self, load: LoadSpec, seed: int) -> LoadReport:
        """Drive ``load`` with Locust through the ingress (closed: users; open: sessions
        arriving at ``load.arrival_rate_rps / 9`` per second), with its faults switched on and
        off at their times; the report's endpoints are Locust's statistics plus ``num_good``,
        its services PromQL over the counted window. Every fault is cleared afterwards, also
        after an error.

        A replica that went down during the run (a sidecar, Prometheus or the services host
        died: its supervisor stops them all) is a BackendError naming the process and how it
        ended, never a report: the figures were read only if every process lived through the
        window. A Prometheus that does not answer is a BackendError naming it."""
        try:
            report = self._run_load(load, seed)
        except BackendError:
            self._raise_if_went_down()
            raise
        self._raise_if_went_down(grace_s=0.0)
        return report

    def _run_load(self, load: LoadSpec, seed: int) -> LoadReport:
        faults = fault_documents(load)
        self._check_alive()
        wait = APPLY_SETTLE_S - (time.monotonic() - self._last_apply)
        if wait > 0 and (load.mode == "open" or not self.reset_stats_after_hatch):
            time.sleep(wait)  # a closed load's pause covers it otherwise
        self.reset_services()
        try:
            doc = self._locust(load, seed, faults)
        finally:
            if faults:
                self.reset_services()  # every service up and at its speed again
        crashes = self._control("GET", "/stats")
        start, end = float(doc["started_at"]), float(doc["ended_at"]) + SETTLE_S
        pause = end + 0.3 - time.time()
        if pause > 0:
            time.sleep(pause)
        duration_s = float(doc["duration_s"])
        services = self.metrics.service_stats(start, end, duration_s)
        connect_ms = self.metrics.connect_ms_quantiles(start, end)
        endpoints = {name: EndpointStats(name, 0, 0, None, None, None, None, None, None, 0.0,
                                         num_good=0)
                     for name in endpoint_names()}
        for row in doc["endpoints"]:
            if row["name"] not in endpoints:
                raise BackendError(f"Locust reported an unknown endpoint {row['name']!r}")
            endpoints[row["name"]] = EndpointStats(**row)
        extra: dict[str, Any] = {
            "task_errors": int(doc["task_errors"]), "locust_errors": doc["errors"],
            "connect_ms": connect_ms,
            "frontend_crashes": int(crashes["frontend_crashes"]),
            "frontend_down_ms": float(crashes["frontend_down_ms"]),
            "replica": self.replica,
            "window": [start, end], "run_dir": self.state.run_dir}
        if load.mode == "open":
            extra.update(sessions_arrived=int(doc["sessions_arrived"]),
                         max_lag_ms=float(doc["max_lag_ms"]))
        return LoadReport(
            endpoints=endpoints, services=services, duration_s=duration_s,
            users=load.users if load.mode == "closed" else 0, backend=self.name, extra=extra,
            num_abandoned=int(doc["abandoned"]), latency_mean_ms=doc["latency_mean_ms"],
            latency_p99_ms=doc["latency_p99_ms"])

    def _locust(self, load: LoadSpec, seed: int,
                faults: list[dict[str, Any]]) -> dict[str, Any]:
        logs = Path(self.state.run_dir) / "logs"
        with tempfile.NamedTemporaryFile(suffix=".json", dir=logs, delete=False) as out:
            out_path = Path(out.name)
        shape = (["--users", str(load.users)] if load.mode == "closed"
                 else ["--rate", repr(float(load.arrival_rate_rps or 0.0))])
        argv = [sys.executable, str(Path(__file__).with_name("loadgen.py")),
                "--host", f"http://{HOST}:{self.ports.ingress}", *shape,
                "--requests", str(load.requests), "--hatch-rate", str(load.hatch_rate_per_s),
                "--seed", str(seed), "--max-seconds", str(self.load_timeout_s),
                "--pause-s", str(PAUSE_S),
                "--faults", json.dumps(faults),
                "--control", f"http://{HOST}:{self.ports.control}",
                "--out", str(out_path)]
        if not self.reset_stats_after_hatch:
            argv.append("--no-reset-after-hatch")
        try:
            with open(logs / "locust.log", "ab") as log:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
                try:
                    code = proc.wait(timeout=self.load_timeout_s + 30)
                except BaseException:
                    proc.kill()
                    proc.wait()
                    raise
            if code != 0:
                tail = (logs / "locust.log").read_text(errors="replace").splitlines()[-3:]
                raise BackendError(f"Locust exited with status {code}: " + " | ".join(tail))
            return json.loads(out_path.read_text())
        except subprocess.TimeoutExpired as exc:
            raise BackendError(f"Locust did not finish in {self.load_timeout_s + 30:.0f} s") \
                from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                out_path.unlink()

    # ----- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Re-apply the rules found at construction; stop the replica if this object started
        it. Idempotent."""
        if self._closed:
            return
        try:
            if self._proc is None and read_state(self.replica) is not None:
                self.apply(self._initial)
            detach_holder(self.state, self._holder_token)
        finally:
            self._closed = True
            if self._proc is not None:
                with contextlib.suppress(BackendError):
                    stop_replica(self.replica)
                if self._proc.poll() is None:
                    self._proc.kill()
                self._proc.wait()
                self._proc = None
