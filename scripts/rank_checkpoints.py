"""Does the sweep's validation pick what the held-out cases would? Each checkpoint's validation
score beside its held-out score.

For every checkpoint given (a ``pg_sweep.py`` trial's ``checkpoint_*`` directories, or
``scripts/train_variant.py --save`` directories): the validation score the main job ranks its
trials by (:func:`rl.sweep.validate_trials`: the mean per-step score of the greedy policy
through ``--validation-episodes`` training-distribution scenarios, seeds from 2 000 000) and the
mean summed score through the ``--cases`` held-out scenarios of
:func:`rl.evaluation.scenario_eval.held_out_plan` (seeds from 4 000 000), with good %, goodput,
failure %, mean latency and p99 beside it; then the rank correlation of the two over the
checkpoints (Spearman, ties averaged). On the simulator, seeded: the same checkpoints give the
same table.

    python scripts/rank_checkpoints.py results/pg_sweep/tune/pg_sweep/trial_*/checkpoint_*

Used for BENCHMARKS.md (Closed-loop evaluation: the action critic against every target).
A path that is not a checkpoint is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rl.evaluation.scenario_tables import METRICS  # imports rl first: Ray stays on 127.0.0.1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", type=Path, help="RLlib Algorithm checkpoints")
    p.add_argument("--validation-episodes", type=int, default=16,
                   help="validation scenarios (the main job's default, 16)")
    p.add_argument("--cases", type=int, default=18, help="held-out scenarios (default 18)")
    args = p.parse_args(argv)
    if args.validation_episodes < 1 or args.cases < 1:
        p.error("--validation-episodes and --cases must be >= 1")
    return args


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of ``a`` and ``b`` (ties get their mean rank:
    ``scipy.stats.rankdata``); NaN when either is constant or there are fewer than 2 values."""
    from scipy.stats import rankdata

    if len(a) < 2:
        return math.nan
    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def score_checkpoint(path: Path, validation_seeds: list[int], cases: int) -> dict[str, Any]:
    """One checkpoint's validation score (the sweep's own function) and its greedy policy's
    held-out results: mean summed score and, per metric, the mean over cases of each case's
    mean over its healthy steps."""
    from envs.actions import make_catalogue
    from envs.settings import EnvSettings
    from rl.controllers import PolicyController
    from rl.evaluation.checkpoint import load_policy
    from rl.evaluation.scenario_eval import evaluate_methods, held_out_plan
    from rl.sweep import validate_trials

    policy = load_policy(path)
    row: dict[str, Any] = {"checkpoint": str(path), "error": "", "index": 0,
                           "train_score": math.nan, "validation_score": math.nan,
                           "env_config": policy.env_config}
    validate_trials([row], validation_seeds)
    env = EnvSettings.from_config(policy.env_config)
    catalogue = make_catalogue(env.catalogue, env.services)  # type: ignore[arg-type]
    runs = evaluate_methods(held_out_plan(cases, env.episode_len),
                            {"policy": lambda: PolicyController(policy.module, catalogue)},
                            env.step_s, env.episode_len, catalogue, log=lambda _: None)["policy"]
    return {"checkpoint": str(path), "validation": row["validation_score"],
            "summed": float(np.mean([r.summed_score for r in runs])),
            **{key: float(np.nanmean([r.metric_mean(key) for r in runs]))
               for key, _, _ in METRICS}}


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per checkpoint, in the order given."""
    head = ("| checkpoint | validation score | held-out summed score | "
            + " | ".join(h for _, h, _ in METRICS) + " |")
    lines = [head, "|---|" + "---:|" * (2 + len(METRICS))]
    for r in rows:
        cells = [f"{r['validation']:.2f}", f"{r['summed']:.1f}"]
        cells += [format(r[key], spec) for key, _, spec in METRICS]
        lines.append(f"| `{r['checkpoint']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Score every checkpoint, print the table and the rank correlation."""
    args = parse_args(argv)
    from rl.evaluation.checkpoint import CheckpointError
    from rl.evaluation.seeds import VALIDATION_FIRST_SEED, held_out_seeds

    seeds = held_out_seeds(args.validation_episodes, VALIDATION_FIRST_SEED)
    try:
        rows = [score_checkpoint(path, seeds, args.cases) for path in args.checkpoints]
    except CheckpointError as exc:
        print(f"rank_checkpoints: error: {exc}", file=sys.stderr)
        return 2
    print(table(rows))
    rho = rank_correlation([r["validation"] for r in rows], [r["summed"] for r in rows])
    print(f"\nSpearman rank correlation of validation and held-out score over {len(rows)} "
          f"checkpoints: {rho:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
