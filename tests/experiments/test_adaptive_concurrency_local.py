"""``scripts/adaptive_concurrency_local.py``: a BENCHMARKS.md it cannot write is one line on
stderr after the table, exit status 2 (each method's episode played on the simulator with
Istio's defaults instead of on a fresh local replica: no Envoy is started); the command it
records is that of the flags ``main`` was given (the episodes stubbed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests._unwritable import assert_one_line_append_error, unwritable_path
from tests.experiments._processes import REPO, load_script


def test_an_unwritable_benchmarks_file_is_one_line_after_the_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from envs.backends import make_backend
    from rl.controllers import istio_defaults
    from rl.evaluation.closed_loop import ScenarioRun, run_scenario

    ac = load_script(REPO / "scripts" / "adaptive_concurrency_local.py")

    def on_sim(controller: object, replica: int, plan_case: tuple, step_s: float,
               episode_len: int) -> ScenarioRun:
        mesh = make_backend("sim")
        try:
            return run_scenario(mesh, plan_case[0], istio_defaults(), plan_case[1], step_s,
                                episode_len)
        finally:
            mesh.close()

    monkeypatch.setattr(ac, "play", on_sim)
    bench = unwritable_path(tmp_path)
    monkeypatch.setattr(ac, "BENCHMARKS_MD", bench)
    assert ac.main(["--step-s", "1"]) == 2
    captured = capsys.readouterr()
    assert "| **sum 1..T** |" in captured.out
    assert_one_line_append_error(captured.err, "adaptive_concurrency_local", bench)


def test_the_recorded_command_is_mains_argv(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    ac = load_script(REPO / "scripts" / "adaptive_concurrency_local.py")
    monkeypatch.setattr(ac, "play", lambda *a, **k: None)
    monkeypatch.setattr(ac, "table", lambda runs: "| stub table |")
    monkeypatch.setattr(sys, "argv", ["adaptive_concurrency_local.py", "--from-sys-argv"])
    bench = tmp_path / "BENCHMARKS.md"
    monkeypatch.setattr(ac, "BENCHMARKS_MD", bench)
    assert ac.main(["--step-s", "1", "--case", "1"]) == 0
    text = bench.read_text()
    assert "`python scripts/adaptive_concurrency_local.py --step-s 1 --case 1`" in text
    assert "--from-sys-argv" not in text
