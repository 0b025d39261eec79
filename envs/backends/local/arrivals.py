"""The open load's session schedule and the aggregated latency statistic, free of gevent so
that tests and the simulator-side code can use them without Locust's monkey-patching
(:mod:`envs.backends.local.loadgen` drives the load with them)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

#: Seed offset of the session stream, apart from the sessions' own item choices.
STREAM_SEED_FACTOR = 7_919


def arrival_offsets(session_rate_per_s: float, seed: int) -> Iterator[float]:
    """Arrival times (s after the window's start) of an open load's sessions: a Poisson
    process of ``session_rate_per_s`` sessions per second, exponential gaps drawn from
    ``random.Random(seed * STREAM_SEED_FACTOR + 1)``. Endless; the first arrival is one gap
    after 0."""
    if not session_rate_per_s > 0:
        raise ValueError(f"session rate must be positive, got {session_rate_per_s}")
    rng = random.Random(seed * STREAM_SEED_FACTOR + 1)
    t = 0.0
    while True:
        t += rng.expovariate(session_rate_per_s)
        yield t


def nearest_rank(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of non-empty ``values``."""
    if not values:
        raise ValueError("nearest_rank of no values")
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], got {q}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
