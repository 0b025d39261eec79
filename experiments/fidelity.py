"""Fidelity of the simulator: the same configurations and loads through ``sim`` and ``local``.

What is compared, the repeats, the noise ceiling and the targets: :mod:`rl.evaluation.fidelity`.

Usage: ``python experiments/fidelity.py [--configs 24] [--loads 5:600 10:1000] [--repeats 2]
[--sim-seeds 8] [--sim-platform loopback] [--replica 5] [--seed 0]
[--benchmarks BENCHMARKS.md] [--json FILE]``. Appends a run under ``## Fidelity`` in the
benchmarks file; exits 0 when every target holds, else 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from envs.backends.sim import profile
from rl.evaluation.fidelity import (
    CEILING_DRAWS,
    MAX_SEEDS_PER_SIDE,
    all_targets_met,
    append_section,
    configurations,
    markdown,
    parse_load,
    run_comparison,
)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; 0 when every target holds."""
    from envs.backends.local import LocalMesh

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=24,
                        help="configurations: Istio's defaults + N-1 random (default 24)")
    parser.add_argument("--loads", nargs="+", default=["5:600", "10:1000"], type=parse_load)
    parser.add_argument("--repeats", type=int, default=2,
                        help="local runs per configuration and load (default 2)")
    parser.add_argument("--sim-seeds", type=int, default=8,
                        help="simulator runs per configuration and load (default 8)")
    parser.add_argument("--sim-platform", default="loopback", choices=sorted(profile.PLATFORMS),
                        help="the simulator's platform (default: loopback, what the local mesh "
                             "is)")
    parser.add_argument("--replica", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--benchmarks", default="BENCHMARKS.md")
    parser.add_argument("--json", default=None, help="also write every run's figures here")
    args = parser.parse_args(argv)
    if args.configs < 3:
        parser.error("--configs must be at least 3 for a rank correlation")
    if not 1 <= args.repeats <= args.sim_seeds <= MAX_SEEDS_PER_SIDE:
        parser.error(f"need 1 <= --repeats <= --sim-seeds <= {MAX_SEEDS_PER_SIDE}")
    if CEILING_DRAWS * args.repeats > 100 - MAX_SEEDS_PER_SIDE:
        parser.error("--repeats too large for the seed layout")
    t0 = time.time()
    platform = profile.platform_named(args.sim_platform)
    local = LocalMesh(replica=args.replica, seed=args.seed)
    try:
        run = run_comparison(local, configurations(args.configs, args.seed), args.loads,
                             args.repeats, args.sim_seeds, args.seed, platform)
    finally:
        local.close()
    load_args = " ".join(f"{ld.users}:{ld.requests}" for ld in args.loads)
    command = (f"python experiments/fidelity.py --configs {args.configs} --loads {load_args} "
               f"--repeats {args.repeats} --sim-seeds {args.sim_seeds} --sim-platform "
               f"{platform.name} --seed {args.seed}")
    section = markdown(run.scores, run.pairs, args.loads, args.repeats, args.sim_seeds,
                       command, platform, time.time() - t0)
    if run.failures:
        section += ("\nRuns the local mesh could not measure (their configurations are left "
                    "out above):\n\n" + "".join(f"- {f}\n" for f in run.failures))
    print(section)
    append_section(Path(args.benchmarks), section)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"scores": [asdict(c) for c in run.scores],
                                               "pairs": [asdict(p) for p in run.pairs]},
                                              indent=1))
    return 0 if all_targets_met(run, args.loads) else 1


if __name__ == "__main__":
    sys.exit(main())
