"""Time the main job: ``python experiments/pg_sweep.py`` end to end, as a user runs it.

Targets (issue #4): the default sweep finishes within 10 minutes on 2 cores, ``--smoke`` within
a minute. Each run is a fresh process into a fresh temporary ``--output`` (so nothing is
resumed), on the simulator, with the machine's load average recorded before and after — on a
shared machine the wall time says as much about the neighbours as about meshtune.

The script prints a table and appends it, with the date and the command, to the ``## Main job``
section of BENCHMARKS.md (created if missing; other sections are left untouched). A run that
fails is reported as failed with its exit status and the tail of its output; the script then
exits 1.

Usage: ``python benchmarks/bench_main_job.py [--only smoke|default] [--no-write]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# benchmarks/ is a folder of scripts, not a package: its shared helper is imported from beside
# this file, whether the script runs as ``python benchmarks/...`` or is loaded by a test.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from rl.evaluation.benchmarks_md import append_to_section

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Main job"
#: What the section measures, written under its heading when it is created.
INTRO = ("Measured by `benchmarks/bench_main_job.py`: wall time of "
         "`python experiments/pg_sweep.py` (default: target 10 min on 2 cores) and of "
         "`--smoke` (target 1 min), each a fresh process into a fresh output directory. "
         "Newest run last.")
#: name -> (extra pg_sweep flags, target wall time in seconds)
RUNS: dict[str, tuple[list[str], float]] = {
    "smoke": (["--smoke"], 60.0),
    "default": ([], 600.0),
}


@dataclass(frozen=True)
class JobTiming:
    """One timed run of the main job."""

    name: str
    command: str
    wall_s: float
    target_s: float
    returncode: int
    load_before: float
    load_after: float
    output_tail: str

    @property
    def met(self) -> bool:
        """The run succeeded within its target."""
        return self.returncode == 0 and self.wall_s <= self.target_s


def time_run(name: str) -> JobTiming:
    """Run ``pg_sweep.py`` with the flags of ``name`` into a fresh directory and time it."""
    flags, target_s = RUNS[name]
    with tempfile.TemporaryDirectory(prefix="meshtune-bench-") as out:
        cmd = [sys.executable, "experiments/pg_sweep.py", *flags, "--output", out]
        load_before = os.getloadavg()[0]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        wall_s = time.monotonic() - t0
        load_after = os.getloadavg()[0]
    tail = (proc.stdout + proc.stderr)[-2000:]
    return JobTiming(name, " ".join(["python experiments/pg_sweep.py", *flags]), wall_s,
                     target_s, proc.returncode, load_before, load_after, tail)


def table(timings: list[JobTiming]) -> str:
    """The markdown table of ``timings``."""
    lines = ["| run | command | wall time | target | met | load average before → after |",
             "|---|---|---:|---:|---|---|"]
    for t in timings:
        status = "yes" if t.met else ("no" if t.returncode == 0 else f"FAILED (exit "
                                                                    f"{t.returncode})")
        lines.append(f"| {t.name} | `{t.command}` | {t.wall_s / 60:.1f} min ({t.wall_s:.0f} s) "
                     f"| {t.target_s / 60:.0f} min | {status} | {t.load_before:.2f} → "
                     f"{t.load_after:.2f} |")
    return "\n".join(lines)


def append_to_benchmarks(entry: str) -> None:
    """Add ``entry`` at the end of this benchmark's section of BENCHMARKS.md."""
    append_to_section(BENCHMARKS_MD, SECTION, INTRO, entry)


def main(argv: list[str] | None = None) -> int:
    """Time the runs; returns 0 if every run succeeded (met or not), else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RUNS), default=None,
                        help="time one run only (default: smoke, then default)")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    names = [args.only] if args.only else list(RUNS)
    timings = []
    for name in names:
        print(f"[bench_main_job] {name} ...", flush=True)
        timings.append(time_run(name))
        t = timings[-1]
        print(f"[bench_main_job] {name}: {t.wall_s:.0f} s, exit {t.returncode}", flush=True)
        if t.returncode != 0:
            print(t.output_tail, file=sys.stderr)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python benchmarks/bench_main_job.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    entry = f"### {stamp} — `{command}` ({os.cpu_count()} CPUs)\n\n{table(timings)}\n"
    print("\n" + entry)
    if not args.no_write:
        append_to_benchmarks(entry)
        print(f"appended to {BENCHMARKS_MD}")
    return 0 if all(t.returncode == 0 for t in timings) else 1


if __name__ == "__main__":
    sys.exit(main())
