"""What the tests of "a BENCHMARKS.md the script cannot write" share: a path nothing can create,
and the one line the script must print for it (``rl.evaluation.benchmarks_md.append_or_report``)."""

from __future__ import annotations

from pathlib import Path


def unwritable_path(tmp_path: Path, name: str = "BENCHMARKS.md") -> Path:
    """A path under a regular file in ``tmp_path``: nothing can be created there, even as root
    (where a read-only directory would not stop a write)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    return blocker / name


def assert_one_line_append_error(err: str, prog: str, path: Path) -> None:
    """``err`` (a script's stderr) is exactly ``<prog>: could not append to <path>: <why>``, one
    line, no traceback."""
    assert err.startswith(f"{prog}: could not append to {path}: "), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
