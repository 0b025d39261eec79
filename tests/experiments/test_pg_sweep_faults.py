"""The main job under faults, with real Ray: a killed env runner, a --output that cannot be made,
an unreachable --address, a driver killed, Ctrl-C in the middle of a step on the real local mesh.
Each ends as its user expects: the sweep finishes (the runner is restarted), or one line of error
and nothing written, or ``--resume`` finishes it; the mesh's replicas are back in the
configuration they were brought up with; and no process of the run is left."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from envs.backends.local.ports import ReplicaPorts
from envs.backends.local.supervisor import ReplicaState, busy_ports, read_state
from envs.cli import main as cli_main
from envs.istio import read_rules, write_rules
from tests.envs.backends.local.test_faults import (
    ORIGINAL,
    ORIGINAL_CARTS,
    _children,
    live_carts_limit,
)
from tests.experiments._processes import live_processes, run_script, started_script


def _session_pids(session_id: int, name: str = "") -> list[int]:
    """Live PIDs of session ``session_id`` whose command line contains ``name``."""
    return [pid for pid, sid, cmdline in live_processes()
            if sid == session_id and name in cmdline]


_run = functools.partial(run_script, "pg_sweep", timeout_s=120)


def _trial_statuses(out: Path) -> list[str]:
    """The status of every trial in Tune's experiment state under ``out`` (the sweep's
    ``--output``), in trial order."""
    (state,) = sorted((out / "tune" / "pg_sweep").glob("experiment_state-*.json"))
    trials = [json.loads(t[0]) for t in json.loads(state.read_text())["trial_data"]]
    return [t["status"] for t in sorted(trials, key=lambda t: t["trial_id"])]


@pytest.mark.slow
def test_sweep_survives_a_killed_env_runner(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    with started_script("pg_sweep", "--smoke", "--iterations", "30", "--num-env-runners", "2",
                        "--episodes-per-batch", "4", "--output", str(out),
                        log=tmp_path / "log") as proc:
        deadline, runners = time.monotonic() + 180, []
        while not runners and time.monotonic() < deadline and proc.poll() is None:
            runners = _session_pids(proc.pid, "ReinforceEnvRunner")
            time.sleep(0.5)
        assert runners, (tmp_path / "log").read_text()[-3000:]
        time.sleep(3.0)  # mid-sampling
        os.kill(runners[0], signal.SIGKILL)
        assert proc.wait(timeout=600) == 0, (tmp_path / "log").read_text()[-4000:]
    text = (tmp_path / "log").read_text()
    results = json.loads((out / "results.json").read_text())
    # The kill hit a Ray worker of the sweep, and yet every trial ran all its iterations and was
    # ranked: the runner was restarted, the trial did not fail.
    assert "A worker died or was killed" in text
    # Tune's own record of the trials (its console table is not printed when a sweep ends
    # between two of its reports: a red CI run of 2026-12-04).
    assert _trial_statuses(out) == ["TERMINATED", "TERMINATED"]
    assert len(results["trials"]) == 2 and results["best"]["trial"]
    # (FIFO: no early stopping, every trial runs its whole budget)
    assert [t["iterations"] for t in results["trials"]] == [30, 30]
    # No replica was leased twice (that would have failed the restarted runner's MeshEnv) and
    # nothing of the run is left.
    assert "ReplicaTakenError" not in text
    deadline = time.monotonic() + 30
    while _session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _session_pids(proc.pid) == []


def test_an_output_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = _run("--smoke", "--output", str(blocker / "out"))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"pg_sweep: error: --output {blocker / 'out'}: cannot create")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_an_unreachable_address_is_one_line(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = _run("--smoke", "--address", "127.0.0.1:9", "--output", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("pg_sweep: error: cannot reach a Ray cluster at 127.0.0.1:9")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert time.monotonic() - t0 < 60


@pytest.mark.slow
def test_a_driver_killed_mid_sweep_is_resumed(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    args = ["--smoke", "--iterations", "80", "--output", str(out)]
    with started_script("pg_sweep", *args, log=tmp_path / "log") as proc:
        deadline = time.monotonic() + 240
        while (not list(out.glob("tune/pg_sweep/*/checkpoint_*"))
               and time.monotonic() < deadline and proc.poll() is None):
            time.sleep(0.5)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, as the OOM killer would
        proc.wait()
    deadline = time.monotonic() + 180  # the local Ray notices its driver is gone and stops
    while _session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:200] for pid in _session_pids(proc.pid)}
    assert left == {}
    assert not (out / "results.json").exists()
    resumed = _run("--smoke", "--iterations", "80", "--resume", "--output", str(out),
                   timeout_s=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert len(results["trials"]) == 2 and results["held_out"]["cases"]


#: A local sweep small enough for a test: both trials at once, 1 iteration of 1 episode each
#: (8 steps of 2 s on replicas 0 and 1), validation and held-out test of 1 scenario each.
LOCAL_SWEEP = ["--backend", "local", "--smoke", "--iterations", "1", "--episodes-per-batch", "1",
               "--envs-per-runner", "1", "--validation-episodes", "1", "--eval-episodes", "1",
               "--num-cpus", "2"]


def _loadgens_of(run_dir: str) -> set[int]:
    """PIDs of the Locust runs (``loadgen.py``) driving the replica whose run dir is ``run_dir``."""
    return {pid for pid, _, cmdline in live_processes()
            if "loadgen.py" in cmdline and run_dir in cmdline}


@contextmanager
def _replicas_up_with_original_rules(replicas: tuple[int, ...], tmp_path: Path
                                     ) -> Iterator[dict[int, ReplicaState | None]]:
    """Bring ``replicas`` up with ``meshtune mesh up --rules`` (:data:`ORIGINAL`: carts capped)
    on free port blocks; yields their states; brings them down afterwards and checks that
    every port of theirs closed."""
    for k in replicas:
        assert busy_ports(list(ReplicaPorts(k).all_ports())) == [], \
            f"replica {k}'s port block is taken: another run uses it"
    rules_file = tmp_path / "original.yaml"
    write_rules(rules_file, ORIGINAL)
    try:
        for k in replicas:
            assert cli_main(["mesh", "up", "--replica", str(k), "--rules", str(rules_file)]) == 0
        yield {k: read_state(k) for k in replicas}
    finally:
        for k in replicas:
            cli_main(["mesh", "down", "--replica", str(k)])
    for k in replicas:
        assert _wait_until(lambda k=k: busy_ports(list(ReplicaPorts(k).all_ports())) == [], 15)


def _wait_for_second_load(proc: subprocess.Popen[bytes], run_dir: str, log: Path) -> None:
    """Wait (≤ 300 s) until the replica of ``run_dir`` runs its second load of the episode (the
    reset's was first), then 2 s more: the sweep ``proc`` is then in the middle of a step."""
    seen: set[int] = set()
    deadline = time.monotonic() + 300
    while len(seen) < 2 and time.monotonic() < deadline and proc.poll() is None:
        seen |= _loadgens_of(run_dir)
        time.sleep(0.3)
    assert len(seen) >= 2, log.read_text()[-3000:]
    time.sleep(2.0)


@pytest.mark.slow
def test_ctrl_c_mid_step_on_local_restores_the_replicas_and_resume_finishes(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the driver's process group, as a terminal sends it: the driver, Ray's
    GCS and raylet) in the middle of a step of a sweep on replicas brought up with ``meshtune
    mesh up``: one line saying how to resume, exit 130, nothing written; every replica is back
    in the configuration it came up with and no holder is left on it; no process of the run is
    left; ``--resume`` runs the sweep to its end."""
    replicas = (0, 1)
    out = tmp_path / "sweep"
    with _replicas_up_with_original_rules(replicas, tmp_path) as states:
        with started_script("pg_sweep", *LOCAL_SWEEP, "--output", str(out),
                            log=tmp_path / "log") as proc:
            # mid-step: replica 0 runs its second load of the episode (the reset's was first)
            _wait_for_second_load(proc, states[0].run_dir,  # type: ignore[union-attr]
                                  tmp_path / "log")
            os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(timeout=180) == 130, (tmp_path / "log").read_text()[-3000:]
        text = (tmp_path / "log").read_text()
        assert text.rstrip().endswith(
            "pg_sweep: interrupted with 2 of 2 trials unfinished; continue with --resume "
            f"--output {out}"), text[-3000:]
        assert "Traceback" not in text.rstrip().splitlines()[-1]
        assert not (out / "results.json").exists()
        # the replicas: the same processes, back in their original configuration, no holder
        for k in replicas:
            state = states[k]
            assert state is not None and read_state(k) == state
            assert _wait_until(lambda k=k: live_carts_limit(k) == ORIGINAL_CARTS, 30), k
            assert read_rules(state.rules_path) == ORIGINAL
            assert list((Path(state.run_dir) / "holders").glob("*.json")) == []
        # nothing of the run is left: Ray, its workers, Locust
        assert _wait_until(lambda: _session_pids(proc.pid) == [], 60), [
            Path(f"/proc/{pid}/cmdline").read_bytes()[:120] for pid in _session_pids(proc.pid)]
        assert all(_loadgens_of(states[k].run_dir) == set() for k in replicas)  # type: ignore[union-attr]

        resumed = run_script("pg_sweep", *LOCAL_SWEEP, "--resume", "--output", str(out),
                             timeout_s=900)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert "ReplicaTakenError" not in resumed.stdout + resumed.stderr
        results = json.loads((out / "results.json").read_text())
        assert [t["iterations"] for t in results["trials"]] == [1, 1]
        assert results["held_out"]["cases"]
        for k in replicas:
            assert read_state(k) == states[k]
            assert live_carts_limit(k) == ORIGINAL_CARTS


def _wait_until(predicate, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.3)
    return bool(predicate())


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["envoy-carts", "prometheus"])
def test_a_process_of_a_replica_killed_mid_sweep_is_survived(tmp_path: Path, victim: str) -> None:
    """A sidecar Envoy (or Prometheus) of replica 0 SIGKILLed in the middle of a step of a local
    sweep on replicas brought up with ``meshtune mesh up``: the step fails with one line naming
    the dead process (its supervisor ends the replica), RLlib brings the env runner back into
    service, and its env brings the replica back up in the configuration it was brought up with;
    the trial finishes, the results are written, no replica is leased twice, both replicas run
    their original rules on their live Envoys, and no process of the run is left."""
    replicas = (0, 1)
    out = tmp_path / "sweep"
    with _replicas_up_with_original_rules(replicas, tmp_path) as states:
        hit = states[0]
        assert hit is not None
        t0 = time.monotonic()
        with started_script("pg_sweep", *LOCAL_SWEEP, "--output", str(out),
                            log=tmp_path / "log") as proc:
            # mid-step: replica 0 runs its second load of the episode (the reset's was first)
            _wait_for_second_load(proc, hit.run_dir, tmp_path / "log")
            os.kill(_children(hit.pid)[victim], signal.SIGKILL)
            assert proc.wait(timeout=600) == 0, (tmp_path / "log").read_text()[-4000:]
        wall_s = time.monotonic() - t0
        text = (tmp_path / "log").read_text()
        # the step's error named the dead process, in one line; the replica was brought back
        assert f"local replica 0 went down: {victim} was killed by SIGKILL" in text, text[-4000:]
        assert "local replica 0 brought back up" in text, text[-4000:]
        assert "ReplicaTakenError" not in text
        results = json.loads((out / "results.json").read_text())
        assert [t["iterations"] for t in results["trials"]] == [1, 1]
        assert results["held_out"]["cases"]
        # replica 0: a new supervisor, in the configuration it was brought up with; replica 1
        # untouched; no holder left on either
        revived = read_state(0)
        assert revived is not None and revived.pid != hit.pid
        assert read_state(1) == states[1]
        for k in replicas:
            state = read_state(k)
            assert state is not None
            assert _wait_until(lambda k=k: live_carts_limit(k) == ORIGINAL_CARTS, 30), k
            assert read_rules(state.rules_path) == ORIGINAL
            assert list((Path(state.run_dir) / "holders").glob("*.json")) == []
            assert _loadgens_of(state.run_dir) == set()
        assert _wait_until(lambda: _session_pids(proc.pid) == [], 60), [
            Path(f"/proc/{pid}/cmdline").read_bytes()[:120] for pid in _session_pids(proc.pid)]
        print(f"sweep with {victim} killed: {wall_s:.0f} s")
