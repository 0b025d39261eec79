"""Is RL worth it? The trained agent against what an operator would otherwise do, on held-out cases.

    python experiments/evaluate.py                       # default: ~6 min on 2 shared cores
    python experiments/evaluate.py --quick               # ~1 min, every step, tiny sizes
    python experiments/evaluate.py --checkpoint PATH     # another REINFORCE checkpoint

A *case* is what one training episode is: a random initial configuration (the notebook's draw, every
seed knob of every tunable service in 1..100) and a load, drawn by ``MeshEnv.reset(seed=s)``
with ``init="classic_random"``, ``load_draw="per_episode"``. The case seeds (:data:`SCENARIOS`)
are never used in training (``pg_sweep.py`` trains with env seed ``--seed`` and reset seeds
``--seed + runner index``, ranks its trials on validation seeds 2 000 000+ and tests the
best on 1 000 000+) — :func:`training_seeds`
lists them and the test suite checks the sets are disjoint. Scenarios:

* ``in_range``: users 10..20 as in training;
* ``users_40``: 40 users (3 200 requests), outside the training range (the observation's load
  channels saturate at 1.0, since the env normalises by its configured maximum);
* ``carts_down``: users 10..20, ``ServiceDown("carts")`` from 3 s to 6 s of every run;
* ``catalogue_slow``: users 10..20, ``LatencySpike("catalogue", ×8)`` from 2 s to 8 s.

Default sizes: 16 ``in_range`` cases, 6 of each other scenario.

Methods, each leaving one final configuration per case:

* ``reinforce`` — the trained policy (greedy: the most likely action), one episode of
  ``episode_len`` steps from the case's initial configuration, in ``MeshEnv`` (faults via
  ``SimMesh(faults=...)`` in ``backend_kwargs``); ``reinforce_sampled`` — the same policy
  sampling its actions (seeded by the case), as it acted in training;
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
the initial → oracle gap closed (:func:`gap_closed`; undefined when the oracle is not
significantly better than the initial configuration). Tables report median [p25, p75] over
cases, and how often the REINFORCE policy beats each method.

Writes into ``--output`` (default ``results/evaluate``): ``results.json`` (every number, every
seed), ``results.md`` (the tables, the command and date), ``score_vs_evals.png`` (fresh score of
each method's incumbent against load runs used, median over in-range cases) and the PPO
checkpoint (``ppo_checkpoint/``; ``--ppo-checkpoint`` reuses one).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from envs.actions import MeshConfig, istio_default_config, make_catalogue
from envs.backends import make_backend
from envs.backends.base import Fault, LatencySpike, LoadSpec, ServiceDown
from envs.measure import FAILED_RUN_SCORE
from rl.baselines import (
    LoadTester,
    SearchSpace,
    SearchTrace,
    local_search,
    random_search,
    reachable_space,
    tpe_search,
)

DEFAULT_OUTPUT = Path("results/evaluate")
DEFAULT_SWEEP_RESULTS = Path("results/pg_sweep/results.json")
#: pg_sweep's own held-out seeds start here (``rl.evaluation.held_out_seeds``).
PG_SWEEP_HELD_OUT_FIRST = 1_000_000
#: Load seeds: search evaluation k of case i = SEARCH + i·STRIDE + k; selection and fresh
#: seeds likewise from their own bases. The ranges never overlap (STRIDE > any budget).
SEARCH_SEED_BASE = 1_000_000_000
SELECTION_SEED_BASE = 1_400_000_000
FRESH_SEED_BASE = 1_800_000_000
SEED_STRIDE = 10_000
#: A method's ``n`` evaluations at the 10× budget: 1 + BUDGET_MULTIPLIER × episode_len.
BUDGET_MULTIPLIER = 10


class EvaluateError(RuntimeError):
    """A problem the user can fix (missing checkpoint, bad flag); printed without a traceback."""


@dataclass(frozen=True)
class Scenario:
    """A family of held-out cases.

    Attributes:
        name: short id used in tables.
        description: one line for the tables.
        users_range: MeshEnv ``users_range`` of its cases (inclusive).
        faults: injected into every load run of its cases.
        first_seed: case ``j`` is ``MeshEnv.reset(seed=first_seed + j)``.
    """

    name: str
    description: str
    users_range: tuple[int, int]
    faults: tuple[Fault, ...]
    first_seed: int


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("in_range", "users 10..20 (training range)", (10, 20), (), 3_000_000),
    Scenario("users_40", "40 users (outside training range)", (40, 40), (), 3_100_000),
    Scenario("carts_down", "users 10..20, carts down 3-6 s of each run", (10, 20),
             (ServiceDown("carts", 3.0, 6.0),), 3_200_000),
    Scenario("catalogue_slow", "users 10..20, catalogue x8 slower 2-8 s of each run", (10, 20),
             (LatencySpike("catalogue", 2.0, 8.0, 8.0),), 3_300_000),
)


def training_seeds(sweep_seed: int, num_env_runners: int) -> set[int]:
    """Every seed a ``pg_sweep.py --seed sweep_seed`` training run passes to MeshEnv: the env
    seed and RLlib's reset seeds (``seed + worker_index``, worker 0..num_env_runners; RLlib's
    evaluation runners add 1e6)."""
    seeds = {sweep_seed}
    for worker in range(num_env_runners + 1):
        seeds |= {sweep_seed + worker, sweep_seed + worker + 1_000_000}
    return seeds


def case_seeds(scenario: Scenario, n: int) -> list[int]:
    """The reset seeds of the first ``n`` cases of ``scenario``."""
    return [scenario.first_seed + j for j in range(n)]


def load_seeds(base: int, case_index: int, n: int) -> list[int]:
    """``n`` load seeds of case ``case_index`` from ``base`` (search, selection or fresh).

    Raises:
        ValueError: ``n`` exceeds the stride (the ranges of two cases would overlap).
    """
    if not 0 <= n <= SEED_STRIDE:
        raise ValueError(f"at most {SEED_STRIDE} load seeds per case, asked for {n}")
    start = base + case_index * SEED_STRIDE
    return list(range(start, start + n))


def gap_closed(score: float, initial: float, oracle: float, min_gap: float = 0.0
               ) -> float | None:
    """Share of the gap between the initial configuration and the oracle that ``score`` closed:
    ``(score - initial) / (oracle - initial)``. 1 = as good as the oracle, 0 = no better than
    the start, < 0 = worse than the start, > 1 = better than the oracle. None when the oracle is
    not better than the start by more than ``min_gap`` (there is no gap to close).
    """
    gap = oracle - initial
    if not gap > max(min_gap, 0.0):
        return None
    return (score - initial) / gap


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class EvalSettings:
    """Sizes of one evaluation run (``--quick`` shrinks them)."""

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


def default_checkpoint(sweep_results: Path = DEFAULT_SWEEP_RESULTS) -> Path:
    """The best trial's checkpoint recorded by ``pg_sweep.py`` in ``results.json``."""
    if not sweep_results.is_file():
        raise EvaluateError(f"no --checkpoint given and {sweep_results} does not exist: run "
                            "python experiments/pg_sweep.py first (or --smoke --output DIR and "
                            "pass --checkpoint)")
    best = json.loads(sweep_results.read_text()).get("best") or {}
    if not best.get("checkpoint"):
        raise EvaluateError(f"{sweep_results} names no best checkpoint")
    return Path(best["checkpoint"])


