"""Tests of envs.settings: the env_config keys, their defaults and validation (through
MeshEnv, which validates its env_config first, and EnvSettings directly), the faults key, and
how envs built from one env_config object are told apart."""

from __future__ import annotations

import pytest

from envs.backends.base import LatencySpike, ServiceDown
from envs.reward import (
    CLASSIC_WEIGHTS,
    DEFAULT_UNHEALTHY_PENALTY,
    ClassicObjective,
    RewardWeights,
    SloObjective,
)
from envs.scenarios import steady
from envs.settings import DEFAULT_ENV_CONFIG, EnvSettings, classic_env_config, next_env_index
from tests.envs._support import _no_leaked_leases, make  # noqa: F401  (autouse fixture)


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="unknown backend 'nosuch'"):
        make(backend="nosuch")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("bogus_key", 1, r"unknown env_config key\(s\) \['bogus_key'\]"),
    ("episode_len", 0, r"env_config\['episode_len'\] must be an int >= 1"),
    ("reward_mode", "relative", r"env_config\['reward_mode'\] must be one of"),
    ("init", "zeros", r"env_config\['init'\] must be one of"),
    ("load_draw", "always", r"env_config\['load_draw'\] must be one of"),
    ("load_seed", "per_step", r"env_config\['load_seed'\] must be one of"),
    ("users_range", (5, 2), r"env_config\['users_range'\]"),
    ("latency_unit", "us", "latency_unit must be one of"),
    ("latency_weight", -1.0, "latency_weight must be finite and >= 0"),
    ("unhealthy_penalty", 5.0, r"env_config\['unhealthy_penalty'\] must be a finite number <= 0"),
    ("change_cost", -1.0, r"env_config\['change_cost'\]: change_cost must be a finite number"),
    ("change_cost", float("nan"), r"env_config\['change_cost'\]: change_cost must be a finite"),
    ("change_cost", 1.0, r"env_config\['change_cost'\]: .* needs reward mode 'vs_keep'"),
    ("backend_kwargs", {"replica": 3}, "must not set 'replica'"),
    ("catalogue", "huge", "unknown action catalogue 'huge'"),
    ("services", ["carts", "nosuch"], "unknown service"),
    ("seed", -1, r"env_config\['seed'\] must be an int >= 0"),
    ("load", "closed", r"env_config\['load'\] must be one of \('open', 'classic'\)"),
    ("objective", "p99", r"env_config\['objective'\] must be one of"),
    ("late_weight", 2.0, r"env_config\['late_weight'\]: late_weight must be a number in"),
    ("step_s", 0, r"env_config\['step_s'\] must be a positive number"),
    ("scenarios", "weekly", r"env_config\['scenarios'\] must be one of \['held_out', "),
    ("scenarios", [], r"env_config\['scenarios'\] must be a set's name"),
    ("scenarios", "/nonexistent/s.yaml", "s.yaml"),
    ("tuned_config", "/nonexistent/t.yaml", "tuned configuration /nonexistent/t.yaml: "),
    ("tuned_config", [1], r"env_config\['tuned_config'\] must be a mapping"),
])
def test_bad_config_is_rejected_naming_the_problem(key, value, message):
    with pytest.raises(ValueError, match=message):
        make(**{key: value})


def test_default_config_is_the_open_load_and_the_slo_objective():
    settings = EnvSettings.from_config(None)
    assert settings.load == "open" and settings.scenarios == "training"
    assert settings.objective == SloObjective(1.0)
    assert settings.unhealthy_penalty == -100.0  # every offered request failed
    assert settings.init is None  # the scenario's start
    assert DEFAULT_ENV_CONFIG["episode_len"] == 20
    assert DEFAULT_ENV_CONFIG["reward_mode"] == "delta"


def test_classic_env_config_is_the_notebook_setup():
    settings = EnvSettings.from_config(classic_env_config())
    assert settings.load == "classic" and settings.start == "classic_fixed"
    assert settings.users_range == (10, 20) and settings.requests_per_user == 80
    assert settings.objective == ClassicObjective(RewardWeights(0.1, "ms"))
    assert settings.unhealthy_penalty == DEFAULT_UNHEALTHY_PENALTY == -1800.0
    with_notebook_weights = EnvSettings.from_config(
        classic_env_config(latency_weight=10_000.0, latency_unit="s"))
    assert with_notebook_weights.objective == ClassicObjective(CLASSIC_WEIGHTS)


def test_unknown_backend_is_named_by_the_registry():
    """The one check of a backend name is envs.backends.registry.backend_factory's."""
    with pytest.raises(ValueError, match=r"env_config\['backend'\]: unknown backend 'nosuch'; "
                                         r"known: k8s, local, sim \(envs.backends.registry\)"):
        EnvSettings.from_config({"backend": "nosuch"})


def test_faults_default_to_none_and_are_kept_in_order():
    assert DEFAULT_ENV_CONFIG["faults"] == ()
    assert EnvSettings.from_config(None).faults == ()
    down, spike = ServiceDown("carts", 1.0, 2.0), LatencySpike("user", 0.0, 3.0, 4.0)
    assert EnvSettings.from_config({"faults": [down, spike]}).faults == (down, spike)


@pytest.mark.parametrize("bad", ["carts", {"carts": 1}, [("carts", 0.0, 1.0)],
                                 [ServiceDown("carts", 0.0, 1.0), 3], None])
def test_bad_faults_are_rejected_naming_the_key(bad):
    with pytest.raises(ValueError, match=r"env_config\['faults'\] must be a sequence of"):
        make(faults=bad)


def test_next_env_index_counts_envs_per_env_config_object():
    class Context(dict):
        """Like RLlib's EnvContext: a dict subclass, so it can be weakly referenced."""

    first, second = Context(), Context()
    assert [next_env_index(first) for _ in range(3)] == [0, 1, 2]
    assert next_env_index(second) == 0
    assert next_env_index({}) == next_env_index({}) == 0  # a plain dict is not tracked


def test_scenarios_may_be_a_list_or_a_named_distribution():
    one = steady(60.0, 4)
    assert EnvSettings.from_config({"scenarios": [one]}).scenarios == (one,)
    assert EnvSettings.from_config({"scenarios": "held_out"}).scenarios == "held_out"
