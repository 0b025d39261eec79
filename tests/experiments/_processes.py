"""The live processes of this machine, read from /proc: for tests that must find what a run
started (a Ray head's session, an env runner to kill) and prove that nothing of it is left."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


def live_processes() -> Iterator[tuple[int, int, str]]:
    """``(pid, session id, command line)`` of every process that is not a zombie."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z":
            yield int(proc.name), int(fields[3]), cmdline
