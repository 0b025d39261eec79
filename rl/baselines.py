"""Tuning without RL: search the agent's knob space directly, one load run per evaluation.

The baselines an RL agent has to beat (``experiments/evaluate.py`` compares them):

* :func:`random_search` — configurations drawn log-uniformly from the :class:`SearchSpace`;
* :func:`tpe_search` — Optuna's TPE sampler (seeded, multivariate) over the same space;
* :func:`local_search` — a (1+1) evolution strategy in log space, the long search behind the
  evaluation's oracle;
* :func:`tune_rule_params` — a seeded random search over the rule-based controller's parameters
  (:class:`rl.controllers.RuleParams`) on TRAINING scenarios.

Each evaluation applies one configuration to a backend and runs one load test with its own load
seed (:class:`LoadTester`); the objective is the weight-independent
:func:`envs.reward.evaluation_score` of that run (higher is better). All three start by
evaluating the configuration the mesh has now (``start``), as an operator tuning a live mesh
would: a search never proposes something it has not measured, and keeps the start if nothing
measured better.

The search space (:func:`reachable_space`) is what the agent can touch: the six knobs of the
``classic`` catalogue (:data:`envs.actions.CLASSIC_KNOBS`) of every tunable service, each an
integer in ``1..high`` where ``high`` is the largest value an episode can reach from the
notebook's initial draw
(``init_upper + episode_len × the catalogue's largest raise of that knob``: maxConnections
1..500, http1MaxPendingRequests / maxRequestsPerConnection / maxRetries 1..900,
connectTimeout / http2MaxRequests 1..4100 with the defaults 100 and 20). The searches may
change every knob at once; the agent moves one knob one step per load run. Values are searched
on a log scale (TPE over the continuous log value, rounded to the nearest integer: Optuna's
integer distributions are ~10× slower with 72 parameters).

(To run a ``MeshEnv`` under a fault, give it ``env_config["faults"]``: it puts them into the
``LoadSpec`` of every load run.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.actions import CLASSIC_KNOBS, MeshConfig, make_catalogue
from envs.backends.base import Backend, LoadSpec
from envs.istio import ConnectionPool
from envs.knobs import Knob, knob_value, with_knob
from envs.measure import Measurement, measure


@dataclass(frozen=True)
class SearchSpace:
    """Integer knobs ``1..high[knob]`` for every (service, knob) pair.

    A point is a mapping ``param name -> value`` with names ``"<service>/<Istio field>"``
    (``"carts/tcp.maxConnections"``); :meth:`config` turns it into a :data:`MeshConfig` that sets
    exactly these fields.
    """

    services: tuple[str, ...]
    knobs: tuple[Knob, ...]
    high: Mapping[Knob, int]

    def __post_init__(self) -> None:
        unknown = [k for k in self.knobs if k not in CLASSIC_KNOBS]
        if unknown:
            raise ValueError(f"knobs {[k.value for k in unknown]} cannot be searched; "
                             f"searchable (integer knobs): {[k.value for k in CLASSIC_KNOBS]}")
        if not self.services:
            raise ValueError("a search space needs at least one service")
        for k in self.knobs:
            h = self.high.get(k)
            if not isinstance(h, int) or h < 1:
                raise ValueError(f"high[{k.value}] must be an int >= 1, got {h!r}")

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names, service-major (``service/knob``)."""
        return tuple(f"{s}/{k.value}" for s in self.services for k in self.knobs)

    @property
    def dim(self) -> int:
        """Number of parameters."""
        return len(self.services) * len(self.knobs)

    def _knob_of(self, name: str) -> Knob:
        return Knob(name.split("/", 1)[1])

    def clip(self, name: str, value: float) -> int:
        """``value`` rounded to the nearest integer and clamped to ``1..high`` of its knob."""
        return int(min(max(round(value), 1), self.high[self._knob_of(name)]))

    def config(self, point: Mapping[str, float]) -> MeshConfig:
        """The configuration setting every parameter of ``point`` (values clipped to range).

        Raises:
            ValueError: ``point`` lacks parameters of this space or has unknown ones.
        """
        missing = sorted(set(self.names) - set(point))
        extra = sorted(set(point) - set(self.names))
        if missing or extra:
            raise ValueError(f"point does not match the space: missing {missing[:3]}, "
                             f"unknown {extra[:3]}")
        config: MeshConfig = {}
        for service in self.services:
            pool = ConnectionPool()
            for knob in self.knobs:
                name = f"{service}/{knob.value}"
                pool = with_knob(pool, knob, self.clip(name, point[name]))
            config[service] = pool
        return config

    def point_of(self, config: MeshConfig) -> dict[str, int]:
        """The point closest to ``config``: each knob's effective value, clamped to range."""
        return {f"{s}/{k.value}": self.clip(f"{s}/{k.value}", knob_value(config.get(s), k))
                for s in self.services for k in self.knobs}

    def sample(self, rng: np.random.Generator) -> dict[str, int]:
        """A point with each value log-uniform in ``1..high`` (``floor(exp(U(0, ln(high+1))))``)."""
        out = {}
        for name in self.names:
            high = self.high[self._knob_of(name)]
            out[name] = min(int(math.exp(rng.uniform(0.0, math.log(high + 1)))), high)
        return out

    def log_bounds(self, name: str) -> tuple[float, float]:
        """``(0, ln(high))`` of parameter ``name``: its range on the log scale."""
        return 0.0, math.log(self.high[self._knob_of(name)])


