"""The action critic (rl/learner.py with ReinforceConfig.action_critic): the loss on a
hand-computed batch, the shared module's Q head (layout, equivariance, inference-only copy), the
config's wiring and checks, and one end-to-end run on a contextual bandit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core import COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from rl.learner import (
    CRITIC_REPLAY_STATE_KEY,
    EXPLAINED_VARIANCE_KEY,
    VALUE_LOSS_KEY,
    CriticReplay,
    action_critic_loss,
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


def test_action_critic_loss_on_a_hand_computed_batch() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    q = torch.tensor([[1.0, 3.0, -1.0], [0.0, 2.0, 1.0]])
    total, policy, critic, q_taken = action_critic_loss(
        logits, torch.tensor([1, 2]), torch.tensor([2.0, 3.0]), q, torch.tensor([1.0, 0.5]),
        entropy_coeff=0.1, critic_coeff=0.5)
    # expected Q under pi: 0.5 + 0.75 - 0.25 = 1.0 and 0 + 0.2 + 0.8 = 1.0; the policy term is
    # -mean(sum_a pi_a (Q_a - 1.0)) = 0 at these values (its gradient is not)
    assert policy.item() == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(q_taken, torch.tensor([3.0, 1.0]))
    assert critic.item() == pytest.approx(((3 - 2) ** 2 + (1 - 3) ** 2) / 2)
    assert total.item() == pytest.approx(0.0 - 0.1 * 0.75 + 0.5 * 2.5)


def test_the_policy_term_moves_towards_the_critics_best_action_and_leaves_the_critic() -> None:
    """The gradient of the policy term raises the logit of every action the critic rates above
    the policy's expected Q, whether or not it was drawn, and gives the critic no gradient."""
    logits = torch.zeros(1, 4, requires_grad=True)
    q = torch.tensor([[0.0, 5.0, -1.0, 0.0]], requires_grad=True)
    _, policy, _, _ = action_critic_loss(logits, torch.tensor([0]), torch.tensor([0.0]), q,
                                         torch.zeros(1), 0.0, critic_coeff=0.0)
    policy.backward()
    step = -logits.grad[0]  # gradient descent's direction
    assert step[1] > 0 > step[2]  # action 1 (never drawn) goes up, action 2 down
    assert q.grad is None or torch.all(q.grad == 0)


def _shared(services: list[list[int]], obs_dim: int, *, inference_only: bool = False
            ) -> SharedServiceModule:
    return RLModuleSpec(
        module_class=SharedServiceModule,
        observation_space=gym.spaces.Box(0.0, 1.0, (obs_dim,), np.float32),
        action_space=gym.spaces.Discrete(len(services) * 3 + 2),
        model_config={"service_features": services, "global_features": [obs_dim - 1],
                      "acts_per_service": 3, "noop_action": True, "global_actions": 2,
                      "hidden": [16], "q_head": True},
        inference_only=inference_only).build()


def test_q_values_have_the_logits_layout_and_permute_with_the_services() -> None:
    services = [[0, 1], [2, 3], [4, 5]]
    perm = [2, 0, 1]
    torch.manual_seed(0)
    module = _shared(services, 7)
    permuted = _shared([services[p] for p in perm], 7)
    permuted.load_state_dict(module.state_dict())
    obs = torch.rand(4, 7)
    with torch.no_grad():
        base = module.compute_action_values({Columns.OBS: obs})
        moved = permuted.compute_action_values({Columns.OBS: obs})
    assert base.shape == (4, 3 * 3 + 2)
    blocks = base[:, :-2].reshape(4, 3, 3)
    torch.testing.assert_close(moved[:, :-2].reshape(4, 3, 3), blocks[:, perm])
    torch.testing.assert_close(moved[:, -2:], base[:, -2:])  # global actions: invariant
    assert not torch.allclose(blocks[:, 0], blocks[:, 1])  # the test has teeth


def test_inference_only_copy_has_no_q_head_and_acts_like_the_learners() -> None:
    learner = _shared([[0, 1], [2, 3]], 5)
    runner = _shared([[0, 1], [2, 3]], 5, inference_only=True)
    assert learner.has_q_head and not runner.has_q_head
    assert not any(k.startswith("q_") for k in runner.state_dict())
    runner.set_state(learner.get_state(inference_only=True))
    obs = torch.rand(3, 5)
    with torch.no_grad():
        torch.testing.assert_close(
            runner.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS],
            learner.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS])
    with pytest.raises(ValueError, match="q_head"):
        runner.compute_action_values({Columns.OBS: obs})


