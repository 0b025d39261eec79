"""Processes for the tests of the experiments: running a script of ``experiments/`` as its user
does, and the live processes of this machine (read from /proc) for tests that must find what a
run started (a Ray head's session, an env runner to kill) and prove that nothing of it is left."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def _script_env() -> dict[str, str]:
    """This checkout's code first on the path, no Ray usage stats."""
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}


def load_script(path: Path) -> ModuleType:
    """Import a script (e.g. ``scripts/headroom.py``) as a module named after its file, to test
    its functions in-process."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


def run_script(name: str, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python experiments/<name>.py <args>`` from the repository root (:func:`_script_env`)
    and return it with its output captured."""
    return subprocess.run([sys.executable, str(REPO / "experiments" / f"{name}.py"), *args],
                          cwd=REPO, env=_script_env(), capture_output=True, text=True,
                          timeout=timeout_s, check=False)


@contextmanager
def started_script(name: str, *args: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``python experiments/<name>.py <args>`` in its own session (a fault can be sent to
    its process group, as a terminal's Ctrl-C is), its output into ``log``; on leaving, its
    process group is SIGKILLed if it still runs and the log is closed."""
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(REPO / "experiments" / f"{name}.py"),
                                 *args], cwd=REPO, env=_script_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


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
