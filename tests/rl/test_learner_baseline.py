"""The learned baseline (rl/learner.py with ReinforceConfig.learned_baseline): the loss on a
hand-computed batch, the value head's wiring through the config, and one end-to-end run."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from rl.learner import (
    EXPLAINED_VARIANCE_KEY,
    VALUE_LOSS_KEY,
    baseline_loss,
    explained_variance,
)
from rl.module import SoftmaxPolicyModule
from rl.reinforce import ReinforceConfig
from rl.shared_module import SharedServiceModule
from tests.rl._bandit import (  # noqa: F401  (local_ray: a fixture)
    ACTIONS,
    OBS,
    SHARED,
    ServiceBandit,
    local_ray,
)


def test_baseline_loss_on_a_hand_computed_batch() -> None:
    logp = torch.log(torch.tensor([0.5, 0.25]))
    returns, values = torch.tensor([2.0, 4.0]), torch.tensor([1.0, 5.0])
    total, policy, value = baseline_loss(logp, returns, values, torch.tensor([1.0, 0.5]),
                                         entropy_coeff=0.1, vf_loss_coeff=0.5)
    # advantages: 2 - 1 = 1 and 4 - 5 = -1
    expected_policy = -(math.log(0.5) * 1 + math.log(0.25) * -1) / 2  # = -ln(2)/2
    assert policy.item() == pytest.approx(expected_policy)
    assert value.item() == pytest.approx(((1 - 2) ** 2 + (5 - 4) ** 2) / 2)
    assert total.item() == pytest.approx(expected_policy - 0.1 * 0.75 + 0.5 * 1.0)


def test_policy_term_does_not_train_the_value() -> None:
    values = torch.tensor([1.0, 5.0], requires_grad=True)
    total, _, _ = baseline_loss(torch.log(torch.tensor([0.5, 0.25])), torch.tensor([2.0, 4.0]),
                                values, torch.zeros(2), 0.0, vf_loss_coeff=0.0)
    total.backward()
    assert values.grad is None or torch.all(values.grad == 0)


def test_a_perfect_baseline_zeroes_the_policy_gradient() -> None:
    logits = torch.zeros(3, 4, requires_grad=True)
    dist = torch.distributions.Categorical(logits=logits)
    returns = torch.tensor([1.0, -2.0, 0.5])
    _, policy, _ = baseline_loss(dist.log_prob(torch.tensor([0, 1, 2])), returns,
                                 returns.clone(), dist.entropy(), 0.0, 1.0)
    policy.backward()
    assert torch.all(logits.grad == 0)


def test_explained_variance() -> None:
    returns = torch.tensor([1.0, 2.0, 3.0])
    assert explained_variance(returns, returns).item() == pytest.approx(1.0)
    assert explained_variance(returns, torch.full((3,), 2.0)).item() == pytest.approx(0.0)
    assert explained_variance(torch.ones(3), torch.zeros(3)).item() == 0.0


def _config(module_class: type, model_config: dict[str, Any], **training: Any) -> Any:
    return (ReinforceConfig().environment(observation_space=OBS, action_space=ACTIONS)
            .training(**training)
            .rl_module(rl_module_spec=RLModuleSpec(module_class=module_class),
                       model_config=model_config))


def _value_output_layer(module: Any) -> torch.nn.Linear:
    """The last layer of ``module``'s value network."""
    head = module.value_head if isinstance(module, SharedServiceModule) else module.value_net
    return head[-1]


def _constant_value(module: Any, value: float) -> None:
    """Make ``module``'s ``V(s)`` the constant ``value`` (its last layer: zero weights)."""
    with torch.no_grad():
        _value_output_layer(module).weight.zero_()
        _value_output_layer(module).bias.fill_(value)


@pytest.mark.parametrize(("module_class", "model_config"),
                         [(SharedServiceModule, SHARED), (SoftmaxPolicyModule, {})])
