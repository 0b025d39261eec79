"""Env steps per second through each layer, measured side by side in one run.

    python experiments/throughput.py                  # ~5 min on 2 busy cores
    python experiments/throughput.py --users 5        # a cheaper step (400 requests)
    python experiments/throughput.py --quick --no-append   # ~1 min, BENCHMARKS.md untouched

Layers, each on the same load (``--users`` concurrent users × 80 requests, the classic catalogue,
Istio's defaults for the bare simulator, the notebook's random initial configuration in the env):

1. **bare simulator** — ``SimMesh.run_load`` alone, one call per step;
2. **bare MeshEnv** — ``MeshEnv.step`` with seeded uniform random actions in a plain loop:
   the simulator plus ``apply`` (DestinationRules → simulator arrays), the health check (one
   request), scoring and the observation; resets are included in the time, as they are for
   RLlib, and not counted as steps;
3. **RLlib sampling, 1 and 2 env runners × k envs** — the REINFORCE agent's algorithm as the
   main job configures it (``rl.evaluation.throughput.rllib_config``: its callbacks, 16
   episodes per update) with remote env runners, each stepping ``k`` envs side by side (one
   batched forward pass per step; ``--envs-per-runner``, default 1 and 8) and calling
   ``EnvRunner.sample(num_timesteps=...)`` concurrently: MeshEnv plus RLlib's connectors, the
   policy's forward pass and the episode bookkeeping, minus the learner;
4. **RLlib training, 1 and 2 env runners × k envs** — whole ``Algorithm.train()`` iterations
   (sampling complete episodes + REINFORCE update + weight sync): env steps trained on per
   second of wall time (steps an env took past its quota of episodes are not counted).

The machine has 2 CPUs shared with other jobs; the load average is recorded with the numbers.
Each layer is timed in ``--rounds`` rounds (the bare layers interleaved) and the median round
is reported; the bare layers also report this process's CPU time per step, which other jobs on
the machine do not inflate.
Writes ``results.md`` and ``results.json`` into ``--output`` (default ``results/throughput``) and
appends the table to the ``## Throughput`` section of BENCHMARKS.md (``--no-append`` to skip; a
file it cannot write is one line on stderr and exit status 2, the results files kept). An
``--output`` it cannot write is one line on stderr and exit status 2 before anything runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from rl.evaluation.benchmarks_md import append_or_report, writable_or_report
from rl.evaluation.throughput import (
    markdown,
    median_round,
    time_mesh_env,
    time_rllib,
    time_simulator,
)

DEFAULT_OUTPUT = Path("results/throughput")
REPO = Path(__file__).resolve().parents[1]
#: The BENCHMARKS.md section the table is appended to, and its intro if it has to be created.
SECTION = "## Throughput"
INTRO = ("Env steps per second through each layer, measured side by side in one run by "
         "`experiments/throughput.py` (its docstring defines each layer). Newest run last.")


def envs_list(text: str) -> tuple[int, ...]:
    """``--envs-per-runner``: comma-separated positive ints, e.g. ``1,8``."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of ints: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"every value must be >= 1, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=15, help="concurrent users (default 15)")
    p.add_argument("--steps", type=int, default=None,
                   help="steps per round and layer (default 1000; quick 300)")
    p.add_argument("--train-iterations", type=int, default=None,
                   help="timed training iterations per round (default 3; quick 1)")
    p.add_argument("--envs-per-runner", type=envs_list, default=(1, 8),
                   help="envs per env runner to compare, comma-separated (default 1,8)")
    p.add_argument("--rounds", type=int, default=3,
                   help="timed rounds per layer, the median round is reported (default 3)")
    p.add_argument("--quick", action="store_true", help="small counts")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    p.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md",
                   help="the BENCHMARKS.md to append the table to")
    p.add_argument("--no-append", action="store_true", help="do not append to BENCHMARKS.md")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every layer, print and write the table."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    steps = args.steps or (300 if args.quick else 1000)
    iterations = args.train_iterations or (1 if args.quick else 3)
    if min(args.users, steps, iterations, args.rounds) < 1:
        print("throughput: error: --users, --steps, --train-iterations, --rounds must be >= 1",
              file=sys.stderr)
        return 2
    if not writable_or_report(args.output, "--output", "throughput", directory=True):
        return 2
    import ray
    import torch

    from rl.ray_setup import init_ray

    torch.set_num_threads(1)
    load = os.getloadavg()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    # bare layers interleaved, round by round, so a burst of other jobs hits both alike
    sims, envs = [], []
    for _ in range(args.rounds):
        sims.append(time_simulator(args.users, steps))
        envs.append(time_mesh_env(args.users, steps))
    layers = [median_round(sims), median_round(envs)]
    init_ray(log_to_driver=False, dashboard=False)
    try:
        for runners in (1, 2):
            layers += time_rllib(args.users, runners, steps, iterations, args.rounds,
                                 envs_per_runner=args.envs_per_runner)
    finally:
        ray.shutdown()
    command = "python experiments/throughput.py " + " ".join(shlex.quote(a) for a in argv)
    load_end = os.getloadavg()
    text = markdown(layers, command.strip(), stamp, args.users, load, load_end)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.md").write_text(text + "\n")
    (args.output / "results.json").write_text(json.dumps(
        {"date": stamp, "command": command.strip(), "users": args.users, "load_average": load,
         "load_average_end": load_end, "envs_per_runner": list(args.envs_per_runner),
         "layers": [{**asdict(x), "steps_per_s": x.steps_per_s} for x in layers]}, indent=1))
    print("\n" + text, flush=True)
    if not args.no_append:
        if not append_or_report(args.benchmarks, SECTION, INTRO, text + "\n", "throughput"):
            return 2
        print(f"appended to {args.benchmarks}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
