"""MeshEnv on the simulator: its documented specification, spaces, rewards, episodes, seeding,
initial configurations, leases, registration."""

from __future__ import annotations

import pydoc

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.actions import make_catalogue
from envs.backends.base import BackendError
from envs.backends.lease import ReplicaTakenError, leased_replicas
from envs.istio import pools_of
from envs.mesh_env import ENV_NAME, MeshEnv, register
from envs.reward import RewardWeights, classic_evaluation_score, classic_score
from envs.settings import DEFAULT_ENV_CONFIG
from tests.envs._support import FAST, _no_leaked_leases, make  # noqa: F401  (autouse fixture)

CONTRACT_INFO_KEYS = {"failure_pct", "p99_ms", "score", "eval_score", "initial_score",
                      "initial_eval_score", "healthy", "users", "requests", "action_desc"}
#: The sections of the specification in MeshEnv's docstring (Gymnasium's classic-control style).
SPEC_SECTIONS = ("## Description", "## Action Space", "## Observation Space", "## Rewards",
                 "## Starting State", "## Episode End", "## Info", "## Arguments", "## Seeding",
                 "## Version History")


def test_the_class_docstring_is_the_specification():
    doc = MeshEnv.__doc__
    shown = pydoc.render_doc(MeshEnv, renderer=pydoc.plaintext)  # what help(MeshEnv) prints
    positions = [doc.index(section) for section in SPEC_SECTIONS]
    assert positions == sorted(positions)  # in this order
    for section in SPEC_SECTIONS:
        assert section in shown
    for key in DEFAULT_ENV_CONFIG:  # every env_config key is documented
        assert f"``{key}``" in doc, key


def test_check_env_passes_on_the_simulator():
    env = make()
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()


def test_spaces():
    env = make()
    try:
        assert env.action_space.n == len(make_catalogue("classic")) == 144
        assert env.observation_space.shape == (2 + 6 + 3 * 18 + 2 * 16 + 12 * (16 + 6),) == (358,)
        assert len(env.observation_names) == env.observation_space.shape[0]
        assert len(set(env.observation_names)) == len(env.observation_names)
    finally:
        env.close()
    env = make(catalogue="extended", services=["carts", "orders"])
    try:
        assert env.action_space.n == 2 * 21 + 1
        # the 12 untuned services' blocks join the global context
        assert env.observation_space.shape == (2 + 6 + 3 * 18 + 12 * 16 + 2 * (16 + 11),)
    finally:
        env.close()


def test_info_has_the_contract_keys_and_consistent_values():
    env = make()
    try:
        _, info = env.reset(seed=1)
        assert set(info) >= CONTRACT_INFO_KEYS
        assert info["healthy"] is True
        assert info["score"] == info["initial_score"]
        assert info["eval_score"] == info["initial_eval_score"]
        _, _, _, _, info = env.step(0)
        assert set(info) >= CONTRACT_INFO_KEYS
        report = env.last_report
        assert info["failure_pct"] == pytest.approx(report.failure_pct)
        assert info["p99_ms"] == max(e.p99_ms for e in report.endpoints.values()
                                     if e.num_requests)
        assert info["eval_score"] == pytest.approx(classic_evaluation_score(report))
        assert info["users"] == env.users and info["requests"] == env.users * 30
        assert info["action_desc"] == "carts: tcp.maxConnections +20"
    finally:
        env.close()


def test_reward_is_the_change_in_score():
    weights = RewardWeights(0.5, "ms")
    env = make(latency_weight=0.5, latency_unit="ms", episode_len=4)
    try:
        _, info = env.reset(seed=5)
        previous = classic_score(env.last_report, weights)
        assert info["initial_score"] == pytest.approx(previous)
        for action in (0, 13, 30, 100):
            _, reward, terminated, _, info = env.step(action)
            assert not terminated
            current = classic_score(env.last_report, weights)
            assert info["score"] == pytest.approx(current)
            assert reward == pytest.approx(current - previous)
            previous = current
    finally:
        env.close()