def settings_from_args(args: argparse.Namespace) -> EvalSettings:
    """Resolve defaults (quick or full) and check the numbers."""
    q = args.quick

    def pick(value: int | None, full: int, tiny: int) -> int:
        return value if value is not None else (tiny if q else full)

    if args.cases is not None:
        cases = dict.fromkeys((s.name for s in SCENARIOS), args.cases)
    elif q:
        cases = dict.fromkeys((s.name for s in SCENARIOS), 1)
    else:
        cases = {"in_range": 16, "users_40": 6, "carts_down": 6, "catalogue_slow": 6}
    settings = EvalSettings(
        checkpoint=(args.checkpoint or default_checkpoint()).resolve(),
        cases_per_scenario=cases,
        fresh_seeds=pick(args.fresh_seeds, 8, 3),
        selection_seeds=pick(args.selection_seeds, 8, 2),
        oracle_evals=pick(args.oracle_evals, 600, 40),
        oracle_top_k=4 if q else 8,
        ppo_env_steps=args.ppo_env_steps if args.ppo_env_steps is not None
        else (200 if q else None),
        ppo_checkpoint=args.ppo_checkpoint.resolve() if args.ppo_checkpoint else None,
        seed=args.seed,
        output=args.output.resolve(),
        quick=q,
    )
    for name in ("fresh_seeds", "selection_seeds", "oracle_evals"):
        if not 1 <= getattr(settings, name) <= SEED_STRIDE:
            raise EvaluateError(f"--{name.replace('_', '-')} must be in 1..{SEED_STRIDE}")
    if min(cases.values()) < 1:
        raise EvaluateError("--cases must be >= 1")
    if settings.fresh_seeds < 2:
        raise EvaluateError("--fresh-seeds must be >= 2 (the gap test needs a spread)")
    if settings.ppo_env_steps is not None and settings.ppo_env_steps < 1:
        raise EvaluateError("--ppo-env-steps must be >= 1")
    return settings


