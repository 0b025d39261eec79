"""Steady load from the notebook's random start: the share of the gap to the best static
configuration each method closes (``experiments/evaluate.py --steady``).

Issue 12's targets "steady load, random start: ≥ 90 % of the gap closed within 20 steps, above
TPE at the same 21 runs" and "40 users (outside training): ≥ 80 %", measured under the v1
objective (open-loop Poisson sessions at a rate, the SLO score :func:`envs.reward.evaluation_score`
= good % − 100) on the simulator.

**Cases** (:func:`steady_cases`), two families, each case a steady open load (no fault) from the
notebook's random draw (``classic_random``: every classic knob of every service the policy tunes
in ``1..init_upper``, redrawn until the front-end answers):

* ``in_range`` — the rate drawn as training's ``steady`` family draws it
  (:data:`envs.scenarios.TRAINING`, 0.5–1.75 × :data:`envs.sockshop.slo.NOMINAL_RATE_RPS`);
* ``out_of_range`` — :data:`OUT_OF_RANGE_FACTOR` (4) × nominal = 240 req/s, above any rate a
  training scenario offers (at most 3 × nominal: a ×3 step from 1 ×; ``tests`` check it over
  thousands of draws): the v1 counterpart of the notebook's "40 users".

Case ``i`` of a family has case seed :data:`FAMILY_SEED_BASE` ``[family] + i`` (5 000 000+ and
5 100 000+: away from pg_sweep's training, validation and test seeds, the classic evaluation's
3 000 000+, the held-out scenarios' 4 000 000+ and the rule tuning's 9 000 000+; the case
seed draws the random start and the episode's load seeds exactly as
:func:`rl.evaluation.closed_loop.run_scenario` and ``MeshEnv.reset(seed=...)`` do, and — in its
own stream — the in-range rate).

**Methods**, each leaving one configuration per case:

* ``start`` — the random draw itself;
* ``policy`` — what the greedy policy leaves after one episode of ``episode_len`` steps from the
  start (:class:`rl.controllers.PolicyController` through ``run_scenario``: reset run + steps);
* ``tpe_<1+episode_len>`` — Optuna TPE (:func:`rl.baselines.tpe_search`, seed = case seed) with
  as many load runs as the policy's episode (the start first, then ``episode_len`` proposals),
  on the episode's own load seeds, over the policy's knob space (:func:`agent_space`); its best
  run's configuration;
* ``istio_default`` and ``gateway_throttle`` (:class:`rl.controllers.GatewayThrottle`) — what
  doing nothing special gives;
* ``oracle`` — the best static configuration for the rate: a TPE search of ``oracle_runs`` (201)
  load runs (Istio's defaults first; seed = case seed + :data:`ORACLE_SEED_OFFSET`; its own
  search load seeds), then the best on the fresh seeds of its :data:`ORACLE_TOP` best runs'
  configurations, Istio's defaults, the throttle, **and every method's configuration above** —
  so the oracle is at least as good as every method by construction (its source is reported;
  choosing the best of several noisy means biases it up a little, which makes every method's
  gap closed conservative).

**Scoring**: every configuration of a case is measured on the same ``fresh_seeds`` (K) fresh
load seeds of its rate (:func:`envs.measure.measure`, ``rate × step_s`` requests per run;
common random numbers; never used by a search), its score the mean evaluation score over them;
good %, goodput, failure %, mean latency and p99 (over all requests) are reported beside it.
Load seeds follow :mod:`rl.evaluation.seeds`' layout: fresh ``FRESH_SEED_BASE``, oracle search
``SEARCH_SEED_BASE``, case index :data:`FAMILY_INDEX_BASE` ``[family] + i``.

**Gap closed** (:func:`rl.evaluation.stats.gap_closed`): ``(score − start) / (oracle − start)``
per case; a case whose oracle is not better than its start by more than ``min_gap``
(:data:`MIN_GAP`, score points) is left out of the ratio and counted. Per family and method: the
median over cases with a seeded 95 % bootstrap interval (:func:`gap_summary`), and the policy
against TPE at the same budget case by case (:func:`policy_vs_search`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.actions import (
    CLASSIC_KNOBS,
    LADDERS,
    ActionCatalogue,
    MeshConfig,
    istio_default_config,
)
from envs.backends import make_backend
from envs.backends.base import Backend, LoadSpec
from envs.measure import Measurement, measure
from envs.scenarios import TRAINING, Scenario, steady
from envs.sockshop.slo import NOMINAL_RATE_RPS
from rl.baselines import SearchSpace, reachable_space, tpe_search
from rl.controllers import GatewayThrottle, PolicyController
from rl.evaluation.closed_loop import ScenarioRun, config_change, run_scenario, scenario_start
from rl.evaluation.scenario_tables import METRICS, fmt_ci, wilson_ci95  # keys: Measurement's
from rl.evaluation.seeds import FRESH_SEED_BASE, SEARCH_SEED_BASE, load_seeds
from rl.evaluation.stats import BOOTSTRAP_RESAMPLES, gap_closed

IN_RANGE = "in_range"
OUT_OF_RANGE = "out_of_range"
FAMILIES: tuple[str, ...] = (IN_RANGE, OUT_OF_RANGE)
#: Case ``i`` of a family has case seed ``FAMILY_SEED_BASE[family] + i`` (module docstring).
FAMILY_SEED_BASE: dict[str, int] = {IN_RANGE: 5_000_000, OUT_OF_RANGE: 5_100_000}
#: Case ``i`` of a family takes its fresh and oracle-search load seeds from case index
#: ``FAMILY_INDEX_BASE[family] + i`` of :func:`rl.evaluation.seeds.load_seeds` (the classic
#: evaluation uses indices below 1000).
FAMILY_INDEX_BASE: dict[str, int] = {IN_RANGE: 1000, OUT_OF_RANGE: 2000}
#: The out-of-range rate, × nominal (training offers at most 3 ×).
OUT_OF_RANGE_FACTOR = 4.0
#: The highest rate any TRAINING scenario offers, × nominal (a ×3 step from 1 ×).
TRAINING_MAX_FACTOR = 3.0
#: Stream of ``numpy.random.default_rng([case seed, RATE_STREAM])``, the in-range rate's draw
#: (the case seed's own stream draws the start and load seeds, as in ``run_scenario``).
RATE_STREAM = 0x7261_7465
#: The oracle's TPE seed is the case seed + this (the budget TPE's is the case seed).
ORACLE_SEED_OFFSET = 50_000
#: How many of the oracle search's best runs are re-measured on the fresh seeds.
ORACLE_TOP = 3
#: Least oracle − start gap (score points, i.e. % of offered requests) for a case to count.
MIN_GAP = 1.0
#: Targets of issue 12: median gap closed per family.
TARGETS: dict[str, float] = {IN_RANGE: 0.90, OUT_OF_RANGE: 0.80}
#: Defaults of the evaluation (``experiments/evaluate.py --steady``).
DEFAULT_CASES: dict[str, int] = {IN_RANGE: 16, OUT_OF_RANGE: 8}
DEFAULT_FRESH_SEEDS = 10
DEFAULT_ORACLE_RUNS = 201

@dataclass(frozen=True)
class SteadyCase:
    """One case: a steady open load from the notebook's random start.

    Attributes:
        family: ``in_range`` or ``out_of_range``.
        index: its index within the family.
        seed: the case seed (random start, episode load seeds; in-range: the rate).
        scenario: the steady scenario (``classic_random`` start), ``episode_len`` steps.
    """

    family: str
    index: int
    seed: int
    scenario: Scenario

    @property
    def rate_rps(self) -> float:
        """The offered rate, req/s."""
        return self.scenario.rates[0]

    @property
    def load_index(self) -> int:
        """Its case index in :func:`rl.evaluation.seeds.load_seeds`' layout."""
        return FAMILY_INDEX_BASE[self.family] + self.index


