"""Time the simulator: one RL step = one ``SimMesh.run_load`` of the notebook's load.

The step is the notebook's environment step: 20 users, 80 requests per user = 1 600 requests,
Istio's defaults, Locust's statistics reset after hatching (the default). The script

* measures the one-off cost of getting the Numba core ready, both a cold compile (a fresh,
  empty ``NUMBA_CACHE_DIR``) and loading it from Numba's on-disk cache, each in a subprocess;
* warms the core once, then times ``--steps`` steps (seeds 0..N-1) on one core (the process is
  pinned to one CPU), split into the jitted core and the Python report building;
* prints a table and appends it, with the date, the command and the machine's load, to the
  ``## Simulator speed`` section of BENCHMARKS.md (created if missing; other sections are left
  untouched).

Target: >= 500 steps/s (<= 2 ms per step).

Usage: ``python benchmarks/bench_sim.py [--steps 300] [--no-write] [--skip-compile]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/ is a folder of scripts, not a package: its shared helper is imported from beside
# this file, whether the script runs as ``python benchmarks/...`` or is loaded by a test.
from rl.evaluation.benchmarks_md import append_or_report

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Simulator speed"
#: What the section measures, written under its heading when it is created.
INTRO = ("Measured by `benchmarks/bench_sim.py`: how fast the `sim` backend runs one RL "
         "step (20 users, 1 600 requests) on one core. Target: >= 500 steps/s (<= 2 ms per "
         "step). Newest run last.")
TARGET_STEPS_PER_S = 500.0
USERS, REQUESTS = 20, 1600

_READY_SNIPPET = (
    "import time; t = time.perf_counter(); "
    "from envs.backends.sim import SimMesh; m = SimMesh(); "
    "print(time.perf_counter() - t, m.compile_s)"
)


def time_ready(cold: bool) -> float:
    """Seconds to import the simulator and get its core ready, in a fresh interpreter."""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as cache:
        if cold:
            env["NUMBA_CACHE_DIR"] = cache
        out = subprocess.run([sys.executable, "-c", _READY_SNIPPET], env=env, cwd=ROOT,
                             capture_output=True, text=True, check=True)
    return float(out.stdout.split()[0])


def pin_to_one_cpu() -> int | None:
    """Pin this process to one CPU (the last one it may use); returns it, or None if unsupported."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def time_steps(n_steps: int) -> dict[str, float]:
    """Per-step timings in ms: wall and CPU time of ``run_load``, and of its two parts."""
    from envs.backends.base import LoadSpec
    from envs.backends.sim import SimMesh

    mesh = SimMesh()
    load = LoadSpec(users=USERS, requests=REQUESTS)
    for seed in range(5):  # warm caches and branch predictors
        mesh.run_load(load, seed)
    wall, cpu, core_ms, events = [], [], [], []
    for seed in range(n_steps):
        t0, c0 = time.perf_counter(), time.process_time()
        report = mesh.run_load(load, seed)
        wall.append(1000 * (time.perf_counter() - t0))
        cpu.append(1000 * (time.process_time() - c0))
        events.append(report.extra["events"])
    for seed in range(n_steps):
        t0 = time.perf_counter()
        mesh._run(load, seed)  # the jitted core alone (no report)
        core_ms.append(1000 * (time.perf_counter() - t0))
    return {
        "wall_median_ms": statistics.median(wall), "wall_mean_ms": statistics.fmean(wall),
        "wall_min_ms": min(wall), "cpu_median_ms": statistics.median(cpu),
        "core_median_ms": statistics.median(core_ms),
        "report_median_ms": statistics.median(wall) - statistics.median(core_ms),
        "events": statistics.fmean(events),
    }


def render(results: dict[str, float], cold_s: float | None, cached_s: float | None,
           n_steps: int, cpu: int | None) -> str:
    """The markdown table of one benchmark run."""
    steps_per_s = 1000.0 / results["wall_median_ms"]
    gap = TARGET_STEPS_PER_S / steps_per_s
    verdict = ("meets the target" if steps_per_s >= TARGET_STEPS_PER_S
               else f"{gap:.2f}x short of the target")
    load1, load5, _ = os.getloadavg()
    lines = [
        f"### {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} — "
        f"`python benchmarks/bench_sim.py --steps {n_steps}`",
        "",
        f"One step = `SimMesh.run_load(LoadSpec(users={USERS}, requests={REQUESTS}), seed)`, "
        f"Istio defaults, {n_steps} steps, pinned to CPU {cpu}; machine load average "
        f"{load1:.1f} / {load5:.1f} (1 / 5 min) on {os.cpu_count()} CPUs shared with other jobs.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| wall time per step, median | {results['wall_median_ms']:.2f} ms |",
        f"| wall time per step, mean / min | {results['wall_mean_ms']:.2f} / "
        f"{results['wall_min_ms']:.2f} ms |",
        f"| CPU time per step, median | {results['cpu_median_ms']:.2f} ms |",
        f"| of which jitted core / report building | {results['core_median_ms']:.2f} / "
        f"{results['report_median_ms']:.2f} ms |",
        f"| events per step (incl. the hatch phase) | {results['events']:.0f} |",
        f"| **steps per second** (median wall) | **{steps_per_s:.0f}** "
        f"(target {TARGET_STEPS_PER_S:.0f}: {verdict}) |",
    ]
    if cold_s is not None:
        lines.append(f"| one-off: import + cold Numba compile | {cold_s:.1f} s |")
    if cached_s is not None:
        lines.append(f"| one-off: import + load from Numba's cache | {cached_s:.2f} s |")
    return "\n".join(lines) + "\n"


def append_to_benchmarks(entry: str) -> bool:
    """Add ``entry`` at the end of this benchmark's section of BENCHMARKS.md; False (and one
    line on stderr) if the file cannot be written."""
    return append_or_report(BENCHMARKS_MD, SECTION, INTRO, entry, "bench_sim")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0 (2 if BENCHMARKS.md cannot be written)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument("--skip-compile", action="store_true",
                        help="skip the (slow) cold-compile measurement")
    args = parser.parse_args(argv)
    cold = None if args.skip_compile else time_ready(cold=True)
    cached = time_ready(cold=False)
    cpu = pin_to_one_cpu()
    results = time_steps(args.steps)
    entry = render(results, cold, cached, args.steps, cpu)
    print(entry)
    if not args.no_write:
        if not append_to_benchmarks(entry):
            return 2
        print(f"appended to {BENCHMARKS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