# ----------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class PolicyCheckpoint:
    """A trained policy and what it was trained on.

    Attributes:
        module: the RLModule (``forward_inference`` gives action logits).
        env_config: the MeshEnv config it was trained with.
        env_steps_trained: env steps sampled during training (RLlib's lifetime counter).
        path: the Algorithm checkpoint directory.
    """

    module: Any
    env_config: dict[str, Any]
    env_steps_trained: int | None
    path: Path


def load_policy(checkpoint: Path) -> PolicyCheckpoint:
    """Read an RLlib Algorithm checkpoint: its RLModule, env config and env steps sampled.

    Raises:
        EvaluateError: the directory is not an Algorithm checkpoint of a MeshEnv policy.
    """
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.core.rl_module.rl_module import RLModule

    checkpoint = checkpoint.resolve()  # RLlib reads a relative path as a URI
    ctor = checkpoint / "class_and_ctor_args.pkl"
    module_dir = checkpoint / "learner_group" / "learner" / "rl_module" / DEFAULT_MODULE_ID
    if not ctor.is_file() or not module_dir.is_dir():
        raise EvaluateError(f"{checkpoint} is not an RLlib Algorithm checkpoint (expected "
                            f"{ctor.name} and {module_dir.relative_to(checkpoint)})")
    with ctor.open("rb") as f:
        config = pickle.load(f)["ctor_args_and_kwargs"][0][0]
    env_config = dict(config.get("env_config") or {})
    steps = None
    state_file = checkpoint / "algorithm_state.pkl"
    if state_file.is_file():
        with state_file.open("rb") as f:
            stats = pickle.load(f).get("metrics_logger", {}).get("stats", {})
        lifetime = stats.get("env_runners--num_env_steps_sampled_lifetime", {})
        if "lifetime_sum" in lifetime:
            steps = int(lifetime["lifetime_sum"])
    return PolicyCheckpoint(RLModule.from_checkpoint(module_dir), env_config, steps, checkpoint)


