"""Held-out evaluation helpers (rl/evaluation.py), on the simulator."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from envs.mesh_env import MeshEnv
from rl.evaluation import (
    EpisodeOutcome,
    evaluate,
    held_out_seeds,
    module_actor,
    run_episode,
    summarise,
    uniform_random_actor,
    welch_t,
)
from rl.module import SoftmaxPolicyModule

ENV_CONFIG = {"episode_len": 3, "init": "seed_random", "load_draw": "per_episode"}


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
