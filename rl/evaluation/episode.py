"""Run one episode with an actor and measure what it changed: the one episode runner.

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
  ``R`` load seeds for both (:func:`rl.evaluation.seeds.measurement_seeds`, derived from the
  episode's seed on a stream of their own, independent of the load seeds the episode drew).
  The gain is then the configurations' difference, with the load's noise averaged and paired
  away; every policy evaluated on a seed is measured on the same loads.

Besides the outcome, :func:`run_episode` returns the episode's :class:`EpisodeTrace` (reset
info, actions, the configuration after each step), which the held-out cases and the transfer
check read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym

from envs.actions import MeshConfig
from envs.measure import mean_eval_score
from rl.evaluation.actors import Actor
from rl.evaluation.seeds import measurement_seeds


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


@dataclass
class EpisodeTrace:
    """What happened along one episode.

    Attributes:
        reset_info: the ``info`` of ``reset`` (the initial configuration's run).
        actions: the action of each step.
        configs: the MeshEnv's configuration after reset (index 0, the initial one) and after
            each step.
        info: the ``info`` of the last step.
    """

    reset_info: dict[str, Any]
    actions: list[int] = field(default_factory=list)
    configs: list[MeshConfig] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def measure_config(env: Any, config: Any, seeds: list[int]) -> float | None:
    """:func:`envs.measure.mean_eval_score` on a :class:`envs.mesh_env.MeshEnv`'s backend and
    episode load."""
    return mean_eval_score(env.backend, env.load_spec, config, seeds)


def run_episode(env: gym.Env, actor: Actor, seed: int,
                measure_runs: int = 0) -> tuple[EpisodeOutcome, EpisodeTrace]:
    """Reset ``env`` (a MeshEnv, possibly wrapped) with ``seed`` and step ``actor`` until the
    episode ends; the caller closes ``env``.

    With ``measure_runs`` > 0 the initial and the final configuration are re-measured afterwards
    (module doc). Returns the outcome and the trace. Raises ``KeyError`` if the env's info lacks
    the evaluation keys, ``RuntimeError`` if the initial configuration fails the health check
    when re-measured (no score is made up).
    """
    mesh = env.unwrapped  # the MeshEnv under any wrappers
    obs, info = env.reset(seed=seed)
    trace = EpisodeTrace(reset_info=dict(info), configs=[mesh.config], info=info)
    done = False
    while not done:
        trace.actions.append(int(actor(obs)))
        obs, _, terminated, truncated, info = env.step(trace.actions[-1])
        trace.configs.append(mesh.config)
        done = terminated or truncated
    trace.info = info
    steps = len(trace.actions)
    if "healthy" not in info or info.get("initial_eval_score") is None:
        raise KeyError(f"env info lacks 'healthy' or 'initial_eval_score' (got {info})")
    initial = float(info["initial_eval_score"])
    if not info["healthy"]:
        return EpisodeOutcome(seed, False, initial, None, None, None, None, steps), trace
    missing = [k for k in ("eval_score", "failure_pct", "p99_ms") if info.get(k) is None]
    if missing:
        raise KeyError(f"env info of a healthy step lacks {missing} (got {info})")
    final = float(info["eval_score"])
    if measure_runs > 0:
        seeds = measurement_seeds(seed, measure_runs)
        # The final configuration is measured last, so it is what stays applied.
        initial_measured = measure_config(mesh, mesh.initial_config, seeds)
        final_measured = measure_config(mesh, mesh.config, seeds)
        if initial_measured is None:
            raise RuntimeError(f"episode {seed}: the initial configuration fails the health "
                               "check when re-measured")
        if final_measured is None:  # healthy at the last step, not when applied again
            return EpisodeOutcome(seed, False, initial_measured, None, None, None, None, steps,
                                  measure_runs), trace
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
    return outcome, trace


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


def outcomes_to_records(outcomes: list[EpisodeOutcome]) -> list[dict[str, Any]]:
    """JSON-ready dicts of the outcomes."""
    return [asdict(o) for o in outcomes]