def train_ppo(env_config: dict[str, Any], env_steps: int, seed: int, out_dir: Path
              ) -> tuple[Any, dict[str, Any]]:
    """Train RLlib's PPO on MeshEnv (``env_config``) for at least ``env_steps`` env steps, save
    the Algorithm checkpoint to ``out_dir`` and return its RLModule and a training summary."""
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig

    from envs.mesh_env import MeshEnv
    from rl.callbacks import MeshMetricsCallback
    from rl.ray_setup import init_ray

    episode_len = int(env_config.get("episode_len", 20))
    batch = max(episode_len, min(400, env_steps))
    config = (
        PPOConfig()
        .environment(MeshEnv, env_config=env_config)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1)
        .training(lr=3e-4, gamma=0.99, train_batch_size_per_learner=batch,
                  minibatch_size=min(100, batch), num_epochs=4, entropy_coeff=0.01)
        .callbacks(MeshMetricsCallback)
        .debugging(seed=seed)
    )
    init_ray(log_to_driver=False)
    t0 = time.monotonic()
    try:
        algo = config.build_algo()
        sampled, iterations, result = 0, 0, {}
        while sampled < env_steps:
            result = algo.train()
            iterations += 1
            sampled = int(result["env_runners"]["num_env_steps_sampled_lifetime"])
        out_dir.mkdir(parents=True, exist_ok=True)
        algo.save(str(out_dir))
        module = algo.get_module()
        algo.stop()
    finally:
        ray.shutdown()
    summary = {"env_steps": sampled, "iterations": iterations, "train_batch": batch,
               "wall_s": time.monotonic() - t0,
               "last_eval_score_gain": result.get("env_runners", {}).get("eval_score_gain")}
    return module, summary


Actor = Callable[[np.ndarray], int]


@dataclass
class Rollout:
    """One episode of a policy on a case: the configuration after each step (index 0: the
    initial one), the actions taken and whether the mesh still served at the end."""

    configs: list[MeshConfig]
    actions: list[int]
    healthy_end: bool


def case_env_config(base: dict[str, Any], scenario: Scenario, case_seed: int) -> dict[str, Any]:
    """The MeshEnv config of a case: the training config with the case's seed, load range and
    fault; a new random initial configuration and load per reset, as in training."""
    config = {k: v for k, v in base.items() if k != "replica"}
    config.update(seed=case_seed, init="classic_random", load_draw="per_episode",
                  users_range=scenario.users_range)
    if scenario.faults:
        if config.get("backend", "sim") != "sim":
            raise EvaluateError(f"fault scenarios run on the simulator, not on "
                                f"{config['backend']!r}")
        config["backend_kwargs"] = {**config.get("backend_kwargs", {}),
                                    "faults": list(scenario.faults)}
    return config


def rollout(env_config: dict[str, Any], case_seed: int, actor: Actor) -> Rollout:
    """Run one episode of ``actor`` on the case (``reset(seed=case_seed)``)."""
    from envs.mesh_env import MeshEnv

    env = MeshEnv(env_config)
    try:
        obs, _ = env.reset(seed=case_seed)
        configs, actions = [env.config], []
        healthy, done = True, False
        while not done:
            actions.append(actor(obs))
            obs, _, terminated, truncated, info = env.step(actions[-1])
            configs.append(env.config)
            healthy = bool(info["healthy"])
            done = terminated or truncated
        return Rollout(configs, actions, healthy)
    finally:
        env.close()


# ----------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One held-out case: the episode ``MeshEnv.reset(seed=seed)`` starts."""

    scenario: Scenario
    index: int
    seed: int
    users: int
    requests: int
    initial: MeshConfig
    env_config: dict[str, Any]

    @property
    def load(self) -> LoadSpec:
        """The case's load (the scenario's faults included)."""
        from envs.sockshop import HATCH_RATE_PER_S

        return LoadSpec(users=self.users, requests=self.requests,
                        hatch_rate_per_s=HATCH_RATE_PER_S, faults=self.scenario.faults)