def _config(module_class: type, model_config: dict[str, Any], **training: Any) -> Any:
    return (ReinforceConfig().environment(observation_space=OBS, action_space=ACTIONS)
            .training(**training)
            .rl_module(rl_module_spec=RLModuleSpec(module_class=module_class),
                       model_config=model_config))


def test_learner_loss_matches_the_functions_and_logs_the_critic() -> None:
    config = _config(SharedServiceModule, SHARED, action_critic=True, vf_loss_coeff=0.5,
                     entropy_coeff=0.1)
    learner = config.build_learner(spaces={DEFAULT_MODULE_ID: (OBS, ACTIONS)})
    module = learner.module[DEFAULT_MODULE_ID]
    assert module.model_config["q_head"] is True  # set by the config flag
    batch = {Columns.OBS: torch.rand(2, 5), Columns.ACTIONS: torch.tensor([0, 6]),
             Columns.RETURNS_TO_GO: torch.tensor([2.0, 6.0])}
    logits = torch.randn(2, 7)
    loss = learner.compute_loss_for_module(module_id=DEFAULT_MODULE_ID, config=config,
                                           batch=batch,
                                           fwd_out={Columns.ACTION_DIST_INPUTS: logits})
    with torch.no_grad():
        q = module.compute_action_values(batch)
    entropy = torch.distributions.Categorical(logits=logits).entropy()
    expected, _, critic, _ = action_critic_loss(logits, batch[Columns.ACTIONS],
                                                batch[Columns.RETURNS_TO_GO], q, entropy,
                                                0.1, 0.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    logged = learner.metrics.peek((DEFAULT_MODULE_ID, VALUE_LOSS_KEY))
    assert float(logged) == pytest.approx(critic.item(), rel=1e-5)
    loss.backward()
    assert module.q_act_head.weight.grad.abs().sum() > 0


def test_q_head_follows_the_flag_and_a_mismatch_is_an_error() -> None:
    assert ReinforceConfig().model_config["q_head"] is False
    assert ReinforceConfig().training(action_critic=True).model_config["q_head"] is True
    spaces = {DEFAULT_MODULE_ID: (OBS, ACTIONS)}
    with pytest.raises(ValueError, match="no q_head"):
        _config(SharedServiceModule, {**SHARED, "q_head": False},
                action_critic=True).build_learner(spaces=spaces)
    with pytest.raises(ValueError, match="no q_head"):  # the notebook's MLP has none
        _config(SoftmaxPolicyModule, {}, action_critic=True).build_learner(spaces=spaces)
    with pytest.raises(ValueError, match="action_critic is off"):
        _config(SharedServiceModule, {**SHARED, "q_head": True}).build_learner(spaces=spaces)


@pytest.mark.parametrize(("training", "match"), [
    ({"action_critic": "yes"}, "action_critic must be a bool"),
    ({"action_critic": True, "learned_baseline": True}, "two baselines"),
    ({"critic_scale_advantages": True}, "set action_critic=True"),
    ({"critic_scale_advantages": 1, "action_critic": True}, "must be a bool"),
])
def test_config_rejects_bad_critic_settings(training: dict[str, Any], match: str) -> None:
    config = ReinforceConfig().environment("CartPole-v1").training(**training)
    with pytest.raises(ValueError, match=match):
        config.validate()



@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_action_critic_trains_end_to_end() -> None:
    """The algorithm with the shared module and the action critic on raw returns: the env
    runner's copy takes the learner's weights (returns rise well above chance, 1/7) and the
    critic learns (explains most of the returns' variance on the actions taken)."""
    config = (ReinforceConfig().environment(ServiceBandit)
              .env_runners(num_env_runners=1, num_cpus_per_env_runner=0.5)
              .learners(num_cpus_per_learner=0.5)
              .training(lr=1e-2, num_episodes_per_train_batch=64, action_critic=True,
                        normalize_returns=False, per_step_baseline=False, entropy_coeff=0.2)
              .rl_module(rl_module_spec=RLModuleSpec(module_class=SharedServiceModule),
                         model_config={**SHARED, "hidden": [32, 32]})
              .debugging(seed=1))
    algo = config.build_algo()
    try:
        results = [algo.train() for _ in range(200)]
    finally:
        algo.stop()
    returns = [r["env_runners"]["episode_return_mean"] for r in results]
    explained = [r["learners"][DEFAULT_MODULE_ID][EXPLAINED_VARIANCE_KEY] for r in results]
    # Measured (seeds 1-3): ~0.2 over the first 20 iterations, 0.84-0.88 over the last 20,
    # explained variance ~0.7.
    assert np.mean(returns[:3]) < 0.3
    assert np.mean(returns[-20:]) > 0.7, returns
    assert np.mean(explained[-20:]) > 0.4, explained


def test_critic_replay_keeps_the_last_samples_and_draws_them_reproducibly() -> None:
    replay = CriticReplay(capacity=5, seed=3)
    assert replay.sample(4) == {}
    for start in (0, 3, 6):  # 9 samples through a buffer of 5: 4..8 remain
        replay.add(torch.arange(start, start + 3, dtype=torch.float32).unsqueeze(-1),
                   torch.arange(start, start + 3), torch.arange(start, start + 3) * 10.0)
    assert replay.size == 5
    drawn = replay.sample(200)
    assert set(drawn["actions"].tolist()) == {4, 5, 6, 7, 8}
    torch.testing.assert_close(drawn["returns"], drawn["actions"].float() * 10.0)
    torch.testing.assert_close(drawn["obs"][:, 0], drawn["actions"].float())
    again = CriticReplay(capacity=5, seed=3)
    for start in (0, 3, 6):
        again.add(torch.arange(start, start + 3, dtype=torch.float32).unsqueeze(-1),
                  torch.arange(start, start + 3), torch.arange(start, start + 3) * 10.0)
    torch.testing.assert_close(again.sample(200)["actions"], drawn["actions"])


def test_replayed_samples_join_the_critic_loss() -> None:
    """With critic_replay the second batch's loss includes the first batch's samples: the
    loss differs from the same learner's without replay by exactly their MSE."""
    spaces = {DEFAULT_MODULE_ID: (OBS, ACTIONS)}
    first = {Columns.OBS: torch.rand(4, 5), Columns.ACTIONS: torch.tensor([0, 1, 2, 6]),
             Columns.RETURNS_TO_GO: torch.tensor([5.0, -3.0, 1.0, 0.0])}
    second = {Columns.OBS: torch.rand(2, 5), Columns.ACTIONS: torch.tensor([3, 4]),
              Columns.RETURNS_TO_GO: torch.tensor([2.0, 1.0])}
    losses = []
    for replay in (0, 100):
        config = _config(SharedServiceModule, SHARED, action_critic=True, gamma=0.0,
                         critic_replay=replay, critic_replay_batch=64)
        torch.manual_seed(0)
        learner = config.build_learner(spaces=spaces)
        for batch in (first, second):
            loss = learner.compute_loss_for_module(
                module_id=DEFAULT_MODULE_ID, config=config, batch=batch,
                fwd_out={Columns.ACTION_DIST_INPUTS: torch.zeros(len(batch[Columns.ACTIONS]),
                                                                 7)})
        losses.append(loss.item())
        module = learner.module[DEFAULT_MODULE_ID]
    with torch.no_grad():
        q = module.compute_action_values(first)
    per_sample = (q.gather(-1, first[Columns.ACTIONS].unsqueeze(-1)).squeeze(-1)
                  - first[Columns.RETURNS_TO_GO]) ** 2
    assert losses[0] != pytest.approx(losses[1])
    # 64 draws from the 4 first samples: their MSE lies between the smallest and largest
    extra = losses[1] - losses[0]
    assert per_sample.min().item() - 1e-5 <= extra <= per_sample.max().item() + 1e-5


@pytest.mark.parametrize(("training", "match"), [
    ({"critic_replay": 100}, "set action_critic=True"),
    ({"critic_replay": 100, "action_critic": True, "gamma": 0.9}, "needs gamma 0"),
    ({"critic_replay": -1, "action_critic": True, "gamma": 0.0}, "critic_replay must be"),
    ({"critic_replay": 10, "critic_replay_batch": 0, "action_critic": True, "gamma": 0.0},
     "critic_replay_batch must be"),
])
def test_config_rejects_bad_replay_settings(training: dict[str, Any], match: str) -> None:
    config = ReinforceConfig().environment("CartPole-v1").training(**training)
    with pytest.raises(ValueError, match=match):
        config.validate()


def test_the_behaviour_policy_mixes_in_uniform_and_global_actions() -> None:
    """With explore_mix the env runners sample from (1 - eps) pi + eps u, u half on the two
    global actions; greedy acting and the learner still see pi."""
    module = RLModuleSpec(
        module_class=SharedServiceModule, observation_space=OBS,
        action_space=gym.spaces.Discrete(2 * 3 + 2),
        model_config={**SHARED, "global_actions": 2, "q_head": True, "explore_mix": 0.2}).build()
    obs = torch.rand(3, 5)
    with torch.no_grad():
        pi = torch.softmax(module.forward_inference({Columns.OBS: obs})
                           [Columns.ACTION_DIST_INPUTS], -1)
        train = torch.softmax(module.forward_train({Columns.OBS: obs})
                              [Columns.ACTION_DIST_INPUTS], -1)
        behaviour = torch.softmax(module.forward_exploration({Columns.OBS: obs})
                                  [Columns.ACTION_DIST_INPUTS], -1)
    uniform = torch.tensor([0.5 / 8] * 6 + [0.5 / 8 + 0.25] * 2)
    torch.testing.assert_close(train, pi)
    torch.testing.assert_close(behaviour, 0.8 * pi + 0.2 * uniform)
    assert torch.all(behaviour[:, -2:] >= 0.2 * uniform[-1] - 1e-6)  # the floor of each global


def test_a_mixed_behaviour_policy_needs_the_action_critic() -> None:
    spaces = {DEFAULT_MODULE_ID: (OBS, ACTIONS)}
    with pytest.raises(ValueError, match="action_critic=True only"):
        _config(SharedServiceModule, {**SHARED, "explore_mix": 0.1}).build_learner(spaces=spaces)
    _config(SharedServiceModule, {**SHARED, "explore_mix": 0.1},
            action_critic=True).build_learner(spaces=spaces)  # accepted


@pytest.mark.parametrize(("changes", "key"), [
    ({"explore_mix": 1.0}, "explore_mix"), ({"explore_mix": -0.1}, "explore_mix"),
    ({"explore_mix": True}, "explore_mix"), ({"explore_global_share": 1.5},
                                              "explore_global_share"),
    ({"noop_action": False, "explore_mix": 0.1}, "explore_global_share"),
])
def test_bad_exploration_settings_raise_naming_the_key(changes: dict[str, Any], key: str) -> None:
    n = 6 if changes.get("noop_action") is False else 7
    with pytest.raises(ValueError, match=key):
        RLModuleSpec(module_class=SharedServiceModule, observation_space=OBS,
                     action_space=gym.spaces.Discrete(n),
                     model_config={**SHARED, **changes}).build()


def test_the_inert_mask_matches_what_the_catalogue_changes_on_the_mesh_env() -> None:
    """On MeshEnv's own observations (Istio's defaults, the notebook's random draws, tuned
    starts, after random actions) the module counts an action inert exactly when applying it
    leaves every service's configuration block unchanged; Q is 0 there and only there."""
    from envs.mesh_env import MeshEnv
    from envs.observation import config_block
    from rl.policies import inert_acts, mesh_layout

    env_config = {"catalogue": "setpoint_restore"}
    env = MeshEnv(env_config)
    module = RLModuleSpec(
        module_class=SharedServiceModule, observation_space=env.observation_space,
        action_space=env.action_space,
        model_config={**mesh_layout(env_config), "hidden": [16], "q_head": True,
                      "inert_acts": inert_acts(env_config)}).build()
    knobs = tuple(env.catalogue.knobs)

    def blocks(config: dict[str, Any]) -> list[tuple[float, ...]]:
        return [config_block(config.get(s), knobs) for s in env.catalogue.services]

    rng = np.random.default_rng(0)
    counts = np.zeros(2, int)
    try:
        for episode in range(4):
            obs, _ = env.reset(seed=episode)
            for _ in range(3):
                config = env.config
                truth = np.array([blocks(env.catalogue.apply(a, config)) == blocks(config)
                                  for a in range(len(env.catalogue))])
                with torch.no_grad():
                    mask = module.inert_mask(torch.as_tensor(obs[None]))[0].numpy()
                    q = module.compute_action_values({Columns.OBS: torch.as_tensor(obs[None])})[0]
                np.testing.assert_array_equal(mask, truth)
                assert torch.all(q[torch.as_tensor(truth)] == 0)
                assert torch.all(q[~torch.as_tensor(truth)] != 0)
                counts += [truth.sum(), (~truth).sum()]
                obs, *_ = env.step(int(rng.integers(len(env.catalogue))))
    finally:
        env.close()  # its replica lease: later tests check none is left
    assert counts.min() > 100  # both kinds seen: the test has teeth


def test_bad_inert_acts_raise_naming_the_key() -> None:
    with pytest.raises(ValueError, match="inert_acts"):
        RLModuleSpec(module_class=SharedServiceModule, observation_space=OBS,
                     action_space=ACTIONS,
                     model_config={**SHARED, "inert_acts": {"defaults": [1.0]}}).build()
    with pytest.raises(ValueError, match="inert_acts"):
        RLModuleSpec(module_class=SharedServiceModule, observation_space=OBS,
                     action_space=ACTIONS,
                     model_config={**SHARED, "inert_acts": {
                         "config_offsets": [1], "defaults": [1.0], "act_offset": [1, 1],
                         "act_value": [0.5, 0.5], "global_kinds": ["noop"]}}).build()


def test_q_scale_multiplies_the_critics_output_and_bad_values_are_named() -> None:
    """``q_scale`` k: the same weights give k times the action values (the logits unchanged),
    so the critic reaches effects of tens of points with k times smaller head weights."""
    services = [[0, 1], [2, 3], [4, 5]]
    torch.manual_seed(0)
    plain = _shared(services, 7)
    spec = RLModuleSpec(
        module_class=SharedServiceModule, observation_space=plain.observation_space,
        action_space=plain.action_space,
        model_config={**plain.model_config, "q_scale": 20.0})
    scaled = spec.build()
    scaled.load_state_dict(plain.state_dict())
    obs = {Columns.OBS: torch.rand(5, 7)}
    with torch.no_grad():
        torch.testing.assert_close(scaled.compute_action_values(obs),
                                   20.0 * plain.compute_action_values(obs))
        torch.testing.assert_close(scaled._forward(obs)[Columns.ACTION_DIST_INPUTS],
                                   plain._forward(obs)[Columns.ACTION_DIST_INPUTS])
    for bad in (0.0, -1.0, float("inf"), True, "10"):
        with pytest.raises(ValueError, match=r"model_config\['q_scale'\]: q_scale must be a "
                                             r"finite number > 0"):
            RLModuleSpec(module_class=SharedServiceModule,
                         observation_space=plain.observation_space,
                         action_space=plain.action_space,
                         model_config={**plain.model_config, "q_scale": bad}).build()


def test_scaled_advantages_make_the_policy_term_independent_of_the_rewards_units() -> None:
    """With scale_advantages, multiplying every Q by 100 leaves the policy term's gradient
    unchanged; without it the gradient grows 100-fold."""
    torch.manual_seed(0)
    base_logits, q = torch.randn(4, 7), torch.randn(4, 7)

    def gradient(scale: float, scaled: bool) -> torch.Tensor:
        logits = base_logits.clone().requires_grad_(True)
        _, policy, _, _ = action_critic_loss(logits, torch.tensor([0, 1, 2, 3]), torch.zeros(4),
                                             scale * q, torch.zeros(4), 0.0, 1.0,
                                             scale_advantages=scaled)
        policy.backward()
        return logits.grad

    torch.testing.assert_close(gradient(100.0, True), gradient(1.0, True))
    torch.testing.assert_close(gradient(100.0, False), 100 * gradient(1.0, False))


def _bandit_episodes(seed: int, n: int = 8) -> list[SingleAgentEpisode]:
    """``n`` one-step episodes on :data:`OBS` × :data:`ACTIONS` with random actions and
    rewards (seeded)."""
    rng = np.random.default_rng(seed)
    return [SingleAgentEpisode(
        observations=[rng.random(5).astype(np.float32) for _ in range(2)],
        actions=[int(rng.integers(7))], rewards=[float(rng.normal())], infos=[{}] * 2,
        terminated=True, len_lookback_buffer=0, observation_space=OBS, action_space=ACTIONS)
        for _ in range(n)]


def _replay_learner() -> Any:
    config = _config(SharedServiceModule, SHARED, action_critic=True, gamma=0.0,
                     normalize_returns=False, per_step_baseline=False, critic_replay=20,
                     critic_replay_batch=16, lr=1e-2).debugging(seed=5)
    torch.manual_seed(0)
    return config.build_learner(spaces={DEFAULT_MODULE_ID: (OBS, ACTIONS)})


def _weights(learner: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone()
            for k, v in learner.module[DEFAULT_MODULE_ID].state_dict().items()}


def test_a_learner_restored_from_its_state_updates_as_the_uninterrupted_one() -> None:
    """The replay (samples, write position, draws) is part of the learner state: updates 1-3
    in one learner give the same weights as updates 1-2, a state round trip into a fresh
    learner (what a checkpoint and ``--resume`` do), then update 3."""
    batches = [_bandit_episodes(seed) for seed in range(3)]
    straight = _replay_learner()
    for episodes in batches:
        straight.update(episodes=episodes)
    interrupted = _replay_learner()
    for episodes in batches[:2]:
        interrupted.update(episodes=episodes)
    state = interrupted.get_state()
    assert state[CRITIC_REPLAY_STATE_KEY][DEFAULT_MODULE_ID]["size"] == 16  # 8 x 2 batches
    # the weights RLlib sends the env runners after every update do not carry it
    assert CRITIC_REPLAY_STATE_KEY not in interrupted.get_state(components=COMPONENT_RL_MODULE,
                                                                inference_only=True)
    resumed = _replay_learner()
    resumed.set_state(state)
    resumed.update(episodes=batches[2])
    for key, value in _weights(straight).items():
        torch.testing.assert_close(_weights(resumed)[key], value, rtol=0, atol=0)
    # without the replay's state the third update differs (the test has teeth)
    emptied = _replay_learner()
    emptied.set_state({k: v for k, v in state.items() if k != CRITIC_REPLAY_STATE_KEY})
    emptied.update(episodes=batches[2])
    assert any(not torch.equal(_weights(emptied)[k], v) for k, v in _weights(straight).items())


def test_a_replay_state_of_another_capacity_is_refused() -> None:
    replay = CriticReplay(capacity=5, seed=0)
    replay.add(torch.zeros(2, 1), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="capacity 5 in the checkpoint, 6 configured"):
        CriticReplay(capacity=6, seed=0).set_state(replay.get_state())


@pytest.mark.usefixtures("local_ray")
def test_an_algorithm_checkpoint_carries_the_replay(tmp_path: Path) -> None:
    """What Tune's checkpoints and ``--resume`` use: ``Algorithm.save_to_path`` then
    ``from_checkpoint`` gives a learner with the same replay samples and next draws."""
    config = (ReinforceConfig().environment(ServiceBandit)
              .env_runners(num_env_runners=1, num_cpus_per_env_runner=0.5)
              .learners(num_cpus_per_learner=0.5)
              .training(num_episodes_per_train_batch=16, action_critic=True, gamma=0.0,
                        normalize_returns=False, per_step_baseline=False, critic_replay=100)
              .rl_module(rl_module_spec=RLModuleSpec(module_class=SharedServiceModule),
                         model_config=SHARED)
              .debugging(seed=1))
    algo = config.build_algo()
    try:
        algo.train()
        algo.train()
        saved = algo.learner_group._learner.critic_replay[DEFAULT_MODULE_ID]
        algo.save_to_path(tmp_path)
    finally:
        algo.stop()
    restored = Algorithm.from_checkpoint(tmp_path)
    try:
        replay = restored.learner_group._learner.critic_replay[DEFAULT_MODULE_ID]
        assert replay.size == saved.size == 32  # 16 one-step episodes x 2 updates
        for key, value in saved.get_state()["data"].items():
            np.testing.assert_array_equal(replay.get_state()["data"][key], value)
        torch.testing.assert_close(replay.sample(50)["actions"], saved.sample(50)["actions"])
    finally:
        restored.stop()
