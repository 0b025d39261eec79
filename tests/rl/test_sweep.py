"""The sweep's library (rl/sweep.py): settings, the backend check, resuming."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import pytest

import envs.backends.registry
from rl.sweep import (
    CRITIC,
    GROUP,
    SweepError,
    base_env_config,
    build_param_space,
    check_backend,
    check_experiment_dir,
    dir_trial_index,
    sort_rows,
    sweep_settings,
    trial_dirname,
    trial_index,
    trial_name,
)


def test_smoke_is_smaller_than_the_default() -> None:
    full = sweep_settings()
    smoke = sweep_settings(smoke=True)
    assert (full.backend, full.learner, full.num_env_runners, full.address, full.resume) == (
        "sim", "critic", 2, None, False)
    group, group_smoke = sweep_settings(learner="group"), sweep_settings(learner="group",
                                                                       smoke=True)
    assert len(group_smoke.learning_rates) < len(group.learning_rates)
    assert smoke.iterations < full.iterations
    assert smoke.eval_episodes < full.eval_episodes
    assert full.output == (Path.cwd() / "results" / "pg_sweep").resolve()


def test_explicit_flags_override_smoke() -> None:
    s = sweep_settings(smoke=True, samples=5, iterations=7, num_env_runners=2)
    assert (s.samples, s.iterations, s.num_env_runners) == (5, 7, 2)


@pytest.mark.parametrize(("flags", "message"), [
    ({"samples": 0}, "--samples"),
    ({"num_env_runners": 3, "episodes_per_batch": 2}, "--episodes-per-batch"),
    ({"episode_len": 0}, "--episode-len"),
    ({"keep_checkpoints": -1}, "--keep-checkpoints must be >= 0"),
    ({"learning_rates": [0.0]}, "--learning-rates must be positive numbers"),
    ({"learning_rates": []}, "--learning-rates must be positive numbers"),
    ({"late_weights": [-0.5]}, r"--late-weights: late_weight must be a number in \[0, 1\], "
                               r"got -0.5"),
    ({"late_weights": [0.5, 1.5]}, r"--late-weights: late_weight must be a number in "
                                   r"\[0, 1\], got 1.5"),
    ({"late_weights": [float("nan")]}, r"--late-weights: late_weight must be a number in "
                                       r"\[0, 1\], got nan"),
    ({"late_weights": []}, r"--late-weights needs at least one weight"),
    ({"learner": "group", "episodes_per_scenario": 0}, "--episodes-per-scenario must be >= 1"),
    ({"learner": "group", "episodes_per_scenario": 3},
     "--episodes-per-scenario"),  # 3 does not divide 8 envs
    # 3 episodes per runner over 2 envs: unequal quotas
    ({"learner": "group", "envs_per_runner": 2, "episodes_per_scenario": 2,
      "episodes_per_batch": 6}, "multiple of --envs-per-runner"),
])
def test_bad_numbers_are_named(flags: dict[str, int], message: str) -> None:
    with pytest.raises(SweepError, match=message):
        sweep_settings(**flags)


def test_the_learners_train_what_their_presets_say() -> None:
    group = build_param_space(sweep_settings(learner="group"))
    assert (group.gamma, group.normalize_returns, group.per_step_baseline, group.action_critic,
            group.num_epochs, group.entropy_coeff) == (0.8, True, True, False, 1, 0.01)
    assert group.episodes_per_scenario == GROUP.episodes_per_scenario == 4
    assert not {"explore_mix", "inert_acts", "q_scale"} & set(group.model_config)
    assert (group.env_config["catalogue"], group.env_config["reward_mode"]) == ("setpoint",
                                                                                "absolute")

    settings = sweep_settings()  # the default learner
    assert settings.learner == "critic"
    assert (settings.learning_rates, settings.iterations, settings.episodes_per_scenario,
            settings.late_weights) == (CRITIC.learning_rates, CRITIC.iterations, 1, (0.75, 1.0))
    critic = build_param_space(settings)
    # the settings of BENCHMARKS.md's action-critic entries (scripts/train_variant.py flags)
    assert (critic.gamma, critic.normalize_returns, critic.per_step_baseline,
            critic.rank_returns, critic.action_critic, critic.critic_replay, critic.num_epochs,
            critic.entropy_coeff) == (0.0, False, False, False, True, 30_000, 4, 0.5)
    assert critic.model_config["explore_mix"] == 0.2
    assert critic.model_config["inert_acts"]  # rl.policies.inert_acts of the env config
    assert base_env_config(settings) == {"backend": "sim", "seed": 0,
                                         "catalogue": "setpoint_restore",
                                         "reward_mode": "vs_keep", "load_seed": "per_episode"}
    assert sweep_settings(learner="critic", learning_rates=[1e-3, 3e-4]).learning_rates == (
        1e-3, 3e-4)
    weights = build_param_space(sweep_settings(learner="group", late_weights=[0.25, 0.0]))
    assert weights.env_config["late_weight"] == {"grid_search": [0.25, 0.0]}
    assert build_param_space(sweep_settings(learner="group")).env_config["late_weight"] == {
        "grid_search": [0.5, 1.0]}
    assert critic.env_config["late_weight"] == {"grid_search": [0.75, 1.0]}
    smoke = sweep_settings(learner="critic", smoke=True)
    assert (smoke.iterations, smoke.episodes_per_scenario) == (2, 1)


@pytest.mark.parametrize(("flags", "message"), [
    ({"learner": "ppo"}, "--learner 'ppo': choose one of group, critic"),
    ({"learner": "critic", "episodes_per_scenario": 2},
     "--episodes-per-scenario must be 1, got 2"),
])
def test_a_learner_that_cannot_work_is_named(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(SweepError, match=message):
        sweep_settings(**flags)


def test_resume_without_a_stored_sweep_is_a_clear_error(tmp_path: Path) -> None:
    settings = sweep_settings(smoke=True, resume=True, output=tmp_path)
    with pytest.raises(SweepError, match="no sweep to resume"):
        check_experiment_dir(settings)


def test_backend_check_is_the_registrys(monkeypatch: pytest.MonkeyPatch) -> None:
    check_backend("sim")
    monkeypatch.delitem(envs.backends.registry.BACKENDS, "local")
    with pytest.raises(SweepError, match="unknown backend 'local'; known: k8s, sim"):
        check_backend("local")
    monkeypatch.setitem(envs.backends.registry.BACKENDS, "k8s", "envs.backends.no_such:K8sMesh")
    with pytest.raises(SweepError, match=r"backend 'k8s' cannot be loaded: .*no_such"):
        check_backend("k8s")


def test_groups_default_to_the_largest_size_that_divides_the_envs() -> None:
    group = functools.partial(sweep_settings, learner="group")
    assert group().episodes_per_scenario == 4  # 8 envs per runner: 2 groups of 4
    assert group(smoke=True).episodes_per_scenario == 2
    assert group(episodes_per_batch=12).episodes_per_scenario == 2  # 6 envs
    assert group(episodes_per_batch=6).episodes_per_scenario == 1  # 3 envs: no groups
    assert sweep_settings().episodes_per_scenario == 1  # the critic compares no episodes


def test_envs_per_runner_default_to_each_runners_share_of_a_batch() -> None:
    assert sweep_settings().envs_per_runner == 8  # 16 episodes over 2 runners
    assert sweep_settings(smoke=True).envs_per_runner == 2
    assert sweep_settings(episodes_per_batch=5, num_env_runners=2).envs_per_runner == 3
    assert sweep_settings(envs_per_runner=1).envs_per_runner == 1
    # a real mesh: one replica per env, so one env per runner unless asked (2 trials x 2
    # runners = 4 replicas, not 32)
    assert sweep_settings(backend="local").envs_per_runner == 1
    assert sweep_settings(backend="k8s", learner="group").envs_per_runner == 1
    assert sweep_settings(backend="k8s", envs_per_runner=2).envs_per_runner == 2
    with pytest.raises(SweepError, match="--envs-per-runner"):
        sweep_settings(envs_per_runner=0)


def test_trials_are_named_by_their_grid_index() -> None:
    class Trial:
        trial_id = "a1b2c_00003"

        def __init__(self) -> None:
            self.config = {"lr": 0.001, "env_config": {"late_weight": 0.5}}

    assert trial_index("f00ba_00012") == 12
    assert trial_name(Trial()) == "trial_00003"
    assert trial_dirname(Trial()) == "trial_00003_lr=0.001_late_weight=0.5"
    assert dir_trial_index(Path("/x/tune/pg_sweep") / trial_dirname(Trial())) == 3
    with pytest.raises(ValueError, match="not a Tune trial id"):
        trial_index("nounderscore")


def _row(index: int, validation: float, train: float) -> dict[str, Any]:
    return {"index": index, "validation_score": validation, "train_score": train}


def test_ranking_is_validation_then_training_gain_then_trial_index() -> None:
    rows = [_row(3, 1.0, 5.0), _row(0, math.nan, 9.0), _row(2, 1.0, 5.0), _row(1, 2.0, -1.0),
            _row(4, 1.0, 7.0), _row(5, math.nan, math.nan)]
    for order in (rows, rows[::-1]):  # whatever order Tune returned them in
        ranked = list(order)
        sort_rows(ranked)
        assert [r["index"] for r in ranked] == [1, 4, 2, 3, 0, 5]
