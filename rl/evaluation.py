"""Held-out evaluation: run whole episodes with a policy and measure what they changed.

An episode's outcome is the change of the weight-independent evaluation score between the
episode's initial configuration and the configuration the policy leaves behind
(``info["eval_score"] - info["initial_eval_score"]`` at the last step; > 0 is an improvement).
The same seeds give the same episodes, so a policy and the uniform random policy can be compared
on identical loads and initial configurations.
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
    """

    seed: int
    healthy_end: bool
    initial_eval_score: float
    final_eval_score: float | None
    eval_score_gain: float | None
    final_failure_pct: float | None
    final_p99_ms: float | None
    num_steps: int


@dataclass(frozen=True)
class GainSummary:
    """Mean and spread of ``eval_score_gain`` over the episodes that ended healthy (``std`` is
    the sample std); ``unhealthy`` counts the others, which have no gain."""

    n: int
    unhealthy: int
    mean: float
    std: float
    median: float
    min: float
    max: float

    def __str__(self) -> str:
        return f"{self.mean:+.2f} ± {self.std:.2f} (n={self.n}, min {self.min:+.2f}, " \
               f"max {self.max:+.2f}, {self.unhealthy} unhealthy ends)"


def module_actor(module: Any, *, greedy: bool = True, seed: int = 0) -> Actor:
    """An :data:`Actor` from an RLModule: argmax of its logits, or a seeded sample from them."""
    generator = torch.Generator().manual_seed(seed)

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


def run_episode(env: gym.Env, actor: Actor, seed: int) -> tuple[EpisodeOutcome, dict[str, Any]]:
    """Reset ``env`` with ``seed`` and step ``actor`` until the episode ends.

    Returns the outcome and the last ``info``. Raises ``KeyError`` if the env's info lacks the
    evaluation keys (no score is made up).
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
    outcome = EpisodeOutcome(
        seed=seed,
        healthy_end=True,
        initial_eval_score=initial,
        final_eval_score=final,
        eval_score_gain=final - initial,
        final_failure_pct=float(info["failure_pct"]),
        final_p99_ms=float(info["p99_ms"]),
        num_steps=steps,
    )
    return outcome, info


def evaluate(make_env: Callable[[int], gym.Env], make_actor: Callable[[gym.Env, int], Actor],
             seeds: Iterable[int],
             on_episode_end: Callable[[gym.Env, EpisodeOutcome], None] | None = None,
             ) -> list[EpisodeOutcome]:
    """One episode per seed, each on a fresh env ``make_env(seed)`` with ``make_actor(env, seed)``.

    ``on_episode_end(env, outcome)`` is called before the env is closed (e.g. to read its rules).
    """
    outcomes = []
    for seed in seeds:
        env = make_env(seed)
        try:
            outcome, _ = run_episode(env, make_actor(env, seed), seed)
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
    return GainSummary(n=len(gains), unhealthy=unhealthy, mean=float(gains.mean()), std=std,
                       median=float(np.median(gains)), min=float(gains.min()),
                       max=float(gains.max()))


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