def reachable_space(catalogue: str = "classic", services: Sequence[str] | None = None,
                    init_upper: int = 100, episode_len: int = 20) -> SearchSpace:
    """The classic knobs the ``catalogue`` moves, each in ``1..init_upper + episode_len × its
    largest raise`` (see the module docstring).

    Raises:
        ValueError: bad catalogue / services, or ``init_upper`` / ``episode_len`` below 1.
    """
    if init_upper < 1 or episode_len < 1:
        raise ValueError(f"init_upper and episode_len must be >= 1, got {init_upper}, "
                         f"{episode_len}")
    cat = make_catalogue(catalogue, services)  # type: ignore[arg-type]
    raise_by: dict[Knob, int] = {}
    for action in cat.actions:
        if action.knob in CLASSIC_KNOBS and action.delta > 0:
            raise_by[action.knob] = max(raise_by.get(action.knob, 0), action.delta)
    knobs = tuple(k for k in CLASSIC_KNOBS if k in raise_by)
    return SearchSpace(services=cat.services, knobs=knobs,
                       high={k: init_upper + episode_len * raise_by[k] for k in knobs})


class LoadTester:
    """Apply a configuration to ``backend`` and drive ``load`` through it.

    Args:
        backend: the mesh replica (any :class:`~envs.backends.base.Backend`).
        load: the load of every run.
    """

    def __init__(self, backend: Backend, load: LoadSpec) -> None:
        self.backend = backend
        self.load = load
        self.runs = 0

    def measure(self, config: MeshConfig, seed: int) -> Measurement:
        """One :func:`envs.measure.measure` of ``config`` with load seed ``seed`` (counted in
        :attr:`runs`)."""
        measurement = measure(self.backend, config, self.load, seed)
        self.runs += 1
        return measurement


#: ``evaluate(config, k)`` → objective of evaluation number ``k`` (0-based) of a search.
Objective = Callable[[MeshConfig, int], float]


@dataclass
class SearchTrace:
    """Everything a search evaluated, in order.

    Attributes:
        method: the search's name.
        configs: the configuration of each evaluation.
        scores: the objective of each evaluation (one load run each; noisy).
    """

    method: str
    configs: list[MeshConfig] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def record(self, config: MeshConfig, score: float) -> None:
        """Append one evaluation."""
        self.configs.append(config)
        self.scores.append(float(score))

    def incumbent(self, n_evals: int) -> int:
        """Index of the best-scoring evaluation among the first ``n_evals`` (first on ties).

        Raises:
            ValueError: ``n_evals`` < 1 or more than were run.
        """
        if not 1 <= n_evals <= len(self.scores):
            raise ValueError(f"n_evals must be in 1..{len(self.scores)}, got {n_evals}")
        return int(np.argmax(self.scores[:n_evals]))

    def best_so_far(self) -> np.ndarray:
        """The running maximum of the scores (the search's own view of its progress)."""
        return np.maximum.accumulate(np.asarray(self.scores, dtype=np.float64))


