"""``scripts/headroom.py``: its flags, and a small run that prints and appends its tables (the
look-ahead oracle, its blind replay and the static references, on the simulator)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests._unwritable import assert_one_line_append_error, unwritable_path
from tests.experiments._processes import REPO, _script_env, load_script

SCRIPT = REPO / "scripts" / "headroom.py"


def _module() -> ModuleType:
    return load_script(SCRIPT)


@pytest.mark.parametrize("args, message", [
    (["--screen-seeds", "0"], "--screen-seeds must be >= 1"),
    (["--min-gain", "-1"], "--min-gain must be >= 0 points"),
    (["--cases", "1"], "--cases must be >= 2"),
    (["--episode-len", "3"], "--episode-len must be in 8..1000"),
    (["--catalogue", "nope"], "invalid choice"),
])
def test_bad_flags_are_one_line_and_start_nothing(args: list[str], message: str) -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=_script_env(),
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_a_small_run_prints_and_appends_its_tables(tmp_path: Path, monkeypatch,
                                                   capsys) -> None:
    hr = _module()
    target = tmp_path / "BENCHMARKS.md"
    target.write_text("# Benchmarks\n\n## Closed-loop evaluation\n\nintro\n\n## Faults\n\nx\n")
    monkeypatch.setattr(hr, "BENCHMARKS_MD", target)
    argv = ["--cases", "2", "--episode-len", "8", "--top-k", "2", "--confirm-seeds", "2"]
    assert hr.main(argv) == 0
    out = capsys.readouterr().out
    for method in ("lookahead_oracle", "blind_replay", "istio_default", "tpe_201", "rule_based",
                   "gateway_throttle", "front_end_h2_16", "keep_start"):
        assert f"| {method} |" in out
    assert "goodput req/s" in out and "p99 ms" in out
    assert "Blind replay (the ablation" in out or "the oracle has no gain" in out
    assert "Against the gateway throttle: the oracle " in out
    text = target.read_text()
    # appended inside its section, before the next one, with the command that made it
    section = text[text.index("## Closed-loop evaluation"):text.index("## Faults")]
    assert "`python scripts/headroom.py --cases 2 --episode-len 8 --top-k 2 " \
           "--confirm-seeds 2`" in section
    assert "| lookahead_oracle |" in section


def test_an_unwritable_benchmarks_file_is_one_line_after_the_tables(tmp_path: Path,
                                                                    monkeypatch,
                                                                    capsys) -> None:
    hr = _module()
    bench = unwritable_path(tmp_path)
    monkeypatch.setattr(hr, "BENCHMARKS_MD", bench)
    argv = ["--cases", "2", "--episode-len", "8", "--top-k", "1", "--confirm-seeds", "1"]
    assert hr.main(argv) == 2
    captured = capsys.readouterr()
    assert "| lookahead_oracle |" in captured.out
    assert_one_line_append_error(captured.err, "headroom", bench)