def test_absolute_reward_is_the_score_and_latency_unit_scales_it():
    env = make(reward_mode="absolute", latency_weight=2.0, latency_unit="s")
    try:
        env.reset(seed=5)
        _, reward, *_ = env.step(1)
        assert reward == pytest.approx(classic_score(env.last_report, RewardWeights(2.0, "s")))
        assert reward == pytest.approx(classic_score(env.last_report, RewardWeights(0.002, "ms")))
    finally:
        env.close()


def test_vs_keep_reward_is_what_the_action_did_to_the_same_run():
    """``vs_keep``: the step's score minus the same run under the configuration before the
    action — 0 for an action that changes nothing, the cap's gain at overload, its loss when
    the restore undoes it — and the episode itself is the one the other modes play."""
    from envs.knobs import Knob
    from envs.scenarios import steady

    scenario = steady(150.0, 8, name="overload 150rps")  # 2.5 × nominal
    catalogue = make_catalogue("setpoint_restore")
    noop, restore = len(catalogue) - 1, len(catalogue) - 2
    cap = next(i for i, a in enumerate(catalogue.actions) if a.service == "front-end"
               and a.knob is Knob.HTTP2_MAX_REQUESTS and a.change_text() == "set 16")
    played: dict[str, list[tuple[float, float]]] = {}
    for name, mode, cost in (("vs_keep", "vs_keep", 0.0), ("absolute", "absolute", 0.0),
                             ("vs_keep cost 2.5", "vs_keep", 2.5)):
        env = MeshEnv({"catalogue": "setpoint_restore", "reward_mode": mode, "episode_len": 8,
                       "load_seed": "per_episode", "step_s": 5.0, "change_cost": cost})
        try:
            env.reset(seed=3, options={"scenario": scenario})
            played[name] = []
            for action in (noop, cap, noop, restore):
                _, reward, terminated, _, info = env.step(action)
                assert not terminated
                played[name].append((reward, info["score"]))
            assert env.config == {}  # the counterfactual runs left the mesh as the steps did
        finally:
            env.close()
    scores = [s for _, s in played["absolute"]]
    assert [s for _, s in played["vs_keep"]] == scores  # the same episode
    rewards = [r for r, _ in played["vs_keep"]]
    assert rewards[0] == 0.0 and rewards[2] == 0.0
    assert rewards[1] == pytest.approx(scores[1] - scores[0]) and rewards[1] > 10.0
    assert rewards[3] == pytest.approx(scores[3] - scores[2]) and rewards[3] < -10.0
    # change_cost: charged on the two steps that changed the rules, never on the no-ops.
    assert [s for _, s in played["vs_keep cost 2.5"]] == scores
    assert [r for r, _ in played["vs_keep cost 2.5"]] == pytest.approx(
        [0.0, rewards[1] - 2.5, 0.0, rewards[3] - 2.5])


def test_episode_truncates_at_episode_len():
    env = make(episode_len=3)
    try:
        env.reset(seed=0)
        flags = [env.step(0)[2:4] for _ in range(3)]
        assert flags == [(False, False), (False, False), (False, True)]
        with pytest.raises(RuntimeError, match="call reset"):
            env.step(0)
        env.reset()
        assert env.step(0)[3] is False
    finally:
        env.close()


def test_same_seed_same_episode_other_seed_other_episode():
    def episode(env: MeshEnv, seed: int) -> tuple[list[np.ndarray], list[float]]:
        obs, _ = env.reset(seed=seed)
        observations, rewards = [obs], []
        for action in (0, 50, 99):
            obs, reward, *_ = env.step(action)
            observations.append(obs)
            rewards.append(reward)
        return observations, rewards

    a, b = make(), make()
    try:
        obs_a, rew_a = episode(a, 11)
        obs_b, rew_b = episode(b, 11)
        assert rew_a == rew_b
        assert all(np.array_equal(x, y) for x, y in zip(obs_a, obs_b, strict=True))
        # Same env, same seed again: the same episode.
        obs_c, rew_c = episode(a, 11)
        assert rew_c == rew_a
        assert all(np.array_equal(x, y) for x, y in zip(obs_a, obs_c, strict=True))
        _obs_d, rew_d = episode(a, 12)
        assert rew_d != rew_a
    finally:
        a.close()
        b.close()


