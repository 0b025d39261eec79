"""The objective: how good one load run through the mesh was. The one place it lives.

Two objectives, each an object that scores a :class:`~envs.backends.report.LoadReport` (higher is
better, 0 is perfect) and names its fixed evaluation counterpart:

* :class:`SloObjective` (the default): the share of the **offered** requests that users got
  served within their endpoint's latency objective (:mod:`envs.sockshop.slo`),

      score = -100 · (failed + abandoned + late_weight · late) / offered

  with *failed* the requests that got an error, *abandoned* the requests never sent because their
  session gave up (open loop: its ``GET /catalogue`` failed), *late* the successful requests
  slower than their SLO and *offered* = recorded + abandoned. With ``late_weight`` 1 it is
  ``good % - 100``. Under an open load the offered requests do not depend on the configuration,
  so a configuration that serves fewer requests (a throttle failing them) or serves them later
  scores worse; nothing is won by serving less. ``late_weight`` in [0, 1] says how much a late
  answer costs against a failed one (the sweep's "SLO strictness").
* :class:`ClassicObjective`: the notebook's score, kept so its results can be reproduced:
  ``-(Σ endpoint failure % + 10000 · Σ p99 latencies in s)``, written as

      score(report, w) = -N · ( failure % of all requests
                                + w.latency_weight · traffic-weighted mean endpoint p99 in unit )

  with ``N`` = :data:`N_ENDPOINTS` = 18. It has no throughput term: under the notebook's
  closed loop (no think time, a fixed request count) a throttle that serves 17 % fewer requests
  per second at a 21 % higher mean latency scores *better* than Istio's defaults (measured on
  the simulator, issue 12), which is why it is no longer the default.

:func:`evaluation_score` is the SLO objective with ``late_weight`` 1, fixed once for the project,
so runs trained with different weights are ranked on one scale; :func:`classic_score` and
:data:`EVALUATION_WEIGHTS` are the classic family's. :class:`StepReward` turns an episode's scores
into ``MeshEnv``'s per-step rewards (the change of the score or the score itself, and a penalty
for a step that left the mesh unhealthy).

**The classic score's aggregation.** When all 18 endpoints saw requests, at one failure rate and
one p99, it is the notebook's ``Σ_e failure %(e) + w · Σ_e p99(e)``, so weights keep the
notebook's meaning: points per unit of *one endpoint's* p99; one failure percentage point of one
endpoint costs 1 point. Plain sums over the report's endpoints would score a shop whose
catalogue is broken — most endpoints then see no request, since the load test aborts its loop —
*better* than a healthy one (simulator: -428 against -494 with plain sums; -1953 against -682
with this score). Failing fast still trades against latency: on the simulator the crossover is
near 0.36 points per ms (20 users × 80 requests); the notebook's 10 per ms is far above it,
:data:`EVALUATION_WEIGHTS` below it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

from envs.backends.report import LoadReport
from envs.sockshop import endpoint_names

#: The number of Locust request names of the reference load test: the score's fixed scale.
N_ENDPOINTS = len(endpoint_names())

LatencyUnit = Literal["s", "ms"]
LATENCY_UNITS: tuple[str, ...] = ("s", "ms")
_MS_PER_UNIT: dict[str, float] = {"s": 1000.0, "ms": 1.0}


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the score.

    Attributes:
        latency_weight: score points per ``latency_unit`` of endpoint p99 (one failure
            percentage point of one endpoint costs 1 point). Non-negative and finite.
        latency_unit: ``"s"`` or ``"ms"``: the unit p99 latencies are expressed in before
            weighting. The notebook used 10 000 points per second, i.e.
            ``RewardWeights(10_000, "s")`` (= ``RewardWeights(10, "ms")``).
    """

    latency_weight: float
    latency_unit: LatencyUnit = "ms"

    def __post_init__(self) -> None:
        if self.latency_unit not in LATENCY_UNITS:
            raise ValueError(f"latency_unit must be one of {LATENCY_UNITS}, "
                             f"got {self.latency_unit!r}")
        w = self.latency_weight
        if isinstance(w, bool) or not isinstance(w, int | float):
            raise ValueError(f"latency_weight must be a number, got {w!r}")
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"latency_weight must be finite and >= 0, got {w!r}")

    @property
    def points_per_ms(self) -> float:
        """Score points per millisecond of one endpoint's p99."""
        return self.latency_weight / _MS_PER_UNIT[self.latency_unit]


