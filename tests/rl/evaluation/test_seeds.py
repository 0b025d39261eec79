"""Seed layouts (rl/evaluation/seeds.py): nothing held out is ever trained or selected on."""

from __future__ import annotations

import pytest

from rl.evaluation.cases import SCENARIOS, case_seeds
from rl.evaluation.seeds import (
    FRESH_SEED_BASE,
    SEARCH_SEED_BASE,
    SEED_STRIDE,
    SELECTION_SEED_BASE,
    VALIDATION_FIRST_SEED,
    held_out_seeds,
    load_seeds,
    measurement_seeds,
    training_seeds,
)


def test_measurement_seeds_are_deterministic_per_episode_and_distinct() -> None:
    assert measurement_seeds(7, 3) == measurement_seeds(7, 3)
    assert measurement_seeds(7, 3) != measurement_seeds(8, 3)
    assert len(set(measurement_seeds(7, 5))) == 5
    assert measurement_seeds(7, 5)[:3] == measurement_seeds(7, 3)
    with pytest.raises(ValueError, match="at least one measurement run"):
        measurement_seeds(7, 0)


def test_held_out_case_seeds_are_disjoint_from_training_seeds() -> None:
    cases = [s for sc in SCENARIOS for s in case_seeds(sc, 1000)]
    assert len(cases) == len(set(cases)), "two scenarios share a case seed"
    training = set()
    for sweep_seed in range(0, 100):
        training |= training_seeds(sweep_seed, num_env_runners=8)
    assert training_seeds(0, 2) == {0, 1, 2, 1_000_000, 1_000_001, 1_000_002}
    assert not training & set(cases)
    assert not set(held_out_seeds(1000)) & set(cases)  # pg_sweep's own evaluation seeds
    # ... and its validation seeds, which pick the best trial: a case there would be selected on
    assert not set(held_out_seeds(1000, VALIDATION_FIRST_SEED)) & set(cases)


def test_load_seed_ranges_never_overlap() -> None:
    search = {s for i in range(40) for s in load_seeds(SEARCH_SEED_BASE, i, 2000)}
    selection = {s for i in range(40) for s in load_seeds(SELECTION_SEED_BASE, i, 20)}
    fresh = {s for i in range(40) for s in load_seeds(FRESH_SEED_BASE, i, 20)}
    assert len(search) == 40 * 2000 and len(fresh) == 40 * 20
    assert not search & fresh and not search & selection and not selection & fresh
    with pytest.raises(ValueError, match="at most"):
        load_seeds(FRESH_SEED_BASE, 0, SEED_STRIDE + 1)
