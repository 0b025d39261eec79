"""``benchmarks/bench_envoy_workers.py``: a BENCHMARKS.md it cannot write is one line on stderr
after the table, exit status 2 (``--backend sim`` with a small load: no Envoy is started); the
command it records is that of the flags ``main`` was given (measurements stubbed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rl.evaluation.benchmarks_md import recorded_command
from tests._unwritable import assert_one_line_append_error, unwritable_path
from tests.experiments._processes import REPO, load_script


def test_an_unwritable_benchmarks_file_is_one_line_after_the_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench_envoy_workers = load_script(REPO / "benchmarks" / "bench_envoy_workers.py")
    bench = unwritable_path(tmp_path)
    monkeypatch.setattr(bench_envoy_workers, "BENCHMARKS_MD", bench)
    argv = ["--backend", "sim", "--seeds", "1", "--users", "4", "--requests", "40"]
    assert bench_envoy_workers.main(argv) == 2
    captured = capsys.readouterr()
    assert "| Envoy workers | peak connections" in captured.out
    assert_one_line_append_error(captured.err, "bench_envoy_workers", bench)


@pytest.mark.parametrize("flags", [["--backend", "sim", "--seeds", "3"],
                                   ["--backend", "local", "--users", "4"]])
def test_the_recorded_command_is_mains_argv(flags: list[str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    bench_envoy_workers = load_script(REPO / "benchmarks" / "bench_envoy_workers.py")
    for name in ("measure", "measure_sim"):
        monkeypatch.setattr(bench_envoy_workers, name, lambda *a, **k: None)
    for name in ("table", "sim_table"):
        monkeypatch.setattr(bench_envoy_workers, name, lambda rows: "| stub table |")
    monkeypatch.setattr(sys, "argv", ["bench_envoy_workers.py", "--from-sys-argv"])
    bench = tmp_path / "BENCHMARKS.md"
    monkeypatch.setattr(bench_envoy_workers, "BENCHMARKS_MD", bench)
    assert bench_envoy_workers.main(flags) == 0
    text = bench.read_text()
    assert f"`python benchmarks/bench_envoy_workers.py {' '.join(flags)}`" in text
    assert "--from-sys-argv" not in text
    assert recorded_command("benchmarks/bench_envoy_workers.py", []) == (
        "python benchmarks/bench_envoy_workers.py")