def test_learner_loss_matches_the_hand_computed_one(module_class: type,
                                                    model_config: dict[str, Any]) -> None:
    config = _config(module_class, model_config, learned_baseline=True, vf_loss_coeff=0.5,
                     entropy_coeff=0.1)
    learner = config.build_learner(spaces={DEFAULT_MODULE_ID: (OBS, ACTIONS)})
    module = learner.module[DEFAULT_MODULE_ID]
    assert module.model_config["value_head"] is True  # set by the config flag
    _constant_value(module, 3.0)
    batch = {Columns.OBS: torch.rand(2, 5), Columns.ACTIONS: torch.tensor([0, 6]),
             Columns.RETURNS_TO_GO: torch.tensor([2.0, 6.0])}
    logits = torch.log(torch.tensor([[0.5, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05],
                                     [0.25, 0.25, 0.1, 0.1, 0.05, 0.05, 0.2]]))
    loss = learner.compute_loss_for_module(module_id=DEFAULT_MODULE_ID, config=config,
                                           batch=batch,
                                           fwd_out={Columns.ACTION_DIST_INPUTS: logits})
    probs = logits.exp()
    entropy = -(probs * logits).sum(-1).mean().item()
    # advantages 2 - 3 = -1 and 6 - 3 = 3; squared errors 1 and 9
    policy = -(math.log(0.5) * -1 + math.log(0.2) * 3) / 2
    assert loss.item() == pytest.approx(policy - 0.1 * entropy + 0.5 * 5.0, rel=1e-5)
    value_loss = learner.metrics.peek((DEFAULT_MODULE_ID, VALUE_LOSS_KEY))
    assert float(value_loss) == pytest.approx(5.0)
    loss.backward()
    # d loss / d V's bias = 0.5 * mean(2 * (V - G)) = 0.5 * (2 * 1 + 2 * -3) / 2
    assert _value_output_layer(module).bias.grad.item() == pytest.approx(-1.0)


def test_value_head_follows_the_flag_and_a_mismatch_is_an_error() -> None:
    assert ReinforceConfig().model_config["value_head"] is False
    assert ReinforceConfig().training(learned_baseline=True).model_config["value_head"] is True
    spaces = {DEFAULT_MODULE_ID: (OBS, ACTIONS)}
    plain = _config(SharedServiceModule, SHARED).build_learner(spaces=spaces)
    assert not plain.module[DEFAULT_MODULE_ID].has_value_head
    with pytest.raises(ValueError, match="no value head"):
        _config(SharedServiceModule, {**SHARED, "value_head": False},
                learned_baseline=True).build_learner(spaces=spaces)
    with pytest.raises(ValueError, match="learned_baseline is off"):
        _config(SharedServiceModule, {**SHARED, "value_head": True}).build_learner(spaces=spaces)


@pytest.mark.parametrize(("setting", "value"), [("vf_loss_coeff", -0.1),
                                                ("learned_baseline", "yes")])
def test_config_rejects_bad_baseline_settings(setting: str, value: Any) -> None:
    config = ReinforceConfig().environment("CartPole-v1").training(**{setting: value})
    with pytest.raises(ValueError, match=setting):
        config.validate()



@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_shared_module_with_learned_baseline_trains_end_to_end() -> None:
    """The algorithm with the shared module and the baseline: the env runner's inference-only
    copy takes the learner's weights (returns rise well above chance) and the value head learns
    (explains most of the returns' variance)."""
    config = (ReinforceConfig().environment(ServiceBandit)
              .env_runners(num_env_runners=1, num_cpus_per_env_runner=0.5)
              .learners(num_cpus_per_learner=0.5)
              .training(lr=1e-2, num_episodes_per_train_batch=64, learned_baseline=True)
              .rl_module(rl_module_spec=RLModuleSpec(module_class=SharedServiceModule),
                         model_config={**SHARED, "hidden": [32, 32]})
              .debugging(seed=1))
    algo = config.build_algo()
    try:
        results = [algo.train() for _ in range(80)]
    finally:
        algo.stop()
    returns = [r["env_runners"]["episode_return_mean"] for r in results]
    explained = [r["learners"][DEFAULT_MODULE_ID][EXPLAINED_VARIANCE_KEY] for r in results]
    # Chance is 1/7. Measured: ~0.19 over the first 10 iterations, 0.66 over the last 10 (a
    # policy that solves two of a service's three load bands), explained variance ~0.76.
    assert np.mean(returns[:3]) < 0.3
    assert np.mean(returns[-10:]) > 0.5, returns
    assert np.mean(explained[-10:]) > 0.5, explained