#: The notebook's weights: 10 000 points per second of p99.
CLASSIC_WEIGHTS = RewardWeights(latency_weight=10_000.0, latency_unit="s")

#: Fixed weights of :func:`evaluation_score`: 0.1 point per ms of one endpoint's p99, i.e. one
#: failure percentage point is worth 10 ms of p99. With these weights failing every request
#: (100 points per endpoint) never beats serving them unless that cuts the p99 by over 1 s.
EVALUATION_WEIGHTS = RewardWeights(latency_weight=0.1, latency_unit="ms")


def failure_term(report: LoadReport) -> float:
    """``N`` × the failure percentage of all requests of the run (0..100·N)."""
    return N_ENDPOINTS * report.failure_pct


def mean_p99_ms(report: LoadReport) -> float:
    """The traffic-weighted mean of the endpoints' p99 latencies, in ms.

    Each endpoint's p99 is weighted by its share of the run's requests; endpoints without
    requests have no weight.

    Raises:
        ValueError: the report has no requests, or an endpoint saw requests but reports no p99.
    """
    total = report.num_requests
    if total == 0:
        raise ValueError("cannot score a load report with no requests")
    weighted = 0.0
    for e in report.endpoints.values():
        if e.num_requests == 0:
            continue
        if e.p99_ms is None or not math.isfinite(e.p99_ms):
            raise ValueError(f"endpoint {e.name!r} saw {e.num_requests} requests "
                             f"but its p99_ms is {e.p99_ms!r}")
        weighted += e.num_requests * e.p99_ms
    return weighted / total


def latency_term_ms(report: LoadReport) -> float:
    """``N`` × the traffic-weighted mean endpoint p99, in ms (see :func:`mean_p99_ms`)."""
    return N_ENDPOINTS * mean_p99_ms(report)


def classic_score(report: LoadReport, weights: RewardWeights) -> float:
    """``-N · (failure % of all requests + latency_weight · traffic-weighted mean endpoint p99
    in latency_unit)``; higher is better, 0 is perfect (no failures, no latency).

    Raises:
        ValueError: the report has no requests at all (nothing to score).
    """
    if report.num_requests == 0:
        raise ValueError("cannot score a load report with no requests")
    return -(failure_term(report) + weights.points_per_ms * latency_term_ms(report))


def classic_evaluation_score(report: LoadReport) -> float:
    """:func:`classic_score` with the fixed :data:`EVALUATION_WEIGHTS`: the classic family's
    weight-independent figure."""
    return classic_score(report, EVALUATION_WEIGHTS)


def slo_score(report: LoadReport, late_weight: float = 1.0) -> float:
    """``-100 · (failed + abandoned + late_weight · late) / offered`` (module docstring).

    Raises:
        ValueError: the report has no offered request, or does not count the requests within
            their SLO.
    """
    offered = report.offered_requests
    if offered == 0:
        raise ValueError("cannot score a load report with no requests")
    good = report.num_good
    failed = report.num_failures
    late = report.num_requests - failed - good
    if late < 0:
        raise ValueError(f"{report.backend or 'backend'} report counts more requests within "
                         f"their SLO ({good}) than successful ones "
                         f"({report.num_requests - failed})")
    return -100.0 * (failed + report.num_abandoned + late_weight * late) / offered


