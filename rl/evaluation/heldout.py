"""Is RL worth it? Every method on the held-out cases: the trained policies, PPO, random
actions, fixed configurations, random search / TPE and the oracle (``experiments/evaluate.py``).

Per case (:func:`evaluate_case`) each method leaves one final configuration, which is then
measured on the case's fresh load seeds (the same for every method, never used by a search or
a selection); the oracle is a long local search from the best of everything, its top
candidates and every method's final re-run on the selection seeds, best mean wins.
:func:`evaluate_scenarios` runs all cases of all scenarios.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from envs.actions import MeshConfig, istio_default_config
from rl.baselines import SearchSpace, SearchTrace, local_search, random_search, tpe_search
from rl.evaluation.actors import Actor, module_actor, uniform_random_actor
from rl.evaluation.cases import (
    SCENARIOS,
    Case,
    CaseRunner,
    case_seeds,
    config_key,
    make_case,
)
from rl.evaluation.checkpoint import best_checkpoint
from rl.evaluation.episode import run_episode
from rl.evaluation.seeds import FRESH_SEED_BASE, SEED_STRIDE, load_seeds
from rl.evaluation.stats import gap_closed

#: A method's ``n`` evaluations at the 10× budget: 1 + BUDGET_MULTIPLIER × episode_len.
BUDGET_MULTIPLIER = 10
#: Default cases per scenario.
DEFAULT_CASES = {"in_range": 16, "users_40": 6, "carts_down": 6, "catalogue_slow": 6}


class EvaluationError(RuntimeError):
    """A problem the user can fix (bad size, missing env steps); printed without a traceback."""


@dataclass(frozen=True)
class EvalSettings:
    """Sizes of one evaluation run (``quick`` shrinks them)."""

    checkpoint: Path
    cases_per_scenario: dict[str, int]
    fresh_seeds: int
    selection_seeds: int
    oracle_evals: int
    oracle_top_k: int
    ppo_env_steps: int | None
    ppo_checkpoint: Path | None
    seed: int
    output: Path
    quick: bool


def resolve_settings(*, output: Path, checkpoint: Path | None = None, quick: bool = False,
                     cases: int | None = None, fresh_seeds: int | None = None,
                     selection_seeds: int | None = None, oracle_evals: int | None = None,
                     ppo_env_steps: int | None = None, ppo_checkpoint: Path | None = None,
                     seed: int = 0) -> EvalSettings:
    """The settings of a run: ``None`` sizes take the full (or ``quick``) defaults, no
    ``checkpoint`` the best trial of pg_sweep's results.

    Raises:
        EvaluationError: a size out of range.
        rl.evaluation.checkpoint.CheckpointError: no checkpoint given and none recorded.
    """
    def pick(value: int | None, full: int, tiny: int) -> int:
        return value if value is not None else (tiny if quick else full)

    if cases is not None:
        per_scenario = dict.fromkeys((s.name for s in SCENARIOS), cases)
    elif quick:
        per_scenario = dict.fromkeys((s.name for s in SCENARIOS), 1)
    else:
        per_scenario = dict(DEFAULT_CASES)
    settings = EvalSettings(
        checkpoint=(checkpoint or best_checkpoint()).resolve(),
        cases_per_scenario=per_scenario,
        fresh_seeds=pick(fresh_seeds, 8, 3),
        selection_seeds=pick(selection_seeds, 8, 2),
        oracle_evals=pick(oracle_evals, 600, 40),
        oracle_top_k=4 if quick else 8,
        ppo_env_steps=ppo_env_steps if ppo_env_steps is not None else (200 if quick else None),
        ppo_checkpoint=ppo_checkpoint.resolve() if ppo_checkpoint else None,
        seed=seed,
        output=output.resolve(),
        quick=quick,
    )
    for name in ("fresh_seeds", "selection_seeds", "oracle_evals"):
        if not 1 <= getattr(settings, name) <= SEED_STRIDE:
            raise EvaluationError(f"--{name.replace('_', '-')} must be in 1..{SEED_STRIDE}")
    if min(per_scenario.values()) < 1:
        raise EvaluationError("--cases must be >= 1")
    if settings.fresh_seeds < 2:
        raise EvaluationError("--fresh-seeds must be >= 2 (the gap test needs a spread)")
    if settings.ppo_env_steps is not None and settings.ppo_env_steps < 1:
        raise EvaluationError("--ppo-env-steps must be >= 1")
    return settings


@dataclass
class MethodResult:
    """One method on one case: its final configuration's fresh scores and its trajectory."""

    score: float
    failure_pct: float | None
    p99_ms: float | None
    gap_closed: float | None = None
    goodput_rps: float | None = None
    latency_mean_ms: float | None = None
    load_runs: int = 0
    healthy_end: bool = True
    failed_runs: int = 0
    actions: list[int] = field(default_factory=list)
    curve: list[tuple[int, float]] = field(default_factory=list)


