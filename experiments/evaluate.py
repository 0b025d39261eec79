"""Is RL worth it? The trained agent against what an operator would otherwise do, on held-out cases.

    python experiments/evaluate.py                       # default: ~6 min on 2 shared cores
    python experiments/evaluate.py --quick               # ~1 min, every step, tiny sizes
    python experiments/evaluate.py --checkpoint PATH     # another REINFORCE checkpoint

A *case* is what one training episode is: a random initial configuration (the notebook's draw, every
classic knob of every tunable service in 1..100) and a load, drawn by ``MeshEnv.reset(seed=s)``
with ``init="classic_random"``, ``load_draw="per_episode"``. The case seeds
(``rl.evaluation.cases.SCENARIOS``) are never used in training (``pg_sweep.py`` trains with env
seed ``--seed`` and reset seeds ``--seed + runner index``, ranks its trials on validation seeds
2 000 000+ and tests the best on 1 000 000+) — ``rl.evaluation.seeds.training_seeds`` lists
them and the test suite checks the sets are disjoint. Scenarios:

* ``in_range``: users 10..20 as in training;
* ``users_40``: 40 users (3 200 requests), outside the training range (the observation's load
  channels saturate at 1.0, since the env normalises by its configured maximum);
* ``carts_down``: users 10..20, ``ServiceDown("carts")`` from 3 s to 6 s of every run;
* ``catalogue_slow``: users 10..20, ``LatencySpike("catalogue", ×8)`` from 2 s to 8 s.

Default sizes: 16 ``in_range`` cases, 6 of each other scenario.

Methods, each leaving one final configuration per case:

* ``reinforce`` — the trained policy (greedy: the most likely action), one episode of
  ``episode_len`` steps from the case's initial configuration, in ``MeshEnv`` (faults via its
  ``faults`` env config key); ``reinforce_sampled`` — the same policy sampling its actions
  (seeded by the case), as it acted in training;
* ``ppo`` — RLlib's PPO trained here for as many env steps as the REINFORCE checkpoint saw
  (same env config, catalogue, seed; RLlib's default MLP with a value head, lr 3e-4, 400-step
  batches, 4 epochs of 100-step minibatches, entropy 0.01 — one untuned configuration, where
  REINFORCE got a sweep over lr and reward weight), run the same way (greedy);
* ``random_actions`` — uniform random catalogue actions for one episode (seeded);
* ``initial`` and ``istio_default`` (no DestinationRule);
* ``random_N`` / ``tpe_N`` — random search and Optuna TPE (:mod:`rl.baselines`) over the
  agent's knob space with N = 1 + episode_len load runs (the start configuration, then as many
  new configurations as the agent's steps) and N = 1 + 10 × episode_len;
* ``oracle`` — the best configuration a long search finds: a (1+1)-ES local search
  (``--oracle-evals`` runs) from the best of everything above, its top candidates and all the
  methods' finals re-run on ``--selection-seeds`` selection load seeds, best mean wins.

Everything runs on the simulator (``sim``), whatever backend the checkpoint was trained on.
Every final configuration is then measured on ``--fresh-seeds`` fresh load seeds (the same for
all methods of a case, never used by any search or selection), so no method wins by having
been selected on lucky noise. Per case and method: mean evaluation score
(``envs.reward.evaluation_score``), failure %, p99 (largest endpoint p99), and the share of
the initial → oracle gap closed (``rl.evaluation.stats.gap_closed``; undefined when the oracle
is not significantly better than the initial configuration). Tables report median [p25, p75] over
cases, and how often the REINFORCE policy beats each method.

Writes into ``--output`` (default ``results/evaluate``): ``results.json`` (every number, every
seed), ``results.md`` (the tables, the command and date), ``score_vs_evals.png`` (fresh score of
each method's incumbent against load runs used, median over in-range cases) and the PPO
checkpoint (``ppo_checkpoint/``; ``--ppo-checkpoint`` reuses one).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from envs.actions import make_catalogue
from rl.baselines import reachable_space
from rl.evaluation.cases import SCENARIOS
from rl.evaluation.checkpoint import DEFAULT_SWEEP_RESULTS, CheckpointError, load_policy
from rl.evaluation.heldout import (
    EvalSettings,
    EvaluationError,
    evaluate_scenarios,
    resolve_settings,
    scenarios_json,
)
from rl.evaluation.plots import plot_curves
from rl.evaluation.tables import scenario_section
from rl.ppo_baseline import train_ppo

DEFAULT_OUTPUT = Path("results/evaluate")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="REINFORCE Algorithm checkpoint (default: the best trial in "
                        f"{DEFAULT_SWEEP_RESULTS})")
    p.add_argument("--quick", action="store_true", help="tiny sizes, about a minute")
    p.add_argument("--cases", type=int, default=None,
                   help="cases per scenario (default: in_range 16, others 6; quick 1)")
    p.add_argument("--fresh-seeds", type=int, default=None,
                   help="fresh load seeds per final configuration (default 8; quick 3)")
    p.add_argument("--selection-seeds", type=int, default=None,
                   help="load seeds of the oracle's final selection (default 8; quick 2)")
    p.add_argument("--oracle-evals", type=int, default=None,
                   help="load runs of the oracle's local search (default 600; quick 40)")
    p.add_argument("--ppo-env-steps", type=int, default=None,
                   help="PPO training env steps (default: as many as the REINFORCE checkpoint "
                        "saw; quick 200)")
    p.add_argument("--ppo-checkpoint", type=Path, default=None,
                   help="reuse a PPO checkpoint instead of training one")
    p.add_argument("--seed", type=int, default=0, help="seed of PPO, searches, random actions")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                   help=f"output directory (default {DEFAULT_OUTPUT})")
    return p.parse_args(argv)


def run(settings: EvalSettings, argv: Sequence[str]) -> dict[str, Any]:
    """The whole evaluation; writes results.json, results.md and the plot, returns the summary."""
    import torch

    torch.set_num_threads(1)
    t_start = time.monotonic()
    settings.output.mkdir(parents=True, exist_ok=True)
    policy = load_policy(settings.checkpoint)
    if policy.env_config.get("backend", "sim") != "sim":
        print(f"[evaluate] the checkpoint was trained on backend "
              f"{policy.env_config['backend']!r}; evaluating on the simulator", flush=True)
    # every method (and PPO's training) runs on the simulator, without the training's faults
    base = {**{k: v for k, v in policy.env_config.items()
               if k not in ("backend_kwargs", "faults")}, "backend": "sim"}
    episode_len = int(base.get("episode_len", 20))
    space = reachable_space(base.get("catalogue", "classic"), base.get("services"),
                            int(base.get("init_upper", 100)), episode_len)
    print(f"[evaluate] REINFORCE checkpoint {policy.path} (trained {policy.env_steps_trained} "
          f"env steps), episode_len {episode_len}, search space {space.dim} knobs", flush=True)

    ppo_info: dict[str, Any]
    if settings.ppo_checkpoint is not None:
        ppo = load_policy(settings.ppo_checkpoint)
        ppo_module = ppo.module
        ppo_info = {"checkpoint": str(ppo.path), "env_steps": ppo.env_steps_trained,
                    "trained_here": False}
    else:
        steps = settings.ppo_env_steps or policy.env_steps_trained
        if not steps:
            raise EvaluationError("the checkpoint records no env steps: pass --ppo-env-steps")
        print(f"[evaluate] training PPO for {steps} env steps ...", flush=True)
        ppo_module, ppo_info = train_ppo(base, steps, settings.seed,
                                         settings.output / "ppo_checkpoint")
        ppo_info |= {"checkpoint": str(settings.output / "ppo_checkpoint"), "trained_here": True}
        print(f"[evaluate] PPO: {ppo_info['env_steps']} env steps in "
              f"{ppo_info['wall_s']:.0f} s", flush=True)

    catalogue = make_catalogue(base.get("catalogue", "classic"), base.get("services"))
    by_scenario = evaluate_scenarios(base, settings, policy.module, ppo_module, len(catalogue),
                                     space, episode_len)

    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python experiments/evaluate.py " + " ".join(shlex.quote(a) for a in argv)
    ppo_origin = ("trained in this run" if ppo_info.get("trained_here")
                  else f"checkpoint `{ppo_info.get('checkpoint')}`")
    md = [f"### {stamp} — `{command.strip()}`", "",
          f"REINFORCE checkpoint `{policy.path}` ({policy.env_steps_trained} env steps); PPO "
          f"{ppo_info.get('env_steps')} env steps ({ppo_origin}); "
          f"episode_len {episode_len}; search space: {space.dim} knobs "
          f"({', '.join(f'{k.value} 1..{space.high[k]}' for k in space.knobs)}); "
          f"{settings.fresh_seeds} fresh load seeds per final configuration; oracle = local "
          f"search of {settings.oracle_evals} runs + selection on {settings.selection_seeds} "
          f"seeds. Cells: median [p25, p75] over cases of the per-case mean over fresh seeds. "
          f"Evaluation score: higher is better (`envs.reward.evaluation_score`). Wall time "
          f"{time.monotonic() - t_start:.0f} s.", ""]
    for scenario in SCENARIOS:
        md += scenario_section(scenario, *by_scenario[scenario.name], catalogue.describe)
    plot_curves([(f"{sc.name}: {sc.description} (n={len(by_scenario[sc.name][1])})",
                  by_scenario[sc.name][1]) for sc in SCENARIOS],
                settings.output / "score_vs_evals.png")
    md += [f"Plot: `{settings.output / 'score_vs_evals.png'}`.", ""]
    text = "\n".join(md)
    (settings.output / "results.md").write_text(text)
    summary = {
        "command": command.strip(), "date": stamp, "checkpoint": str(policy.path),
        "reinforce_env_steps": policy.env_steps_trained, "ppo": ppo_info,
        "settings": {k: str(v) if isinstance(v, Path) else v
                     for k, v in asdict(settings).items()},
        "search_space": {k.value: space.high[k] for k in space.knobs},
        "wall_s": time.monotonic() - t_start,
        "scenarios": scenarios_json(by_scenario, settings.fresh_seeds),
    }
    (settings.output / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    print("\n" + text, flush=True)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a user-fixable problem)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run(resolve_settings(**vars(parse_args(argv))), argv)
    except (EvaluationError, CheckpointError) as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