def steady_cases(family: str, n: int, episode_len: int) -> list[SteadyCase]:
    """The first ``n`` cases of ``family`` (module docstring), ``episode_len`` steps each.

    Raises:
        ValueError: an unknown family, ``n`` < 0 or ``episode_len`` < 1.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown steady family {family!r} (known: {', '.join(FAMILIES)})")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    shape = TRAINING.family("steady").loads[0]
    cases = []
    for i in range(n):
        seed = FAMILY_SEED_BASE[family] + i
        if family == IN_RANGE:
            rates, _ = shape.sample(np.random.default_rng([seed, RATE_STREAM]), episode_len)
            rate = rates[0]
        else:
            rate = OUT_OF_RANGE_FACTOR * NOMINAL_RATE_RPS
        scenario = steady(rate, episode_len, "classic_random",
                          name=f"{family}{i:02d} steady {rate:g}rps")
        cases.append(SteadyCase(family, i, seed, scenario))
    return cases


def agent_space(catalogue: ActionCatalogue, init_upper: int = 100,
                episode_len: int = 20) -> SearchSpace:
    """The knob space the policy acts in, for the searches: the catalogue's services and
    classic knobs, each an integer in ``1..high``. ``classic`` / ``extended``:
    :func:`rl.baselines.reachable_space`; ``ladder`` / ``setpoint``: ``high`` = the knob's top
    rung (:data:`envs.actions.LADDERS`; "unlimited" is INT32_MAX), or ``init_upper`` if larger.
    """
    if catalogue.name in ("classic", "extended"):
        return reachable_space(catalogue.name, catalogue.services, init_upper, episode_len)
    moved = {a.knob for a in catalogue.actions if a.knob is not None}
    knobs = tuple(k for k in CLASSIC_KNOBS if k in moved)
    return SearchSpace(services=catalogue.services, knobs=knobs,
                       high={k: max(max(LADDERS[k]), init_upper) for k in knobs})


def config_key(config: MeshConfig) -> tuple:
    """A hashable key of a configuration (services without a pool dropped)."""
    return tuple(sorted((s, p) for s, p in config.items() if p is not None))


@dataclass(frozen=True)
class FreshScore:
    """One configuration measured on a case's fresh load seeds.

    Attributes:
        config: the configuration (service → pool).
        runs: one measurement per fresh seed, in seed order.
    """

    config: MeshConfig
    runs: tuple[Measurement, ...]

    @property
    def scores(self) -> list[float]:
        """Each run's evaluation score; a run the backend could not complete counts
        :data:`envs.measure.FAILED_RUN_SCORE`."""
        return [m.objective for m in self.runs]

    @property
    def score(self) -> float:
        """The mean of :attr:`scores` (good % − 100; higher is better)."""
        return float(np.mean(self.scores))

    def mean(self, attr: str) -> float:
        """Mean of a :class:`~envs.measure.Measurement` metric over the runs that measured it
        (NaN if none did)."""
        values = [getattr(m, attr) for m in self.runs if getattr(m, attr) is not None]
        return float(np.mean(values)) if values else math.nan

    def to_dict(self) -> dict[str, Any]:
        """Plain data: the change from Istio's defaults, score, metrics, per-seed scores."""
        return {"config": config_change(istio_default_config(), self.config) or "(defaults)",
                "score": self.score, **{key: self.mean(key) for key, _, _ in METRICS},
                "scores": self.scores, "failed_runs": sum(m.eval_score is None for m in self.runs)}


