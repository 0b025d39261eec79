"""Timing the project's own commands end to end, as a user runs them (wall time against a
target, with the machine's load average before and after).

Used by ``benchmarks/bench_main_job.py`` for ``python experiments/pg_sweep.py`` and ``--smoke``.
On a shared machine the wall time says as much about the neighbours as about meshtune, hence the
load averages beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Issue 12's target for trained env steps per second on 2 cores.
STEPS_PER_S_TARGET = 1000.0


@dataclass(frozen=True)
class JobTiming:
    """One timed run of a command.

    Attributes:
        name: the run's label (e.g. ``smoke``).
        command: the command as a user types it.
        wall_s: wall time, s.
        target_s: the target wall time, s.
        returncode: the process's exit status.
        load_before: 1-min load average before the run.
        load_after: 1-min load average after the run.
        output_tail: the last 2 000 characters of its stdout + stderr.
        env_steps: env steps the sweep's trials sampled and trained on, summed over trials
            (from its ``results.json``; None if the run wrote none).
        sweep_s: wall time of the sweep alone (Tune, all trials), s (None likewise).
    """

    name: str
    command: str
    wall_s: float
    target_s: float
    returncode: int
    load_before: float
    load_after: float
    output_tail: str
    env_steps: int | None = None
    sweep_s: float | None = None

    @property
    def steps_per_s(self) -> float | None:
        """Trained env steps per second of the sweep's wall time, all trials together."""
        if not self.env_steps or not self.sweep_s:
            return None
        return self.env_steps / self.sweep_s

    @property
    def met(self) -> bool:
        """The run succeeded within its target."""
        return self.returncode == 0 and self.wall_s <= self.target_s


def time_script(name: str, script: str, flags: Sequence[str], target_s: float,
                cwd: Path) -> JobTiming:
    """Run ``python <script> <flags> --output <fresh temporary directory>`` in ``cwd`` (so
    nothing is resumed) and time it."""
    with tempfile.TemporaryDirectory(prefix="meshtune-bench-") as out:
        cmd = [sys.executable, script, *flags, "--output", out]
        load_before = os.getloadavg()[0]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False,
                              env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        wall_s = time.monotonic() - t0
        load_after = os.getloadavg()[0]
        env_steps, sweep_s = sweep_steps(Path(out) / "results.json")
    tail = (proc.stdout + proc.stderr)[-2000:]
    return JobTiming(name, " ".join(["python", script, *flags]), wall_s, target_s,
                     proc.returncode, load_before, load_after, tail, env_steps, sweep_s)


def sweep_steps(results_json: Path) -> tuple[int | None, float | None]:
    """``(env steps summed over trials, sweep wall time in s)`` from a ``pg_sweep.py``
    ``results.json``; ``(None, None)`` if the run wrote none (it failed before the sweep ended).

    Raises:
        ValueError: the file exists but lacks ``sweep_wall_s`` or a trial's ``env_steps``.
    """
    if not results_json.is_file():
        return None, None
    data = json.loads(results_json.read_text())
    try:
        return (sum(int(t["env_steps"]) for t in data["trials"]),
                float(data["sweep_wall_s"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{results_json}: no env steps or sweep wall time ({exc!r})") from exc


def time_scripts(script: str, runs: dict[str, tuple[list[str], float]],
                 names: Sequence[str], cwd: Path) -> list[JobTiming]:
    """Time ``script`` once per name in ``names`` (``runs``: name → (flags, target s)), printing
    progress; a failed run's output tail goes to stderr, never hidden."""
    timings = []
    for name in names:
        print(f"[bench] {name} ...", flush=True)
        flags, target_s = runs[name]
        timings.append(time_script(name, script, flags, target_s, cwd))
        t = timings[-1]
        print(f"[bench] {name}: {t.wall_s:.0f} s, exit {t.returncode}", flush=True)
        if t.returncode != 0:
            print(t.output_tail, file=sys.stderr)
    return timings


def timing_table(timings: Sequence[JobTiming]) -> str:
    """The markdown table of ``timings``: wall time, target, met, load averages, and the
    sweep's trained env steps per second of its wall time (all trials together)."""
    lines = ["| run | command | wall time | target | met | load average before → after "
             f"| trained env steps / sweep s (target {STEPS_PER_S_TARGET:,.0f}) |",
             "|---|---|---:|---:|---|---|---:|"]
    for t in timings:
        status = "yes" if t.met else ("no" if t.returncode == 0 else f"FAILED (exit "
                                                                    f"{t.returncode})")
        rate = ("—" if t.steps_per_s is None else
                f"{t.env_steps:,} / {t.sweep_s:.0f} s = **{t.steps_per_s:.0f}**/s")
        lines.append(f"| {t.name} | `{t.command}` | {t.wall_s / 60:.1f} min ({t.wall_s:.0f} s) "
                     f"| {t.target_s / 60:.0f} min | {status} | {t.load_before:.2f} → "
                     f"{t.load_after:.2f} | {rate} |")
    return "\n".join(lines)
