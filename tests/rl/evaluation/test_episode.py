"""The one episode runner (rl/evaluation/episode.py), on the simulator."""

from __future__ import annotations

import pytest

from envs.istio import rules_for
from envs.mesh_env import MeshEnv
from rl.evaluation.actors import uniform_random_actor
from rl.evaluation.episode import evaluate, measure_config, run_episode
from rl.evaluation.seeds import measurement_seeds

ENV_CONFIG = {"load": "classic", "objective": "classic", "episode_len": 3,
              "init": "classic_random", "load_draw": "per_episode"}


def _env(seed: int) -> MeshEnv:
    return MeshEnv({**ENV_CONFIG, "seed": seed})


def test_same_seed_same_episode_and_gain_is_final_minus_initial() -> None:
    outcomes = []
    for _ in range(2):
        env = _env(5)
        try:
            outcome, trace = run_episode(env, uniform_random_actor(env.action_space, 5), seed=5)
        finally:
            env.close()
        outcomes.append(outcome)
    assert outcomes[0] == outcomes[1]
    o = outcomes[0]
    assert o.num_steps == 3
    if o.healthy_end:
        assert o.eval_score_gain == pytest.approx(o.final_eval_score - o.initial_eval_score)
        assert o.final_eval_score == pytest.approx(trace.info["eval_score"])


def test_trace_records_reset_info_actions_and_every_configuration() -> None:
    env = _env(5)
    try:
        outcome, trace = run_episode(env, uniform_random_actor(env.action_space, 5), seed=5)
        assert trace.configs[0] == env.initial_config and trace.configs[-1] == env.config
    finally:
        env.close()
    assert len(trace.actions) == outcome.num_steps == 3
    assert len(trace.configs) == outcome.num_steps + 1
    assert trace.reset_info["initial_eval_score"] == outcome.initial_eval_score
    assert trace.info["step"] == 3


def test_different_seeds_give_different_episodes() -> None:
    outcomes = evaluate(_env, lambda env, s: uniform_random_actor(env.action_space, s), [1, 2])
    assert outcomes[0].initial_eval_score != outcomes[1].initial_eval_score


def test_re_measured_gain_is_the_mean_of_fresh_runs_on_the_same_loads() -> None:
    random_actor = lambda env, s: uniform_random_actor(env.action_space, s)  # noqa: E731
    outcomes = {}
    for runs in (0, 3):
        env = _env(4)
        try:
            outcome, _ = run_episode(env, random_actor(env, 4), seed=4, measure_runs=runs)
            outcomes[runs] = outcome
            if runs and outcome.healthy_end:
                seeds = measurement_seeds(4, runs)
                # The final configuration stays applied; re-measuring gives the same numbers.
                assert env.backend.rules == tuple(rules_for(env.config))
                final = measure_config(env, env.config, seeds)
                initial = measure_config(env, env.initial_config, seeds)
                assert outcome.final_eval_score == pytest.approx(final)
                assert outcome.initial_eval_score == pytest.approx(initial)
                assert outcome.eval_score_gain == pytest.approx(final - initial)
        finally:
            env.close()
    assert outcomes[3].healthy_end, "seed 4 should end healthy (pick another seed otherwise)"
    assert outcomes[3].measure_runs == 3 and outcomes[0].measure_runs == 0
    assert outcomes[3].initial_eval_score != outcomes[0].initial_eval_score
    # Every policy is measured on the same loads: the initial configuration scores the same.
    other = evaluate(_env, lambda env, s: (lambda obs: 0), [4], measure_runs=3)[0]
    assert other.initial_eval_score == outcomes[3].initial_eval_score