def make_case(base_env_config: dict[str, Any], scenario: Scenario, index: int,
              seed: int) -> Case:
    """Draw the case's initial configuration and load exactly as its episode will."""
    from envs.mesh_env import MeshEnv

    env_config = case_env_config(base_env_config, scenario, seed)
    env = MeshEnv({**env_config, "backend": "sim", "backend_kwargs": {}})
    try:
        env.reset(seed=seed)
        return Case(scenario, index, seed, env.users, env.requests, env.config, env_config)
    finally:
        env.close()


def _key(config: MeshConfig) -> tuple:
    return tuple(sorted(config.items()))


@dataclass
class FreshScores:
    """A configuration measured on the case's fresh load seeds."""

    eval_scores: list[float | None]
    failure_pcts: list[float | None]
    p99s_ms: list[float | None]
    errors: list[str]

    @property
    def objectives(self) -> list[float]:
        """Evaluation scores, a failed run counted as ``envs.measure.FAILED_RUN_SCORE``."""
        return [FAILED_RUN_SCORE if s is None else s for s in self.eval_scores]

    @property
    def score(self) -> float:
        """Mean of :attr:`objectives`."""
        return float(np.mean(self.objectives))

    @property
    def failed_runs(self) -> int:
        """Runs the backend could not complete (their errors are in :attr:`errors`)."""
        return sum(s is None for s in self.eval_scores)

    def mean_of(self, values: list[float | None]) -> float | None:
        """Mean over the runs that completed (None if none did)."""
        done = [v for v in values if v is not None]
        return float(np.mean(done)) if done else None

    @property
    def score_sem(self) -> float:
        """Standard error of :attr:`score`."""
        vals = self.objectives
        return float(np.std(vals, ddof=1) / math.sqrt(len(vals)))


class CaseRunner:
    """Measures configurations on one case, with caching, on a private simulator."""

    def __init__(self, case: Case, settings: EvalSettings) -> None:
        self.case = case
        backend = make_backend("sim")
        self.tester = LoadTester(backend, case.load)
        self.fresh = load_seeds(FRESH_SEED_BASE, case.index, settings.fresh_seeds)
        self.selection = load_seeds(SELECTION_SEED_BASE, case.index, settings.selection_seeds)
        self.search = load_seeds(SEARCH_SEED_BASE, case.index, SEED_STRIDE)
        self._fresh_cache: dict[tuple, FreshScores] = {}
        self._selection_cache: dict[tuple, float] = {}

    def search_objective(self, config: MeshConfig, k: int) -> float:
        """Search evaluation ``k``: one run with search load seed ``k`` of this case."""
        return self.tester.measure(config, self.search[k]).objective

    def selection_score(self, config: MeshConfig) -> float:
        """Mean objective over the selection seeds (the oracle's choice; cached)."""
        key = _key(config)
        if key not in self._selection_cache:
            self._selection_cache[key] = float(np.mean([self.tester.measure(config, s).objective
                                                        for s in self.selection]))
        return self._selection_cache[key]

    def fresh_scores(self, config: MeshConfig) -> FreshScores:
        """``config`` on the fresh seeds (cached per configuration)."""
        key = _key(config)
        if key not in self._fresh_cache:
            ms = [self.tester.measure(config, s) for s in self.fresh]
            self._fresh_cache[key] = FreshScores([m.eval_score for m in ms],
                                                 [m.failure_pct for m in ms],
                                                 [m.p99_ms for m in ms], [m.error for m in ms])
        return self._fresh_cache[key]


@dataclass
class MethodResult:
    """One method on one case: its final configuration's fresh scores and its trajectory."""

    score: float
    failure_pct: float | None
    p99_ms: float | None
    gap_closed: float | None = None
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


def _rollout_curve(runner: CaseRunner, ro: Rollout) -> list[tuple[int, float]]:
    # after k steps the policy has used k + 1 load runs (the reset's run measures the start)
    return [(n, runner.fresh_scores(ro.configs[n - 1]).score)
            for n in _checkpoints(len(ro.configs))]