def test_episode_key_names_the_episodes_draws():
    a, b = make(), make()
    try:
        key = a.reset(seed=5)[1]["episode_key"]
        assert isinstance(key, int) and key >= 0
        assert b.reset(seed=5)[1]["episode_key"] == key  # another env, the same draws
        a.step(0)
        following = a.reset()[1]["episode_key"]  # the generator went on: other draws
        b.step(99)  # other actions do not change the next episode's draws
        assert b.reset()[1]["episode_key"] == following != key
        assert a.reset(seed=6)[1]["episode_key"] not in (key, following)
    finally:
        a.close()
        b.close()


def test_reset_seed_fixes_the_per_episode_draws_too():
    env = make(init="classic_random", load_draw="per_episode", users_range=(1, 40))
    try:
        obs_a, info_a = env.reset(seed=21)
        config_a = env.config
        env.reset(seed=22)
        assert env.config != config_a
        obs_b, info_b = env.reset(seed=21)
        assert env.config == config_a
        assert info_b["users"] == info_a["users"]
        assert np.array_equal(obs_a, obs_b)
    finally:
        env.close()


def test_classic_fixed_init_is_drawn_once_and_restored_at_every_reset():
    env = make(init="classic_fixed", seed=7)
    twin = make(init="classic_fixed", seed=7)
    try:
        env.reset(seed=1)
        initial = env.config
        # The notebook's draw: the six classic knobs of every tunable service, each in 1..100.
        assert set(initial) == set(env.catalogue.services)
        for pool in initial.values():
            values = [pool.tcp.max_connections, pool.tcp.connect_timeout_ms,
                      pool.http.http1_max_pending_requests, pool.http.http2_max_requests,
                      pool.http.max_requests_per_connection, pool.http.max_retries]
            assert all(1 <= v <= 100 for v in values)
        assert pools_of(env.current_rules()) == initial
        env.step(0)
        env.step(20)
        assert env.config != initial
        env.reset(seed=2)
        assert env.config == initial
        assert pools_of(env.current_rules()) == initial
        # Drawn from env_config["seed"], not from the reset seed.
        twin.reset(seed=99)
        assert twin.config == initial
    finally:
        env.close()
        twin.close()


def test_unhealthy_initial_draws_give_up_with_a_clear_error():
    """init_upper=1 sets every seed knob to 1 (1 ms connect timeouts): the sim fails it."""
    env = make(init_upper=1)
    try:
        with pytest.raises(BackendError, match=r"20 random initial configurations \(knobs in "
                                               r"1..1\) all failed the health check"):
            env.reset(seed=0)
        with pytest.raises(RuntimeError, match="call reset"):
            env.step(0)
    finally:
        env.close()


def test_classic_fixed_init_depends_on_env_seed_and_worker_index():
    from ray.rllib.env.env_context import EnvContext

    configs = []
    for env_config in ({**FAST, "seed": 7}, {**FAST, "seed": 8},
                       EnvContext({**FAST, "seed": 7}, worker_index=3)):
        env = MeshEnv(env_config)
        try:
            env.reset(seed=1)
            configs.append(env.config)
        finally:
            env.close()
    assert configs[0] != configs[1]
    assert configs[0] != configs[2]


