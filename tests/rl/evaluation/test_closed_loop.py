"""run_scenario: the same observations and scores as MeshEnv for a policy, common random
numbers across controllers, determinism, and an unhealthy step ending the scenario."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from envs.backends import make_backend
from envs.backends.base import Backend
from envs.knobs import Knob, with_knob
from envs.mesh_env import MeshEnv
from envs.scenarios import held_out_cases, steady
from rl.controllers import (
    GatewayThrottle,
    PolicyController,
    RuleBasedController,
    istio_defaults,
    tuned_static,
)
from rl.evaluation.actors import module_actor
from rl.evaluation.closed_loop import UNHEALTHY_SCORE, config_change, run_scenario
from tests.rl.evaluation._policies import ObsHash

EPISODE_LEN = 8


@pytest.fixture(scope="module")
def backend() -> Any:
    b = make_backend("sim")
    yield b
    b.close()


def _cases() -> list:
    # one of each start: istio_default (case 0), classic_random (case 6), tuned (case 12)
    cases = held_out_cases(3, 13, EPISODE_LEN)
    return [cases[0], cases[3], cases[6], cases[12]]


@pytest.mark.parametrize("index", range(4))
def test_a_policy_sees_what_mesh_env_gives_it(backend: Backend, index: int) -> None:
    scenario = _cases()[index]
    env = MeshEnv({"episode_len": EPISODE_LEN})
    try:
        module = ObsHash(int(env.action_space.n))
        obs, info = env.reset(seed=17, options={"scenario": scenario})
        actor = module_actor(module)
        observations, scores, actions = [obs], [info["eval_score"]], []
        done = False
        while not done:
            actions.append(actor(obs))
            obs, _, term, trunc, info = env.step(actions[-1])
            observations.append(obs)
            scores.append(info["eval_score"] if info["healthy"] else UNHEALTHY_SCORE)
            done = term or trunc
        run = run_scenario(backend, scenario, PolicyController(module, env.catalogue), 17,
                           episode_len=EPISODE_LEN)
    finally:
        env.close()
    assert len(run.observations) == len(observations) == EPISODE_LEN + 1
    for a, b in zip(run.observations, observations, strict=True):
        np.testing.assert_array_equal(a, b)
    assert [s.score for s in run.steps] == pytest.approx(scores)
    assert [s.action for s in run.steps[1:]] == actions
    assert len(set(actions)) > 1  # the check is not of a constant policy


def test_common_random_numbers_and_determinism(backend: Backend) -> None:
    scenario = _cases()[2]  # classic_random start
    runs = {c.name: run_scenario(backend, scenario, c, 5, episode_len=EPISODE_LEN)
            for c in (istio_defaults(), tuned_static(), GatewayThrottle(), RuleBasedController())}
    seeds = {name: [s.load_seed for s in r.steps] for name, r in runs.items()}
    assert len({tuple(v) for v in seeds.values()}) == 1  # the same load seeds for every method
    assert len(set(seeds["istio_default"])) == EPISODE_LEN + 1
    again = run_scenario(backend, scenario, RuleBasedController(), 5, episode_len=EPISODE_LEN)
    assert again.steps == runs["rule_based"].steps
    other = run_scenario(backend, scenario, istio_defaults(), 6, episode_len=EPISODE_LEN)
    assert [s.load_seed for s in other.steps] != seeds["istio_default"]


def test_per_step_records(backend: Backend) -> None:
    scenario = steady(60.0, EPISODE_LEN)
    run = run_scenario(backend, scenario, istio_defaults(), 1)
    assert run.healthy_end and len(run.steps) == EPISODE_LEN + 1
    for s in run.steps:
        assert s.score == pytest.approx(s.good_pct - 100.0)
        assert s.goodput_rps > 0 and 0 <= s.failure_pct <= 100 and s.abandoned >= 0
        assert s.latency_p99_ms >= s.latency_mean_ms > 0
    assert run.summed_score == pytest.approx(sum(s.score for s in run.steps[1:]))
    assert run.steady_steps() == list(range(1, EPISODE_LEN + 1))
    throttle = run_scenario(backend, scenario, GatewayThrottle(8, 1), 1)
    assert "front-end tcp.maxConnections" in throttle.steps[0].change
    assert all(s.change == "" for s in throttle.steps[1:])


class _SickAfter:
    """Delegates to a backend; the health check fails while payment has a rule."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.sick = False

    def apply(self, rules: list) -> None:
        self.sick = any(r.service == "payment" for r in rules)
        self.inner.apply(rules)

    def healthy(self) -> bool:
        return not self.sick and self.inner.healthy()

    def run_load(self, load: Any, seed: int) -> Any:
        return self.inner.run_load(load, seed=seed)


