"""Statistics (rl/evaluation/stats.py): gain summaries, intervals, Welch's t, gap closed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rl.evaluation.episode import EpisodeOutcome
from rl.evaluation.seeds import held_out_seeds
from rl.evaluation.stats import bootstrap_ci95, gap_closed, quartiles, summarise, welch_t


def _outcome(gain: float | None) -> EpisodeOutcome:
    healthy = gain is not None
    return EpisodeOutcome(seed=0, healthy_end=healthy, initial_eval_score=-100.0,
                          final_eval_score=-100.0 + gain if healthy else None,
                          eval_score_gain=gain, final_failure_pct=1.0 if healthy else None,
                          final_p99_ms=10.0 if healthy else None, num_steps=3)


def test_summary_counts_unhealthy_ends_without_inventing_a_gain() -> None:
    s = summarise([_outcome(10.0), _outcome(20.0), _outcome(None)])
    assert (s.n, s.unhealthy) == (2, 1)
    assert s.mean == pytest.approx(15.0)
    assert s.std == pytest.approx(math.sqrt(50.0))
    assert s.median == pytest.approx(15.0)
    with pytest.raises(ValueError, match="no episode ended healthy"):
        summarise([_outcome(None)])


def test_welch_t_and_held_out_seeds() -> None:
    a = summarise([_outcome(10.0), _outcome(12.0)])
    b = summarise([_outcome(0.0), _outcome(2.0)])
    assert welch_t(a, b) == pytest.approx(10.0 / math.sqrt(2 / 2 + 2 / 2))
    assert held_out_seeds(3) == [1_000_000, 1_000_001, 1_000_002]
    with pytest.raises(ValueError):
        held_out_seeds(0)


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible() -> None:
    values = np.array([-3.0, 0.0, 1.0, 2.0, 10.0, 4.0])
    low, high = bootstrap_ci95(values)
    assert low < values.mean() < high
    assert (low, high) == bootstrap_ci95(values)
    assert all(math.isnan(x) for x in bootstrap_ci95(np.array([1.0])))
    s = summarise([_outcome(10.0), _outcome(-20.0), _outcome(30.0)])
    assert s.ci95_low < s.mean < s.ci95_high
    assert s.improved == pytest.approx(2 / 3)


def test_gap_closed_arithmetic() -> None:
    # initial -500, oracle -400: a gap of 100 points
    assert gap_closed(-450.0, -500.0, -400.0) == pytest.approx(0.5)
    assert gap_closed(-400.0, -500.0, -400.0) == pytest.approx(1.0)
    assert gap_closed(-500.0, -500.0, -400.0) == pytest.approx(0.0)
    assert gap_closed(-550.0, -500.0, -400.0) == pytest.approx(-0.5)  # worse than the start
    assert gap_closed(-380.0, -500.0, -400.0) == pytest.approx(1.2)  # beat the oracle
    # no gap, a negative gap, or a gap within the noise: undefined, not a made-up number
    assert gap_closed(-450.0, -500.0, -500.0) is None
    assert gap_closed(-450.0, -400.0, -500.0) is None
    assert gap_closed(-450.0, -500.0, -490.0, min_gap=15.0) is None
    assert gap_closed(-495.0, -500.0, -480.0, min_gap=15.0) == pytest.approx(0.25)


def test_quartiles_are_median_p25_p75() -> None:
    assert quartiles([]) is None
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (3.0, 2.0, 4.0)