def evaluate_case(case: Case, settings: EvalSettings, actors: dict[str, Callable[[], Actor]],
                  space: SearchSpace, episode_len: int) -> dict[str, MethodResult]:
    """Every method on one case (module docstring); returns results by method name."""
    runner = CaseRunner(case, settings)
    finals: dict[str, MeshConfig] = {"initial": case.initial,
                                     "istio_default": istio_default_config()}
    curves: dict[str, list[tuple[int, float]]] = {}
    runs: dict[str, int] = {"initial": 0, "istio_default": 0}
    healthy: dict[str, bool] = {}
    actions: dict[str, list[int]] = {}
    for name, make_actor in actors.items():
        ro = rollout(case.env_config, case.seed, make_actor())
        if ro.configs[0] != case.initial:
            raise RuntimeError(f"case {case.seed}: the {name} episode started from another "
                               "initial configuration than the baselines")
        finals[name] = ro.configs[-1]
        runs[name] = len(ro.configs)
        healthy[name] = ro.healthy_end
        actions[name] = ro.actions
        curves[name] = _rollout_curve(runner, ro)
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
    unique = list({_key(c): c for c in candidates}.values())
    sel = [runner.selection_score(c) for c in unique]
    start = unique[int(np.argmax(sel))]
    ls = local_search(lambda c, k: runner.search_objective(c, 2 * large + k), space,
                      settings.oracle_evals, search_seed, start=start)
    order = np.argsort(ls.scores)[::-1][:settings.oracle_top_k]
    finalists = unique + [ls.configs[i] for i in order]
    finalists = list({_key(c): c for c in finalists}.values())
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
            gap_closed=gap_closed(f.score, initial.score, oracle.score, min_gap),
            load_runs=runs[name], healthy_end=healthy.get(name, True),
            failed_runs=f.failed_runs, actions=actions.get(name, []),
            curve=curves.get(name, []))
    return out


# ----------------------------------------------------------------------------- reporting

METHOD_ORDER = ("reinforce", "reinforce_sampled", "ppo", "random_actions", "initial",
                "istio_default")


def search_budget(name: str) -> int | None:
    """The load-run budget of a search method's name (``tpe_201`` → 201), None otherwise."""
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if name.startswith(("random_", "tpe_")) and tail.isdigit() else None


def method_order(names: Sequence[str]) -> list[str]:
    """Methods in table order: the agents, the fixed configurations, searches, the oracle."""
    first = [m for m in METHOD_ORDER if m in names]
    searches = sorted((m for m in names if search_budget(m) is not None),
                      key=lambda m: (int(m.rsplit("_", 1)[1]), m))
    return first + searches + (["oracle"] if "oracle" in names else [])


def _quartiles(values: list[float]) -> tuple[float, float, float] | None:
    if not values:
        return None
    q = np.percentile(values, [50, 25, 75])
    return float(q[0]), float(q[1]), float(q[2])


def _fmt_q(values: list[float], spec: str) -> str:
    q = _quartiles(values)
    if q is None:
        return "—"
    return f"{format(q[0], spec)} [{format(q[1], spec)}, {format(q[2], spec)}]"


def summary_rows(results: list[dict[str, MethodResult]]) -> list[dict[str, Any]]:
    """Per method over the cases: quartiles of score, failure %, p99, gap closed, and how often
    the REINFORCE policy scored higher (fresh means)."""
    rows = []
    for name in method_order(list(results[0])):
        per = [r[name] for r in results]
        gaps = [p.gap_closed for p in per if p.gap_closed is not None]
        beats = None
        if "reinforce" in results[0] and name != "reinforce":
            beats = sum(r["reinforce"].score > r[name].score for r in results)
        rows.append({
            "method": name,
            "load_runs": int(np.median([p.load_runs for p in per])),
            "score": [p.score for p in per],
            "failure_pct": [p.failure_pct for p in per if p.failure_pct is not None],
            "p99_ms": [p.p99_ms for p in per if p.p99_ms is not None],
            "gap_closed": gaps,
            "reinforce_better": beats,
            "unhealthy_ends": sum(not p.healthy_end for p in per),
            "failed_runs": sum(p.failed_runs for p in per),
        })
    return rows


