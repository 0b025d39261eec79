"""Every observation lies in the declared space: gymnasium's ``check_env`` on many seeds (80
envs: the default, from the notebook's random start, the notebook's setup), and a
property test over seeds, scenarios (both distributions), starts, random configurations with
tiny limits, and both loads. (The v0 observation left it: a TCP destination's error ratio of
3.0 on some resets.)"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.actions import classic_initial_config, make_catalogue
from envs.backends.base import LoadSpec
from envs.backends.sim import SimMesh
from envs.istio import rules_for
from envs.mesh_env import MeshEnv
from envs.observation import ObservationEncoder
from envs.scenarios import draw, held_out_cases
from envs.settings import classic_env_config
from envs.sockshop.slo import NOMINAL_RATE_RPS
from tests.envs._support import _no_leaked_leases  # noqa: F401  (autouse fixture)

#: Short runs so that many episodes fit in a test: 2 s of offered load per step.
QUICK = {"step_s": 2.0, "episode_len": 8}


def _check_env(env: MeshEnv) -> None:
    """Gymnasium's ``check_env`` on ``env``, then close it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # check_env's notes on float32 bounds
            check_env(env, skip_render_check=True)
    finally:
        env.close()


@pytest.mark.parametrize("seed", range(48))
def test_check_env_passes_on_the_default_env(seed):
    env = MeshEnv({**QUICK, "seed": seed})
    _check_env(env)


@pytest.mark.parametrize("seed", range(16))
@pytest.mark.parametrize("config", ["classic_random_start", "classic"])
def test_check_env_passes_from_the_random_start_and_on_the_notebooks_setup(seed, config):
    """The notebook's random draw as the start (limits down to 1), and its whole setup."""
    base = (classic_env_config() if config == "classic"
            else {**QUICK, "init": "classic_random"})
    env = MeshEnv({**base, "episode_len": QUICK["episode_len"], "seed": seed})
    _check_env(env)


def test_every_observation_lies_in_the_space():
    rng = np.random.default_rng(2026)
    env = MeshEnv({**QUICK, "init": "istio_default"})
    space = env.observation_space
    seen = 0
    try:
        for i in range(24):
            dist = "training" if i % 2 == 0 else "held_out"
            scenario = draw(dist, rng, QUICK["episode_len"])
            obs, _ = env.reset(seed=int(rng.integers(1 << 30)), options={"scenario": scenario})
            assert space.contains(obs), scenario.describe()
            # random actions, including ones that shrink limits to 1
            for _ in range(QUICK["episode_len"]):
                action = int(rng.integers(env.action_space.n))
                obs, _, terminated, truncated, info = env.step(action)
                assert space.contains(obs), (scenario.describe(), info["action_desc"])
                seen += 1
                if terminated or truncated:
                    break
        for case in held_out_cases(7, 6, QUICK["episode_len"]):
            obs, _ = env.reset(seed=1, options={"scenario": case})
            assert space.contains(obs), case.describe()
    finally:
        env.close()
    assert seen >= 100


@pytest.mark.parametrize("load", ["open", "classic"])
def test_random_tiny_configurations_stay_in_the_space(load):
    """The notebook's random draw with knobs in 1..3 (pools that overflow everywhere), under
    loads from a fifth of the nominal rate to four times it."""
    rng = np.random.default_rng(5)
    catalogue = make_catalogue("classic")
    encoder = ObservationEncoder(catalogue, episode_len=4)
    mesh = SimMesh()
    for _ in range(16):
        tiny = classic_initial_config(rng, catalogue.services, 3)
        mesh.apply(rules_for(tiny))
        if load == "open":
            rate = float(rng.uniform(0.2, 4.0)) * NOMINAL_RATE_RPS
            spec = LoadSpec(users=0, requests=int(rate * 2), mode="open", arrival_rate_rps=rate)
        else:
            users = int(rng.integers(1, 40))
            spec = LoadSpec(users=users, requests=20 * users)
        report = mesh.run_load(spec, seed=int(rng.integers(1 << 30)))
        obs = encoder.encode(report, tiny, float(rng.uniform()), int(rng.integers(5)))
        assert encoder.space.contains(obs)