def _check_budget(n_evals: int) -> None:
    if isinstance(n_evals, bool) or not isinstance(n_evals, int) or n_evals < 1:
        raise ValueError(f"n_evals must be a positive int, got {n_evals!r}")


def random_search(evaluate: Objective, space: SearchSpace, n_evals: int, seed: int,
                  start: MeshConfig | None = None) -> SearchTrace:
    """Evaluate ``start`` (if given) then log-uniform random points, ``n_evals`` in all."""
    _check_budget(n_evals)
    rng = np.random.default_rng(seed)
    trace = SearchTrace("random search")
    for k in range(n_evals):
        config = start if (k == 0 and start is not None) else space.config(space.sample(rng))
        trace.record(config, evaluate(config, k))
    return trace


def tpe_search(evaluate: Objective, space: SearchSpace, n_evals: int, seed: int,
               start: MeshConfig | None = None, n_startup_trials: int = 10) -> SearchTrace:
    """Optuna TPE (seeded, multivariate) over the log values: ``start`` first (enqueued), then
    ``n_startup_trials`` random points, then TPE proposals; ``n_evals`` in all.

    The same seed gives the same trace (given a deterministic ``evaluate``).
    """
    import optuna
    from optuna.distributions import FloatDistribution

    _check_budget(n_evals)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True,
                                             n_startup_trials=n_startup_trials)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    dists = {name: FloatDistribution(*space.log_bounds(name)) for name in space.names}
    if start is not None:
        study.enqueue_trial({name: math.log(v) for name, v in space.point_of(start).items()})
    trace = SearchTrace("TPE")
    for k in range(n_evals):
        trial = study.ask(dists)
        config = space.config({name: math.exp(x) for name, x in trial.params.items()})
        score = evaluate(config, k)
        study.tell(trial, score)
        trace.record(config, score)
    return trace


def local_search(evaluate: Objective, space: SearchSpace, n_evals: int, seed: int,
                 start: MeshConfig, step_log: float = 0.7, mutate_share: float = 0.1,
                 ) -> SearchTrace:
    """(1+1) evolution strategy from ``start``: each candidate multiplies a random
    ``mutate_share`` of the parameters (at least one) by ``exp(N(0, step_log))``; it replaces
    the parent when its score is at least the parent's. ``n_evals`` evaluations, ``start`` first.
    """
    _check_budget(n_evals)
    rng = np.random.default_rng(seed)
    names = space.names
    parent = space.point_of(start)
    trace = SearchTrace("local search")
    parent_score = evaluate(space.config(parent), 0)
    trace.record(space.config(parent), parent_score)
    for k in range(1, n_evals):
        chosen = rng.random(len(names)) < mutate_share
        if not chosen.any():
            chosen[rng.integers(len(names))] = True
        child = dict(parent)
        for i in np.flatnonzero(chosen):
            name = names[i]
            child[name] = space.clip(name, parent[name] * math.exp(rng.normal(0.0, step_log)))
        config = space.config(child)
        score = evaluate(config, k)
        trace.record(config, score)
        if score >= parent_score:
            parent, parent_score = child, score
    return trace





#: The rule-based controller's parameter grid: each candidate draws every parameter uniformly
#: from its list (``slow_p99_ms`` 1e9 switches the slow-callee rule off, ``admit_p99_ms`` 1e9
#: the gateway's admission rule).
RULE_PARAM_GRID: dict[str, tuple[float, ...]] = {
    "uo_threshold": (0.0, 0.005, 0.01, 0.03, 0.1),
    "increase": (5, 10, 20, 50, 100),
    "headroom": (1.0, 1.5, 2.0, 3.0),
    "uf_threshold": (0.0, 0.01, 0.05),
    "timeout_factor": (2.0, 4.0, 10.0),
    "slow_p99_ms": (500.0, 1000.0, 2000.0, 5000.0, 1e9),
    "slow_demand": (2.0, 4.0, 8.0, 16.0),
    "decrease": (0.25, 0.5, 0.75),
    "min_connections": (1, 2, 4, 8),
    "retry_threshold": (0.01, 0.05, 0.2),
    "admit_p99_ms": (300.0, 500.0, 1000.0, 2000.0, 1e9),
    "admit_limit": (8, 12, 16, 24, 32),
    "admit_increase": (1, 2, 4, 8),
    "admit_release": (0.25, 0.5, 0.75),
}
#: The grid's parameters that are counts (drawn as ints).
_INT_RULE_PARAMS = ("increase", "min_connections", "admit_limit", "admit_increase")


