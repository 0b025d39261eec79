"""Statistics of evaluation results: gains of episodes, their intervals and comparisons.

* :func:`summarise` — mean, spread and 95 % bootstrap interval of episodes' eval-score gains
  (:class:`GainSummary`); :func:`bootstrap_ci95`; :func:`welch_t` between two summaries;
* :func:`gap_closed` — the share of the initial → oracle gap a configuration closed;
* :func:`quartiles` — median and quartiles of a list of values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rl.evaluation.episode import EpisodeOutcome


@dataclass(frozen=True)
class GainSummary:
    """Mean and spread of ``eval_score_gain`` over the episodes that ended healthy (``std`` is
    the sample std; ``ci95_low``..``ci95_high`` the 95 % bootstrap interval of the mean, 10 000
    seeded resamples; ``improved`` the share of those episodes with a gain > 0); ``unhealthy``
    counts the others, which have no gain."""

    n: int
    unhealthy: int
    mean: float
    std: float
    median: float
    min: float
    max: float
    ci95_low: float = math.nan
    ci95_high: float = math.nan
    improved: float = math.nan

    def __str__(self) -> str:
        return f"{self.mean:+.2f} ± {self.std:.2f} (n={self.n}, 95 % CI {self.ci95_low:+.2f}.." \
               f"{self.ci95_high:+.2f}, min {self.min:+.2f}, max {self.max:+.2f}, " \
               f"{self.unhealthy} unhealthy ends)"


#: Bootstrap resamples of :func:`bootstrap_ci95`.
BOOTSTRAP_RESAMPLES = 10_000


def bootstrap_ci95(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean of ``values`` (seeded, so reproducible)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (BOOTSTRAP_RESAMPLES, len(values)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def summarise(outcomes: list[EpisodeOutcome]) -> GainSummary:
    """Mean, sample std, median, min and max of the healthy episodes' ``eval_score_gain``.

    Raises ``ValueError`` if no episode ended healthy (there is no gain to summarise).
    """
    gains = np.array([o.eval_score_gain for o in outcomes if o.healthy_end], dtype=np.float64)
    unhealthy = sum(1 for o in outcomes if not o.healthy_end)
    if len(gains) == 0:
        raise ValueError(f"no episode ended healthy ({unhealthy} unhealthy): no gain to summarise")
    std = float(gains.std(ddof=1)) if len(gains) > 1 else 0.0
    low, high = bootstrap_ci95(gains)
    return GainSummary(n=len(gains), unhealthy=unhealthy, mean=float(gains.mean()), std=std,
                       median=float(np.median(gains)), min=float(gains.min()),
                       max=float(gains.max()), ci95_low=low, ci95_high=high,
                       improved=float((gains > 0).mean()))


def welch_t(a: GainSummary, b: GainSummary) -> float:
    """Welch's t statistic of ``a.mean - b.mean`` (how many standard errors apart they are)."""
    se = math.sqrt(a.std ** 2 / a.n + b.std ** 2 / b.n)
    if se == 0.0:
        return math.inf if a.mean != b.mean else 0.0
    return (a.mean - b.mean) / se


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


def quartiles(values: Sequence[float]) -> tuple[float, float, float] | None:
    """``(median, p25, p75)`` of ``values``; None if there are none."""
    if not values:
        return None
    q = np.percentile(values, [50, 25, 75])
    return float(q[0]), float(q[1]), float(q[2])
