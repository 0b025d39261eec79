"""``rl.evaluation.oracle``: the look-ahead oracle's seeds, choice and refusals, and the blind
replay of an action sequence (on the simulator)."""

from __future__ import annotations

import math

import pytest

from envs.actions import istio_default_config, make_catalogue
from envs.backends import make_backend
from envs.knobs import Knob, knob_value, with_knob
from envs.scenarios import Scenario, steady
from rl.controllers import istio_defaults
from rl.evaluation.closed_loop import run_scenario
from rl.evaluation.oracle import ActionReplay, LookaheadOracle, lookahead_seeds

CATALOGUE = make_catalogue("setpoint_restore")


@pytest.fixture()
def sim():
    backend = make_backend("sim")
    yield backend
    backend.close()


def test_lookahead_seeds_depend_on_the_scenario_and_run_only() -> None:
    a, b = steady(60.0, 8, name="a"), steady(60.0, 8, name="b")
    assert lookahead_seeds(a, 3, 5) == lookahead_seeds(a, 3, 5)
    assert lookahead_seeds(a, 3, 5)[:2] == lookahead_seeds(a, 3, 2)
    assert lookahead_seeds(a, 3, 5) != lookahead_seeds(a, 4, 5)
    assert lookahead_seeds(a, 3, 5) != lookahead_seeds(b, 3, 5)
    assert len(set(lookahead_seeds(a, 3, 5))) == 5


def test_the_oracle_caps_an_overloaded_gateway_and_beats_the_defaults(sim) -> None:
    # 2.5 × nominal: Istio's defaults let the front-end's queue grow; one action (an
    # admission limit at the gateway) serves more requests within their SLO
    scenario = steady(150.0, 8, name="overload 150rps")
    oracle = LookaheadOracle(CATALOGUE, lambda: make_backend("sim"), step_s=5.0, min_gain=1.0)
    try:
        run = run_scenario(sim, scenario, oracle, seed=7, step_s=5.0, episode_len=2,
                           catalogue=CATALOGUE)
    finally:
        oracle.close()
    base = run_scenario(sim, scenario, istio_defaults(), seed=7, step_s=5.0, episode_len=2,
                        catalogue=CATALOGUE)
    first = run.steps[1]
    assert first.action is not None and first.action != CATALOGUE.noop_index
    assert run.steps[1].change != ""
    assert first.score > base.steps[1].score + 5.0
    assert run.summed_score > base.summed_score + 10.0
    # every distinct configuration one action away was screened, plus the second round
    assert oracle.evaluated > 100


def test_a_change_must_beat_no_change_by_min_gain(sim) -> None:
    scenario = steady(150.0, 8, name="overload 150rps")
    oracle = LookaheadOracle(CATALOGUE, lambda: make_backend("sim"), step_s=5.0, top_k=2,
                             min_gain=1000.0)
    try:
        run = run_scenario(sim, scenario, oracle, seed=7, step_s=5.0, episode_len=1,
                           catalogue=CATALOGUE)
    finally:
        oracle.close()
    assert run.steps[1].action == CATALOGUE.noop_index
    assert run.steps[1].change == "" and run.final_config == istio_default_config()


def test_score_is_minus_infinity_for_a_configuration_the_front_end_fails_with() -> None:
    scenario = steady(60.0, 8, name="steady")
    oracle = LookaheadOracle(CATALOGUE, lambda: make_backend("sim"), step_s=2.0)
    oracle.reset(scenario, {})
    # a 1 ms connect timeout on the front-end and session-db: the simulator's health check
    # (one cold GET /catalogue) fails (tests/envs/backends/sim/test_sim_mesh.py)
    dead = {s: with_knob(None, Knob.CONNECT_TIMEOUT_MS, 1) for s in ("front-end", "session-db")}
    try:
        seeds = lookahead_seeds(scenario, 1, 1)
        assert math.isfinite(oracle.score({}, 1, seeds))
        assert oracle.score(dead, 1, seeds) == -math.inf
    finally:
        oracle.close()


@pytest.mark.parametrize("kwargs, message", [
    ({"screen_seeds": 0}, "screen_seeds must be an int >= 1"),
    ({"top_k": 0}, "top_k must be an int >= 1"),
    ({"confirm_seeds": 1.5}, "confirm_seeds must be an int >= 1"),
    ({"min_gain": -1.0}, "min_gain must be a finite number of points >= 0"),
    ({"step_s": 0.0}, "step_s must be a finite number of seconds > 0"),
])
def test_bad_oracle_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LookaheadOracle(CATALOGUE, lambda: make_backend("sim"), **kwargs)


def test_act_before_reset_is_an_error() -> None:
    oracle = LookaheadOracle(CATALOGUE, lambda: make_backend("sim"))
    with pytest.raises(RuntimeError, match="before reset"):
        oracle.act(None, {}, {"t": 0})  # type: ignore[arg-type]


def test_action_replay_plays_its_sequence_blind_then_keeps(sim) -> None:
    h2 = CATALOGUE.index_of(next(
        a for a in CATALOGUE.actions if a.service == "front-end"
        and a.knob is Knob.HTTP2_MAX_REQUESTS and a.change_text() == "set 16"))
    restore = len(CATALOGUE) - 2
    scenario = Scenario("replay", "steady", (60.0,) * 5, start="istio_default")
    replay = ActionReplay(CATALOGUE, [h2, None, restore])
    run = run_scenario(sim, scenario, replay, seed=3, step_s=2.0, catalogue=CATALOGUE)
    assert [s.action for s in run.steps[1:]] == [h2, None, restore, None]
    assert run.steps[1].change != "" and run.steps[2].change == ""
    assert run.steps[3].change != "" and run.final_config == {}
    # the configuration after step 1 holds the cap, whatever the observation was
    replay.reset(scenario, {})
    capped = replay.act(None, {}, {"t": 0})  # type: ignore[arg-type]
    assert knob_value(capped["front-end"], Knob.HTTP2_MAX_REQUESTS) == 16


def test_action_replay_refuses_an_index_outside_the_catalogue() -> None:
    with pytest.raises(ValueError, match="out of range"):
        ActionReplay(CATALOGUE, [0, len(CATALOGUE)])