def _checkpoints(n_max: int) -> list[int]:
    marks = [1, 2, 3, 5, 8, 11, 15, 21, 31, 51, 81, 121, 161, 201, 301, 501]
    return sorted({m for m in marks if m <= n_max} | {n_max})


def _search_curve(runner: CaseRunner, trace: SearchTrace) -> list[tuple[int, float]]:
    return [(n, runner.fresh_scores(trace.configs[trace.incumbent(n)]).score)
            for n in _checkpoints(len(trace.scores))]


def _episode_curve(runner: CaseRunner, configs: list[MeshConfig]) -> list[tuple[int, float]]:
    # after k steps the policy has used k + 1 load runs (the reset's run measures the start)
    return [(n, runner.fresh_scores(configs[n - 1]).score) for n in _checkpoints(len(configs))]


def evaluate_case(case: Case, settings: EvalSettings, actors: dict[str, Callable[[], Actor]],
                  space: SearchSpace, episode_len: int) -> dict[str, MethodResult]:
    """Every method on one case (module docstring); returns results by method name."""
    from envs.mesh_env import MeshEnv

    runner = CaseRunner(case, settings.fresh_seeds, settings.selection_seeds)
    finals: dict[str, MeshConfig] = {"initial": case.initial,
                                     "istio_default": istio_default_config()}
    curves: dict[str, list[tuple[int, float]]] = {}
    runs: dict[str, int] = {"initial": 0, "istio_default": 0}
    healthy: dict[str, bool] = {}
    actions: dict[str, list[int]] = {}
    for name, make_actor in actors.items():
        env = MeshEnv(case.env_config)
        try:
            outcome, trace = run_episode(env, make_actor(), case.seed)
        finally:
            env.close()
        if trace.configs[0] != case.initial:
            raise RuntimeError(f"case {case.seed}: the {name} episode started from another "
                               "initial configuration than the baselines")
        finals[name] = trace.configs[-1]
        runs[name] = len(trace.configs)
        healthy[name] = outcome.healthy_end
        actions[name] = trace.actions
        curves[name] = _episode_curve(runner, trace.configs)
    small, large = 1 + episode_len, 1 + BUDGET_MULTIPLIER * episode_len
    search_seed = settings.seed * 1_000_003 + case.index
    traces = {
        "random": random_search(runner.search_objective, space, large, search_seed,
                                start=case.initial),
        "tpe": tpe_search(runner.search_objective, space, large, search_seed,
                          start=case.initial),
    }
    for name, trace in traces.items():
        curve = _search_curve(runner, trace)
        for n in (small, large):
            finals[f"{name}_{n}"] = trace.configs[trace.incumbent(n)]
            runs[f"{name}_{n}"] = n
            curves[f"{name}_{n}"] = [(x, y) for x, y in curve if x <= n]
    # the oracle: a long local search from the best candidate, then selection on other seeds
    candidates = list(finals.values())
    for trace in traces.values():
        order = np.argsort(trace.scores)[::-1][:settings.oracle_top_k]
        candidates += [trace.configs[i] for i in order]
    unique = list({config_key(c): c for c in candidates}.values())
    sel = [runner.selection_score(c) for c in unique]
    start = unique[int(np.argmax(sel))]
    ls = local_search(lambda c, k: runner.search_objective(c, 2 * large + k), space,
                      settings.oracle_evals, search_seed, start=start)
    order = np.argsort(ls.scores)[::-1][:settings.oracle_top_k]
    finalists = unique + [ls.configs[i] for i in order]
    finalists = list({config_key(c): c for c in finalists}.values())
    sel = [runner.selection_score(c) for c in finalists]
    finals["oracle"] = finalists[int(np.argmax(sel))]
    runs["oracle"] = 2 * large + settings.oracle_evals + settings.selection_seeds * len(
        finalists)

    fresh = {name: runner.fresh_scores(c) for name, c in finals.items()}
    initial, oracle = fresh["initial"], fresh["oracle"]
    min_gap = 2.0 * math.hypot(initial.score_sem, oracle.score_sem)
    out = {}
    for name, f in fresh.items():
        out[name] = MethodResult(
            score=f.score, failure_pct=f.mean_of(f.failure_pcts), p99_ms=f.mean_of(f.p99s_ms),
            goodput_rps=f.mean_of(f.goodputs_rps), latency_mean_ms=f.mean_of(f.latency_means_ms),
            gap_closed=gap_closed(f.score, initial.score, oracle.score, min_gap),
            load_runs=runs[name], healthy_end=healthy.get(name, True),
            failed_runs=f.failed_runs, actions=actions.get(name, []),
            curve=curves.get(name, []))
    return out


