"""Held-out cases: the scenarios, the cases drawn from them, and measuring configurations on a case.

A *case* is what one training episode is: a random initial configuration and a load, drawn by
``MeshEnv.reset(seed=s)`` with ``init="classic_random"``, ``load_draw="per_episode"``. The case
seeds (:data:`SCENARIOS`) are never used in training, validation or pg_sweep's test
(:mod:`rl.evaluation.seeds`). A scenario's faults go into the case's env config
(``{"faults": [...]}``, injected into every load run of its episodes) and into the
:class:`~envs.backends.base.LoadSpec` its configurations are measured with
(:class:`CaseRunner`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.actions import MeshConfig
from envs.backends import make_backend
from envs.backends.base import Fault, LatencySpike, LoadSpec, ServiceDown
from envs.measure import FAILED_RUN_SCORE
from rl.baselines import LoadTester
from rl.evaluation.seeds import (
    FRESH_SEED_BASE,
    SEARCH_SEED_BASE,
    SEED_STRIDE,
    SELECTION_SEED_BASE,
    load_seeds,
)


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


def case_seeds(scenario: Scenario, n: int) -> list[int]:
    """The reset seeds of the first ``n`` cases of ``scenario``."""
    return [scenario.first_seed + j for j in range(n)]


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

        load = LoadSpec(users=self.users, requests=self.requests,
                        hatch_rate_per_s=HATCH_RATE_PER_S)
        return dataclasses.replace(load, faults=self.scenario.faults)


def case_env_config(base: dict[str, Any], scenario: Scenario, case_seed: int) -> dict[str, Any]:
    """The MeshEnv config of a case: the training config with the case's seed, load range and
    faults; a new random initial configuration and load per reset, as in training.

    Raises:
        ValueError: a fault scenario on another backend than the simulator.
    """
    config = {k: v for k, v in base.items() if k != "replica"}
    config.update(seed=case_seed, load="classic", init="classic_random",
                  load_draw="per_episode", users_range=scenario.users_range)
    if scenario.faults:
        if config.get("backend", "sim") != "sim":
            raise ValueError(f"fault scenarios run on the simulator, not on "
                             f"{config['backend']!r}")
        config["faults"] = list(scenario.faults)
    return config


def make_case(base_env_config: dict[str, Any], scenario: Scenario, index: int,
              seed: int) -> Case:
    """Draw the case's initial configuration and load exactly as its episode will."""
    from envs.mesh_env import MeshEnv

    env_config = case_env_config(base_env_config, scenario, seed)
    env = MeshEnv({**{k: v for k, v in env_config.items() if k != "faults"}, "backend": "sim"})
    try:
        env.reset(seed=seed)
        return Case(scenario, index, seed, env.users, env.requests, env.config, env_config)
    finally:
        env.close()


def config_key(config: MeshConfig) -> tuple:
    """A hashable key of a configuration (caches, de-duplication)."""
    return tuple(sorted(config.items()))


@dataclass
class FreshScores:
    """A configuration measured on the case's fresh load seeds, one entry per seed (None: the
    run did not complete, or did not measure it): evaluation score, failure %, largest endpoint
    p99 (ms), the backend's error ("" if none), goodput (req/s served within their SLO) and
    mean latency over all requests (ms)."""

    eval_scores: list[float | None]
    failure_pcts: list[float | None]
    p99s_ms: list[float | None]
    errors: list[str]
    goodputs_rps: list[float | None]
    latency_means_ms: list[float | None]

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
    """Measures configurations on one case (its load, faults included), with caching, on a
    private simulator.

    Args:
        case: the case.
        fresh_seeds: fresh load seeds per configuration (:meth:`fresh_scores`).
        selection_seeds: load seeds of the oracle's selection (:meth:`selection_score`).
    """

    def __init__(self, case: Case, fresh_seeds: int, selection_seeds: int) -> None:
        self.case = case
        backend = make_backend("sim")
        self.tester = LoadTester(backend, case.load)
        self.fresh = load_seeds(FRESH_SEED_BASE, case.index, fresh_seeds)
        self.selection = load_seeds(SELECTION_SEED_BASE, case.index, selection_seeds)
        self.search = load_seeds(SEARCH_SEED_BASE, case.index, SEED_STRIDE)
        self._fresh_cache: dict[tuple, FreshScores] = {}
        self._selection_cache: dict[tuple, float] = {}

    def search_objective(self, config: MeshConfig, k: int) -> float:
        """Search evaluation ``k``: one run with search load seed ``k`` of this case."""
        return self.tester.measure(config, self.search[k]).objective

    def selection_score(self, config: MeshConfig) -> float:
        """Mean objective over the selection seeds (the oracle's choice; cached)."""
        key = config_key(config)
        if key not in self._selection_cache:
            self._selection_cache[key] = float(np.mean([self.tester.measure(config, s).objective
                                                        for s in self.selection]))
        return self._selection_cache[key]

    def fresh_scores(self, config: MeshConfig) -> FreshScores:
        """``config`` on the fresh seeds (cached per configuration)."""
        key = config_key(config)
        if key not in self._fresh_cache:
            ms = [self.tester.measure(config, s) for s in self.fresh]
            self._fresh_cache[key] = FreshScores([m.eval_score for m in ms],
                                                 [m.failure_pct for m in ms],
                                                 [m.p99_ms for m in ms], [m.error for m in ms],
                                                 [m.goodput_rps for m in ms],
                                                 [m.latency_mean_ms for m in ms])
        return self._fresh_cache[key]
