"""Held-out evaluation helpers (rl/evaluation.py), on the simulator."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from envs.istio import rules_for
from envs.mesh_env import MeshEnv
from rl.evaluation.episode import (
    EpisodeOutcome,
    bootstrap_ci95,
    evaluate,
    held_out_seeds,
    measure_config,
    measurement_seeds,
    module_actor,
    run_episode,
    summarise,
    uniform_random_actor,
    welch_t,
)
from rl.module import SoftmaxPolicyModule

ENV_CONFIG = {"episode_len": 3, "init": "classic_random", "load_draw": "per_episode"}


def _env(seed: int) -> MeshEnv:
    return MeshEnv({**ENV_CONFIG, "seed": seed})


def _outcome(gain: float | None) -> EpisodeOutcome:
    healthy = gain is not None
    return EpisodeOutcome(seed=0, healthy_end=healthy, initial_eval_score=-100.0,
                          final_eval_score=-100.0 + gain if healthy else None,
                          eval_score_gain=gain, final_failure_pct=1.0 if healthy else None,
                          final_p99_ms=10.0 if healthy else None, num_steps=3)


def test_same_seed_same_episode_and_gain_is_final_minus_initial() -> None:
    outcomes = []
    for _ in range(2):
        env = _env(5)
        try:
            outcome, info = run_episode(env, uniform_random_actor(env.action_space, 5), seed=5)
        finally:
            env.close()
        outcomes.append(outcome)
    assert outcomes[0] == outcomes[1]
    o = outcomes[0]
    assert o.num_steps == 3
    if o.healthy_end:
        assert o.eval_score_gain == pytest.approx(o.final_eval_score - o.initial_eval_score)
        assert o.final_eval_score == pytest.approx(info["eval_score"])


def test_different_seeds_give_different_episodes() -> None:
    outcomes = evaluate(_env, lambda env, s: uniform_random_actor(env.action_space, s), [1, 2])
    assert outcomes[0].initial_eval_score != outcomes[1].initial_eval_score


def test_module_actor_greedy_is_the_argmax_and_sampling_is_seeded() -> None:
    space = gym.spaces.Box(0.0, 1.0, (4,), np.float32)
    module = RLModuleSpec(module_class=SoftmaxPolicyModule, observation_space=space,
                          action_space=gym.spaces.Discrete(6),
                          model_config={"dropout": 0.0}).build()
    with torch.no_grad():
        module.policy_net[-1].bias.copy_(torch.tensor([0.0, 0.0, 50.0, 0.0, 0.0, 0.0]))
    obs = np.full(4, 0.5, np.float32)
    assert module_actor(module, greedy=True)(obs) == 2
    with torch.no_grad():
        module.policy_net[-1].bias.zero_()
    actors = [module_actor(module, greedy=False, seed=9) for _ in range(2)]
    first_ten = [[actor(obs) for _ in range(10)] for actor in actors]
    assert first_ten[0] == first_ten[1]
    assert len(set(first_ten[0])) > 1


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


def test_module_actor_evaluates_without_dropout() -> None:
    space = gym.spaces.Box(0.0, 1.0, (4,), np.float32)
    module = RLModuleSpec(module_class=SoftmaxPolicyModule, observation_space=space,
                          action_space=gym.spaces.Discrete(6),
                          model_config={"dropout": 0.5}).build()
    module.train()
    obs = np.full(4, 0.5, np.float32)
    actions = {module_actor(module, greedy=True)(obs) for _ in range(20)}
    assert not module.training
    assert len(actions) == 1


def test_measurement_seeds_are_deterministic_per_episode_and_distinct() -> None:
    assert measurement_seeds(7, 3) == measurement_seeds(7, 3)
    assert measurement_seeds(7, 3) != measurement_seeds(8, 3)
    assert len(set(measurement_seeds(7, 5))) == 5
    assert measurement_seeds(7, 5)[:3] == measurement_seeds(7, 3)
    with pytest.raises(ValueError, match="at least one measurement run"):
        measurement_seeds(7, 0)


def test_re_measured_gain_is_the_mean_of_fresh_runs_on_the_same_loads() -> None:
    random_actor = lambda env, s: uniform_random_actor(env.action_space, s)  # noqa: E731
    outcomes = {}
    for runs in (0, 3):
        env = _env(4)
        try:
            outcome, _ = run_episode(env, random_actor(env, 4), seed=4, measure_runs=runs)
            outcomes[runs] = outcome
            if runs and outcome.healthy_end:
                seeds = measurement_seeds(4, runs)
                # The final configuration stays applied; re-measuring gives the same numbers.
                assert env.backend.rules == tuple(rules_for(env.config))
                final = measure_config(env, env.config, seeds)
                initial = measure_config(env, env.initial_config, seeds)
                assert outcome.final_eval_score == pytest.approx(final)
                assert outcome.initial_eval_score == pytest.approx(initial)
                assert outcome.eval_score_gain == pytest.approx(final - initial)
        finally:
            env.close()
    assert outcomes[3].healthy_end, "seed 4 should end healthy (pick another seed otherwise)"
    assert outcomes[3].measure_runs == 3 and outcomes[0].measure_runs == 0
    assert outcomes[3].initial_eval_score != outcomes[0].initial_eval_score
    # Every policy is measured on the same loads: the initial configuration scores the same.
    other = evaluate(_env, lambda env, s: (lambda obs: 0), [4], measure_runs=3)[0]
    assert other.initial_eval_score == outcomes[3].initial_eval_score


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible() -> None:
    values = np.array([-3.0, 0.0, 1.0, 2.0, 10.0, 4.0])
    low, high = bootstrap_ci95(values)
    assert low < values.mean() < high
    assert (low, high) == bootstrap_ci95(values)
    assert all(math.isnan(x) for x in bootstrap_ci95(np.array([1.0])))
    s = summarise([_outcome(10.0), _outcome(-20.0), _outcome(30.0)])
    assert s.ci95_low < s.mean < s.ci95_high
    assert s.improved == pytest.approx(2 / 3)
