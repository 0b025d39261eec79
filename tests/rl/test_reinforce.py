"""The Reinforce algorithm end to end (rl/reinforce.py: config and algorithm, with the learner,
module and callbacks)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from rl.reinforce import ReinforceConfig

ray = pytest.importorskip("ray")


class ContextBandit(gym.Env):
    """One-step episodes: the observation is a one-hot context, reward 1 for the matching action.

    A policy that learns scores 1 per episode; a uniform one 1/3.
    """

    def __init__(self, env_config: Any = None) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self._context = 0

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._context = int(self.np_random.integers(3))
        return np.eye(3, dtype=np.float32)[self._context], {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = 1.0 if int(action) == self._context else 0.0
        return np.zeros(3, np.float32), reward, True, False, {}


class RandomStart(gym.Env):
    """One-step episodes whose first observation is drawn from the env's generator."""

    def __init__(self, env_config: Any = None) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self.np_random.uniform(0.0, 1.0, (1,)).astype(np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(1, np.float32), 0.0, True, False, {}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_model_config_reaches_the_policy_network(local_ray: None) -> None:
    from ray.rllib.core import DEFAULT_MODULE_ID

    def layers(model_config: dict | None) -> list[str]:
        config = ReinforceConfig().environment(ContextBandit).env_runners(num_env_runners=0)
        if model_config is not None:
            config = config.rl_module(model_config=model_config)
        algo = config.build_algo()
        try:
            net = algo.learner_group._learner.module[DEFAULT_MODULE_ID].policy_net
            return [repr(layer) for layer in net]
        finally:
            algo.stop()

    custom = layers({"hidden_sizes": [16], "dropout": 0.0})
    assert [x for x in custom if "Dropout" in x] == []
    assert "out_features=16" in custom[0]
    default = layers(None)  # the notebook's: Dense 250, ReLU, Dropout 0.2
    assert "out_features=250" in default[0] and "Dropout(p=0.2" in default[2]


@pytest.mark.parametrize("num_epochs", [1, 3])
def test_num_epochs_is_the_number_of_gradient_steps_per_batch(local_ray: None,
                                                              num_epochs: int) -> None:
    """``training(num_epochs=k)``: k optimiser steps per iteration (RLlib's setting, passed
    to the learner group); the default is one step per batch."""
    config = (ReinforceConfig().environment(ContextBandit).env_runners(num_env_runners=0)
              .training(num_episodes_per_train_batch=8)
              .rl_module(model_config={"hidden_sizes": [8], "dropout": 0.0})
              .debugging(seed=0))
    if num_epochs > 1:
        config = config.training(num_epochs=num_epochs)
    algo = config.build_algo()
    try:
        for _ in range(2):
            algo.train()
        learner = algo.learner_group._learner
        steps = {int(state["step"]) for opt in learner._named_optimizers.values()
                 for state in opt.state.values()}
    finally:
        algo.stop()
    assert steps == {2 * num_epochs}


@pytest.mark.slow
def test_reinforce_learns_a_contextual_bandit(local_ray: None) -> None:
    config = (ReinforceConfig().environment(ContextBandit)
              .env_runners(num_env_runners=0)
              .training(lr=1e-2, num_episodes_per_train_batch=32)
              .rl_module(model_config={"hidden_sizes": [64], "dropout": 0.0})
              .debugging(seed=3))
    algo = config.build_algo()
    try:
        returns = [algo.train()["env_runners"]["episode_return_mean"] for _ in range(40)]
    finally:
        algo.stop()
    assert np.mean(returns[:3]) < 0.6
    assert np.mean(returns[-5:]) > 0.9


@pytest.mark.slow
def test_mesh_env_training_reports_custom_metrics(local_ray: None) -> None:
    from envs.mesh_env import MeshEnv
    from rl.callbacks import EPISODE_METRICS, MeshMetricsCallback

    config = (ReinforceConfig()
              .environment(MeshEnv, env_config={"load": "classic", "episode_len": 3,
                                              "init": "classic_random",
                                                "load_draw": "per_episode"})
              .env_runners(num_env_runners=2, num_cpus_per_env_runner=0.5)
              .learners(num_cpus_per_learner=0.5)
              .training(num_episodes_per_train_batch=3, entropy_coeff=0.01)
              .callbacks(MeshMetricsCallback)
              .debugging(seed=0))
    algo = config.build_algo()
    try:
        result = algo.train()
        result = algo.train()
        num_actions = algo.get_module().action_space.n
    finally:
        algo.stop()
    runners = result["env_runners"]
    assert runners["num_episodes_lifetime"] == 6  # 3 per iteration: 2 + 1 over the runners
    assert "unhealthy_end" in runners
    if runners["unhealthy_end"] < 1.0:
        for name in EPISODE_METRICS:
            assert np.isfinite(runners[name]), name
    learner = result["learners"]["default_policy"]
    assert np.isfinite(learner["policy_loss"])
    assert 0.0 < learner["entropy"] <= np.log(num_actions) + 1e-6


@pytest.mark.slow
def test_every_iteration_samples_new_episodes_reproducibly(local_ray: None) -> None:
    """RLlib re-seeds the envs with the same seed before each num_episodes sample; the algorithm
    must not replay the same episodes every iteration — and the same seed gives the same run."""
    def first_observations(seed: int) -> list[list[float]]:
        config = (ReinforceConfig().environment(RandomStart).env_runners(num_env_runners=0)
                  .training(num_episodes_per_train_batch=4).debugging(seed=seed))
        algo = config.build_algo()
        try:
            batches = [algo._sample_complete_episodes()[0] for _ in range(2)]
        finally:
            algo.stop()
        return [[float(e.get_observations(0)[0]) for e in batch] for batch in batches]

    run = first_observations(seed=11)
    assert run[0] != run[1]
    assert first_observations(seed=11) == run
