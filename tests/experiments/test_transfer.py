"""experiments/transfer.py's command line: its own checks fail before anything runs, a
missing sweep result is a one-line error, in the default closed-loop mode and with --classic, and
so is a benchmarks file it cannot write at the end
(the transfers: tests/rl/evaluation/test_transfer*.py; the closed loop end to end on the real
local mesh: test_transfer_closed_loop.py).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests._unwritable import assert_one_line_append_error, unwritable_path
from tests.experiments._processes import REPO, load_script, run_script

_run = functools.partial(run_script, "transfer", timeout_s=120)


def test_user_errors(tmp_path: Path) -> None:
    missing = tmp_path / "results.json"
    modes = (["--output", str(tmp_path / "out")], ["--classic"])
    for mode in modes:
        proc = _run(*mode, "--sweep-results", str(missing), "--no-append")
        assert proc.returncode == 2
        assert proc.stderr.startswith("transfer: error: ") and "does not exist" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    missing.write_text(json.dumps({"best": {}}))
    for mode in modes:
        proc = _run(*mode, "--sweep-results", str(missing), "--no-append")
        assert proc.returncode == 2 and "no best trial checkpoint" in proc.stderr
    proc = _run("--episode-len", "0")
    assert proc.returncode == 2 and "--episode-len must be >= 1" in proc.stderr
    proc = _run("--cases", "0")
    assert proc.returncode == 2 and "--cases must be >= 1" in proc.stderr


def test_unwritable_output_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = _run("--checkpoint", str(tmp_path), "--output", str(blocker / "out"), "--no-append")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"transfer: error: cannot create output directory {blocker / 'out'}: Not a directory"]


def test_flags_of_the_other_mode_are_refused() -> None:
    proc = _run("--measure-runs", "2")
    assert proc.returncode == 2 and "--measure-runs only applies with --classic" in proc.stderr
    proc = _run("--classic", "--quick", "--step-s", "2")
    assert proc.returncode == 2
    assert "--quick, --step-s only apply without --classic" in proc.stderr


def test_classic_cases_need_fresh_measurements() -> None:
    # --classic's own check (before: the default mode's; the flag moved behind --classic)
    proc = _run("--classic", "--cases", "2", "--measure-runs", "0")
    assert proc.returncode == 2
    assert "--cases needs --measure-runs" in proc.stderr


def _quick_transfer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``experiments/transfer.py`` loaded for a ``--quick`` run in-process: the simulator
    standing in for the local replicas and a tiny policy for the checkpoint (the whole run:
    tests/rl/evaluation/test_transfer_closed_loop.py)."""
    import rl.evaluation.transfer_closed_loop as tc
    from envs.actions import make_catalogue
    from envs.backends import make_backend
    from envs.settings import DEFAULT_ENV_CONFIG
    from tests.rl.evaluation._policies import ObsHash

    n_act = len(make_catalogue(DEFAULT_ENV_CONFIG["catalogue"]))
    monkeypatch.setattr(tc, "load_policy", lambda path: SimpleNamespace(
        module=ObsHash(n_act), env_config={}, env_steps_trained=7, path=path))
    monkeypatch.setattr(tc, "fresh_local_replica", lambda c, replica: make_backend("sim"))
    monkeypatch.setattr(tc, "listening_ports", lambda replica: [])
    return load_script(REPO / "experiments" / "transfer.py")


def test_an_unwritable_benchmarks_file_is_one_line_before_anything_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    transfer = _quick_transfer(tmp_path, monkeypatch)
    bench, out = unwritable_path(tmp_path), tmp_path / "out"
    assert transfer.main(["--quick", "--step-s", "1", "--checkpoint", str(tmp_path / "ckpt"),
                          "--output", str(out), "--benchmarks", str(bench)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"transfer: error: benchmarks file {bench} is not writable: "
                            "Not a directory\n")
    assert "Summed score per case" not in captured.out  # refused before the first case
    assert not (out / "results.json").exists()


def test_a_benchmarks_file_unwritable_at_the_end_is_one_line_after_the_tables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # writable when the run starts (the check passes), not when it ends
    import rl.evaluation.transfer_closed_loop as tc

    transfer = _quick_transfer(tmp_path, monkeypatch)
    monkeypatch.setattr(tc, "check_writable_file", lambda path: None)
    bench, out = unwritable_path(tmp_path), tmp_path / "out"
    assert transfer.main(["--quick", "--step-s", "1", "--checkpoint", str(tmp_path / "ckpt"),
                          "--output", str(out), "--benchmarks", str(bench)]) == 2
    captured = capsys.readouterr()
    assert "Summed score per case, sim / local:" in captured.out
    assert_one_line_append_error(captured.err, "transfer", bench)
    assert json.loads((out / "results.json").read_text())["methods"] == [
        "policy", "istio_default"]
    assert (out / "results.md").exists() and (out / "traces.png").exists()
