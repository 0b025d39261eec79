"""Envoy's adaptive concurrency filter against Istio's defaults on the local mesh, through one
held-out scenario (a load step), step by step.

Both methods play the same held-out case (:func:`rl.evaluation.scenario_eval.held_out_plan`,
the same case seed: the same load seeds, common random numbers) with
:func:`rl.evaluation.closed_loop.run_scenario`, each on a fresh local replica: Istio's defaults
on plain sidecars, :class:`rl.controllers.AdaptiveConcurrencyController` (Istio's defaults plus
the filter on every HTTP service's inbound listener, its default parameters) on a replica started
with the filter. Prints the per-step evaluation scores (good % − 100), good %, p99 and failure %,
and appends the table, with the date and the command, to the ``## Adaptive concurrency on
local`` section of BENCHMARKS.md.

Usage: ``python scripts/adaptive_concurrency_local.py [--replica 13] [--episode-len 8]
[--step-s 4] [--case 0] [--no-write]`` (~4 min on 2 cores with the defaults).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from rl.controllers import AdaptiveConcurrencyController, StaticController, istio_defaults
from rl.evaluation.benchmarks_md import append_or_report, recorded_command
from rl.evaluation.closed_loop import ScenarioRun, run_scenario
from rl.evaluation.scenario_eval import fresh_local_replica, held_out_plan

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Adaptive concurrency on local"
INTRO = ("Measured by `scripts/adaptive_concurrency_local.py`: Envoy's adaptive concurrency "
         "filter (gradient controller on every HTTP service's inbound listener, "
         "`envs.backends.local.envoy_config.AdaptiveConcurrency`'s defaults) against Istio's "
         "defaults on real Envoy, through one held-out scenario, per step. Newest run last.")


def play(controller: StaticController, replica: int, plan_case: tuple, step_s: float,
         episode_len: int) -> ScenarioRun:
    """``controller`` through the case on a fresh replica started with what it needs."""
    scenario, seed = plan_case
    mesh = fresh_local_replica(controller, replica)
    try:
        return run_scenario(mesh, scenario, controller, seed, step_s, episode_len)
    finally:
        mesh.close()


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(runs: dict[str, ScenarioRun]) -> str:
    """Per step: offered rate, then per method score, good %, p99 and failure %."""
    names = list(runs)
    head = "| run | offered req/s | " + " | ".join(
        f"{n} score | {n} good % | {n} p99 ms | {n} failed %" for n in names) + " |"
    lines = [head, "|---:|---:|" + "---:|" * (4 * len(names))]
    first = runs[names[0]]
    for i, step in enumerate(first.steps):
        cells = []
        for n in names:
            s = runs[n].steps[i]
            cells += [f"{s.score:.1f}", _f(s.good_pct, ".1f"), _f(s.latency_p99_ms, ".0f"),
                      _f(s.failure_pct, ".1f")]
        lines.append(f"| {step.t}{' (reset)' if step.t == 0 else ''} | {step.rate_rps:.0f} | "
                     + " | ".join(cells) + " |")
    lines.append("| **sum 1..T** | | " + " | ".join(
        f"**{runs[n].summed_score:.1f}** | | |" for n in names) + " |")
    return "\n".join(lines)



def main(argv: list[str] | None = None) -> int:
    """Play both methods, print the table, append it to BENCHMARKS.md (with the command of
    ``argv``, the command line's flags when None)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replica", type=int, default=13)
    parser.add_argument("--episode-len", type=int, default=8)
    parser.add_argument("--step-s", type=float, default=4.0)
    parser.add_argument("--case", type=int, default=0,
                        help="held-out case index (0: the step_up_x4 family)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.case < 0:
            raise ValueError(f"--case must be >= 0, got {args.case}")
        case = held_out_plan(args.case + 1, args.episode_len)[args.case]
    except ValueError as exc:
        parser.error(str(exc))
    t0 = time.monotonic()
    methods: list[StaticController] = [istio_defaults(), AdaptiveConcurrencyController()]
    runs = {m.name: play(m, args.replica, case, args.step_s, args.episode_len)
            for m in methods}
    text = table(runs)
    print(case[0].describe())
    print(text)
    if not args.no_write:
        command = recorded_command("scripts/adaptive_concurrency_local.py", argv)
        entry = (f"### {dt.date.today().isoformat()}\n\n`{command.strip()}` — "
                 f"{case[0].describe()}; case seed {case[1]}; {args.step_s:g} s of offered "
                 f"load per run; each method on a fresh replica (2 Envoy workers); "
                 f"{time.monotonic() - t0:.0f} s.\n\n{text}\n")
        if not append_or_report(BENCHMARKS_MD, SECTION, INTRO, entry,
                                "adaptive_concurrency_local"):
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
