"""Append a run to its section of BENCHMARKS.md: the one writer the benchmark and experiment
scripts share."""

from __future__ import annotations

import sys
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
