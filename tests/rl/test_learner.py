"""The REINFORCE loss and its automatic entropy coefficient (rl/learner.py) and the episode
split (rl/reinforce.py)."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from rl.learner import (
    ALPHA_MAX,
    ALPHA_MIN,
    ENTROPY_ALPHA_KEY,
    ENTROPY_KEY,
    LOG_ALPHA_STATE_KEY,
    POLICY_LOSS_KEY,
    initial_log_alpha,
    next_log_alpha,
    reinforce_loss,
)
from rl.reinforce import ReinforceConfig, episodes_per_runner


def _step(returns: torch.Tensor, entropy_coeff: float = 0.0) -> torch.Tensor:
    """Action probabilities after one SGD step on the loss for actions [0, 1] with returns."""
    logits = torch.zeros(2, 3, requires_grad=True)
    dist = torch.distributions.Categorical(logits=logits)
    actions = torch.tensor([0, 1])
    loss, _ = reinforce_loss(dist.log_prob(actions), returns, dist.entropy(), entropy_coeff)
    loss.backward()
    with torch.no_grad():
        return torch.softmax(logits - 1.0 * logits.grad, -1)


def test_positive_return_makes_the_action_more_likely_negative_less() -> None:
    probs = _step(torch.tensor([1.0, -1.0]))
    assert probs[0, 0] > 1 / 3
    assert probs[1, 1] < 1 / 3


def test_policy_loss_is_minus_mean_logp_times_return() -> None:
    logp = torch.log(torch.tensor([0.5, 0.25]))
    loss, policy_loss = reinforce_loss(logp, torch.tensor([2.0, 4.0]), torch.zeros(2), 0.3)
    expected = -(torch.log(torch.tensor(0.5)) * 2 + torch.log(torch.tensor(0.25)) * 4) / 2
    torch.testing.assert_close(policy_loss, expected)
    torch.testing.assert_close(loss, expected)


def test_entropy_bonus_lowers_the_loss_of_spread_policies() -> None:
    logp, returns = torch.zeros(2), torch.zeros(2)
    loss, _ = reinforce_loss(logp, returns, torch.tensor([1.0, 1.0]), 0.5)
    assert loss.item() == pytest.approx(-0.5)


def test_episodes_are_split_over_runners_exactly() -> None:
    assert episodes_per_runner(8, 3) == [3, 3, 2]
    assert sum(episodes_per_runner(7, 2)) == 7
    with pytest.raises(ValueError):
        episodes_per_runner(4, 0)


def test_config_rejects_fewer_episodes_than_runners() -> None:
    config = ReinforceConfig().environment("CartPole-v1").env_runners(num_env_runners=3) \
        .training(num_episodes_per_train_batch=2)
    with pytest.raises(ValueError, match="num_episodes_per_train_batch"):
        config.validate()


def test_config_rejects_group_scale_without_groups() -> None:
    config = ReinforceConfig().environment("CartPole-v1").training(group_scale=True)
    with pytest.raises(ValueError, match="group_scale"):
        config.validate()


# The automatic entropy coefficient (ReinforceConfig.entropy_target): no Ray cluster, the
# learner is built in-process and updated on hand-made episodes.

OBS = gym.spaces.Box(0.0, 1.0, (3,), np.float32)
ACTIONS = gym.spaces.Discrete(4)  # uniform entropy ln 4 = 1.386 nats


def _learner(**training: Any) -> Any:
    config = (ReinforceConfig().environment(observation_space=OBS, action_space=ACTIONS)
              .training(entropy_coeff=0.01, **training)
              .rl_module(model_config={"hidden_sizes": [8], "dropout": 0.0}))
    config.validate()
    return config, config.build_learner(spaces={DEFAULT_MODULE_ID: (OBS, ACTIONS)})


def _episodes(n: int = 4) -> list[SingleAgentEpisode]:
    rng = np.random.default_rng(0)
    return [SingleAgentEpisode(
        observations=[rng.random(3).astype(np.float32) for _ in range(3)],
        actions=[int(rng.integers(4)) for _ in range(2)], rewards=list(rng.random(2)),
        infos=[{}] * 3, terminated=True, len_lookback_buffer=0,
        observation_space=OBS, action_space=ACTIONS) for _ in range(n)]


def _metric(results: dict[str, Any], key: str) -> float | None:
    value = results[DEFAULT_MODULE_ID].get(key)
    return None if value is None else float(value.peek() if hasattr(value, "peek") else value)


def test_next_log_alpha_rises_below_the_target_falls_above_and_is_clamped() -> None:
    assert next_log_alpha(0.0, mean_entropy=1.0, entropy_target=2.0,
                          entropy_target_lr=0.1) == pytest.approx(0.1)
    assert next_log_alpha(0.0, mean_entropy=3.0, entropy_target=2.0,
                          entropy_target_lr=0.1) == pytest.approx(-0.1)
    assert next_log_alpha(0.0, 2.0, 2.0, 0.1) == 0.0
    assert math.exp(next_log_alpha(0.0, 0.0, 1e6, 1.0)) == pytest.approx(ALPHA_MAX)
    assert math.exp(next_log_alpha(0.0, 1e6, 0.0, 1.0)) == pytest.approx(ALPHA_MIN)
    assert math.exp(initial_log_alpha(0.0)) == pytest.approx(1e-3)
    assert math.exp(initial_log_alpha(0.1)) == pytest.approx(0.1)


@pytest.mark.parametrize(("target", "rises"), [(3.0, True), (0.0, False)])
def test_an_update_moves_alpha_towards_the_target_entropy(target: float, rises: bool) -> None:
    _, learner = _learner(entropy_target=target, entropy_target_lr=0.2)
    results = learner.update(episodes=_episodes())
    # the update used the starting alpha = entropy_coeff, then moved it by the entropy gap
    assert _metric(results, ENTROPY_ALPHA_KEY) == pytest.approx(0.01)
    entropy = _metric(results, ENTROPY_KEY)
    assert 0.0 < entropy < math.log(4) + 1e-6  # below 3 nats and above 0
    log_alpha = learner.log_alpha[DEFAULT_MODULE_ID]
    assert log_alpha == pytest.approx(math.log(0.01) + 0.2 * (target - entropy), rel=1e-5)
    assert (log_alpha > math.log(0.01)) is rises
    results = learner.update(episodes=_episodes())  # the next update uses the moved alpha
    assert _metric(results, ENTROPY_ALPHA_KEY) == pytest.approx(math.exp(log_alpha))


def test_the_loss_weighs_the_entropy_by_alpha_not_by_entropy_coeff() -> None:
    config, learner = _learner(entropy_target=1.0)
    learner.log_alpha[DEFAULT_MODULE_ID] = math.log(2.0)
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]]))
    batch = {Columns.OBS: torch.rand(2, 3), Columns.ACTIONS: torch.tensor([0, 3]),
             Columns.RETURNS_TO_GO: torch.tensor([1.0, -1.0])}
    loss = learner.compute_loss_for_module(module_id=DEFAULT_MODULE_ID, config=config,
                                           batch=batch,
                                           fwd_out={Columns.ACTION_DIST_INPUTS: logits})
    entropy = -(logits.exp() * logits).sum(-1).mean().item()
    policy = -(math.log(0.4) * 1.0 + math.log(0.25) * -1.0) / 2
    assert loss.item() == pytest.approx(policy - 2.0 * entropy, rel=1e-5)


def test_without_a_target_the_fixed_coefficient_is_used_and_nothing_moves() -> None:
    config, learner = _learner()
    assert config.entropy_target is None  # off by default
    assert learner.entropy_weight(DEFAULT_MODULE_ID, config) == 0.01
    results = learner.update(episodes=_episodes())
    assert learner.log_alpha == {}
    assert _metric(results, ENTROPY_ALPHA_KEY) is None
    assert LOG_ALPHA_STATE_KEY not in learner.get_state()
    total = _metric(results, learner.TOTAL_LOSS_KEY)
    expected = _metric(results, POLICY_LOSS_KEY) - 0.01 * _metric(results, ENTROPY_KEY)
    assert total == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_log_alpha_survives_a_learner_state_round_trip() -> None:
    _, learner = _learner(entropy_target=3.0)
    learner.update(episodes=_episodes())
    state = learner.get_state()
    _, fresh = _learner(entropy_target=3.0)
    fresh.set_state(state)
    assert fresh.log_alpha == learner.log_alpha != {}


@pytest.mark.parametrize(("setting", "field"), [
    ({"entropy_target": -0.5}, "entropy_target"),
    ({"entropy_target": float("nan")}, "entropy_target"),
    ({"entropy_target": True}, "entropy_target"),
    ({"entropy_target": 2.0, "entropy_target_lr": 0.0}, "entropy_target_lr"),
    ({"entropy_target": 2.0, "entropy_target_lr": -0.05}, "entropy_target_lr"),
])
def test_config_rejects_bad_entropy_target_settings(setting: dict[str, Any], field: str) -> None:
    config = ReinforceConfig().environment("CartPole-v1").training(**setting)
    with pytest.raises(ValueError, match=f"^{field} must"):
        config.validate()


def test_config_accepts_an_entropy_target_of_zero_and_off() -> None:
    for target in (0.0, 2, None):
        ReinforceConfig().environment("CartPole-v1").training(entropy_target=target).validate()
