"""Time the main job: ``python experiments/pg_sweep.py`` end to end, as a user runs it.

Targets (issue #4): the default sweep finishes within 10 minutes on 2 cores, ``--smoke`` within
a minute. Each run is a fresh process into a fresh temporary ``--output`` (so nothing is
resumed), on the simulator, with the machine's load average recorded before and after — on a
shared machine the wall time says as much about the neighbours as about meshtune.

The script prints a table and appends it, with the date and the command, to the ``## Main job``
section of BENCHMARKS.md (created if missing; other sections are left untouched). A run that
fails is reported as failed with its exit status and the tail of its output; the script then
exits 1 (2 if BENCHMARKS.md cannot be written: one line on stderr, after the table).

Usage: ``python benchmarks/bench_main_job.py [--only smoke|default] [--no-write]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from rl.evaluation.benchmarks_md import append_or_report
from rl.evaluation.job_timing import time_scripts, timing_table

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


def main(argv: list[str] | None = None) -> int:
    """Time the runs; returns 0 if every run succeeded (met or not), else 1; 2 if
    BENCHMARKS.md cannot be written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RUNS), default=None,
                        help="time one run only (default: smoke, then default)")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    names = [args.only] if args.only else list(RUNS)
    timings = time_scripts("experiments/pg_sweep.py", RUNS, names, ROOT)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python benchmarks/bench_main_job.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    entry = f"### {stamp} — `{command}` ({os.cpu_count()} CPUs)\n\n{timing_table(timings)}\n"
    print("\n" + entry)
    if not args.no_write:
        if not append_or_report(BENCHMARKS_MD, SECTION, INTRO, entry, "bench_main_job"):
            return 2
        print(f"appended to {BENCHMARKS_MD}")
    return 0 if all(t.returncode == 0 for t in timings) else 1


if __name__ == "__main__":
    sys.exit(main())
