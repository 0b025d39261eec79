"""Append a run to its section of BENCHMARKS.md: the one writer the benchmark and experiment
scripts share; and the checks they make before a long run that its output files can be written
(:func:`check_writable_dir`, :func:`check_writable_file`); and the command line an entry
records (:func:`recorded_command`)."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path


def append_to_section(path: Path, section: str, intro: str, entry: str) -> None:
    """Add ``entry`` at the end of the ``section`` heading (e.g. ``"## Main job"``) of the
    markdown file ``path``; the section, with ``intro`` under its heading, is created at the
    end of the file if missing (and the file with a ``# Benchmarks`` title). Other sections
    are left untouched."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if section not in text:
        text = text.rstrip("\n") + f"\n\n{section}\n\n{intro}\n"
    start = text.index(section) + len(section)
    nxt = text.find("\n## ", start)
    end = len(text) if nxt < 0 else nxt + 1
    head = text[:end].rstrip("\n") + "\n\n" + entry
    path.write_text(head + ("\n" + text[end:] if end < len(text) else ""))


def append_or_report(path: Path, section: str, intro: str, entry: str, prog: str) -> bool:
    """:func:`append_to_section`, for a script that has already printed ``entry``: a file it
    cannot write is one line on stderr (``<prog>: could not append to <path>: <why>``) and
    False, not a traceback — nothing is lost, the tables are on the screen."""
    try:
        append_to_section(path, section, intro, entry)
    except OSError as exc:
        print(f"{prog}: could not append to {path}: {exc}", file=sys.stderr)
        return False
    return True


def check_writable_dir(path: Path) -> None:
    """Create the directory ``path`` (and its parents) and prove a file can be written in it,
    by writing and removing a probe file: for a script to refuse an output directory before a
    long run rather than fail at its end. A real write, unlike ``os.access``, which passes
    everything for root and does not see a path under a regular file.

    Raises:
        OSError: the directory cannot be created or written in (``strerror`` says why).
    """
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
    finally:
        probe.unlink(missing_ok=True)


def check_writable_file(path: Path) -> None:
    """Prove the file ``path`` can be written (e.g. a BENCHMARKS.md to append to, a results
    file), before a long run: an existing file is opened for append, which neither truncates
    nor changes it; a missing one needs its directory (created if missing) to take a probe file
    (:func:`check_writable_dir`).

    Raises:
        OSError: the file cannot be written (``strerror`` says why).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        check_writable_dir(path.parent)
    else:
        os.close(fd)


def writable_or_report(path: Path, flag: str, prog: str, *, directory: bool = False) -> bool:
    """For a script's output flag (e.g. ``--json FILE``, ``--output DIR``), checked before its
    run: :func:`check_writable_dir` (``directory``) or :func:`check_writable_file` of ``path``;
    one it cannot write is one line on stderr (``<prog>: error: <flag> <path>: cannot write
    there (<why>)``) and False, not a traceback."""
    try:
        (check_writable_dir if directory else check_writable_file)(path)
    except OSError as exc:
        print(f"{prog}: error: {flag} {path}: cannot write there ({exc.strerror or exc})",
              file=sys.stderr)
        return False
    return True


def recorded_command(script: str, argv: Sequence[str]) -> str:
    """The command line a BENCHMARKS.md entry records for ``script`` (its path from the
    repository root, e.g. ``benchmarks/bench_envoy_workers.py``) run with the flags ``argv``
    (the ``argv`` its ``main`` parsed, not ``sys.argv``), each shell-quoted."""
    return " ".join(["python", script, *(shlex.quote(a) for a in argv)])
