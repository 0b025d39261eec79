"""One REINFORCE trial without Tune, then its greedy policy through the held-out cases.

What a training choice is worth, measured the way the main job measures its best trial but
without its sweep: the catalogue, the group baseline (or the per-step ranks it replaced), the
learning rate, gamma, the entropy bonus (fixed, or kept at a target entropy), the iterations,
the seconds of load per training step. Prints the policy's mean summed and per-step score
over the 18 held-out cases of ``rl.evaluation.scenario_eval.held_out_plan`` beside Istio's
defaults and the gateway throttle and front-end ``http2MaxRequests`` 16 (the same seeds), with
what users got beside every score (good %, goodput, failure %, mean latency and p99, mean
[95 % CI] over cases: :func:`rl.evaluation.scenario_tables.methods_table`), its wins against
Istio's defaults, and its most frequent actions. ``--save DIR`` keeps the trained Algorithm as
an RLlib checkpoint, which ``experiments/evaluate.py --checkpoint DIR`` (every baseline, the
win rates, the ablation) and ``--steady --checkpoint DIR`` read.

    python scripts/train_variant.py --catalogue setpoint --episodes-per-scenario 4 --iterations 200

Same flags, same numbers (seeded; on the simulator). Used for BENCHMARKS.md (Closed-loop
evaluation: what the training choices are worth).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import rl  # noqa: F401  (keeps a private local Ray on 127.0.0.1; before Ray is imported)


@dataclass(frozen=True)
class Args:
    """The trial's settings (flags of the same names).

    ``entropy_target`` (nats of mean policy entropy per step, ``--entropy-target``): > 0 keeps
    the entropy near it with an automatic entropy coefficient that starts at ``entropy`` and
    whose log moves by ``entropy_target_lr`` per update and nat of gap
    (``ReinforceConfig.entropy_target``); 0 = off, the fixed ``entropy`` coefficient.

    ``action_critic`` (``--action-critic``): the policy term over every action with a learned
    ``Q(s, a)`` (``ReinforceConfig.action_critic``); with it, ``critic_replay`` (samples the
    critic refits; gamma 0 only), ``explore_mix`` (ε of the env runners' behaviour policy) and
    ``inert_zero`` (``Q`` exactly 0 for actions that change nothing; meant for ``reward_mode``
    ``vs_keep``) — the shared module's keys of the same names (:mod:`rl.shared_module`) —
    ``critic_scale`` (``ReinforceConfig.critic_scale_advantages``) and ``q_scale`` (the
    critic's output scale, the shared module's ``q_scale``).

    ``change_cost`` (score points, ``--change-cost``; ``vs_keep`` only): charged per step whose
    action changed the rules (MeshEnv's ``change_cost``).

    ``save`` (``--save DIR``): where to write the trained Algorithm's checkpoint ("" = none);
    the directory must be creatable, and is checked before training.
    """

    catalogue: str = "setpoint"
    episodes_per_scenario: int = 4
    iterations: int = 150
    lr: float = 1e-3
    late_weight: float = 1.0
    gamma: float = 0.8
    entropy: float = 0.01
    entropy_target: float = 0.0
    entropy_target_lr: float = 0.05
    num_epochs: int = 1
    act_groups: bool = False
    group_scale: bool = False
    factored: bool = False
    learned_baseline: bool = False
    action_critic: bool = False
    critic_replay: int = 0
    explore_mix: float = 0.0
    inert_zero: bool = False
    critic_scale: bool = False
    q_scale: float = 1.0
    raw_returns: bool = False
    scenarios: str = "training"
    reward_mode: str = "absolute"
    change_cost: float = 0.0
    step_s: float = 10.0
    seed: int = 7
    cases: int = 18
    save: str = ""


def parse_args(argv: list[str] | None = None) -> Args:
    """The command line: one flag per :class:`Args` field."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in Args().__dict__.items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true")
        else:
            p.add_argument(flag, type=type(default), default=default)
    args = Args(**vars(p.parse_args(argv)))
    if args.raw_returns and args.episodes_per_scenario != 1:
        p.error("--raw-returns uses no baseline: it needs --episodes-per-scenario 1 (a group "
                "of tries is a baseline)")
    if (args.critic_replay or args.explore_mix or args.inert_zero or args.critic_scale
            or args.q_scale != 1.0) and not args.action_critic:
        p.error("--critic-replay, --explore-mix, --inert-zero, --critic-scale and --q-scale are "
                "the action critic's: add --action-critic")
    from envs.reward import check_change_cost
    from rl.shared_module import check_q_scale

    for flag, check in (("--q-scale", lambda: check_q_scale(args.q_scale)),
                        ("--change-cost",
                         lambda: check_change_cost(args.change_cost, args.reward_mode))):
        try:
            check()
        except ValueError as e:
            p.error(f"{flag}: {e}")
    if args.inert_zero and args.reward_mode != "vs_keep":
        p.error("--inert-zero sets Q to 0 where an action changes nothing, which only the "
                "vs_keep reward pays: add --reward-mode vs_keep")
    if args.critic_replay and args.gamma != 0:
        p.error("--critic-replay needs --gamma 0 (one-step targets)")
    if args.save:
        from rl.evaluation.benchmarks_md import check_writable_dir

        try:
            check_writable_dir(Path(args.save))
        except OSError as e:
            p.error(f"--save {args.save}: cannot write there ({e.strerror or e})")
    return args


def train(args: Args) -> tuple[Any, dict[str, Any]]:
    """Train one trial of the main job (:func:`rl.sweep.build_param_space`: 2 env runners × 8
    envs, 16 episodes per iteration, its fault tolerance and timeouts) with this script's
    settings in place of the sweep's grid; returns the trained module and its env config.

    With ``raw_returns`` the returns-to-go weigh the log-probabilities as they are (no group,
    per-step or batch baseline, no standardising): with ``reward_mode`` ``vs_keep`` the reward is
    already measured against not acting, so an action that changes nothing gets no update at all.
    """
    from ray.rllib.core import DEFAULT_MODULE_ID

    from rl.learner import ENTROPY_ALPHA_KEY, ENTROPY_KEY
    from rl.policies import inert_acts, policy_spec
    from rl.sweep import POLICY, base_env_config, build_param_space, sweep_settings

    # The group learner's trial as the base (every setting of the critic's is a flag here), so
    # these flags give the numbers they gave before the main job's learner changed.
    settings = sweep_settings(learner="group", iterations=args.iterations,
                              episodes_per_scenario=args.episodes_per_scenario, seed=args.seed)
    env_config = {**base_env_config(settings), "catalogue": args.catalogue,
                  "late_weight": args.late_weight, "step_s": args.step_s,
                  "scenarios": args.scenarios, "reward_mode": args.reward_mode,
                  "change_cost": args.change_cost}
    spec, model_config = policy_spec(POLICY, env_config, act_groups=args.act_groups,
                                     factored=args.factored)
    config = (build_param_space(settings).copy(copy_frozen=False)
              .environment(env_config=env_config)
              .rl_module(rl_module_spec=spec,
                         model_config={**model_config,
                                       **({"explore_mix": args.explore_mix}
                                          if args.explore_mix else {}),
                                       **({"inert_acts": inert_acts(env_config)}
                                          if args.inert_zero else {}),
                                       **({"q_scale": args.q_scale}
                                          if args.q_scale != 1.0 else {})})
              .training(lr=args.lr, gamma=args.gamma,
                        rank_returns=args.episodes_per_scenario == 1 and not args.raw_returns,
                        normalize_returns=not args.raw_returns,
                        per_step_baseline=not args.raw_returns,
                        entropy_coeff=args.entropy, num_epochs=args.num_epochs,
                        entropy_target=args.entropy_target or None,
                        entropy_target_lr=args.entropy_target_lr,
                        group_scale=args.group_scale,
                        learned_baseline=args.learned_baseline,
                        action_critic=args.action_critic,
                        critic_replay=args.critic_replay,
                        critic_scale_advantages=args.critic_scale)
              .debugging(seed=args.seed))
    algo = config.build_algo()
    t0 = time.monotonic()
    try:
        for i in range(args.iterations):
            result = algo.train()
            if (i + 1) % 25 == 0 or i + 1 == args.iterations:
                er = result["env_runners"]
                learner = result.get("learners", {}).get(DEFAULT_MODULE_ID, {})
                alpha = learner.get(ENTROPY_ALPHA_KEY)
                print(f"[train] iteration {i + 1}: training eval score "
                      f"{er.get('eval_score_mean', float('nan')):.2f}, policy entropy "
                      f"{learner.get(ENTROPY_KEY, float('nan')):.2f} nats"
                      + ("" if alpha is None else f", entropy alpha {alpha:.3g}")
                      + f" ({time.monotonic() - t0:.0f} s)", flush=True)
        module = algo.get_module()
        if args.save:
            algo.save_to_path(str(Path(args.save).resolve()))
            print(f"[train] checkpoint: {args.save}", flush=True)
    finally:
        algo.stop()
    return module, env_config


def evaluate(module: Any, args: Args) -> dict[str, Any]:
    """The greedy policy, Istio's defaults, the gateway throttle and the front-end's
    ``http2MaxRequests`` 16 through the held-out cases at the env's default 10 s per step: mean
    summed and per-step scores, wins against Istio's defaults, the policy's actions per case,
    and ``table``, every method's score beside what users got (Markdown)."""
    from envs.actions import make_catalogue
    from envs.knobs import Knob, with_knob
    from rl.controllers import (
        GatewayThrottle,
        PolicyController,
        StaticController,
        istio_defaults,
    )
    from rl.evaluation.scenario_eval import evaluate_methods, held_out_plan
    from rl.evaluation.scenario_tables import methods_table

    catalogue = make_catalogue(args.catalogue)  # type: ignore[arg-type]
    plan = held_out_plan(args.cases, 20)
    # the one-action throttle of the setpoint catalogue, deployed from the start
    h2_16 = {"front-end": with_knob(None, Knob.HTTP2_MAX_REQUESTS, 16)}
    runs = evaluate_methods(plan, {"policy": lambda: PolicyController(module, catalogue),
                                   "istio_default": istio_defaults,
                                   "gateway_throttle": GatewayThrottle,
                                   "front_end_h2_16": lambda: StaticController(
                                       h2_16, "front_end_h2_16")},
                            10.0, 20, catalogue, log=lambda _: None)
    summed = {n: [r.summed_score for r in rs] for n, rs in runs.items()}
    taken = Counter(catalogue.describe(s.action) for r in runs["policy"] for s in r.steps
                    if s.action is not None)
    per_case = [{"case": scenario.name, "start": scenario.start,
                 **{n: round(rs[i].summed_score, 1) for n, rs in runs.items()},
                 "actions": " ".join(_short(catalogue, s.action) for s in runs["policy"][i].steps
                                     if s.action is not None)}
                for i, (scenario, _) in enumerate(plan)]
    return {"summed": {n: float(np.mean(v)) for n, v in summed.items()},
            "per_step": {n: float(np.mean([r.mean_score for r in rs])) for n, rs in runs.items()},
            "wins_vs_istio": int(np.sum(np.array(summed["policy"])
                                        > np.array(summed["istio_default"]))),
            "cases": len(plan), "distinct_actions": len(taken),
            "top_actions": taken.most_common(3), "per_case": per_case,
            "table": methods_table(runs)}


def _short(catalogue: Any, index: int) -> str:
    """A compact label of action ``index`` for the per-case action strings: ``R`` restore,
    ``.`` no-op, ``service:reset`` a service's reset, else ``service:knob=value`` (e.g.
    ``front-end:h2=16``)."""
    from envs.actions import ActionKind

    action = catalogue.action(index)
    if action.kind is ActionKind.RESET:
        return f"{action.service}:reset"
    if action.knob is None:
        return "R" if action.kind is ActionKind.RESTORE else "."
    knob = action.knob.value.split(".")[-1]
    short = {"http2MaxRequests": "h2", "http1MaxPendingRequests": "pend",
             "maxConnections": "conn", "maxRequestsPerConnection": "rpc",
             "connectTimeout": "cto", "maxRetries": "retries"}.get(knob, knob)
    return f"{action.service}:{short}={action.change_text().removeprefix('set ')}"


def main(argv: list[str] | None = None) -> int:
    """Train, evaluate, print one table."""
    args = parse_args(argv)
    import ray

    from rl.ray_setup import init_ray

    init_ray(num_cpus=2, log_to_driver=False, dashboard=False)
    try:
        module, _ = train(args)
        out = evaluate(module, args)
    finally:
        ray.shutdown()
    print(json.dumps({"args": args.__dict__, **out}, default=str))
    print(out["table"])
    print(f"wins against Istio's defaults: {out['wins_vs_istio']} / {out['cases']}; "
          f"{out['distinct_actions']} distinct actions; most frequent {out['top_actions']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
