"""``benchmarks/bench_sim.py``: a BENCHMARKS.md it cannot write is one line on stderr after the
table, exit status 2 (a few steps for real; the subprocesses timing the Numba core's start and
the pinning of this process to one CPU stood in for)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._unwritable import assert_one_line_append_error, unwritable_path
from tests.experiments._processes import REPO, load_script


def test_an_unwritable_benchmarks_file_is_one_line_after_the_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench_sim = load_script(REPO / "benchmarks" / "bench_sim.py")
    monkeypatch.setattr(bench_sim, "time_ready", lambda cold: 0.5)
    monkeypatch.setattr(bench_sim, "pin_to_one_cpu", lambda: None)
    bench = unwritable_path(tmp_path)
    monkeypatch.setattr(bench_sim, "BENCHMARKS_MD", bench)
    assert bench_sim.main(["--steps", "2", "--skip-compile"]) == 2
    captured = capsys.readouterr()
    assert "| **steps per second** (median wall) |" in captured.out
    assert "appended to" not in captured.out
    assert_one_line_append_error(captured.err, "bench_sim", bench)