class _BreakAt:
    name = "break_at_3"

    def reset(self, scenario: Any, start: dict) -> dict:
        return {}

    def act(self, obs: np.ndarray, config: dict, info: Any) -> dict:
        if info["t"] == 2:  # the config of run 3
            return {"payment": with_knob(None, Knob.MAX_CONNECTIONS, 3)}
        return dict(config)


def test_an_unhealthy_step_ends_the_scenario_at_the_worst_score(backend: Backend) -> None:
    scenario = steady(60.0, EPISODE_LEN)
    run = run_scenario(_SickAfter(backend), scenario, _BreakAt(), 2)  # type: ignore[arg-type]
    assert [s.healthy for s in run.steps] == [True] * 3 + [False] * (EPISODE_LEN - 2)
    assert all(s.score == UNHEALTHY_SCORE == -100.0 for s in run.steps[3:])
    assert all(s.good_pct is None and s.load_seed is None for s in run.steps[3:])
    assert run.summed_score == pytest.approx(
        run.steps[1].score + run.steps[2].score - 100.0 * (EPISODE_LEN - 2))
    assert not run.healthy_end
    assert len(run.observations) == 4  # runs 0..2 and the unhealthy step's (no run)


def test_bad_episode_len(backend: Backend) -> None:
    with pytest.raises(ValueError, match="episode_len"):
        run_scenario(backend, steady(60.0, 4), istio_defaults(), 0, episode_len=5)


def test_config_change_names_the_knobs() -> None:
    old = {"carts": with_knob(None, Knob.MAX_CONNECTIONS, 5)}
    new = {"carts": with_knob(None, Knob.MAX_CONNECTIONS, 10)}
    assert config_change(old, new) == "carts tcp.maxConnections 5->10"
    assert config_change(new, new) == ""


def test_the_steady_table_shows_what_users_got_beside_the_score(backend: Backend) -> None:
    """Per method the steady parts' mean score and, from the same steps, good %, goodput,
    failure %, mean latency and p99; a throttle that serves less shows it there."""
    from rl.evaluation.scenario_tables import METRICS, steady_check, steady_table

    scenarios = [steady(60.0, EPISODE_LEN), steady(150.0, EPISODE_LEN)]
    runs = {name: [run_scenario(backend, s, controller(), 3) for s in scenarios]
            for name, controller in (("policy", lambda: GatewayThrottle(2, 1)),
                                     ("istio_default", istio_defaults))}
    check = steady_check(runs, "policy", ["istio_default"])
    assert check["cases"] == 2
    for name, cases in runs.items():
        for i, run in enumerate(cases):
            steps = [run.steps[t] for t in run.steady_steps()]
            for key, _, _ in METRICS:
                expected = float(np.mean([getattr(s, key) for s in steps]))
                assert check["per_case_metrics"][name][key][i] == pytest.approx(expected)
    # a front-end pool of 2 serves fewer requests per second than Istio's defaults at 60 req/s
    goodput = {n: check["per_case_metrics"][n]["goodput_rps"][0] for n in runs}
    assert goodput["policy"] < goodput["istio_default"]
    table = steady_table(check, "policy")
    header = next(line for line in table.splitlines() if line.startswith("| method"))
    assert all(h in header for _, h, _ in METRICS)
    row = next(line for line in table.splitlines() if line.startswith("| policy"))
    assert row.count("|") == len(METRICS) + 3
