"""The REINFORCE loss (rl/learner.py) and the episode split (rl/reinforce.py)."""

from __future__ import annotations

import pytest
import torch

from rl.learner import reinforce_loss
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
