"""A contextual bandit shaped like a two-service mesh, for the learner's end-to-end tests
(``test_learner_baseline``, ``test_learner_action_critic``), and the local Ray they run on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

OBS = gym.spaces.Box(0.0, 1.0, (5,), np.float32)
ACTIONS = gym.spaces.Discrete(7)  # 2 services x 3 acts + no-op
#: The shared module's layout over :data:`OBS` and :data:`ACTIONS`.
SHARED = {"service_features": [[0, 1], [2, 3]], "global_features": [4], "acts_per_service": 3,
          "noop_action": True, "hidden": [8]}


class ServiceBandit(gym.Env):
    """One-step episodes over 2 services x 3 acts + no-op: service ``s`` shows ``[flag, load]``
    (one service flagged); the flagged service's act for its load's third earns 1."""

    def __init__(self, env_config: Any = None) -> None:
        self.observation_space, self.action_space = OBS, ACTIONS
        self._right = 0

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        obs = self.np_random.uniform(0.0, 1.0, 5).astype(np.float32)
        flagged = int(self.np_random.integers(2))
        obs[[0, 2]] = 0.0
        obs[2 * flagged] = 1.0
        self._right = 3 * flagged + min(int(obs[2 * flagged + 1] * 3), 2)
        return obs, {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = 1.0 if int(action) == self._right else 0.0
        return np.zeros(5, np.float32), reward, True, False, {}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A private local Ray of 2 CPUs for the module's tests, shut down after them."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