@dataclass
class RuleTuning:
    """The outcome of :func:`tune_rule_params`.

    Attributes:
        candidates: the parameter sets tried (the defaults first).
        scores: each candidate's mean summed episode score on the search scenarios.
        finalists: indices of the candidates re-scored on the selection scenarios.
        selection_scores: their mean summed episode score there.
        best: the winner.
        episodes: episodes played in all.
    """

    candidates: list[Any]
    scores: list[float]
    finalists: list[int]
    selection_scores: list[float]
    best: Any
    episodes: int


def tune_rule_params(backend: Backend, n_candidates: int, n_scenarios: int, seed: int,
                     top_k: int = 4, n_selection: int = 32, episode_len: int = 20,
                     step_s: float = 10.0, catalogue: Any = None) -> RuleTuning:
    """A seeded random search over :data:`RULE_PARAM_GRID` for the rule-based controller on
    TRAINING scenarios: ``n_candidates`` parameter sets (the defaults first), each played
    through the same ``n_scenarios`` scenarios and case seeds (common random numbers); the
    ``top_k`` best by mean summed episode score are re-played on ``n_selection`` other TRAINING
    scenarios and the best mean there wins (one noisy ranking is partly luck). ``catalogue``
    (an :class:`envs.actions.ActionCatalogue`; default ``MeshEnv``'s) lays out the observation
    the controller reads and names the services it tunes — the held-out evaluation's."""
    from envs.actions import make_catalogue
    from envs.scenarios import TRAINING, draw
    from envs.settings import DEFAULT_ENV_CONFIG
    from rl.controllers import RuleBasedController, RuleParams
    from rl.evaluation.closed_loop import run_scenario

    rng = np.random.default_rng(seed)
    scenario_rng = np.random.default_rng([seed, 1])
    search = [(draw(TRAINING, scenario_rng, episode_len), 9_000_000 + i)
              for i in range(n_scenarios)]
    selection = [(draw(TRAINING, scenario_rng, episode_len), 9_100_000 + i)
                 for i in range(n_selection)]
    candidates = [RuleParams()]
    while len(candidates) < n_candidates:
        point = {k: v[int(rng.integers(len(v)))] for k, v in RULE_PARAM_GRID.items()}
        for name in _INT_RULE_PARAMS:
            point[name] = int(point[name])
        candidates.append(RuleParams(**point))
    episodes = 0
    catalogue = catalogue or make_catalogue(DEFAULT_ENV_CONFIG["catalogue"])

    def score(params: Any, cases: list[tuple[Any, int]]) -> float:
        nonlocal episodes
        runs = [run_scenario(backend, sc, RuleBasedController(params, catalogue), s, step_s,
                             catalogue=catalogue)
                for sc, s in cases]
        episodes += len(runs)
        return float(np.mean([r.summed_score for r in runs]))

    scores = [score(c, search) for c in candidates]
    finalists = [int(i) for i in np.argsort(scores, kind="stable")[::-1][:top_k]]
    selection_scores = [score(candidates[i], selection) for i in finalists]
    best = candidates[finalists[int(np.argmax(selection_scores))]]
    return RuleTuning(candidates, scores, finalists, selection_scores, best, episodes)


__all__ = ["RULE_PARAM_GRID", "LoadTester", "Objective", "RuleTuning", "SearchSpace",
           "SearchTrace", "local_search", "random_search", "reachable_space", "tpe_search",
           "tune_rule_params"]
