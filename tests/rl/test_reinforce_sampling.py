"""The REINFORCE env runner's sampling (rl/reinforce.py: ReinforceEnvRunner, SeedOnce): several
envs per runner give each env a fixed quota of whole episodes, not the first ones to finish, and
every env of every runner gets its own seed."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from rl.reinforce import ReinforceConfig, ReinforceEnvRunner


class Tagged(gym.Env):
    """Episodes that say which env and which episode they are: observation ``[first seed,
    episode number]``; an env seeded with an even seed has 1-step episodes, odd 3-step ones."""

    def __init__(self, env_config: Any = None) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 2.0**33, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._tag = -1
        self._episode = -1
        self._t = 0

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._tag = seed
        self._episode += 1
        self._t = 0
        return np.array([self._tag, self._episode], np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._t += 1
        length = 1 if self._tag % 2 == 0 else 3
        obs = np.array([self._tag, self._episode], np.float32)
        return obs, 1.0, self._t >= length, False, {}


def _runner(num_envs: int, worker_index: int = 0, seed: int = 10,
            group: int = 1) -> ReinforceEnvRunner:
    config = (ReinforceConfig().environment(Tagged)
              .env_runners(num_env_runners=0, num_envs_per_env_runner=num_envs)
              .rl_module(model_config={"hidden_sizes": [4], "dropout": 0.0})
              .training(episodes_per_scenario=group)
              .debugging(seed=seed))
    return ReinforceEnvRunner(config=config, worker_index=worker_index)


def _tags(episodes: list[Any]) -> list[tuple[int, int]]:
    return sorted((int(e.get_observations(0)[0]), int(e.get_observations(0)[1]))
                  for e in episodes)


def test_each_env_gives_its_quota_of_episodes_whatever_their_length() -> None:
    runner = _runner(num_envs=2)
    try:
        first = runner.sample(num_episodes=4)
        # env 0 (seed 10: 1-step episodes) finishes 3 before env 1 (seed 11: 3 steps) finishes
        # 2; RLlib's first-finished rule would return 3 of env 0 and 1 of env 1.
        assert _tags(first) == [(10, 0), (10, 1), (11, 0), (11, 1)]
        assert sorted(len(e) for e in first) == [1, 1, 3, 3]
        assert all(e.is_done for e in first)
        # the next batch starts new episodes (the envs are not re-seeded: SeedOnce)
        second = runner.sample(num_episodes=3)  # quotas 2 + 1
        tags = _tags(second)
        assert [t for t, _ in tags] == [10, 10, 11] and min(n for _, n in tags) >= 2
        metrics = runner.get_metrics()
        assert metrics["num_episodes_lifetime"] == 7  # only the returned episodes count
    finally:
        runner.stop()


def test_one_env_is_rllibs_own_loop() -> None:
    runner = _runner(num_envs=1)
    try:
        assert _tags(runner.sample(num_episodes=3)) == [(10, 0), (10, 1), (10, 2)]
    finally:
        runner.stop()


@pytest.mark.parametrize("num_envs", [1, 3])
def test_runners_seed_disjoint_envs(num_envs: int) -> None:
    seeds = []
    for worker in (1, 2):
        runner = _runner(num_envs=num_envs, worker_index=worker, seed=100)
        try:
            seeds += [t for t, _ in _tags(runner.sample(num_episodes=num_envs))]
        finally:
            runner.stop()
    # seed + worker_index * num_envs + env index: one seed per env over all runners
    assert seeds == [100 + num_envs + i for i in range(2 * num_envs)]


def test_groups_of_envs_replay_the_same_seed_and_get_fresh_ones_every_sample() -> None:
    runner = _runner(num_envs=4, group=2)
    try:
        batches = [_tags(runner.sample(num_episodes=4)) for _ in range(3)]
    finally:
        runner.stop()
    seen = set()
    for tags in batches:
        seeds = sorted(t for t, _ in tags)
        # two groups of two envs: each group's envs were reset with one seed
        assert seeds[0] == seeds[1] and seeds[2] == seeds[3] and seeds[1] != seeds[2]
        seen.update(seeds)
    assert len(seen) == 6  # a fresh seed per group and sample: iterations do not repeat
    again = _runner(num_envs=4, group=2)
    try:
        assert _tags(again.sample(num_episodes=4)) == batches[0]  # the same seed, the same draws
    finally:
        again.stop()


@pytest.mark.parametrize(("envs", "batch", "group"), [(4, 8, 3), (4, 6, 2), (3, 3, 0)])
def test_groups_that_cannot_align_are_refused(envs: int, batch: int, group: int) -> None:
    config = (ReinforceConfig().environment(Tagged)
              .env_runners(num_env_runners=1, num_envs_per_env_runner=envs)
              .training(num_episodes_per_train_batch=batch, episodes_per_scenario=group))
    with pytest.raises(ValueError, match="episodes_per_scenario"):
        config.validate()
