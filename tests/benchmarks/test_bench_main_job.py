"""benchmarks/bench_main_job.py: the table, the targets and the BENCHMARKS.md append.

Timing the real main job takes minutes and belongs to the benchmark run itself; here a fake
``pg_sweep`` run (a tiny subprocess) stands in so the script's own logic is checked.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_main_job_script",
                                               REPO / "benchmarks" / "bench_main_job.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_main_job_script"] = bench
_spec.loader.exec_module(bench)


def _timing(name: str, wall_s: float, code: int = 0) -> object:
    return bench.JobTiming(name, f"python experiments/pg_sweep.py --{name}", wall_s,
                           bench.RUNS[name][1], code, 0.5, 1.5, "")


def test_met_needs_success_within_the_target() -> None:
    assert _timing("smoke", 30.0).met
    assert not _timing("smoke", 61.0).met
    assert not _timing("smoke", 30.0, code=2).met
    text = bench.table([_timing("smoke", 30.0), _timing("default", 700.0),
                        _timing("smoke", 5.0, code=1)])
    rows = text.splitlines()[2:]
    assert "| yes |" in rows[0] and "0.5 min (30 s)" in rows[0]
    assert "| no |" in rows[1] and "| 10 min |" in rows[1]
    assert "FAILED (exit 1)" in rows[2] and "0.50 → 1.50" in rows[2]


def test_append_creates_the_section_once_and_keeps_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n## Fidelity\n\nkeep me\n")
    monkeypatch.setattr(bench, "BENCHMARKS_MD", md)
    bench.append_to_benchmarks("### run 1\n")
    bench.append_to_benchmarks("### run 2\n")
    text = md.read_text()
    assert text.count("## Main job") == 1 and "keep me" in text
    assert text.index("### run 1") < text.index("### run 2")


def test_a_failing_run_is_reported_not_hidden(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert cmd[1] == "experiments/pg_sweep.py" and "--smoke" in cmd
        return subprocess.CompletedProcess(cmd, 3, stdout="", stderr="pg_sweep: error: boom")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    assert bench.main(["--only", "smoke", "--no-write"]) == 1
    captured = capsys.readouterr()
    assert "FAILED (exit 3)" in captured.out and "boom" in captured.err