def evaluation_score(report: LoadReport) -> float:
    """The fixed figure every run is ranked by: :func:`slo_score` with ``late_weight`` 1, i.e.
    ``good % - 100`` (0: every offered request served within its SLO)."""
    return slo_score(report, 1.0)


class Objective(Protocol):
    """What ``MeshEnv`` maximises: a score of one run and its family's fixed evaluation."""

    name: ClassVar[str]

    @property
    def worst(self) -> float:
        """The score of a run in which every offered request failed: the default penalty of a
        step that left the mesh unhealthy."""
        ...

    def score(self, report: LoadReport) -> float:
        """The run's score (higher is better, 0 is perfect)."""
        ...

    def evaluation(self, report: LoadReport) -> float:
        """The family's fixed, weight-independent score of the run (to rank trials by)."""
        ...


@dataclass(frozen=True)
class SloObjective:
    """The default objective: requests served within their SLO among those offered (module doc).

    Attributes:
        late_weight: cost of a late (successful, beyond its SLO) request relative to a failed
            one, in [0, 1]: a late answer is never worse than none.
    """

    late_weight: float = 1.0
    name: ClassVar[str] = "slo"

    def __post_init__(self) -> None:
        w = self.late_weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not 0.0 <= w <= 1.0:
            raise ValueError(f"late_weight must be a number in [0, 1], got {w!r}")

    @property
    def worst(self) -> float:
        """-100: every offered request failed."""
        return -100.0

    def score(self, report: LoadReport) -> float:
        """:func:`slo_score` with this ``late_weight``."""
        return slo_score(report, self.late_weight)

    def evaluation(self, report: LoadReport) -> float:
        """:func:`evaluation_score`."""
        return evaluation_score(report)


@dataclass(frozen=True)
class ClassicObjective:
    """The notebook's objective (:func:`classic_score`), kept to reproduce it.

    Attributes:
        weights: the latency weight and its unit (the notebook's: :data:`CLASSIC_WEIGHTS`).
    """

    weights: RewardWeights = EVALUATION_WEIGHTS
    name: ClassVar[str] = "classic"

    @property
    def worst(self) -> float:
        """The failure term of a run where every request fails, -100 · N."""
        return DEFAULT_UNHEALTHY_PENALTY

    def score(self, report: LoadReport) -> float:
        """:func:`classic_score` with these weights."""
        return classic_score(report, self.weights)

    def evaluation(self, report: LoadReport) -> float:
        """:func:`classic_evaluation_score`."""
        return classic_evaluation_score(report)


#: The objective names of ``env_config["objective"]``.
OBJECTIVES: tuple[str, ...] = ("slo", "classic")
#: The classic score of a run where every request fails: ``MeshEnv``'s unhealthy penalty
#: under the classic objective.
DEFAULT_UNHEALTHY_PENALTY = -100.0 * N_ENDPOINTS
#: The per-step reward modes of :class:`StepReward`.
REWARD_MODES: tuple[str, ...] = ("delta", "absolute", "vs_keep")


def check_change_cost(change_cost: object, mode: str) -> float:
    """``change_cost`` (score points per step that changed the rules) as a float, checked for
    reward mode ``mode``; ``ValueError`` (one line) if it is not a finite number >= 0, or is
    not 0 outside ``vs_keep``."""
    if (isinstance(change_cost, bool) or not isinstance(change_cost, int | float)
            or not math.isfinite(change_cost) or change_cost < 0):
        raise ValueError(f"change_cost must be a finite number >= 0 (score points), got "
                         f"{change_cost!r}")
    if change_cost and mode != "vs_keep":
        raise ValueError(f"change_cost is charged against not acting: it needs reward mode "
                         f"'vs_keep', got {mode!r}")
    return float(change_cost)


