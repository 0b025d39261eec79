"""The write checks the scripts make before a long run (:mod:`rl.evaluation.benchmarks_md`): a
real write, so a path under a regular file is refused even as root, and nothing is left behind
or changed where the check passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from rl.evaluation.benchmarks_md import (
    check_writable_dir,
    check_writable_file,
    recorded_command,
    writable_or_report,
)
from tests._unwritable import unwritable_path


def test_a_writable_directory_is_created_and_left_empty(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    check_writable_dir(out)
    assert out.is_dir() and list(out.iterdir()) == []


def test_an_existing_file_is_checked_without_being_changed(tmp_path: Path) -> None:
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\nkept\n")
    check_writable_file(bench)
    assert bench.read_text() == "# Benchmarks\n\nkept\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BENCHMARKS.md"]


def test_a_missing_file_needs_its_directory_to_take_a_probe(tmp_path: Path) -> None:
    target = tmp_path / "new" / "results.json"
    check_writable_file(target)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_a_path_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        check_writable_dir(unwritable_path(tmp_path, "out"))
    with pytest.raises(NotADirectoryError):
        check_writable_file(unwritable_path(tmp_path))
    with pytest.raises(IsADirectoryError):
        check_writable_file(tmp_path)


def test_an_unwritable_flag_is_one_line(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = unwritable_path(tmp_path, "out")
    assert not writable_or_report(path, "--output", "prog", directory=True)
    assert capsys.readouterr().err == (
        f"prog: error: --output {path}: cannot write there (Not a directory)\n")
    assert writable_or_report(tmp_path / "ok.json", "--json", "prog")
    assert capsys.readouterr().err == ""


def test_the_recorded_command_can_be_pasted_back_into_a_shell() -> None:
    assert recorded_command("scripts/headroom.py", []) == "python scripts/headroom.py"
    assert recorded_command("scripts/headroom.py", ["--cases", "4", "--output", "a b"]) == (
        "python scripts/headroom.py --cases 4 --output 'a b'")