def scenario_table(results: list[dict[str, MethodResult]]) -> str:
    """Markdown table of one scenario (median [p25, p75] over its cases)."""
    n = len(results)
    n_gap = sum(r["oracle"].gap_closed is not None for r in results)
    lines = [
        "| method | load runs per case | eval score | failure % | p99 ms "
        f"| gap closed ({n_gap}/{n} cases with a gap) | REINFORCE better in |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary_rows(results):
        beats = "—" if row["reinforce_better"] is None else f"{row['reinforce_better']}/{n}"
        notes = [f"{row['unhealthy_ends']} unhealthy ends"] if row["unhealthy_ends"] else []
        if row["failed_runs"]:
            notes.append(f"{row['failed_runs']} fresh runs failed, scored {FAILED_RUN_SCORE:.0f}")
        unhealthy = f" ({'; '.join(notes)})" if notes else ""
        lines.append(
            f"| {row['method']}{unhealthy} | {row['load_runs']} | {_fmt_q(row['score'], '.0f')} "
            f"| {_fmt_q(row['failure_pct'], '.2f')} | {_fmt_q(row['p99_ms'], '.0f')} "
            f"| {_fmt_q(row['gap_closed'], '.2f')} | {beats} |")
    return "\n".join(lines)


def action_summary(results: list[dict[str, MethodResult]], method: str,
                   describe: Callable[[int], str]) -> str:
    """How varied a policy's actions were over all cases: distinct actions, the most frequent
    one and its share."""
    taken = [a for r in results for a in r[method].actions]
    if not taken:
        return f"{method}: no actions"
    values, counts = np.unique(taken, return_counts=True)
    top = int(np.argmax(counts))
    return (f"{method}: {len(values)} distinct actions in {len(taken)} steps; most frequent "
            f"`{describe(int(values[top]))}` ({100.0 * counts[top] / len(taken):.0f} %)")


def plot_curves(panels: list[tuple[str, list[dict[str, MethodResult]]]], path: Path) -> None:
    """PNG, one panel per scenario: fresh score of each method's incumbent against load runs
    used (median over cases), with the fixed configurations and the oracle as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 3.6 * rows),
                             constrained_layout=True, squeeze=False)
    for ax, (title, results) in zip(axes.flat, panels, strict=False):
        _plot_panel(ax, results, title)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _value_at(curve: list[tuple[int, float]], x: int) -> float:
    """The curve's value after ``x`` load runs: its last point at or before ``x`` (an episode
    that ended early leaves its final configuration in place)."""
    return [y for xi, y in curve if xi <= x][-1]


def _plot_panel(ax: Any, results: list[dict[str, MethodResult]], title: str) -> None:
    styles = {"reinforce": "C0", "reinforce_sampled": "C9", "ppo": "C1", "random_actions": "C7",
              "random": "C2", "tpe": "C3"}
    names = method_order(list(results[0]))
    for name in names:
        curve_name = name
        if search_budget(name) is not None:
            curve_name = name.rsplit("_", 1)[0]
            if any(search_budget(m) and m.startswith(curve_name + "_")
                   and search_budget(m) > search_budget(name) for m in names):
                continue  # one curve per search: its longest run
        curves = [r[name].curve for r in results]
        if not all(curves):
            continue
        xs = sorted({x for c in curves for x, _ in c})
        ys = [float(np.median([_value_at(c, x) for c in curves])) for x in xs]
        label = {"random": "random search", "tpe": "Optuna TPE"}.get(curve_name, curve_name)
        ax.plot(xs, ys, marker=".", label=label, color=styles.get(curve_name))
    for name, style in (("istio_default", ":"), ("initial", "-."), ("oracle", "--")):
        ax.axhline(float(np.median([r[name].score for r in results])), color="k",
                   linestyle=style, linewidth=1, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("load runs used (log scale)")
    ax.set_ylabel("fresh eval score (median)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")


def _jsonable(results: list[dict[str, MethodResult]], cases: list[Case], n_fresh: int
              ) -> list[dict[str, Any]]:
    return [{"case_seed": c.seed, "users": c.users, "requests": c.requests,
             "fresh_load_seeds": load_seeds(FRESH_SEED_BASE, c.index, n_fresh),
             "methods": {k: asdict(v) for k, v in r.items()}}
            for c, r in zip(cases, results, strict=True)]


def run(settings: EvalSettings, argv: Sequence[str]) -> dict[str, Any]:
    """The whole evaluation; writes results.json, results.md and the plot, returns the summary."""
    import gymnasium as gym
    import torch

    from rl.evaluation.episode import module_actor, uniform_random_actor

    torch.set_num_threads(1)
    t_start = time.monotonic()
    settings.output.mkdir(parents=True, exist_ok=True)
    policy = load_policy(settings.checkpoint)
    if policy.env_config.get("backend", "sim") != "sim":
        print(f"[evaluate] the checkpoint was trained on backend "
              f"{policy.env_config['backend']!r}; evaluating on the simulator", flush=True)
    # every method (and PPO's training) runs on the simulator
    base = {**policy.env_config, "backend": "sim", "backend_kwargs": {}}
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
            raise EvaluateError("the checkpoint records no env steps: pass --ppo-env-steps")
        print(f"[evaluate] training PPO for {steps} env steps ...", flush=True)
        ppo_module, ppo_info = train_ppo(base, steps, settings.seed,
                                         settings.output / "ppo_checkpoint")
        ppo_info |= {"checkpoint": str(settings.output / "ppo_checkpoint"), "trained_here": True}
        print(f"[evaluate] PPO: {ppo_info['env_steps']} env steps in "
              f"{ppo_info['wall_s']:.0f} s", flush=True)

    catalogue = make_catalogue(base.get("catalogue", "classic"), base.get("services"))
    n_actions = len(catalogue)
    index = 0
    by_scenario: dict[str, tuple[list[Case], list[dict[str, MethodResult]]]] = {}
    for scenario in SCENARIOS:
        cases, results = [], []
        for seed in case_seeds(scenario, settings.cases_per_scenario[scenario.name]):
            t0 = time.monotonic()
            case = make_case(base, scenario, index, seed)
            actors: dict[str, Callable[[], Actor]] = {
                "reinforce": lambda: module_actor(policy.module, greedy=True),
                "reinforce_sampled": lambda s=seed: module_actor(policy.module, greedy=False,
                                                                 seed=s),
                "ppo": lambda: module_actor(ppo_module, greedy=True),
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
        cases, results = by_scenario[scenario.name]
        seeds = ", ".join(str(c.seed) for c in cases)
        policies = [m for m in ("reinforce", "reinforce_sampled", "ppo") if m in results[0]]
        md += [f"**{scenario.name}** — {scenario.description}; held-out case seeds {seeds}",
               "", scenario_table(results), "",
               "Actions: " + "; ".join(action_summary(results, m, catalogue.describe)
                                       for m in policies) + ".", ""]
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
        "scenarios": {name: {"description": next(s.description for s in SCENARIOS
                                                 if s.name == name),
                             "cases": _jsonable(res, cs, settings.fresh_seeds)}
                      for name, (cs, res) in by_scenario.items()},
    }
    (settings.output / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    print("\n" + text, flush=True)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a user-fixable problem)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run(settings_from_args(parse_args(argv)), argv)
    except EvaluateError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
