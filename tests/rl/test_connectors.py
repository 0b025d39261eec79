"""Returns-to-go and their standardisation (rl/connectors.py)."""

from __future__ import annotations

import numpy as np
import pytest
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from rl.connectors import (
    DiscountedReturnsToGo,
    average_ranks,
    discounted_returns_to_go,
    per_step_centered_ranks,
    scale_groups,
    standardise,
    subtract_group_mean,
    subtract_per_step_mean,
)


def _episode(rewards: list[float], done: bool = True, key: int | None = None
             ) -> SingleAgentEpisode:
    n = len(rewards)
    first = {} if key is None else {"episode_key": key}
    return SingleAgentEpisode(
        observations=[np.zeros(2, np.float32)] * (n + 1), actions=[0] * n,
        rewards=rewards, infos=[first] + [{}] * n, terminated=done, len_lookback_buffer=0)


def _column(batch: dict, episodes: list[SingleAgentEpisode]) -> list[np.ndarray]:
    """The RETURNS_TO_GO items of each episode, in episode order."""
    column = batch[Columns.RETURNS_TO_GO]
    return [np.asarray(column[(e.id_,)]).reshape(-1) for e in episodes]


def test_returns_to_go_matches_the_definition() -> None:
    rewards = np.array([1.0, -2.0, 0.5, 3.0])
    gamma = 0.9
    expected = [sum(gamma ** k * rewards[t + k] for k in range(len(rewards) - t))
                for t in range(len(rewards))]
    np.testing.assert_allclose(discounted_returns_to_go(rewards, gamma), expected)


def test_gamma_one_gives_the_sum_of_the_remaining_rewards() -> None:
    np.testing.assert_allclose(discounted_returns_to_go(np.array([1.0, 2.0, 3.0]), 1.0),
                               [6.0, 5.0, 3.0])


def test_standardise_has_zero_mean_unit_std_and_no_nan_on_constants() -> None:
    z = standardise(np.array([1.0, 2.0, 3.0, 10.0]))
    assert abs(z.mean()) < 1e-9
    assert abs(z.std() - 1.0) < 1e-6
    np.testing.assert_array_equal(standardise(np.array([4.0, 4.0])), [0.0, 0.0])


def test_connector_adds_one_return_per_step_of_every_episode() -> None:
    episodes = [_episode([1.0, 1.0]), _episode([0.0, 0.0, 5.0])]
    batch = DiscountedReturnsToGo(gamma=0.5, normalize=False)(
        rl_module=None, batch={}, episodes=episodes)
    first, second = _column(batch, episodes)
    np.testing.assert_allclose(first, [1.5, 1.0])
    np.testing.assert_allclose(second, [1.25, 2.5, 5.0])


def test_connector_standardises_over_the_whole_batch_not_per_episode() -> None:
    episodes = [_episode([1.0, 1.0]), _episode([0.0, 0.0, 5.0])]
    batch = DiscountedReturnsToGo(gamma=0.5, normalize=True)(
        rl_module=None, batch={}, episodes=episodes)
    flat = np.concatenate(_column(batch, episodes))
    raw = np.array([1.5, 1.0, 1.25, 2.5, 5.0])
    np.testing.assert_allclose(flat, (raw - raw.mean()) / raw.std(), rtol=1e-5)


def test_connector_refuses_unfinished_episodes() -> None:
    with pytest.raises(ValueError, match="complete episodes"):
        DiscountedReturnsToGo(gamma=0.9, normalize=False)(
            rl_module=None, batch={}, episodes=[_episode([1.0], done=False)])


def test_connector_rejects_gamma_out_of_range() -> None:
    with pytest.raises(ValueError, match="gamma"):
        DiscountedReturnsToGo(gamma=1.5, normalize=False)


def test_per_step_baseline_subtracts_the_mean_at_each_step_index() -> None:
    a, b = np.array([3.0, 2.0, 1.0]), np.array([5.0, 0.0])
    out = subtract_per_step_mean([a, b])
    np.testing.assert_allclose(out[0], [-1.0, 1.0, 0.0])  # means per t: 4, 1, 1 (one episode)
    np.testing.assert_allclose(out[1], [1.0, -1.0])


def test_connector_applies_the_per_step_baseline_before_standardising() -> None:
    episodes = [_episode([1.0, 1.0]), _episode([3.0, 1.0])]
    batch = DiscountedReturnsToGo(gamma=1.0, normalize=False, per_step_baseline=True)(
        rl_module=None, batch={}, episodes=episodes)
    first, second = _column(batch, episodes)
    np.testing.assert_allclose(first, [-1.0, 0.0])  # returns [2, 1] and [4, 1]
    np.testing.assert_allclose(second, [1.0, 0.0])


def test_average_ranks_share_ties() -> None:
    np.testing.assert_allclose(average_ranks(np.array([3.0, 1.0, 1.0, 2.0])), [3.0, 0.5, 0.5, 2.0])
    np.testing.assert_allclose(average_ranks(np.array([7.0, 7.0, 7.0])), [1.0, 1.0, 1.0])