class StepReward:
    """The per-step reward of an episode; it owns the previous run's score (for the delta).

    | mode | healthy step *t* | unhealthy step *t* |
    |---|---|---|
    | ``delta`` (the notebook's) | ``score_t - score_{t-1}`` (``score_0``: reset's run) | penalty |
    | ``absolute`` | ``score_t`` | penalty × (episode_len - t + 1) |
    | ``vs_keep`` | ``score_t - keep_t`` (``- change_cost`` if it changed the rules) | penalty |

    An unhealthy step charges the penalty once in delta and vs_keep mode (the steps that will
    not run would have had no change to report) and once per step that will not run in
    absolute mode (so ending an episode early never beats staying healthy at a score above the
    penalty).

    ``vs_keep`` is a counterfactual: ``keep_t`` is the score of the configuration in force
    *before* step *t*'s action, run under the same load with the same load seed (the env runs
    it: one more run per step that changed the configuration; 0 when the action changed
    nothing). The reward is what this step's action did to this run and nothing else — the
    load, the faults and earlier actions cancel — so an inert action earns exactly 0 and a
    policy gradient moves only towards actions that beat not acting (a state-dependent
    baseline of the COMA kind; with common random numbers it is exact on the simulator).
    ``change_cost`` (score points, ``vs_keep`` only) is charged for each step whose action
    changed the rules: a change must earn more than that to be worth making, so a policy has a
    reason to leave the configuration alone where acting gains nothing (the evaluation's score
    never charges it).

    Args:
        mode: ``"delta"``, ``"absolute"`` or ``"vs_keep"`` (:data:`REWARD_MODES`).
        objective: what a run scores (:class:`SloObjective` or :class:`ClassicObjective`).
        penalty: the reward of an unhealthy step, score points (e.g. ``objective.worst``).
        episode_len: steps before the episode is truncated.
        change_cost: score points charged per step that changed the rules (``vs_keep`` only).

    Raises:
        ValueError: an unknown ``mode``; a bad ``change_cost`` (:func:`check_change_cost`).
    """

    def __init__(self, mode: str, objective: Objective, penalty: float,
                 episode_len: int, change_cost: float = 0.0) -> None:
        if mode not in REWARD_MODES:
            raise ValueError(f"reward mode must be one of {REWARD_MODES}, got {mode!r}")
        self.change_cost = check_change_cost(change_cost, mode)
        self.mode = mode
        self.objective = objective
        self.penalty = penalty
        self.episode_len = episode_len
        self.previous_score = 0.0

    def reset(self, report: LoadReport) -> float:
        """Start an episode at the reset run ``report``; returns its score (``score_0``)."""
        self.previous_score = self.objective.score(report)
        return self.previous_score

    def step(self, report: LoadReport | None, t: int, keep: LoadReport | None = None) -> float:
        """The reward of step ``t`` (1-based) whose run is ``report``; None: the step left the
        mesh unhealthy and no load ran (the penalty, see the table). ``keep`` (``vs_keep``
        only): the same run with the configuration before the step's action; None when the
        action changed nothing (reward 0)."""
        if report is None:
            remaining = self.episode_len - t + 1
            return float(self.penalty * (remaining if self.mode == "absolute" else 1))
        new_score = self.objective.score(report)
        if self.mode == "vs_keep":
            reward = (0.0 if keep is None
                      else new_score - self.objective.score(keep) - self.change_cost)
        elif self.mode == "delta":
            reward = new_score - self.previous_score
        else:
            reward = new_score
        self.previous_score = new_score
        return float(reward)


__all__ = [
    "CLASSIC_WEIGHTS",
    "DEFAULT_UNHEALTHY_PENALTY",
    "EVALUATION_WEIGHTS",
    "LATENCY_UNITS",
    "N_ENDPOINTS",
    "OBJECTIVES",
    "REWARD_MODES",
    "ClassicObjective",
    "LatencyUnit",
    "Objective",
    "RewardWeights",
    "SloObjective",
    "StepReward",
    "check_change_cost",
    "classic_evaluation_score",
    "classic_score",
    "evaluation_score",
    "failure_term",
    "latency_term_ms",
    "mean_p99_ms",
    "slo_score",
]
