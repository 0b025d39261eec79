"""Held-out evaluation: run whole episodes with a policy and measure what they changed.

An episode's outcome is the change of the weight-independent evaluation score between the
episode's initial configuration and the configuration the policy leaves behind (> 0 is an
improvement). The same seeds give the same episodes, so a policy and the uniform random policy
can be compared on identical loads and initial configurations.

Two ways to measure that change:

* ``measure_runs=0``: the episode's own runs, ``info["eval_score"] - info["initial_eval_score"]``
  at the last step — one load run each, so one run's noise is in the gain (on the simulator
  the score of one run of 800–1 600 requests varies by ~20 points typically, by hundreds when
  the front-end crashes);
* ``measure_runs=R``: after the episode, the initial and the final configuration are each
  applied again and scored as the mean of ``R`` fresh runs of the episode's load, with the same
  ``R`` load seeds for both (:func:`measurement_seeds`, derived from the episode's seed on a
  stream of their own, independent of the load seeds the episode drew). The gain is then the
  configurations' difference, with the load's noise averaged and paired away; every policy
  evaluated on a seed is measured on the same loads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns

from envs.measure import mean_eval_score

#: A policy as evaluation sees it: observation -> action index.
Actor = Callable[[np.ndarray], int]


@dataclass(frozen=True)
class EpisodeOutcome:
    """What one evaluation episode did.

    Attributes:
        seed: the seed the env was built and reset with.
        healthy_end: False if the episode ended because the mesh stopped serving; then the last
            step ran no load and the ``final_*`` fields and the gain are None.
        initial_eval_score: evaluation score of the episode's initial configuration.
        final_eval_score: evaluation score after the last step.
        eval_score_gain: ``final_eval_score - initial_eval_score`` (> 0: improved).
        final_failure_pct: failure rate of the last step's load test, in %.
        final_p99_ms: p99 latency of the last step's load test, in ms.
        num_steps: steps taken.
        measure_runs: 0 if the scores are the episode's own runs (reset and last step); else
            the number of fresh runs each of ``initial_eval_score`` and ``final_eval_score`` is
            the mean of (module doc).
    """

    seed: int
    healthy_end: bool
    initial_eval_score: float
    final_eval_score: float | None
    eval_score_gain: float | None
    final_failure_pct: float | None
    final_p99_ms: float | None
    num_steps: int
    measure_runs: int = 0


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


def module_actor(module: Any, *, greedy: bool = True, seed: int = 0) -> Actor:
    """An :data:`Actor` from an RLModule: argmax of its logits, or a seeded sample from them.

    Puts ``module`` in eval mode (no dropout): the evaluated policy is the trained network
    itself, deterministic given the seed.
    """
    generator = torch.Generator().manual_seed(seed)
    module.eval()

    def act(obs: np.ndarray) -> int:
        batch = {Columns.OBS: torch.as_tensor(np.asarray(obs, dtype=np.float32)[None])}
        with torch.no_grad():
            logits = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS][0]
        if greedy:
            return int(torch.argmax(logits))
        return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))

    return act


def uniform_random_actor(action_space: gym.spaces.Discrete, seed: int) -> Actor:
    """An :data:`Actor` that picks each action with equal probability (seeded)."""
    rng = np.random.default_rng(seed)
    n = int(action_space.n)
    return lambda obs: int(rng.integers(n))


#: Stream of ``SeedSequence([episode seed, MEASURE_STREAM])`` the re-measurement seeds come from.
MEASURE_STREAM = 0x6D65_6173


def measurement_seeds(seed: int, runs: int) -> list[int]:
    """The ``runs`` load seeds re-measuring the configurations of the episode with ``seed``."""
    if runs < 1:
        raise ValueError(f"need at least one measurement run, got {runs}")
    state = np.random.SeedSequence([seed, MEASURE_STREAM]).generate_state(runs)
    return [int(x) & 0x7FFF_FFFF for x in state]


def measure_config(env: Any, config: Any, seeds: list[int]) -> float | None:
    """:func:`envs.measure.mean_eval_score` on a :class:`envs.mesh_env.MeshEnv`'s backend and
    episode load."""
    return mean_eval_score(env.backend, env.load_spec, config, seeds)


def run_episode(env: gym.Env, actor: Actor, seed: int,
                measure_runs: int = 0) -> tuple[EpisodeOutcome, dict[str, Any]]:
    """Reset ``env`` with ``seed`` and step ``actor`` until the episode ends.

    With ``measure_runs`` > 0 (``env`` must then be a MeshEnv) the initial and the final
    configuration are re-measured afterwards (module doc). Returns the outcome and the last
    ``info``. Raises ``KeyError`` if the env's info lacks the evaluation keys, ``RuntimeError``
    if the initial configuration fails the health check when re-measured (no score is made up).
    """
    obs, info = env.reset(seed=seed)
    steps = 0
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(actor(obs))
        steps += 1
        done = terminated or truncated
    if "healthy" not in info or info.get("initial_eval_score") is None:
        raise KeyError(f"env info lacks 'healthy' or 'initial_eval_score' (got {info})")
    initial = float(info["initial_eval_score"])
    if not info["healthy"]:
        return EpisodeOutcome(seed, False, initial, None, None, None, None, steps), info
    missing = [k for k in ("eval_score", "failure_pct", "p99_ms") if info.get(k) is None]
    if missing:
        raise KeyError(f"env info of a healthy step lacks {missing} (got {info})")
    final = float(info["eval_score"])
    if measure_runs > 0:
        seeds = measurement_seeds(seed, measure_runs)
        mesh = env.unwrapped  # the MeshEnv under any wrappers
        # The final configuration is measured last, so it is what stays applied.
        initial_measured = measure_config(mesh, mesh.initial_config, seeds)
        final_measured = measure_config(mesh, mesh.config, seeds)
        if initial_measured is None:
            raise RuntimeError(f"episode {seed}: the initial configuration fails the health "
                               "check when re-measured")
        if final_measured is None:  # healthy at the last step, not when applied again
            return EpisodeOutcome(seed, False, initial_measured, None, None, None, None, steps,
                                  measure_runs), info
        initial, final = initial_measured, final_measured
    outcome = EpisodeOutcome(
        seed=seed,
        healthy_end=True,
        initial_eval_score=initial,
        final_eval_score=final,
        eval_score_gain=final - initial,
        final_failure_pct=float(info["failure_pct"]),
        final_p99_ms=float(info["p99_ms"]),
        num_steps=steps,
        measure_runs=measure_runs,
    )
    return outcome, info


def evaluate(make_env: Callable[[int], gym.Env], make_actor: Callable[[gym.Env, int], Actor],
             seeds: Iterable[int],
             on_episode_end: Callable[[gym.Env, EpisodeOutcome], None] | None = None,
             measure_runs: int = 0) -> list[EpisodeOutcome]:
    """One episode per seed, each on a fresh env ``make_env(seed)`` with ``make_actor(env, seed)``
    (``measure_runs``: see :func:`run_episode`).

    ``on_episode_end(env, outcome)`` is called before the env is closed (e.g. to read its rules).
    """
    outcomes = []
    for seed in seeds:
        env = make_env(seed)
        try:
            outcome, _ = run_episode(env, make_actor(env, seed), seed, measure_runs)
            if on_episode_end is not None:
                on_episode_end(env, outcome)
        finally:
            env.close()
        outcomes.append(outcome)
    return outcomes


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


def outcomes_to_records(outcomes: list[EpisodeOutcome]) -> list[dict[str, Any]]:
    """JSON-ready dicts of the outcomes."""
    return [asdict(o) for o in outcomes]


#: First seed of the held-out test episodes (RLlib's training runners reset with seeds
#: ``config.seed + worker_index``, far below).
TEST_FIRST_SEED = 1_000_000
#: First seed of the validation episodes that rank trials (disjoint from the test seeds).
VALIDATION_FIRST_SEED = 2_000_000


def held_out_seeds(n: int, first: int = TEST_FIRST_SEED) -> list[int]:
    """``n`` consecutive evaluation seeds from ``first`` (disjoint from the training seeds)."""
    if n < 1:
        raise ValueError(f"need at least one evaluation episode, got n={n}")
    return list(range(first, first + n))


def welch_t(a: GainSummary, b: GainSummary) -> float:
    """Welch's t statistic of ``a.mean - b.mean`` (how many standard errors apart they are)."""
    se = math.sqrt(a.std ** 2 / a.n + b.std ** 2 / b.n)
    if se == 0.0:
        return math.inf if a.mean != b.mean else 0.0
    return (a.mean - b.mean) / se