def test_envs_built_from_one_env_context_differ_deterministically():
    """RLlib builds a runner's sub-envs from one EnvContext: they must not be copies."""
    from ray.rllib.env.env_context import EnvContext

    def build_three() -> list[tuple[dict, int]]:
        ctx = EnvContext({**FAST, "users_range": (1, 100), "requests_per_user": 9},
                         worker_index=1)
        envs = [MeshEnv(ctx) for _ in range(3)]
        try:
            out = []
            for env in envs:
                obs, _ = env.reset()
                out.append((env.config, env.users, env.env_index, obs))
            return out
        finally:
            for env in envs:
                env.close()

    first, second = build_three(), build_three()
    assert [e[2] for e in first] == [0, 1, 2]
    configs = [e[0] for e in first]
    assert configs[0] != configs[1] != configs[2] != configs[0]
    assert len({e[1] for e in first}) == 3
    assert not np.array_equal(first[0][3], first[1][3])
    # A fresh EnvContext builds the same three envs again.
    for a, b in zip(first, second, strict=True):
        assert a[:3] == b[:3]
        assert np.array_equal(a[3], b[3])


def test_classic_random_init_differs_per_episode():
    env = make(init="classic_random")
    try:
        env.reset(seed=1)
        first = env.config
        env.reset()
        second = env.config
        assert first != second
        assert set(first) == set(second) == set(env.catalogue.services)
    finally:
        env.close()


def test_istio_default_init_has_no_rules():
    env = make(init="istio_default")
    try:
        env.reset(seed=0)
        assert env.config == {}
        assert env.current_rules() == []
        env.step(0)
        assert set(env.config) == {"carts"}
    finally:
        env.close()


def test_load_draw_per_env_fixed_per_episode_varies():
    env = make(users_range=(1, 50), load_draw="per_env")
    try:
        users = set()
        for seed in range(4):
            env.reset(seed=seed)
            users.add(env.users)
        assert len(users) == 1
    finally:
        env.close()
    env = make(users_range=(1, 50), load_draw="per_episode", requests_per_user=2)
    try:
        users = set()
        for seed in range(4):
            _, info = env.reset(seed=seed)
            users.add(info["users"])
            assert info["requests"] == 2 * info["users"]
        assert len(users) > 1
    finally:
        env.close()


def _inert_action(env: MeshEnv) -> int:
    """An action that leaves what Envoy enforces unchanged (http.* on a TCP destination)."""
    return env.catalogue.inert_indices()[0]


def test_load_seed_per_episode_replays_the_episode_load_every_run():
    env = make(load_seed="per_episode", init="classic_random")
    try:
        _, info = env.reset(seed=11)
        initial = env.last_report
        for _ in range(2):
            _, reward, _, _, info = env.step(_inert_action(env))
            assert reward == 0.0  # the same configuration under the same load: no change
            assert env.last_report == initial
        assert info["eval_score"] == info["initial_eval_score"]
    finally:
        env.close()


def test_load_seed_per_run_draws_a_new_load_every_run():
    env = make(init="classic_random")
    try:
        assert env.settings.load_seed == "per_run"
        env.reset(seed=11)
        initial = env.last_report
        env.step(_inert_action(env))
        assert env.last_report != initial
    finally:
        env.close()


def test_initial_config_and_load_spec_describe_the_episode():
    env = make(init="classic_random")
    try:
        env.reset(seed=3)
        start = env.initial_config
        assert start == env.config
        env.step(0)
        assert env.initial_config == start != env.config
        assert (env.load_spec.users, env.load_spec.requests) == (env.users, env.requests)
    finally:
        env.close()


