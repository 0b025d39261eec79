"""Is RL worth it? The trained policy against what an operator would otherwise do, on held-out
scenarios of changing load and faults.

    python experiments/evaluate.py                       # default: 18 held-out scenarios
    python experiments/evaluate.py --quick               # 2 scenarios (a step, a fault)
    python experiments/evaluate.py --checkpoint PATH     # another checkpoint
    python experiments/evaluate.py --classic [...]       # the earlier classic-case evaluation
    python experiments/evaluate.py --steady [--quick]    # gap closed on steady loads

**Default: held-out scenarios.** ``--cases`` scenarios (default 18, ``--quick`` 2) of
:func:`envs.scenarios.held_out_cases` (families kept out of training: load steps ×3.5–×4.5, a
two-period diurnal curve, faults of services training never faults; starts cycling through
Istio's defaults, the notebook's random draw and the tuned configuration), each played by every
method with the same case seed (load seeds, random start: common random numbers) through
:func:`rl.evaluation.closed_loop.run_scenario` on the simulator, with ``MeshEnv``'s semantics and
observation (``episode_len`` and ``step_s`` of the checkpoint's env config; at least
:data:`envs.scenarios.MIN_EPISODE_LEN` steps). Methods (:mod:`rl.controllers`):

* ``policy`` — the trained policy (best trial of pg_sweep's results, or ``--checkpoint``),
  greedy, from the scenario's start;
* ``istio_default`` — no DestinationRule, deployed unchanged;
* ``tpe_201`` — the static configuration Optuna TPE found with 201 runs on the steady nominal
  load (``envs/data/tuned_static.yaml``, ``experiments/tune_static.py``), deployed unchanged;
* ``rule_based`` — the rule-based controller (tuned parameters), from the scenario's start;
* ``gateway_throttle`` — the front-end's pool cut to what the shop serves, deployed unchanged.

Tables (:mod:`rl.evaluation.scenario_tables`): per method the summed and per-step score beside
good %, goodput, failure %, mean latency and p99, each with a 95 % CI over cases; the policy's
win rate against each method; the steady-state check (the policy against the best static
method on the fault-free constant-rate steps). Writes into ``--output`` (default
``results/evaluate``) ``results.json`` (every step of every run), ``results.md`` and
``fault_case.png`` (the per-step score of every method through the first fault scenario).

**``--steady``**: issue 12's "steady load, random start" and "outside training" targets under
the v1 objective (:mod:`rl.evaluation.steady_gap`): ``--cases`` (default 16, quick 2) steady
open loads at a rate of training's steady family (0.5–1.75 × nominal) and ``--out-cases``
(default 8, quick 1) at 4 × nominal (above training's highest rate, 3 ×), each from the
notebook's random start (case seeds 5 000 000+ / 5 100 000+). Per case: the start, what the
greedy policy leaves after one episode, Optuna TPE with as many load runs (1 + episode_len),
Istio's defaults, the gateway throttle and an oracle (TPE with ``--oracle-evals`` runs, default
201, quick 30, and the best on the fresh seeds of its top runs and every method's
configuration), all scored on the same ``--fresh-seeds`` fresh load seeds (default 10, quick 3);
the share of the start → oracle gap each closed (median over cases, bootstrap 95 % CI) beside
score, good %, goodput, failure %, mean latency and p99. Writes ``results.md`` and
``results.json`` into ``--output``.

**``--classic``**: the earlier evaluation on the notebook's cases (random start, closed-loop
users, PPO, searches, oracle), kept for reproducing it; its options are ``--fresh-seeds``,
``--selection-seeds``, ``--oracle-evals``, ``--ppo-env-steps``, ``--ppo-checkpoint`` and
``--cases`` (per scenario). It evaluates under the checkpoint's env config with the classic
load and objective (:func:`envs.settings.classic_env_config`). In detail:

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
from envs.scenarios import MIN_EPISODE_LEN
from envs.settings import DEFAULT_ENV_CONFIG, classic_env_config
from rl.baselines import reachable_space
from rl.controllers import (
    TUNED_RULE_PARAMS,
    tuned_static,
)
from rl.evaluation.cases import SCENARIOS
from rl.evaluation.checkpoint import (
    DEFAULT_SWEEP_RESULTS,
    CheckpointError,
    PolicyCheckpoint,
    best_checkpoint,
    load_policy,
)
from rl.evaluation.heldout import (
    EvalSettings,
    EvaluationError,
    evaluate_scenarios,
    resolve_settings,
    scenarios_json,
)
from rl.evaluation.plots import plot_curves
from rl.evaluation.scenario_eval import SCENARIO_SEED, compare_held_out, held_out_plan
from rl.evaluation.tables import scenario_section
from rl.ppo_baseline import train_ppo

DEFAULT_OUTPUT = Path("results/evaluate")
#: Held-out scenarios of the default evaluation.
DEFAULT_CASES = 18


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="policy Algorithm checkpoint (default: the best trial in "
                        f"{DEFAULT_SWEEP_RESULTS})")
    p.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    p.add_argument("--classic", action="store_true",
                   help="the earlier evaluation on the notebook's classic cases")
    p.add_argument("--steady", action="store_true",
                   help="gap closed on steady loads from the notebook's random start")
    p.add_argument("--cases", type=int, default=None,
                   help="held-out scenarios (default 18; quick 2); --classic: cases per "
                        "scenario (default: in_range 16, others 6; quick 1); --steady: "
                        "in-range cases (default 16; quick 2)")
    p.add_argument("--out-cases", type=int, default=None,
                   help="--steady: cases at 4x the nominal rate (default 8; quick 1)")
    p.add_argument("--scenario-seed", type=int, default=SCENARIO_SEED,
                   help=f"seed of the held-out scenarios (default {SCENARIO_SEED})")
    p.add_argument("--fresh-seeds", type=int, default=None,
                   help="--classic: fresh load seeds per final configuration (default 8; quick 3)"
                        "; --steady: default 10, quick 3")
    p.add_argument("--selection-seeds", type=int, default=None,
                   help="--classic: load seeds of the oracle's selection (default 8; quick 2)")
    p.add_argument("--oracle-evals", type=int, default=None,
                   help="--classic: load runs of the oracle's local search (default 600; "
                        "quick 40); --steady: the oracle's TPE runs (default 201; quick 30)")
    p.add_argument("--ppo-env-steps", type=int, default=None,
                   help="--classic: PPO training env steps (default: as many as the checkpoint "
                        "saw; quick 200)")
    p.add_argument("--ppo-checkpoint", type=Path, default=None,
                   help="--classic: reuse a PPO checkpoint instead of training one")
    p.add_argument("--seed", type=int, default=0,
                   help="--classic: seed of PPO, searches, random actions")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                   help=f"output directory (default {DEFAULT_OUTPUT})")
    return p.parse_args(argv)


def _policy_and_output(args: argparse.Namespace) -> tuple[Path, PolicyCheckpoint]:
    """``(output directory, policy)`` of the held-out and ``--steady`` modes:
    ``--checkpoint`` or the best trial of pg_sweep's results, the output directory created, the
    policy loaded; says so when the policy was trained on another backend than the simulator
    these modes evaluate on."""
    checkpoint = (args.checkpoint or best_checkpoint()).resolve()
    output = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    policy = load_policy(checkpoint)
    backend = policy.env_config.get("backend", "sim")
    if backend != "sim":
        print(f"[evaluate] the checkpoint was trained on backend {backend!r}; "
              "evaluating on the simulator", flush=True)
    return output, policy


def run_held_out(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """The default evaluation (module docstring); writes results.json, results.md and the
    fault-case plot, returns the summary."""
    import torch

    torch.set_num_threads(1)
    classic_only = [f"--{n.replace('_', '-')}" for n in ("fresh_seeds", "selection_seeds",
                                                         "oracle_evals", "ppo_env_steps",
                                                         "ppo_checkpoint")
                    if getattr(args, n) is not None]
    if classic_only:
        raise EvaluationError(
            f"{', '.join(classic_only)} do not apply to the held-out evaluation (each case is "
            "one episode on its own seed): --fresh-seeds and --oracle-evals are for --steady "
            "or --classic, the others for --classic")
    n_cases = args.cases if args.cases is not None else (2 if args.quick else DEFAULT_CASES)
    if n_cases < 1:
        raise EvaluationError("--cases must be >= 1")
    t_start = time.monotonic()
    output, policy = _policy_and_output(args)
    env_config = policy.env_config
    if env_config.get("load", "open") != "open":
        print("[evaluate] the checkpoint was trained on the classic closed load; evaluating on "
              "the open-load held-out scenarios", flush=True)
    trained = {**DEFAULT_ENV_CONFIG, **env_config}  # what the policy saw (absent: defaults)
    episode_len = max(int(trained["episode_len"]), MIN_EPISODE_LEN)
    step_s = float(trained["step_s"])
    try:
        catalogue = make_catalogue(trained["catalogue"], trained["services"])
        tuned_static()  # the TPE-201 configuration must be readable before anything runs
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None
    if args.quick and args.cases is None:  # a load step and a fault: both kinds, tiny
        plan = [held_out_plan(4, episode_len, args.scenario_seed)[i] for i in (0, 3)]
    else:
        plan = held_out_plan(n_cases, episode_len, args.scenario_seed)
    print(f"[evaluate] checkpoint {policy.path} ({policy.env_steps_trained} env steps), "
          f"{n_cases} held-out scenarios of {episode_len} steps x {step_s:g} s", flush=True)
    _, md_tables, numbers = compare_held_out(policy.module, catalogue, plan, step_s,
                                             episode_len, output,
                                             log=lambda line: print(line, flush=True))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python experiments/evaluate.py " + " ".join(shlex.quote(a) for a in argv)
    md = [f"### {stamp} — `{command.strip()}`", "",
          f"Policy checkpoint `{policy.path}` ({policy.env_steps_trained} env steps); "
          f"{n_cases} held-out scenarios (`held_out_cases({args.scenario_seed}, {n_cases}, "
          f"{episode_len})`, case seeds {plan[0][1]}..{plan[-1][1]}), {episode_len} steps of "
          f"{step_s:g} s each, on the simulator; every method with the same case seeds. "
          f"Rule-based parameters: {TUNED_RULE_PARAMS}. Wall time "
          f"{time.monotonic() - t_start:.0f} s.", "", *md_tables, ""]
    text = "\n".join(md)
    (output / "results.md").write_text(text)
    summary = {"command": command.strip(), "date": stamp, "checkpoint": str(policy.path),
               "env_steps_trained": policy.env_steps_trained, "episode_len": episode_len,
               "step_s": step_s, "scenario_seed": args.scenario_seed,
               "rule_params": asdict(TUNED_RULE_PARAMS),
               "wall_s": time.monotonic() - t_start, **numbers}
    (output / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    print("\n" + text, flush=True)
    return summary


def run_steady(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """The ``--steady`` evaluation (module docstring); writes results.md and results.json,
    returns the summary."""
    import torch

    from rl.evaluation import steady_gap

    torch.set_num_threads(1)
    not_here = [f"--{n.replace('_', '-')}" for n in ("selection_seeds", "ppo_env_steps",
                                                     "ppo_checkpoint")
                if getattr(args, n) is not None]
    if not_here:
        raise EvaluationError(f"{', '.join(not_here)} only apply with --classic")
    quick = args.quick
    n_in = args.cases if args.cases is not None else (
        2 if quick else steady_gap.DEFAULT_CASES[steady_gap.IN_RANGE])
    n_out = args.out_cases if args.out_cases is not None else (
        1 if quick else steady_gap.DEFAULT_CASES[steady_gap.OUT_OF_RANGE])
    fresh = args.fresh_seeds if args.fresh_seeds is not None else (
        3 if quick else steady_gap.DEFAULT_FRESH_SEEDS)
    oracle = args.oracle_evals if args.oracle_evals is not None else (
        30 if quick else steady_gap.DEFAULT_ORACLE_RUNS)
    if n_in < 0 or n_out < 0 or n_in + n_out < 1:
        raise EvaluationError("--cases and --out-cases must be >= 0, and not both 0")
    if fresh < 1 or oracle < 1:
        raise EvaluationError("--fresh-seeds and --oracle-evals must be >= 1")
    t_start = time.monotonic()
    output, policy = _policy_and_output(args)
    trained = {**DEFAULT_ENV_CONFIG, **policy.env_config}
    episode_len = max(int(trained["episode_len"]), MIN_EPISODE_LEN)
    step_s = float(trained["step_s"])
    try:
        catalogue = make_catalogue(trained["catalogue"], trained["services"])
        sizes = {steady_gap.IN_RANGE: n_in, steady_gap.OUT_OF_RANGE: n_out}
        print(f"[evaluate] checkpoint {policy.path} ({policy.env_steps_trained} env steps); "
              f"steady cases: {n_in} in range, {n_out} at {steady_gap.OUT_OF_RANGE_FACTOR:g} x "
              f"nominal; {episode_len} steps x {step_s:g} s; {fresh} fresh seeds; oracle TPE "
              f"{oracle} runs", flush=True)
        result = steady_gap.evaluate_steady(
            policy.module, catalogue, {f: n for f, n in sizes.items() if n > 0}, episode_len,
            step_s, fresh, oracle, int(trained["init_upper"]),
            log=lambda line: print(line, flush=True))
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python experiments/evaluate.py " + " ".join(shlex.quote(a) for a in argv)
    md = [f"### {stamp} — `{command.strip()}`", "",
          f"Steady load, random start: the gap to the best static configuration closed "
          f"(`rl.evaluation.steady_gap`). Policy checkpoint `{policy.path}` "
          f"({policy.env_steps_trained} env steps), on the simulator. Wall time "
          f"{time.monotonic() - t_start:.0f} s.", "", *steady_gap.report_markdown(result)]
    text = "\n".join(md)
    (output / "results.md").write_text(text)
    summary = {"command": command.strip(), "date": stamp, "checkpoint": str(policy.path),
               "env_steps_trained": policy.env_steps_trained,
               **steady_gap.results_json(result), "wall_s": time.monotonic() - t_start}
    (output / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    print("\n" + text, flush=True)
    return summary


def run_classic(settings: EvalSettings, argv: Sequence[str]) -> dict[str, Any]:
    """The ``--classic`` evaluation; writes results.json, results.md and the plot, returns the
    summary."""
    import torch

    torch.set_num_threads(1)
    t_start = time.monotonic()
    settings.output.mkdir(parents=True, exist_ok=True)
    policy = load_policy(settings.checkpoint)
    if policy.env_config.get("backend", "sim") != "sim":
        print(f"[evaluate] the checkpoint was trained on backend "
              f"{policy.env_config['backend']!r}; evaluating on the simulator", flush=True)
    catalogue_name = {**DEFAULT_ENV_CONFIG, **policy.env_config}["catalogue"]
    if catalogue_name not in ("classic", "extended"):
        raise EvaluationError(f"--classic evaluates policies of the notebook's setup (catalogue "
                              f"'classic' or 'extended'); this checkpoint acts on the "
                              f"{catalogue_name!r} catalogue: evaluate it without --classic")
    # every method (and PPO's training) runs on the simulator, without the training's faults
    base = {**{k: v for k, v in policy.env_config.items()
               if k not in ("backend_kwargs", "faults", "scenarios", "step_s", "late_weight")},
            **classic_env_config(catalogue=catalogue_name), "backend": "sim"}
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
        args = parse_args(argv)
        if args.classic and args.steady:
            raise EvaluationError("--classic and --steady are different evaluations: pick one")
        if args.out_cases is not None and not args.steady:
            raise EvaluationError("--out-cases only applies with --steady")
        if args.steady:
            run_steady(args, argv)
        elif args.classic:
            classic = {k: v for k, v in vars(args).items()
                       if k not in ("classic", "scenario_seed", "steady", "out_cases")}
            run_classic(resolve_settings(**classic), argv)
        else:
            run_held_out(args, argv)
    except (EvaluationError, CheckpointError) as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
