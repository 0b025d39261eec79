"""Tests of rl.policies: the shared module's layout is MeshEnv's, and both policies build and
act on a real MeshEnv observation."""

from __future__ import annotations

import pytest
import torch
from ray.rllib.core.columns import Columns

from envs.mesh_env import MeshEnv
from rl.policies import mesh_layout, policy_spec
from rl.shared_module import SharedServiceModule

ENV = {"step_s": 2.0, "episode_len": 8, "init": "istio_default"}


@pytest.mark.parametrize("catalogue", ["classic", "extended", "ladder", "setpoint",
                                       "setpoint_restore", "setpoint_reset"])
def test_the_layout_is_the_envs(catalogue):
    config = {**ENV, "catalogue": catalogue}
    env = MeshEnv(config)
    try:
        layout = mesh_layout(config)
        assert layout["service_features"] == [list(s) for s in env.service_slices]
        assert layout["global_features"] == list(env.global_indices)
        assert layout["acts_per_service"] == env.catalogue.actions_per_service
        assert layout["noop_action"] is (catalogue != "classic")
        assert layout["global_actions"] == {"classic": 0, "setpoint_restore": 2}.get(catalogue, 1)
        assert len(env.catalogue) == (len(layout["service_features"])
                                      * layout["acts_per_service"] + layout["global_actions"])
    finally:
        env.close()


@pytest.mark.parametrize("policy", ["shared", "mlp"])
def test_each_policy_builds_and_scores_every_action_of_a_real_observation(policy):
    env = MeshEnv(ENV)
    try:
        obs, _ = env.reset(seed=0)
        spec, model_config = policy_spec(policy, ENV)
        spec.observation_space = env.observation_space
        spec.action_space = env.action_space
        spec.model_config = model_config
        module = spec.build()
        assert isinstance(module, SharedServiceModule) is (policy == "shared")
        out = module.forward_inference({Columns.OBS: torch.as_tensor(obs)[None]})
        assert out[Columns.ACTION_DIST_INPUTS].shape == (1, env.action_space.n)
    finally:
        env.close()


def test_an_unknown_policy_is_named():
    with pytest.raises(ValueError, match="unknown policy 'gnn'"):
        policy_spec("gnn", {})


def test_a_reset_act_is_a_group_of_its_own() -> None:
    layout = mesh_layout({**ENV, "catalogue": "setpoint_reset"}, act_groups=True)
    groups = layout["act_groups"]
    assert len(groups) == 43 and groups[-1] == 6  # after the six classic knobs' groups 0..5
    assert sorted(set(groups[:-1])) == list(range(6))


def test_factored_is_a_shared_policy_option() -> None:
    _, config = policy_spec("shared", ENV, factored=True)
    assert config["factored"] is True
    assert "factored" not in policy_spec("shared", ENV)[1]
    with pytest.raises(ValueError, match="need the 'shared' policy"):
        policy_spec("mlp", ENV, factored=True)
