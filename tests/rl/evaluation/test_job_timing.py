"""rl.evaluation.job_timing (behind benchmarks/bench_main_job.py): the table, the targets, a
failing run reported, and the BENCHMARKS.md append. A fake ``subprocess.run`` stands in for the
``pg_sweep`` run so the timing logic itself is checked."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rl.evaluation import job_timing
from rl.evaluation.benchmarks_md import append_to_section
from rl.evaluation.job_timing import JobTiming, time_scripts, timing_table

REPO = Path(__file__).resolve().parents[3]
#: The targets bench_main_job.py times the main job against (s).
TARGETS = {"smoke": 60.0, "default": 600.0}


def _timing(name: str, wall_s: float, code: int = 0) -> JobTiming:
    return JobTiming(name, f"python experiments/pg_sweep.py --{name}", wall_s,
                     TARGETS[name], code, 0.5, 1.5, "")


def test_met_needs_success_within_the_target() -> None:
    assert _timing("smoke", 30.0).met
    assert not _timing("smoke", 61.0).met
    assert not _timing("smoke", 30.0, code=2).met
    text = timing_table([_timing("smoke", 30.0), _timing("default", 700.0),
                         _timing("smoke", 5.0, code=1)])
    rows = text.splitlines()[2:]
    assert "| yes |" in rows[0] and "0.5 min (30 s)" in rows[0]
    assert "| no |" in rows[1] and "| 10 min |" in rows[1]
    assert "FAILED (exit 1)" in rows[2] and "0.50 → 1.50" in rows[2]


def test_append_creates_the_section_once_and_keeps_the_others(tmp_path: Path) -> None:
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n## Fidelity\n\nkeep me\n")
    append_to_section(md, "## Main job", "intro", "### run 1\n")
    append_to_section(md, "## Main job", "intro", "### run 2\n")
    text = md.read_text()
    assert text.count("## Main job") == 1 and "keep me" in text
    assert text.index("### run 1") < text.index("### run 2")


def test_a_failing_run_is_reported_not_hidden(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert cmd[1] == "experiments/pg_sweep.py" and "--smoke" in cmd
        return subprocess.CompletedProcess(cmd, 3, stdout="", stderr="pg_sweep: error: boom")

    monkeypatch.setattr(job_timing.subprocess, "run", fake_run)
    timings = time_scripts("experiments/pg_sweep.py", {"smoke": (["--smoke"], 60.0)},
                           ["smoke"], REPO)
    assert [t.returncode for t in timings] == [3]  # bench_main_job.py then exits 1
    captured = capsys.readouterr()
    assert "FAILED (exit 3)" in timing_table(timings) and "boom" in captured.err


def test_the_sweeps_env_steps_per_second_come_from_its_results_json(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that wrote results.json gets its trials' env steps over the sweep's wall time; one
    that wrote none shows a dash, and a results.json without the figures is an error."""
    import json

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        out = Path(cmd[cmd.index("--output") + 1])
        if "--smoke" not in cmd:
            (out / "results.json").write_text(json.dumps(
                {"sweep_wall_s": 320.0, "trials": [{"env_steps": 64_000},
                                                   {"env_steps": 63_980}]}))
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(job_timing.subprocess, "run", fake_run)
    runs = {"smoke": (["--smoke"], 60.0), "default": ([], 600.0)}
    smoke, default = time_scripts("experiments/pg_sweep.py", runs, ["smoke", "default"], REPO)
    assert smoke.steps_per_s is None and default.env_steps == 127_980
    assert default.steps_per_s == pytest.approx(127_980 / 320.0)
    rows = timing_table([smoke, default]).splitlines()
    assert "target 1,000" in rows[0]
    assert rows[2].endswith("| — |") and "127,980 / 320 s = **400**/s" in rows[3]


def test_a_results_json_without_env_steps_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text('{"sweep_wall_s": 3.0, "trials": [{"trial": "trial_00000"}]}')
    with pytest.raises(ValueError, match="no env steps"):
        job_timing.sweep_steps(path)
