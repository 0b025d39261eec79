"""Processes for the tests of the experiments: running a script of ``experiments/`` as its user
does, and the live processes of this machine (read from /proc) for tests that must find what a
run started (a Ray head's session, an env runner to kill) and prove that nothing of it is left."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_script(name: str, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python experiments/<name>.py <args>`` from the repository root (this checkout's code
    first on the path, no Ray usage stats) and return it with its output captured."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "experiments" / f"{name}.py"), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s,
                          check=False)


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
