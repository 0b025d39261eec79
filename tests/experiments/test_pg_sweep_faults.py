"""The main job under faults, with real Ray: a killed env runner, a --output that cannot be made,
an unreachable --address. Each ends as its user expects: the sweep finishes (the runner is
restarted), or one line of error and nothing written; and no process of the run is left."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.experiments._processes import REPO, live_processes, run_script

SCRIPT = REPO / "experiments" / "pg_sweep.py"


def _session_pids(session_id: int, name: str = "") -> list[int]:
    """Live PIDs of session ``session_id`` whose command line contains ``name``."""
    return [pid for pid, sid, cmdline in live_processes()
            if sid == session_id and name in cmdline]


_run = functools.partial(run_script, "pg_sweep", timeout_s=120)


@pytest.mark.slow
def test_sweep_survives_a_killed_env_runner(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    log = (tmp_path / "log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--smoke", "--iterations", "30", "--num-env-runners", "2",
         "--episodes-per-batch", "4", "--output", str(out)],
        cwd=REPO, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, runners = time.monotonic() + 180, []
        while not runners and time.monotonic() < deadline and proc.poll() is None:
            runners = _session_pids(proc.pid, "ReinforceEnvRunner")
            time.sleep(0.5)
        assert runners, (tmp_path / "log").read_text()[-3000:]
        time.sleep(3.0)  # mid-sampling
        os.kill(runners[0], signal.SIGKILL)
        assert proc.wait(timeout=600) == 0, (tmp_path / "log").read_text()[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    text = (tmp_path / "log").read_text()
    results = json.loads((out / "results.json").read_text())
    # The kill hit a Ray worker of the sweep, and yet every trial ran all its iterations and was
    # ranked: the runner was restarted, the trial did not fail.
    assert "A worker died or was killed" in text
    assert "(2 TERMINATED)" in text
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
    log = (tmp_path / "log").open("w")
    args = ["--smoke", "--iterations", "80", "--output", str(out)]
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=REPO,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while (not list(out.glob("tune/pg_sweep/*/checkpoint_*"))
               and time.monotonic() < deadline and proc.poll() is None):
            time.sleep(0.5)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, as the OOM killer would
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
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