def test_centered_ranks_are_per_step_and_ignore_the_scale_of_outliers() -> None:
    a, b, c = np.array([1.0, 5.0, 0.0]), np.array([2.0, 5.0]), np.array([0.0, 5.0, 1.0])
    out = per_step_centered_ranks([a, b, c])
    np.testing.assert_allclose(out[0], [0.0, 0.0, -0.5])  # t=0: 1 is the middle of 0, 1, 2
    np.testing.assert_allclose(out[1], [0.5, 0.0])        # t=1: a three-way tie
    np.testing.assert_allclose(out[2], [-0.5, 0.0, 0.5])  # t=2: two episodes, 0 < 1
    # A 1 500-point repair and a 30-point step rank the same against a 0: only order counts.
    huge = per_step_centered_ranks([np.array([1500.0]), np.array([0.0]), np.array([-5.0])])
    small = per_step_centered_ranks([np.array([30.0]), np.array([0.0]), np.array([-5.0])])
    np.testing.assert_allclose(np.concatenate(huge), np.concatenate(small))
    np.testing.assert_allclose(np.concatenate(huge), [0.5, 0.0, -0.5])


def test_a_step_only_one_episode_reached_gets_no_signal() -> None:
    out = per_step_centered_ranks([np.array([1.0, 9.0]), np.array([2.0])])
    np.testing.assert_allclose(out[0], [-0.5, 0.0])
    np.testing.assert_allclose(out[1], [0.5])


def test_connector_ranks_returns_to_go_instead_of_the_mean_baseline() -> None:
    episodes = [_episode([1.0, 1.0]), _episode([3.0, 100.0]), _episode([0.0, -1.0])]
    batch = DiscountedReturnsToGo(gamma=1.0, normalize=False, per_step_baseline=True,
                                  rank_returns=True)(rl_module=None, batch={}, episodes=episodes)
    # returns-to-go: [2, 1], [103, 100], [-1, -1] -> ranks per step index, centred
    first, second, third = _column(batch, episodes)
    np.testing.assert_allclose(first, [0.0, 0.0])
    np.testing.assert_allclose(second, [0.5, 0.5])
    np.testing.assert_allclose(third, [-0.5, -0.5])


def test_group_mean_compares_only_episodes_of_the_same_scenario() -> None:
    returns = [np.array([10.0, 5.0]), np.array([14.0, 7.0]),  # scenario a: an easy one
               np.array([-100.0, -50.0]), np.array([-90.0])]  # scenario b: hard; one cut short
    out = subtract_group_mean(returns, ["a", "a", "b", "b"])
    np.testing.assert_allclose(out[0], [-2.0, -1.0])
    np.testing.assert_allclose(out[1], [2.0, 1.0])
    # b's difficulty cancels; its step 1 has no peer (the other episode ended): no signal
    np.testing.assert_allclose(out[2], [-5.0, 0.0])
    np.testing.assert_allclose(out[3], [5.0])


def test_an_episode_without_a_peer_gets_no_signal() -> None:
    out = subtract_group_mean([np.array([3.0, 1.0]), np.array([7.0, 2.0])], [1, 2])
    assert all(np.all(r == 0.0) for r in out)


def test_connector_group_baseline_reads_the_reset_info_key() -> None:
    episodes = [_episode([1.0, 1.0], key=7), _episode([3.0, 1.0], key=7),
                _episode([-50.0, 0.0], key=8), _episode([-40.0, 0.0], key=8)]
    batch = DiscountedReturnsToGo(gamma=1.0, normalize=False, rank_returns=True,
                                  group_baseline=True)(rl_module=None, batch={},
                                                       episodes=episodes)
    # returns-to-go [2, 1], [4, 1] | [-50, 0], [-40, 0]: the group baseline replaces the ranks
    np.testing.assert_allclose(np.concatenate(_column(batch, episodes)),
                               [-1.0, 0.0, 1.0, 0.0, -5.0, 0.0, 5.0, 0.0])


def test_connector_group_baseline_needs_the_key() -> None:
    with pytest.raises(ValueError, match="episode_key"):
        DiscountedReturnsToGo(gamma=1.0, normalize=False, group_baseline=True)(
            rl_module=None, batch={}, episodes=[_episode([1.0]), _episode([2.0])])


def test_scale_groups_gives_every_scenario_the_same_weight() -> None:
    centred = [np.array([-1.0, -1.0]), np.array([1.0, 1.0]),  # a: actions swing it by 2
               np.array([50.0, -50.0]), np.array([-50.0, 50.0]),  # b: by 100
               np.array([0.0]), np.array([0.0])]  # c: the actions made no difference
    out = scale_groups(centred, ["a", "a", "b", "b", "c", "c"])
    np.testing.assert_allclose(out[0], [-1.0, -1.0])
    np.testing.assert_allclose(out[2], [1.0, -1.0])
    assert all(np.all(r == 0.0) for r in out[4:])
    # each group's values now have unit standard deviation
    for members in ((0, 1), (2, 3)):
        assert np.concatenate([out[i] for i in members]).std() == pytest.approx(1.0)


def test_connector_group_scale_scales_after_the_group_baseline() -> None:
    episodes = [_episode([1.0, 1.0], key=7), _episode([3.0, 1.0], key=7),
                _episode([-50.0, 0.0], key=8), _episode([-40.0, 0.0], key=8)]
    batch = DiscountedReturnsToGo(gamma=1.0, normalize=False, group_baseline=True,
                                  group_scale=True)(rl_module=None, batch={},
                                                    episodes=episodes)
    # centred [-1, 0], [1, 0] (std 1/sqrt 2) | [-5, 0], [5, 0] (std 5/sqrt 2): same weight
    r2 = np.sqrt(2.0)
    np.testing.assert_allclose(np.concatenate(_column(batch, episodes)),
                               [-r2, 0.0, r2, 0.0, -r2, 0.0, r2, 0.0])


def test_group_scale_needs_the_group_baseline() -> None:
    with pytest.raises(ValueError, match="group_scale needs the group baseline"):
        DiscountedReturnsToGo(gamma=1.0, normalize=False, group_scale=True)
