"""Actors (rl/evaluation/actors.py): an RLModule greedy or sampled, without dropout."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from rl.evaluation.actors import module_actor
from rl.module import SoftmaxPolicyModule


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
