"""``benchmarks/bench_main_job.py``: a BENCHMARKS.md it cannot write is one line on stderr after
the table, exit status 2 (the timed runs stood in for: the timing itself is
tests/rl/evaluation/test_job_timing.py's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rl.evaluation.job_timing import JobTiming
from tests._unwritable import assert_one_line_append_error, unwritable_path
from tests.experiments._processes import REPO, load_script


def test_an_unwritable_benchmarks_file_is_one_line_after_the_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench_main_job = load_script(REPO / "benchmarks" / "bench_main_job.py")
    timing = JobTiming("smoke", "python experiments/pg_sweep.py --smoke", 30.0, 60.0, 0, 0.5,
                       1.5, "")
    monkeypatch.setattr(bench_main_job, "time_scripts", lambda *a: [timing])
    bench = unwritable_path(tmp_path)
    monkeypatch.setattr(bench_main_job, "BENCHMARKS_MD", bench)
    assert bench_main_job.main(["--only", "smoke"]) == 2
    captured = capsys.readouterr()
    assert "`python benchmarks/bench_main_job.py --only smoke`" in captured.out
    assert "0.5 min (30 s)" in captured.out and "appended to" not in captured.out
    assert_one_line_append_error(captured.err, "bench_main_job", bench)
