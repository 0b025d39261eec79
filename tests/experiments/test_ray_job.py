"""The sweep as a Ray job: a real head on loopback, ``ray job submit``, the dashboard's job API.

The head runs as ``ray start --head --block`` in its own session with its own ports and temp
dir, and is stopped by signalling that process (which stops everything it started) rather than
with ``ray stop``, which would kill every Ray process of the user on the machine. The test then
checks that no process of that session or temp dir is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.experiments._processes import live_processes

REPO = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = 420


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _leftover_pids(session_id: int, marker: str) -> list[int]:
    """PIDs in the head's session or whose command line names its temp dir."""
    return [pid for pid, sid, cmdline in live_processes()
            if sid == session_id or marker in cmdline]


class RayHead:
    """A Ray head started by this test, on loopback ports of its own."""

    def __init__(self, temp_dir: Path, log_path: Path) -> None:
        self.temp_dir = temp_dir
        self.dashboard_port = _free_port()
        self.url = f"http://127.0.0.1:{self.dashboard_port}"
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
        cmd = ["ray", "start", "--head", "--block", f"--port={_free_port()}",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
               f"--ray-client-server-port={_free_port()}",
               f"--dashboard-agent-listen-port={_free_port()}",
               "--num-cpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
        self.log = log_path.open("w")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> list[int]:
        """SIGTERM the head (it stops what it started); return PIDs still alive after 60 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
        deadline = time.monotonic() + 60
        while True:
            left = _leftover_pids(self.proc.pid, str(self.temp_dir))
            if not left or time.monotonic() > deadline:
                break
            time.sleep(1)
        for pid in left:  # clean up what we started before failing the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return left


@pytest.fixture
def ray_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RayHead]:
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    # Short path: Ray's unix sockets live under it (108-byte limit).
    temp_dir = Path(tempfile.mkdtemp(prefix="rjt", dir="/tmp"))
    head = RayHead(temp_dir, tmp_path / "head.log")
    try:
        yield head
    finally:
        left = head.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes left after stopping the head: {left}"


def _job_client(url: str, timeout_s: float = 60) -> object:
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return JobSubmissionClient(url)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.mark.slow
def test_smoke_sweep_runs_as_a_ray_job(ray_head: RayHead, tmp_path: Path) -> None:
    from ray.job_submission import JobStatus

    client = _job_client(ray_head.url)
    out = tmp_path / "job_out"
    job_id = f"meshtune_smoke_{os.getpid()}"
    runtime_env = {"excludes": ["results/", ".git/", "**/__pycache__/", ".ruff_cache/",
                                ".pytest_cache/"]}
    submit = subprocess.run(
        ["ray", "job", "submit", "--address", ray_head.url, "--no-wait",
         "--submission-id", job_id, "--working-dir", str(REPO),
         "--runtime-env-json", json.dumps(runtime_env), "--",
         sys.executable, "experiments/pg_sweep.py", "--smoke", "--output", str(out)],
        env=ray_head.env, capture_output=True, text=True, timeout=120, check=False)
    assert submit.returncode == 0, submit.stdout + submit.stderr

    deadline = time.monotonic() + JOB_TIMEOUT_S
    seen: list[JobStatus] = []
    while True:
        status = client.get_job_status(job_id)
        if not seen or seen[-1] != status:
            seen.append(status)
        if status.is_terminal() or time.monotonic() > deadline:
            break
        time.sleep(2)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, f"statuses {seen}; logs:\n{logs[-5000:]}"
    assert JobStatus.RUNNING in seen
    info = client.get_job_info(job_id)
    assert info.submission_id == job_id and info.entrypoint.endswith(f"--output {out}")

    # The logs read through the job API carry the script's progress and results.
    assert "Win rate of policy" in logs and "gateway_throttle" in logs
    assert "[pg_sweep] done" in logs

    # Custom metrics reached Tune's results (result.json of every trial) and TensorBoard.
    results = json.loads((out / "results.json").read_text())
    for trial in results["trials"]:
        trial_dir = Path(trial["path"])
        last = json.loads((trial_dir / "result.json").read_text().splitlines()[-1])
        for metric in ("eval_score_gain", "failure_pct", "p99_ms", "unhealthy_end"):
            assert metric in last["env_runners"], metric
        assert list(trial_dir.glob("events.out.tfevents.*")), trial_dir
