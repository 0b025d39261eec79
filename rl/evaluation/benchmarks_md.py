"""Append a run to its section of BENCHMARKS.md: the one writer the benchmark and experiment
scripts share."""

from __future__ import annotations

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
