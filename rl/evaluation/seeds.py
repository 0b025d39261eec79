"""Which seeds evaluation uses, laid out so that no two purposes ever share one.

* training: :func:`training_seeds` — what ``pg_sweep.py --seed S`` passes to MeshEnv;
* held-out test episodes from :data:`TEST_FIRST_SEED`, validation episodes (ranking the
  sweep's trials) from :data:`VALIDATION_FIRST_SEED`: :func:`held_out_seeds`;
* re-measurement of an episode's start and end: :func:`measurement_seeds` (a stream of its own,
  derived from the episode's seed);
* the held-out cases' search, selection and fresh load seeds: :func:`load_seeds` from
  :data:`SEARCH_SEED_BASE`, :data:`SELECTION_SEED_BASE`, :data:`FRESH_SEED_BASE` (the case
  seeds themselves are the scenarios', :mod:`rl.evaluation.cases`).
"""

from __future__ import annotations

import numpy as np

#: First seed of the held-out test episodes (RLlib's training runners reset with seeds
#: ``config.seed + worker_index``, far below).
TEST_FIRST_SEED = 1_000_000
#: First seed of the validation episodes that rank trials (disjoint from the test seeds).
VALIDATION_FIRST_SEED = 2_000_000

#: Stream of ``SeedSequence([episode seed, MEASURE_STREAM])`` the re-measurement seeds come from.
MEASURE_STREAM = 0x6D65_6173

#: Load seeds: search evaluation k of case i = SEARCH + i·STRIDE + k; selection and fresh
#: seeds likewise from their own bases. The ranges never overlap (STRIDE > any budget).
SEARCH_SEED_BASE = 1_000_000_000
SELECTION_SEED_BASE = 1_400_000_000
FRESH_SEED_BASE = 1_800_000_000
SEED_STRIDE = 10_000


def held_out_seeds(n: int, first: int = TEST_FIRST_SEED) -> list[int]:
    """``n`` consecutive evaluation seeds from ``first`` (disjoint from the training seeds)."""
    if n < 1:
        raise ValueError(f"need at least one evaluation episode, got n={n}")
    return list(range(first, first + n))


def measurement_seeds(seed: int, runs: int) -> list[int]:
    """The ``runs`` load seeds re-measuring the configurations of the episode with ``seed``."""
    if runs < 1:
        raise ValueError(f"need at least one measurement run, got {runs}")
    state = np.random.SeedSequence([seed, MEASURE_STREAM]).generate_state(runs)
    return [int(x) & 0x7FFF_FFFF for x in state]


def training_seeds(sweep_seed: int, num_env_runners: int) -> set[int]:
    """Every seed a ``pg_sweep.py --seed sweep_seed`` training run passes to MeshEnv: the env
    seed and RLlib's reset seeds (``seed + worker_index``, worker 0..num_env_runners; RLlib's
    evaluation runners add 1e6)."""
    seeds = {sweep_seed}
    for worker in range(num_env_runners + 1):
        seeds |= {sweep_seed + worker, sweep_seed + worker + 1_000_000}
    return seeds


def load_seeds(base: int, case_index: int, n: int) -> list[int]:
    """``n`` load seeds of case ``case_index`` from ``base`` (search, selection or fresh).

    Raises:
        ValueError: ``n`` exceeds the stride (the ranges of two cases would overlap).
    """
    if not 0 <= n <= SEED_STRIDE:
        raise ValueError(f"at most {SEED_STRIDE} load seeds per case, asked for {n}")
    start = base + case_index * SEED_STRIDE
    return list(range(start, start + n))