@pytest.mark.parametrize("mode", ["delta", "absolute", "vs_keep"])
def test_unhealthy_config_terminates_with_the_penalty(mode):
    """session-db's connectTimeout driven to 1 ms (act 7: -50 ms, floor 1 ms): the sim's
    GET /catalogue health check then fails (the front-end cannot reach its session store)."""
    env = make(services=["session-db"], reward_mode=mode, unhealthy_penalty=-500.0,
               episode_len=10)
    try:
        env.reset(seed=0)
        assert env.config["session-db"].tcp.connect_timeout_ms > 1
        healthy_info: dict = {}
        for _ in range(3):
            obs, reward, terminated, truncated, info = env.step(7)
            if terminated:
                break
            assert info["healthy"] is True
            healthy_info = info
        assert terminated and not truncated
        # A key that is None on an unhealthy step is a float otherwise: a vector env stores
        # each key of its envs' infos in one array, and an int array cannot hold a None.
        for key, value in info.items():
            if value is None and healthy_info.get(key) is not None:
                assert isinstance(healthy_info[key], float), (key, healthy_info[key])
        assert env.config["session-db"].tcp.connect_timeout_ms == 1
        assert env.backend.healthy() is False
        expected = -500.0 if mode != "absolute" else -500.0 * (10 - info["step"] + 1)
        assert reward == expected
        assert info["healthy"] is False
        for key in ("failure_pct", "p99_ms", "score", "eval_score"):
            assert info[key] is None, key
        assert info["action_desc"] == "session-db: tcp.connectTimeout -50ms"
        assert env.last_report is None
        # Nothing was measured: every seen channel is 0 and so is every measurement (a
        # destination's ``tcp`` flag is what it is, not a measurement).
        measured = [i for i, n in enumerate(env.observation_names)
                    if n.startswith(("endpoint/", "service/", "run/")) and not n.endswith("/tcp")]
        assert not obs[measured].any()
        assert env.observation_space.contains(obs)
        with pytest.raises(RuntimeError, match="call reset"):
            env.step(0)
        # reset restores the (healthy) fixed initial configuration.
        _, info = env.reset(seed=0)
        assert info["healthy"] is True
    finally:
        env.close()


def test_n_envs_get_n_distinct_replicas_and_close_releases():
    envs = [make() for _ in range(4)]
    try:
        assert sorted(e.replica for e in envs) == [0, 1, 2, 3]
        with pytest.raises(ReplicaTakenError, match="replica 2 is already leased"):
            make(replica=2)
    finally:
        for e in envs:
            e.close()
    env = make(replica=2)
    assert env.replica == 2
    env.close()
    env.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()


def test_close_closes_the_backend_which_restores_the_mesh():
    env = make()
    backend = env.backend
    env.reset(seed=0)
    env.step(0)
    assert len(backend.rules) == 12  # the env's rules are in force on the sim
    closed = []
    original = backend.close
    backend.close = lambda: (closed.append(True), original())[1]
    env.close()
    assert closed == [True]
    assert backend.rules == ()  # the configuration found at open (none)
    with pytest.raises(RuntimeError, match="closed"):
        _ = env.backend


def test_bad_action_is_rejected():
    env = make()
    try:
        env.reset(seed=0)
        with pytest.raises(ValueError, match="action 144 is not in Discrete"):
            env.step(144)
    finally:
        env.close()


def test_register_with_gymnasium_and_rllib():
    import gymnasium as gym
    from ray.tune.registry import ENV_CREATOR, _global_registry

    register()
    register()  # idempotent
    assert _global_registry.contains(ENV_CREATOR, ENV_NAME)
    env = gym.make(ENV_NAME, env_config=FAST)
    try:
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
    finally:
        env.close()
    creator = _global_registry.get(ENV_CREATOR, ENV_NAME)
    env = creator(FAST)
    try:
        assert isinstance(env, MeshEnv)
    finally:
        env.close()


@pytest.mark.slow
def test_rllib_env_runner_builds_distinct_envs_and_releases_their_replicas():
    """RLlib's runner builds its sub-envs from one EnvContext via the registered name."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    register()
    config = (PPOConfig().environment(ENV_NAME, env_config=FAST)
              .env_runners(num_envs_per_env_runner=3))
    runner = SingleAgentEnvRunner(config=config, worker_index=2)
    try:
        assert sorted(leased_replicas()) == [0, 1, 2]
        episodes = runner.sample(num_episodes=3, random_actions=True)
        assert {e.get_infos()[-1]["replica"] for e in episodes} == {0, 1, 2}
        starts = [tuple(e.get_observations()[0]) for e in episodes]
        assert len(set(starts)) == 3  # three different envs, not three copies
    finally:
        runner.stop()
    assert leased_replicas() == {}
