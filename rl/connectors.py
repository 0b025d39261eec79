"""Learner connector: discounted returns-to-go per timestep, optionally shaped.

REINFORCE weights each action's log-probability by the discounted return that followed it,
``G_t = sum_k gamma^k r_{t+k}`` up to the end of the episode. Then, in this order and each
optional: a baseline from the episodes that replayed the same scenario
(:func:`subtract_group_mean`, optionally scaled per group by :func:`scale_groups`), *or*
per-step centred ranks (:func:`per_step_centered_ranks`),
*or* a per-step mean baseline (:func:`subtract_per_step_mean`); standardising the batch
(subtract the mean, divide by the standard deviation), a constant baseline that fixes the
gradient's scale whatever the reward's units.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns


def discounted_returns_to_go(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """``G_t = r_t + gamma * G_{t+1}`` with ``G_T = r_T``, for a 1-D array of rewards."""
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D, got shape {rewards.shape}")
    returns = np.empty_like(rewards)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def standardise(values: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """``(values - mean) / (std + eps)``; all-equal values become zeros (no signal, no NaN)."""
    values = np.asarray(values, dtype=np.float64)
    return (values - values.mean()) / (values.std() + eps)


def subtract_per_step_mean(per_episode: list[np.ndarray]) -> list[np.ndarray]:
    """Subtract, from each episode's ``G_t``, the mean ``G_t`` of all episodes at the same ``t``.

    A time-dependent baseline: in fixed-horizon episodes the return left at step ``t`` shrinks
    with ``t`` whatever the policy does; this removes that part of the variance.
    """
    horizon = max((len(r) for r in per_episode), default=0)
    sums, counts = np.zeros(horizon), np.zeros(horizon)
    for returns in per_episode:
        sums[:len(returns)] += returns
        counts[:len(returns)] += 1
    means = sums / np.maximum(counts, 1)
    return [returns - means[:len(returns)] for returns in per_episode]


def group_indices(keys: list[Any]) -> dict[Any, list[int]]:
    """The positions of each key in ``keys`` (the episodes of each scenario group), in order."""
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


def subtract_group_mean(per_episode: list[np.ndarray], keys: list[Any]) -> list[np.ndarray]:
    """Subtract, from each episode's ``G_t``, the mean ``G_t`` at the same ``t`` of the episodes
    with the same key (the same scenario, start and load seed: common random numbers).

    Episodes of one group differ only in the actions the policy sampled, so what is left is
    what the actions did — the scenario's own difficulty (a load step, a fault), which
    dominates a batch of different scenarios, cancels. The group mean includes the episode
    itself (as in GRPO, Shao et al. 2024): unbiased up to the factor ``(k-1)/k``, which the
    batch standardisation absorbs. A step only one episode of its group reached (an episode
    that ran longer than its peers, or an episode without a peer) gets 0: no comparison, no
    signal.
    """
    groups = group_indices(keys)
    shaped = [np.zeros(len(r)) for r in per_episode]
    for members in groups.values():
        horizon = max(len(per_episode[i]) for i in members)
        for t in range(horizon):
            at_t = [i for i in members if len(per_episode[i]) > t]
            if len(at_t) < 2:
                continue
            mean = float(np.mean([per_episode[i][t] for i in at_t]))
            for i in at_t:
                shaped[i][t] = per_episode[i][t] - mean
    return shaped


def scale_groups(per_episode: list[np.ndarray], keys: list[Any],
                 eps: float = 1e-8) -> list[np.ndarray]:
    """Divide each group's (already centred) ``G_t`` by that group's standard deviation over
    all its episodes and steps, as GRPO (Shao et al. 2024) scales its group advantages.

    After :func:`subtract_group_mean` a scenario whose actions swing the return by hundreds of
    points (a random start under a load step) outweighs one whose actions swing it by a few (a
    steady load from Istio's defaults) by the ratio of the two; scaled, every scenario in the
    batch speaks with the same weight. A group whose values are all equal (the actions made no
    difference) stays at 0. Off by default (``ReinforceConfig.group_scale``): on five seeds it
    did not change what a trial learned (BENCHMARKS.md, Closed-loop evaluation).
    """
    groups = group_indices(keys)
    scaled = [np.asarray(r, dtype=np.float64).copy() for r in per_episode]
    for members in groups.values():
        values = np.concatenate([scaled[i] for i in members])
        std = float(values.std()) if values.size else 0.0
        for i in members:
            scaled[i] = scaled[i] / std if std > eps else np.zeros_like(scaled[i])
    return scaled


def average_ranks(values: np.ndarray) -> np.ndarray:
    """0-based ranks of ``values``; tied values share the mean of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    _, tie_group = np.unique(values, return_inverse=True)
    return (np.bincount(tie_group, weights=ranks) / np.bincount(tie_group))[tie_group]


def per_step_centered_ranks(per_episode: list[np.ndarray]) -> list[np.ndarray]:
    """Replace each ``G_t`` by its centred rank among the batch's ``G_t`` at the same ``t``.

    Ranks are scaled to [-0.5, 0.5] (ties share their mean rank; a step index only one episode
    reached gets 0). This is the fitness shaping of evolution strategies (Wierstra et al. 2014,
    Salimans et al. 2017) applied per time step: the update no longer depends on the returns'
    scale or tails — on the simulator one episode that repairs a broken mesh gains ~1 500
    points where a typical good step gains ~30, and a standardised update would learn only the
    former — and, like :func:`subtract_per_step_mean`, it compares actions taken at the same
    point of an episode.
    """
    horizon = max((len(r) for r in per_episode), default=0)
    shaped = [np.zeros(len(r)) for r in per_episode]
    for t in range(horizon):
        members = [i for i, r in enumerate(per_episode) if len(r) > t]
        if len(members) < 2:
            continue
        ranks = average_ranks(np.array([per_episode[i][t] for i in members]))
        for i, rank in zip(members, ranks / (len(members) - 1) - 0.5, strict=True):
            shaped[i][t] = rank
    return shaped


class DiscountedReturnsToGo(ConnectorV2):
    """Adds ``Columns.RETURNS_TO_GO`` to the train batch, one value per timestep.

    Needs complete episodes (the algorithm samples with ``batch_mode="complete_episodes"``);
    an episode that was cut off raises ``ValueError`` instead of silently biasing the returns.
    """

    #: The reset info's key naming an episode's scenario draw (``envs.mesh_env.MeshEnv``).
    EPISODE_KEY = "episode_key"

    def __init__(self, input_observation_space: Any = None, input_action_space: Any = None, *,
                 gamma: float, normalize: bool, per_step_baseline: bool = False,
                 rank_returns: bool = False, group_baseline: bool = False,
                 group_scale: bool = False) -> None:
        super().__init__(input_observation_space, input_action_space)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.gamma = float(gamma)
        self.normalize = bool(normalize)
        self.per_step_baseline = bool(per_step_baseline)
        self.rank_returns = bool(rank_returns)
        self.group_baseline = bool(group_baseline)
        self.group_scale = bool(group_scale)
        if self.group_scale and not self.group_baseline:
            raise ValueError("group_scale needs the group baseline (episodes_per_scenario > 1)")

    def __call__(self, *, rl_module: Any, batch: dict[str, Any], episodes: list[Any],
                 **kwargs: Any) -> dict[str, Any]:
        """Compute the returns of every episode, standardise them jointly, add them to batch."""
        sa_episodes = list(self.single_agent_episode_iterator(
            episodes, agents_that_stepped_only=False))
        per_episode = []
        for episode in sa_episodes:
            if not episode.is_done:
                raise ValueError("REINFORCE needs complete episodes; got an unfinished one "
                                 f"(id {episode.id_}, {len(episode)} steps)")
            per_episode.append(discounted_returns_to_go(episode.get_rewards(), self.gamma))
        if self.group_baseline and per_episode:
            keys = [self.episode_key(e) for e in sa_episodes]
            per_episode = subtract_group_mean(per_episode, keys)
            if self.group_scale:
                per_episode = scale_groups(per_episode, keys)
        elif self.rank_returns and per_episode:
            per_episode = per_step_centered_ranks(per_episode)
        elif self.per_step_baseline and per_episode:
            per_episode = subtract_per_step_mean(per_episode)
        if self.normalize and per_episode:
            flat = standardise(np.concatenate(per_episode))
            splits = np.cumsum([len(r) for r in per_episode])[:-1]
            per_episode = np.split(flat, splits)
        for episode, returns in zip(sa_episodes, per_episode, strict=True):
            self.add_n_batch_items(
                batch=batch,
                column=Columns.RETURNS_TO_GO,
                items_to_add=returns.astype(np.float32),
                num_items=len(episode),
                single_agent_episode=episode,
            )
        return batch

    @classmethod
    def episode_key(cls, episode: Any) -> Any:
        """The scenario key of ``episode`` (its reset info's ``episode_key``).

        Raises:
            ValueError: the env does not report one (the group baseline needs it).
        """
        key = _reset_info(episode).get(cls.EPISODE_KEY)
        if key is None:
            raise ValueError(f"the group baseline needs the env's reset info "
                             f"{cls.EPISODE_KEY!r} (episode {episode.id_} has none)")
        return key


def _reset_info(episode: Any) -> dict[str, Any]:
    infos = episode.get_infos(0)
    return infos if isinstance(infos, dict) else {}
