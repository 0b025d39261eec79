"""The objective: how good one load run through the mesh was. The one place it lives.

The notebook scored a run as ``-(Σ endpoint failure % + 10000 · Σ p99 latencies in s)`` and
rewarded the *change* of that score from one step to the next. meshtune keeps that form, makes
the weight and the latency unit explicit, and aggregates over the endpoints by traffic:

    score(report, w) = -N · ( failure % of all requests
                              + w.latency_weight · traffic-weighted mean endpoint p99 in unit )

with ``N`` = :data:`N_ENDPOINTS` = 18, the reference load test's Locust request names, a fixed
constant. When all 18 endpoints saw requests, at one failure rate and one p99, it is the notebook's
``Σ_e failure %(e) + w · Σ_e p99(e)``, so weights keep the notebook's meaning: points per unit of
*one endpoint's* p99, and one failure percentage point of one endpoint costs 1 point.

Why not the plain sums over the report's endpoints: the reference load test aborts a user's
loop when ``GET /catalogue`` fails (it parses the answer to pick an item), so a configuration
that breaks the catalogue leaves most endpoints without a single request. Plain sums then
count 4 endpoints instead of 18 and score such a shop — 100 % of requests failing, fast —
*better* than a healthy one (measured on the simulator: -428 against -494 with the evaluation
weights and plain sums; -1953 against -682 with this score). Weighting by requests and
scaling by the fixed ``N`` cannot shrink that way: an endpoint without requests has no weight
(it has no p99, and nothing is invented for it) and every request made counts.

Failing fast still trades against latency: the latency term includes failed requests (as
Locust's statistics do), so a large enough latency weight prefers a broken, fast shop. On the
simulator the crossover is near 0.36 points per ms (20 users × 80 requests: every request
failing at a mean p99 of 85 ms against 1.7 % failures at 362 ms with Istio's defaults); the
notebook's 10 000 per s (= 10 per ms) is far above it, :data:`EVALUATION_WEIGHTS` below it.

:func:`evaluation_score` is the formula with :data:`EVALUATION_WEIGHTS`, fixed once for the
project, so runs trained with different reward weights can be ranked on one scale.

:class:`StepReward` turns the scores of an episode's runs into ``MeshEnv``'s per-step rewards:
the change of the score (``delta``, the notebook's) or the score itself (``absolute``), and a
penalty for a step that left the mesh unhealthy (no run, no score).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

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


def score(report: LoadReport, weights: RewardWeights) -> float:
    """``-N · (failure % of all requests + latency_weight · traffic-weighted mean endpoint p99
    in latency_unit)``; higher is better, 0 is perfect (no failures, no latency).

    Raises:
        ValueError: the report has no requests at all (nothing to score).
    """
    if report.num_requests == 0:
        raise ValueError("cannot score a load report with no requests")
    return -(failure_term(report) + weights.points_per_ms * latency_term_ms(report))


def evaluation_score(report: LoadReport) -> float:
    """:func:`score` with the fixed :data:`EVALUATION_WEIGHTS`: the weight-independent figure
    to rank trials and policies by."""
    return score(report, EVALUATION_WEIGHTS)


#: The failure term of a run where every request fails: ``MeshEnv``'s default unhealthy penalty.
DEFAULT_UNHEALTHY_PENALTY = -100.0 * N_ENDPOINTS
#: The per-step reward modes of :class:`StepReward`.
REWARD_MODES: tuple[str, ...] = ("delta", "absolute")


class StepReward:
    """The per-step reward of an episode; it owns the previous run's score (for the delta).

    | mode | healthy step *t* | unhealthy step *t* |
    |---|---|---|
    | ``delta`` (the notebook's) | ``score_t - score_{t-1}`` (``score_0``: reset's run) | penalty |
    | ``absolute`` | ``score_t`` | penalty × (episode_len - t + 1) |

    An unhealthy step charges the penalty once in delta mode (the steps that will not run would
    have had no change to report) and once per step that will not run in absolute mode (so
    ending an episode early never beats staying healthy at a score above the penalty).

    Args:
        mode: ``"delta"`` or ``"absolute"`` (:data:`REWARD_MODES`).
        weights: the weights of :func:`score`.
        penalty: the reward of an unhealthy step, score points (e.g.
            :data:`DEFAULT_UNHEALTHY_PENALTY`).
        episode_len: steps before the episode is truncated.

    Raises:
        ValueError: an unknown ``mode``.
    """

    def __init__(self, mode: str, weights: RewardWeights, penalty: float,
                 episode_len: int) -> None:
        if mode not in REWARD_MODES:
            raise ValueError(f"reward mode must be one of {REWARD_MODES}, got {mode!r}")
        self.mode = mode
        self.weights = weights
        self.penalty = penalty
        self.episode_len = episode_len
        self.previous_score = 0.0

    def reset(self, report: LoadReport) -> float:
        """Start an episode at the reset run ``report``; returns its score (``score_0``)."""
        self.previous_score = score(report, self.weights)
        return self.previous_score

    def step(self, report: LoadReport | None, t: int) -> float:
        """The reward of step ``t`` (1-based) whose run is ``report``; None: the step left the
        mesh unhealthy and no load ran (the penalty, see the table)."""
        if report is None:
            remaining = self.episode_len - t + 1
            return float(self.penalty * (remaining if self.mode == "absolute" else 1))
        new_score = score(report, self.weights)
        reward = new_score - self.previous_score if self.mode == "delta" else new_score
        self.previous_score = new_score
        return float(reward)


__all__ = [
    "CLASSIC_WEIGHTS",
    "DEFAULT_UNHEALTHY_PENALTY",
    "EVALUATION_WEIGHTS",
    "LATENCY_UNITS",
    "N_ENDPOINTS",
    "REWARD_MODES",
    "LatencyUnit",
    "RewardWeights",
    "StepReward",
    "evaluation_score",
    "failure_term",
    "latency_term_ms",
    "mean_p99_ms",
    "score",
]