#: Per scenario name: its cases and, per case, the results by method.
ScenarioResults = dict[str, tuple[list[Case], list[dict[str, MethodResult]]]]


def evaluate_scenarios(base: dict[str, Any], settings: EvalSettings, policy: Any, ppo: Any,
                       n_actions: int, space: SearchSpace, episode_len: int) -> ScenarioResults:
    """:func:`evaluate_case` on every case of every scenario (``settings.cases_per_scenario``):
    the REINFORCE ``policy`` greedy and sampled (seeded by the case), the ``ppo`` module
    greedy, uniform random actions over ``n_actions`` (seeded), and the other methods; prints
    one line per case."""
    import gymnasium as gym

    index = 0
    by_scenario: ScenarioResults = {}
    for scenario in SCENARIOS:
        cases, results = [], []
        for seed in case_seeds(scenario, settings.cases_per_scenario[scenario.name]):
            t0 = time.monotonic()
            case = make_case(base, scenario, index, seed)
            actors: dict[str, Callable[[], Actor]] = {
                "reinforce": lambda: module_actor(policy, greedy=True),
                "reinforce_sampled": lambda s=seed: module_actor(policy, greedy=False, seed=s),
                "ppo": lambda: module_actor(ppo, greedy=True),
                "random_actions": lambda s=seed: uniform_random_actor(
                    gym.spaces.Discrete(n_actions), s),
            }
            result = evaluate_case(case, settings, actors, space, episode_len)
            cases.append(case)
            results.append(result)
            print(f"[evaluate] {scenario.name} case {seed} (users {case.users}): "
                  f"initial {result['initial'].score:.0f}, reinforce "
                  f"{result['reinforce'].score:.0f}, oracle {result['oracle'].score:.0f} "
                  f"({time.monotonic() - t0:.1f} s)", flush=True)
            index += 1
        by_scenario[scenario.name] = (cases, results)
    return by_scenario


def scenario_description(name: str) -> str:
    """The description of the scenario called ``name``."""
    return next(s.description for s in SCENARIOS if s.name == name)


def scenarios_json(by_scenario: ScenarioResults, n_fresh: int) -> dict[str, Any]:
    """``results.json``'s ``scenarios``: per case its seed, load, fresh load seeds and every
    method's result."""
    return {name: {"description": scenario_description(name),
                   "cases": [{"case_seed": c.seed, "users": c.users, "requests": c.requests,
                              "fresh_load_seeds": load_seeds(FRESH_SEED_BASE, c.index, n_fresh),
                              "methods": {k: asdict(v) for k, v in r.items()}}
                             for c, r in zip(cases, results, strict=True)]}
            for name, (cases, results) in by_scenario.items()}