@dataclass
class CaseResult:
    """Every method on one case.

    Attributes:
        case: the case.
        fresh_seeds: the load seeds every configuration was scored on.
        episode_seeds: the episode's load seeds (policy and budget TPE).
        scores: method → its configuration's :class:`FreshScore` (``start``, ``policy``, the
            budget TPE, ``istio_default``, ``gateway_throttle``, ``oracle``).
        oracle_source: which candidate the oracle is (``tpe_201#k`` = the search's k-th best
            run, or a method's name).
        policy_run: the policy's episode.
        tpe_name: the budget TPE's method name (``tpe_21``).
        min_gap: the least gap for the case to count (score points).
    """

    case: SteadyCase
    fresh_seeds: list[int]
    episode_seeds: list[int]
    scores: dict[str, FreshScore]
    oracle_source: str
    policy_run: ScenarioRun
    tpe_name: str
    min_gap: float = MIN_GAP

    @property
    def gap(self) -> float:
        """oracle − start, score points."""
        return self.scores["oracle"].score - self.scores["start"].score

    def gaps(self) -> dict[str, float | None]:
        """Gap closed of every method (:func:`case_gaps`)."""
        return case_gaps({m: s.score for m, s in self.scores.items()}, self.min_gap)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (results.json)."""
        return {"family": self.case.family, "index": self.case.index, "seed": self.case.seed,
                "scenario": self.case.scenario.name, "rate_rps": self.case.rate_rps,
                "fresh_seeds": self.fresh_seeds, "episode_seeds": self.episode_seeds,
                "oracle_source": self.oracle_source, "gap": self.gap,
                "gap_closed": self.gaps(),
                "methods": {m: s.to_dict() for m, s in self.scores.items()},
                "policy_episode": self.policy_run.to_dict()}


def case_gaps(scores: Mapping[str, float], min_gap: float = MIN_GAP) -> dict[str, float | None]:
    """Per method (every key but ``start`` and ``oracle``) the share of the start → oracle gap
    its score closed; all None when ``oracle - start <= min_gap`` (the case does not count)."""
    return {m: gap_closed(s, scores["start"], scores["oracle"], min_gap)
            for m, s in scores.items() if m not in ("start", "oracle")}


def median_ci95(values: Sequence[float], seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the median of ``values`` (cases resampled with
    replacement, :data:`rl.evaluation.stats.BOOTSTRAP_RESAMPLES` times, seeded); NaN with
    fewer than two values."""
    arr = np.asarray(values, dtype=np.float64)
    if len(arr) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    medians = np.median(arr[rng.integers(0, len(arr), (BOOTSTRAP_RESAMPLES, len(arr)))], axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return float(low), float(high)


@dataclass(frozen=True)
class GapSummary:
    """A method's gap closed over the cases of a family.

    Attributes:
        values: the counted cases' gap closed (share: 1 = as good as the oracle).
        left_out: cases whose oracle was not better than the start by more than ``min_gap``.
        median: median of ``values`` (NaN with none).
        ci95: the seeded bootstrap interval of the median (NaN with fewer than two).
    """

    values: tuple[float, ...]
    left_out: int
    median: float
    ci95: tuple[float, float]

    @property
    def n(self) -> int:
        """Counted cases."""
        return len(self.values)

    def cell(self) -> str:
        """``73 % [60 %, 88 %]`` (percent of the gap), ``—`` with no counted case."""
        if not self.values:
            return "—"
        if math.isnan(self.ci95[0]):
            return pct(self.median)
        return f"{pct(self.median)} [{pct(self.ci95[0])}, {pct(self.ci95[1])}]"


def pct(share: float, sign: bool = False) -> str:
    """A share as whole percent, ``73 %`` (``+12 %`` with ``sign``; a share that rounds to
    zero is ``0 %``, never ``-0 %``; NaN is ``—``)."""
    if math.isnan(share):
        return "—"
    return f"{round(100 * share):{'+' if sign else ''}d} %"


def gap_summary(gaps: Sequence[float | None], seed: int = 0) -> GapSummary:
    """Median and bootstrap interval of the gap closed over cases; None entries (no gap to
    close) are left out and counted."""
    values = tuple(float(g) for g in gaps if g is not None)
    median = float(np.median(values)) if values else math.nan
    return GapSummary(values, sum(g is None for g in gaps), median, median_ci95(values, seed))


def policy_vs_search(policy: Sequence[float], search: Sequence[float],
                     policy_gaps: Sequence[float | None], search_gaps: Sequence[float | None],
                     seed: int = 0) -> dict[str, Any]:
    """The policy against a search, case by case: wins on the fresh score (a tie counts half)
    with the 95 % Wilson interval, and the median of the per-case difference of gap closed
    (counted cases) with its bootstrap interval."""
    if len(policy) != len(search) or len(policy_gaps) != len(search_gaps):
        raise ValueError("policy and search need one value per case each")
    wins = sum(1.0 if p > s else 0.5 if p == s else 0.0
               for p, s in zip(policy, search, strict=True))
    diffs = [p - s for p, s in zip(policy_gaps, search_gaps, strict=True)
             if p is not None and s is not None]
    n = len(policy)
    return {"wins": wins, "n": n, "rate": wins / n if n else math.nan, "ci95": wilson_ci95(wins, n),
            "gap_diff_median": float(np.median(diffs)) if diffs else math.nan,
            "gap_diff_ci95": median_ci95(diffs, seed)}


def episode_draws(backend: Backend, scenario: Scenario, seed: int, services: tuple[str, ...],
                  episode_len: int, init_upper: int = 100) -> tuple[MeshConfig, list[int]]:
    """The case's random start and its ``episode_len + 1`` load seeds, drawn from
    ``numpy.random.default_rng(seed)`` in :func:`rl.evaluation.closed_loop.run_scenario`'s order
    (start first, redrawn until healthy; then one load seed per run)."""
    rng = np.random.default_rng(seed)
    start = scenario_start(backend, scenario, rng, services, init_upper)
    return start, [int(rng.integers(0, 2**31 - 1)) for _ in range(episode_len + 1)]


class _Scorer:
    """Fresh scores of configurations on one case (cached: the simulator is deterministic
    given configuration and load seed)."""

    def __init__(self, backend: Backend, load: LoadSpec, seeds: Sequence[int]) -> None:
        self.backend, self.load, self.seeds = backend, load, list(seeds)
        self._cache: dict[tuple, FreshScore] = {}

    def __call__(self, config: MeshConfig) -> FreshScore:
        key = config_key(config)
        if key not in self._cache:
            self._cache[key] = FreshScore(dict(config), tuple(
                measure(self.backend, config, self.load, s) for s in self.seeds))
        return self._cache[key]


def evaluate_case(backend: Backend, case: SteadyCase, module: Any, catalogue: ActionCatalogue,
                  space: SearchSpace, step_s: float, episode_len: int, fresh_seeds: int,
                  oracle_runs: int, init_upper: int = 100, min_gap: float = MIN_GAP
                  ) -> CaseResult:
    """Every method on one case (module docstring).

    Raises:
        RuntimeError: the policy's episode did not run on the load seeds the case draws (the
            budget TPE would not be comparable).
    """
    scenario = case.scenario
    load = scenario.load(0, step_s)
    start, episode_seeds = episode_draws(backend, scenario, case.seed, catalogue.services,
                                         episode_len, init_upper)
    run = run_scenario(backend, scenario, PolicyController(module, catalogue), case.seed,
                       step_s, episode_len, catalogue, init_upper)
    ran = [s.load_seed for s in run.steps]
    if any(r is not None and r != e for r, e in zip(ran, episode_seeds, strict=True)):
        raise RuntimeError(f"{scenario.name}: the policy's episode ran load seeds {ran}, the "
                           f"case draws {episode_seeds}")
    budget = episode_len + 1
    tpe = tpe_search(lambda c, k: measure(backend, c, load, episode_seeds[k]).objective,
                     space, budget, case.seed, start=start)
    oracle_seeds = load_seeds(SEARCH_SEED_BASE, case.load_index, oracle_runs)
    search = tpe_search(lambda c, k: measure(backend, c, load, oracle_seeds[k]).objective,
                        space, oracle_runs, case.seed + ORACLE_SEED_OFFSET,
                        start=istio_default_config())
    fresh = load_seeds(FRESH_SEED_BASE, case.load_index, fresh_seeds)
    if set(fresh) & (set(episode_seeds) | set(oracle_seeds)):
        raise RuntimeError(f"{scenario.name}: a fresh load seed is also a search's")
    scorer = _Scorer(backend, load, fresh)
    tpe_name = f"tpe_{budget}"
    methods = {"start": start, "policy": run.final_config,
               tpe_name: tpe.configs[tpe.incumbent(budget)],
               "istio_default": istio_default_config(),
               "gateway_throttle": GatewayThrottle().config}
    scores = {m: scorer(c) for m, c in methods.items()}
    order = np.argsort(search.scores, kind="stable")[::-1][:ORACLE_TOP]
    candidates = [(f"tpe_{oracle_runs}#{r + 1}", search.configs[i]) for r, i in enumerate(order)]
    candidates += list(methods.items())
    fresh_of = [scorer(c) for _, c in candidates]
    best = int(np.argmax([f.score for f in fresh_of]))  # first on ties: the search's
    scores["oracle"] = fresh_of[best]
    return CaseResult(case, fresh, episode_seeds, scores, candidates[best][0], run, tpe_name,
                      min_gap)


@dataclass
class SteadyGapResult:
    """The whole evaluation.

    Attributes:
        cases: family → its case results, in case order.
        episode_len, step_s, fresh_seeds, oracle_runs, min_gap: the settings.
        catalogue: the policy's catalogue name; ``space_dim`` the searches' parameters.
        wall_s: seconds it took.
    """

    cases: dict[str, list[CaseResult]]
    episode_len: int
    step_s: float
    fresh_seeds: int
    oracle_runs: int
    min_gap: float
    catalogue: str
    space_dim: int
    wall_s: float = 0.0


def evaluate_steady(module: Any, catalogue: ActionCatalogue, n_cases: Mapping[str, int],
                    episode_len: int, step_s: float = 10.0,
                    fresh_seeds: int = DEFAULT_FRESH_SEEDS,
                    oracle_runs: int = DEFAULT_ORACLE_RUNS, init_upper: int = 100,
                    min_gap: float = MIN_GAP, log: Callable[[str], None] = print
                    ) -> SteadyGapResult:
    """Every case of every family in ``n_cases`` (family → number of cases) on one simulator;
    one log line per case.

    Raises:
        ValueError: a size below 1 (fresh seeds, oracle runs) or above the seed layout's stride,
            or an unknown family.
    """
    if fresh_seeds < 1 or oracle_runs < 1:
        raise ValueError(f"fresh_seeds and oracle_runs must be >= 1, got {fresh_seeds}, "
                         f"{oracle_runs}")
    t0 = time.monotonic()
    space = agent_space(catalogue, init_upper, episode_len)
    plans = {f: steady_cases(f, n, episode_len) for f, n in n_cases.items()}
    for cases in plans.values():  # every load seed range fits its stride before anything runs
        for c in cases[-1:]:
            load_seeds(FRESH_SEED_BASE, c.load_index, fresh_seeds)
            load_seeds(SEARCH_SEED_BASE, c.load_index, oracle_runs)
    backend = make_backend("sim")
    out: dict[str, list[CaseResult]] = {}
    try:
        for family, cases in plans.items():
            out[family] = []
            for case in cases:
                t = time.monotonic()
                r = evaluate_case(backend, case, module, catalogue, space, step_s, episode_len,
                                  fresh_seeds, oracle_runs, init_upper, min_gap)
                out[family].append(r)
                gaps = r.gaps()
                log(f"[steady] {case.scenario.name} (seed {case.seed}): "
                    + ", ".join(f"{m} {s.score:.1f}" for m, s in r.scores.items())
                    + f"; oracle from {r.oracle_source}; policy gap closed "
                    + (f"{gaps['policy']:.0%}" if gaps["policy"] is not None else "n/a")
                    + f" ({time.monotonic() - t:.1f} s)")
    finally:
        backend.close()
    return SteadyGapResult(out, episode_len, step_s, fresh_seeds, oracle_runs, min_gap,
                           catalogue.name, space.dim, time.monotonic() - t0)


def family_summary(results: Sequence[CaseResult], seed: int = 0) -> dict[str, Any]:
    """Per method its gap summary and, per metric, the per-case values; the policy against the
    budget TPE."""
    if not results:
        raise ValueError("no case to summarise")
    tpe = results[0].tpe_name
    methods = list(results[0].scores)
    per_gaps = [r.gaps() for r in results]
    gaps = {m: gap_summary([g[m] for g in per_gaps], seed) for m in per_gaps[0]}
    metrics = {m: {"score": [r.scores[m].score for r in results],
                   **{k: [r.scores[m].mean(k) for r in results] for k, _, _ in METRICS}}
               for m in methods}
    versus = policy_vs_search([r.scores["policy"].score for r in results],
                              [r.scores[tpe].score for r in results],
                              [g["policy"] for g in per_gaps], [g[tpe] for g in per_gaps], seed)
    sources: dict[str, int] = {}
    for r in results:
        key = r.oracle_source.split("#")[0]
        sources[key] = sources.get(key, 0) + 1
    return {"methods": methods, "gaps": gaps, "metrics": metrics, "policy_vs_tpe": versus,
            "tpe": tpe, "oracle_sources": sources, "left_out": gaps["policy"].left_out}


FAMILY_TITLES: dict[str, str] = {
    IN_RANGE: "steady load in training's range (0.5–1.75 × nominal), random start",
    OUT_OF_RANGE: f"steady load at {OUT_OF_RANGE_FACTOR:g} × nominal "
                  f"({OUT_OF_RANGE_FACTOR * NOMINAL_RATE_RPS:g} req/s; training offers at most "
                  f"{TRAINING_MAX_FACTOR:g} ×), random start",
}


def family_markdown(family: str, results: Sequence[CaseResult], seed: int = 0) -> list[str]:
    """The tables of one family: per method gap closed and what users got; the target line;
    per case scores and gap closed."""
    s = family_summary(results, seed)
    tpe = s["tpe"]
    gaps, metrics = s["gaps"], s["metrics"]
    counted = gaps["policy"].n
    rates = [r.case.rate_rps for r in results]
    lo, hi = min(rates), max(rates)
    rate = f"{lo:g} req/s" if lo == hi else f"{lo:g}–{hi:g} req/s"
    md = [f"**{family}** — {FAMILY_TITLES[family]}: {len(results)} case(s) (seeds "
          f"{results[0].case.seed}..{results[-1].case.seed}, {rate}); {counted} counted, "
          f"{s['left_out']} left out (oracle not better than the start by more than "
          f"{results[0].min_gap:g} points).", "",
          "| method | gap closed, median [95 % CI] | score | "
          + " | ".join(h for _, h, _ in METRICS) + " |",
          "|---|---:|---:|" + "---:|" * len(METRICS)]
    for m in s["methods"]:
        by_definition = {"start": "0 % (by definition)", "oracle": "100 % (by definition)"}
        gap = by_definition.get(m) or gaps[m].cell()
        cells = [gap, fmt_ci(metrics[m]["score"], ".2f")]
        cells += [fmt_ci(metrics[m][k], spec) for k, _, spec in METRICS]
        md.append(f"| {m} | " + " | ".join(cells) + " |")
    v = s["policy_vs_tpe"]
    target = TARGETS[family]
    med = gaps["policy"].median
    if math.isnan(med):
        verdict = "not measurable (no case counted)"
    elif med >= target:
        verdict = "met"
    else:
        verdict = f"missed by {100 * (target - med):.0f} points"
    diff = v["gap_diff_median"]
    dlow, dhigh = v["gap_diff_ci95"]
    diff_txt = "—" if math.isnan(diff) else (
        pct(diff, True) if math.isnan(dlow)
        else f"{pct(diff, True)} [{pct(dlow, True)}, {pct(dhigh, True)}]")
    md += ["", f"Target: policy median gap closed ≥ {pct(target)} — {gaps['policy'].cell()}: "
           f"{verdict}. Policy against {tpe} (the same {results[0].case.scenario.episode_len + 1}"
           f" load runs): better fresh score in {v['wins']:g} / {v['n']} cases "
           f"({pct(v['rate'])} [{pct(v['ci95'][0])}, {pct(v['ci95'][1])}], Wilson); median "
           f"per-case difference of gap closed {diff_txt}. The oracle came from: "
           + ", ".join(f"{k} {n}" for k, n in s["oracle_sources"].items()) + ".", "",
           "Per case (fresh score, mean over the fresh seeds; gap closed in %):", "",
           "| case | seed | req/s | start | policy | " + tpe + " | istio_default | "
           "gateway_throttle | oracle | gap closed: policy | " + tpe + " | istio_default | "
           "gateway_throttle | oracle from | policy's changes |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in results:
        g = r.gaps()
        changed = sum(1 for st in r.policy_run.steps[1:] if st.change)
        md.append(f"| {r.case.scenario.name} | {r.case.seed} | {r.case.rate_rps:g} | "
                  + " | ".join(f"{r.scores[m].score:.1f}" for m in
                               ("start", "policy", tpe, "istio_default", "gateway_throttle",
                                "oracle"))
                  + " | " + " | ".join("—" if g[m] is None else pct(g[m]) for m in
                                       ("policy", tpe, "istio_default", "gateway_throttle"))
                  + f" | {r.oracle_source} | {changed} / {r.policy_run.episode_len} |")
    return md


def report_markdown(result: SteadyGapResult) -> list[str]:
    """The section (lines of markdown): settings, then each family's tables."""
    md = [f"Per case, every configuration is scored on the same {result.fresh_seeds} fresh load "
          f"seeds of the case's rate (mean evaluation score, good % − 100, over {result.step_s:g}"
          f" s runs). Methods: `start` (the notebook's random draw), `policy` (what the greedy "
          f"policy leaves after {result.episode_len} steps), `tpe_{result.episode_len + 1}` "
          f"(Optuna TPE, {result.episode_len + 1} load runs from the start, its best), Istio's "
          f"defaults, the gateway throttle, and `oracle` (best on the fresh seeds of TPE "
          f"with {result.oracle_runs} runs' top {ORACLE_TOP}, Istio's defaults, the throttle and "
          f"every method's configuration). Searches over the policy's knob space "
          f"({result.catalogue} catalogue, {result.space_dim} parameters). Gap closed = (score − "
          f"start) / (oracle − start); median over the counted cases with a 95 % bootstrap CI; "
          f"the other columns: mean over cases [95 % bootstrap CI] of the per-case mean over "
          f"fresh seeds.", ""]
    for family, results in result.cases.items():
        if results:
            md += [*family_markdown(family, results), ""]
    return md


def results_json(result: SteadyGapResult) -> dict[str, Any]:
    """Every number: settings, per family the summary and every case."""
    out: dict[str, Any] = {"episode_len": result.episode_len, "step_s": result.step_s,
                           "fresh_seeds": result.fresh_seeds, "oracle_runs": result.oracle_runs,
                           "oracle_top": ORACLE_TOP, "min_gap": result.min_gap,
                           "catalogue": result.catalogue, "space_dim": result.space_dim,
                           "wall_s": result.wall_s, "families": {}}
    for family, results in result.cases.items():
        if not results:
            continue
        s = family_summary(results)
        out["families"][family] = {
            "target": TARGETS[family],
            "gap_closed": {m: {"median": g.median, "ci95": list(g.ci95), "n": g.n,
                               "left_out": g.left_out} for m, g in s["gaps"].items()},
            "policy_vs_tpe": s["policy_vs_tpe"], "oracle_sources": s["oracle_sources"],
            "cases": [r.to_dict() for r in results]}
    return out


__all__ = ["DEFAULT_CASES", "DEFAULT_FRESH_SEEDS", "DEFAULT_ORACLE_RUNS", "FAMILIES",
           "FAMILY_INDEX_BASE", "FAMILY_SEED_BASE", "IN_RANGE", "MIN_GAP", "ORACLE_TOP",
           "OUT_OF_RANGE", "OUT_OF_RANGE_FACTOR", "TARGETS", "TRAINING_MAX_FACTOR", "CaseResult",
           "FreshScore", "GapSummary", "SteadyCase", "SteadyGapResult", "agent_space",
           "case_gaps", "episode_draws", "evaluate_case", "evaluate_steady", "family_markdown",
           "family_summary", "gap_summary", "median_ci95", "pct", "policy_vs_search",
           "report_markdown", "results_json", "steady_cases"]
