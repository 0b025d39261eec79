"""experiments/transfer.py's command line: its own checks fail before anything runs, and a
missing sweep result is a one-line error (the transfer: tests/rl/evaluation/test_transfer.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "transfer.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_user_errors(tmp_path: Path) -> None:
    missing = tmp_path / "results.json"
    proc = _run("--sweep-results", str(missing), "--no-append")
    assert proc.returncode == 2
    assert proc.stderr.startswith("transfer: error: ") and "does not exist" in proc.stderr
    missing.write_text(json.dumps({"best": {}}))
    proc = _run("--sweep-results", str(missing), "--no-append")
    assert proc.returncode == 2 and "no best trial checkpoint" in proc.stderr
    proc = _run("--episode-len", "0")
    assert proc.returncode == 2 and "--episode-len must be >= 1" in proc.stderr


def test_cases_need_fresh_measurements() -> None:
    proc = _run("--cases", "2", "--measure-runs", "0")
    assert proc.returncode == 2
    assert "--cases needs --measure-runs" in proc.stderr
