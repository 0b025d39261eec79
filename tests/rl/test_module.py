"""The policy network (rl/module.py)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from rl.module import DEFAULT_POLICY_CONFIG, SoftmaxPolicyModule, policy_config
from rl.reinforce import ReinforceConfig

OBS = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
ACTIONS = gym.spaces.Discrete(5)


def _module(**model_config: object) -> SoftmaxPolicyModule:
    return RLModuleSpec(module_class=SoftmaxPolicyModule, observation_space=OBS,
                        action_space=ACTIONS, model_config=model_config).build()


def test_default_is_the_seed_network() -> None:
    net = _module(**DEFAULT_POLICY_CONFIG).policy_net
    kinds = [type(layer) for layer in net]
    assert kinds == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Dropout, torch.nn.Linear]
    assert (net[0].in_features, net[0].out_features) == (7, 250)
    assert net[2].p == pytest.approx(0.2)
    assert (net[3].in_features, net[3].out_features) == (250, 5)


def test_config_default_spec_builds_the_seed_network() -> None:
    spec = ReinforceConfig().get_default_rl_module_spec()
    spec.observation_space, spec.action_space = OBS, ACTIONS
    assert spec.build().policy_net[0].out_features == 250


def test_hidden_sizes_and_dropout_are_configurable() -> None:
    net = _module(hidden_sizes=[16, 8], dropout=0.0, activation="tanh").policy_net
    assert [type(layer) for layer in net] == [torch.nn.Linear, torch.nn.Tanh, torch.nn.Linear,
                                              torch.nn.Tanh, torch.nn.Linear]


@pytest.mark.parametrize(("key", "value"), [("hidden_sizes", [0]), ("hidden_sizes", "250"),
                                            ("dropout", 1.0), ("activation", "gelu9"),
                                            ("value_head", 1)])
def test_bad_settings_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key):
        policy_config({key: value})


def test_softmax_of_logits_is_a_distribution_over_actions() -> None:
    module = _module()
    out = module.forward_inference({Columns.OBS: torch.rand(3, 7)})
    probs = torch.softmax(out[Columns.ACTION_DIST_INPUTS], -1)
    assert probs.shape == (3, 5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))


def test_dropout_only_while_training() -> None:
    torch.manual_seed(0)
    module = _module(dropout=0.5)
    obs = {Columns.OBS: torch.rand(1, 7)}
    inference = [module.forward_inference(obs)[Columns.ACTION_DIST_INPUTS] for _ in range(3)]
    assert all(torch.equal(inference[0], x) for x in inference)
    train = [module.forward_train(obs)[Columns.ACTION_DIST_INPUTS] for _ in range(5)]
    assert any(not torch.equal(train[0], x) for x in train)


def test_rejects_non_discrete_actions() -> None:
    with pytest.raises(ValueError, match="Discrete"):
        RLModuleSpec(module_class=SoftmaxPolicyModule, observation_space=OBS,
                     action_space=gym.spaces.Box(0, 1, (2,))).build()


def test_value_head_only_when_asked_and_only_on_the_learner() -> None:
    assert not _module().has_value_head  # the notebook's network: no value head
    module = _module(value_head=True, dropout=0.5)
    assert module.has_value_head
    assert not any(isinstance(layer, torch.nn.Dropout) for layer in module.value_net)
    assert module.compute_values({Columns.OBS: torch.rand(4, 7)}).shape == (4,)
    runner = RLModuleSpec(module_class=SoftmaxPolicyModule, observation_space=OBS,
                          action_space=ACTIONS, model_config={"value_head": True},
                          inference_only=True).build()
    assert not runner.has_value_head
    runner.set_state(module.get_state(inference_only=True))
    with pytest.raises(ValueError, match="value_head"):
        runner.compute_values({Columns.OBS: torch.rand(1, 7)})
