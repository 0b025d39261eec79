"""``experiments/throughput.py``: a benchmarks file it cannot write is one line on stderr after
the table, exit status 2, the results files kept (the bare layers for real with tiny counts, the
RLlib layers and Ray left out; the layers themselves: tests/rl/evaluation/test_throughput.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rl.ray_setup
from tests._unwritable import assert_one_line_append_error, unwritable_path
from tests.experiments._processes import REPO, load_script

SCRIPT = REPO / "experiments" / "throughput.py"


def test_an_unwritable_benchmarks_file_is_one_line_after_the_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tp = load_script(SCRIPT)
    monkeypatch.setattr(tp, "time_rllib", lambda *a, **k: [])
    monkeypatch.setattr(rl.ray_setup, "init_ray", lambda **k: None)
    bench, out = unwritable_path(tmp_path), tmp_path / "out"
    argv = ["--users", "1", "--steps", "2", "--rounds", "1", "--output", str(out),
            "--benchmarks", str(bench)]
    assert tp.main(argv) == 2
    captured = capsys.readouterr()
    assert "| bare simulator (SimMesh.run_load) | 2 |" in captured.out
    assert_one_line_append_error(captured.err, "throughput", bench)
    assert "appended to" not in captured.out
    assert "| bare MeshEnv" in (out / "results.md").read_text()
    assert len(json.loads((out / "results.json").read_text())["layers"]) == 2


def test_an_unwritable_output_is_one_line_before_anything_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tp = load_script(SCRIPT)

    def no_run(*args: object, **kwargs: object) -> None:
        pytest.fail("a layer was measured")

    monkeypatch.setattr(tp, "time_simulator", no_run)
    out = unwritable_path(tmp_path, "out")
    assert tp.main(["--output", str(out), "--benchmarks", str(tmp_path / "B.md")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not (tmp_path / "B.md").exists()
    assert captured.err == (
        f"throughput: error: --output {out}: cannot write there (Not a directory)\n")
