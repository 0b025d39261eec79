"""Does the sim-trained policy transfer? One greedy episode on the simulator and on the real mesh.

    python experiments/transfer.py                          # best trial of results/pg_sweep
    python experiments/transfer.py --checkpoint PATH --episode-len 10

Loads a REINFORCE checkpoint (default: the best trial of ``results/pg_sweep/results.json``)
with ``rl.evaluation.checkpoint.load_policy`` and runs ONE episode of its greedy policy
(``rl.evaluation.actors.module_actor`` / ``rl.evaluation.episode.run_episode``) from the same
held-out seed on

(a) the simulator (``backend="sim"``) and
(b) the local mesh (``backend="local"``, replica ``--replica``, default 5: real Envoy 1.40,
    Locust and Prometheus on 127.0.0.1; started if not up and stopped again on close).

Everything else is the checkpoint's training env config: same catalogue, reward, users range
(hence the same observation normalisation) and ``requests_per_user``. The initial
configuration and the load (users) are the env's seeded draw of ``reset(seed)``, so they
are the same on both backends as long as the first draw passes each backend's health check
(the script checks and says so). The default seed, 1 000 003, is the first of pg_sweep's
held-out test seeds (``held_out_seeds``: 1 000 000+) whose load draw is the smallest of the
training range (10 users × 80 requests = 800 requests), so a local step takes ~10 s.

Then, for ``--cases`` more held-out seeds (default 6, from 1 000 010), the policy's greedy
episode runs on the simulator and the configuration it starts from and the one it ends with are
both measured on each backend (``--measure-runs`` fresh runs each, the same load seeds on both):
is the change the policy makes on the simulator a change for the better on the real data plane
too? (The policy is not re-run on the local mesh for these: 20 steps of real load per case
would take ~4 min; the single episode above checks that it acts the same there.)

Prints the tables (backend, initial → final evaluation score, failure %, p99, the actions taken,
wall time; per case the two backends' gains) and appends them, with the command and date, to
the ``## Transfer`` section of ``BENCHMARKS.md`` (``--no-append`` to skip). The logic is
``rl.evaluation.transfer``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from rl.evaluation.checkpoint import DEFAULT_SWEEP_RESULTS, CheckpointError
from rl.evaluation.transfer import (
    CASES_FIRST_SEED,
    DEFAULT_CASES,
    DEFAULT_MEASURE_RUNS,
    DEFAULT_REPLICA,
    DEFAULT_SEED,
    TransferError,
    TransferSettings,
    run_transfer,
)

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Command-line flags (module doc)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="REINFORCE Algorithm checkpoint (default: best trial of "
                        "--sweep-results)")
    p.add_argument("--sweep-results", type=Path, default=DEFAULT_SWEEP_RESULTS)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help="reset seed of the episode on both backends (held-out)")
    p.add_argument("--episode-len", type=int, default=None,
                   help="steps (default: the checkpoint's env config, 20 if unset)")
    p.add_argument("--replica", type=int, default=DEFAULT_REPLICA,
                   help="local mesh replica (ports 21000 + 200·K ...)")
    p.add_argument("--measure-runs", type=int, default=DEFAULT_MEASURE_RUNS,
                   help="fresh load runs scoring the initial and the final configuration on "
                        f"each backend (default {DEFAULT_MEASURE_RUNS}; 0: the episode's own "
                        "single runs)")
    p.add_argument("--cases", type=int, default=DEFAULT_CASES,
                   help="held-out cases whose start and end configurations are also compared "
                        f"on both backends (default {DEFAULT_CASES}, seeds from "
                        f"{CASES_FIRST_SEED}; 0: none)")
    p.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md")
    p.add_argument("--no-append", action="store_true", help="do not append to BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.episode_len is not None and args.episode_len < 1:
        p.error(f"--episode-len must be >= 1, got {args.episode_len}")
    if args.replica < 0:
        p.error(f"--replica must be >= 0, got {args.replica}")
    if args.measure_runs < 0:
        p.error(f"--measure-runs must be >= 0, got {args.measure_runs}")
    if args.cases < 0:
        p.error(f"--cases must be >= 0, got {args.cases}")
    if args.cases and args.measure_runs < 1:
        p.error("--cases needs --measure-runs >= 1 (each configuration is measured afresh)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a user-fixable problem)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python experiments/transfer.py " + " ".join(shlex.quote(a) for a in argv)
    try:
        run_transfer(TransferSettings(**vars(parse_args(argv))), command.strip())
    except (TransferError, CheckpointError) as exc:
        print(f"transfer: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
