"""experiments/transfer.py's command line: its own checks fail before anything runs, and a
missing sweep result is a one-line error (the transfer: tests/rl/evaluation/test_transfer.py).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from tests.experiments._processes import run_script

_run = functools.partial(run_script, "transfer", timeout_s=120)


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
