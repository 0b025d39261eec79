"""Fidelity of the simulator: the same configurations and loads through ``sim`` and ``local``.

What is compared, the reliabilities, the corrected ρ, the pick test, the crash Brier score,
the per-cause errors and their targets: :mod:`rl.evaluation.fidelity`.

Usage: ``python experiments/fidelity.py [--quick] [--classic] [--configs 12]
[--rates 60 120] [--step-s 10] [--loads 5:600 10:1000] [--repeats 2] [--sim-seeds 16]
[--sim-platform loopback] [--replica 5] [--seed 0] [--resamples 2000]
[--benchmarks BENCHMARKS.md] [--json FILE]``. By default the v1 load and score (open-loop
sessions at the nominal rate and twice it); ``--classic`` the notebook's closed loop
(``--loads USERS:REQUESTS``) and score; ``--quick`` a few-minute run (4 configurations, 3 s
loads, 4 simulator seeds) for CI. Appends a run under ``## Fidelity`` in the benchmarks file
(``--json``'s file is written either way); exits 0 when every target holds, 1 when one is
missed, 2 on bad flags, a ``--json`` file it cannot write (checked before anything is measured)
or a benchmarks file it cannot write (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from envs.backends.sim import profile
from envs.sockshop.slo import NOMINAL_RATE_RPS
from rl.evaluation.benchmarks_md import append_or_report, writable_or_report
from rl.evaluation.fidelity import (
    MAX_SEEDS_PER_SIDE,
    SCORE_FNS,
    SECTION,
    SECTION_INTRO,
    all_targets_met,
    closed_load,
    configurations,
    load_tables,
    markdown,
    open_load,
    parse_closed_load,
    run_comparison,
    run_header,
)

#: Defaults of the full run (≤ 30 min on 2 cores) and of ``--quick`` (a few minutes).
DEFAULTS: dict[str, Any] = {"configs": 12, "rates": [NOMINAL_RATE_RPS, 2 * NOMINAL_RATE_RPS],
                            "step_s": 10.0, "loads": [(5, 600), (10, 1000)], "repeats": 2,
                            "sim_seeds": 16, "resamples": 2000}
QUICK: dict[str, Any] = {**DEFAULTS, "configs": 4, "step_s": 3.0, "loads": [(5, 150)],
                         "sim_seeds": 4, "resamples": 500}


def _args(argv: list[str] | None) -> argparse.Namespace:
    """The flags, checked, with the defaults of the full run or of ``--quick`` filled in
    (exit 2 with one line of error on a bad flag)."""
    parser = argparse.ArgumentParser(prog="fidelity", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few-minute run for CI")
    parser.add_argument("--classic", action="store_true",
                        help="the notebook's closed-loop load and score instead of v1's")
    parser.add_argument("--configs", type=int, help="Istio's defaults + N-1 random (default 12)")
    parser.add_argument("--rates", type=float, nargs="+",
                        help=f"v1: open-loop rates, req/s (default {NOMINAL_RATE_RPS:g} and "
                             f"{2 * NOMINAL_RATE_RPS:g})")
    parser.add_argument("--step-s", type=float, help="v1: seconds of offered load per run "
                                                     "(default 10, the env's step)")
    parser.add_argument("--loads", nargs="+", type=parse_closed_load,
                        help="--classic: USERS:REQUESTS closed loads (default 5:600 10:1000)")
    parser.add_argument("--repeats", type=int, help="local runs per configuration and load, "
                                                    "even (default 2)")
    parser.add_argument("--sim-seeds", type=int, help="simulator runs per configuration and "
                                                      "load, even (default 16)")
    parser.add_argument("--sim-platform", default="loopback", choices=sorted(profile.PLATFORMS),
                        help="the simulator's platform (default: loopback, what the local mesh "
                             "is)")
    parser.add_argument("--replica", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, help="bootstrap resamples (default 2000)")
    parser.add_argument("--benchmarks", default="BENCHMARKS.md")
    parser.add_argument("--json", default=None, help="also write every run's figures here")
    args = parser.parse_args(argv)
    given = {key for key in DEFAULTS if getattr(args, key) is not None}
    if args.classic and given & {"rates", "step_s"}:
        parser.error("--rates and --step-s are the open load's; --classic takes --loads")
    if not args.classic and "loads" in given:
        parser.error("--loads is the closed load's (with --classic); the open load takes "
                     "--rates and --step-s")
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    _check(args, parser)
    return args


def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.configs < 3:
        parser.error("--configs must be at least 3 for a rank correlation")
    if args.repeats < 2 or args.repeats % 2 or args.sim_seeds % 2:
        parser.error("--repeats and --sim-seeds must be even and >= 2 (split halves)")
    if not args.repeats <= args.sim_seeds <= MAX_SEEDS_PER_SIDE:
        parser.error(f"need --repeats <= --sim-seeds <= {MAX_SEEDS_PER_SIDE}")
    if any(not r > 0 for r in args.rates) or not args.step_s > 0:
        parser.error("--rates and --step-s must be positive")
    if any(u <= 0 or n <= 0 for u, n in args.loads):
        parser.error("--loads need positive users and requests")
    if args.resamples < 100:
        parser.error("--resamples must be at least 100")
    if args.replica < 0:
        parser.error("--replica must be >= 0")


def _command(args: argparse.Namespace) -> str:
    parts = ["python experiments/fidelity.py"]
    if args.quick:
        parts.append("--quick")
    if args.classic:
        parts += ["--classic", "--loads", *(f"{u}:{n}" for u, n in args.loads)]
    else:
        parts += ["--rates", *(f"{r:g}" for r in args.rates), "--step-s", f"{args.step_s:g}"]
    parts += ["--configs", str(args.configs), "--repeats", str(args.repeats), "--sim-seeds",
              str(args.sim_seeds), "--sim-platform", args.sim_platform, "--seed", str(args.seed),
              "--resamples", str(args.resamples)]
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; 0 when every target holds, 1 when one is missed, 2 when the
    ``--json`` file (checked first) or the benchmarks file cannot be written."""
    args = _args(argv)
    if args.json and not writable_or_report(Path(args.json), "--json", "fidelity"):
        return 2
    from envs.backends.local import LocalMesh  # after the flags: a bad flag starts nothing

    loads = ([closed_load(u, n) for u, n in args.loads] if args.classic
             else [open_load(r, args.step_s) for r in args.rates])
    score = SCORE_FNS["classic" if args.classic else "slo"]
    platform = profile.platform_named(args.sim_platform)
    load_before, t0 = os.getloadavg(), time.time()
    local = LocalMesh(replica=args.replica, seed=args.seed)
    run_dir, workers = local.state.run_dir, local.envoy_workers
    try:
        run = run_comparison(local, configurations(args.configs, args.seed), loads,
                             args.repeats, args.sim_seeds, args.seed, platform, score,
                             envoy_workers=workers)
    finally:
        local.close()
    header = run_header(_command(args), time.time() - t0, platform, args.classic, workers,
                        load_before, os.getloadavg())
    tables = load_tables(run, args.seed, args.resamples)
    section = markdown(run, tables, header, args.seed, args.resamples)
    print(section)
    appended = append_or_report(Path(args.benchmarks), SECTION, SECTION_INTRO, section, "fidelity")
    if args.json:  # written whether or not the benchmarks file could be
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(
            {"command": _command(args), "local_run_dir": str(run_dir),
             "loads": [{"label": ld.label, **asdict(ld.spec)} for ld in run.loads],
             "runs": [asdict(r) for r in run.runs], "failures": run.failures}, indent=1))
    if not appended:
        return 2
    return 0 if all_targets_met(tables) else 1


if __name__ == "__main__":
    sys.exit(main())
