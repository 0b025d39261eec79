"""The cause → action table (rl/evaluation/cause_action.py): the cause read from the
observation the policy acted on, the action's knob and target, counted per step."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from envs.actions import make_catalogue
from envs.observation import ObservationEncoder, ratio_scale
from rl.evaluation.cause_action import (
    action_label,
    cause_action_counts,
    cause_action_markdown,
    observed_cause,
    plot_cause_action,
)
from rl.evaluation.closed_loop import ScenarioRun, StepRecord

CATALOGUE = make_catalogue("setpoint")
ENCODER = ObservationEncoder(CATALOGUE, 8)


def _obs(**channels: float) -> np.ndarray:
    obs = np.zeros(len(ENCODER.names), np.float32)
    for name, value in channels.items():
        obs[ENCODER.names.index(name.replace("__", "/").replace("_dash_", "-"))] = value
    return obs


def test_the_largest_cause_over_services_wins_then_load_then_none() -> None:
    both = _obs(**{"service__carts__uo_frac": 0.2, "service__orders__reset_frac": 0.5})
    assert observed_cause(both, ENCODER) == "reset (down)"
    tiny = _obs(**{"service__carts__ut_frac": 0.005, "load__level": ratio_scale(3.0)})
    assert observed_cause(tiny, ENCODER) == "overload"  # 0.5 % is below the threshold
    assert observed_cause(_obs(**{"load__level": ratio_scale(1.0)}), ENCODER) == "none"
    # a service whose backend did not count causes: no cause is unknown, not "none"
    blind = _obs(**{"service__carts__seen": 1.0, "load__level": ratio_scale(3.0)})
    assert observed_cause(blind, ENCODER) == "unmeasured"
    seen = _obs(**{"service__carts__seen": 1.0, "service__carts__causes_seen": 1.0})
    assert observed_cause(seen, ENCODER) == "none"


def test_actions_are_labelled_by_knob_and_target() -> None:
    names = [CATALOGUE.describe(i) for i in range(len(CATALOGUE))]
    gateway = names.index("front-end: http.http2MaxRequests set 16")
    callee = names.index("carts: tcp.maxConnections set 4")
    assert action_label(CATALOGUE, gateway) == "http.http2MaxRequests (gateway)"
    assert action_label(CATALOGUE, callee) == "tcp.maxConnections (callee)"
    assert action_label(CATALOGUE, CATALOGUE.noop_index) == "no-op"
    restoring = make_catalogue("setpoint_restore")
    assert action_label(restoring, len(restoring) - 2) == "restore (mesh)"
    assert action_label(restoring, len(restoring) - 1) == "no-op"
    resetting = make_catalogue("setpoint_reset")
    fe = resetting.services.index("front-end")
    assert action_label(resetting, fe * 43 + 42) == "reset (gateway)"
    assert action_label(resetting, resetting.services.index("carts") * 43 + 42) == "reset (callee)"


def test_each_step_is_counted_under_the_observation_it_acted_on(tmp_path: Path) -> None:
    run = ScenarioRun("s", "policy", 0)
    run.observations = [_obs(**{"service__carts__uo_frac": 0.3}), _obs()]
    noop = CATALOGUE.noop_index
    run.steps = [StepRecord(t=0, rate_rps=60.0, faults=(), healthy=True, score=0.0),
                 StepRecord(t=1, rate_rps=60.0, faults=(), healthy=True, score=-1.0, action=0),
                 StepRecord(t=2, rate_rps=60.0, faults=(), healthy=True, score=-1.0,
                            action=noop)]
    counts = cause_action_counts([run], CATALOGUE, 8)
    assert counts["UO overflow"] == {"tcp.maxConnections (callee)": 1}
    assert counts["none"] == {"no-op": 1}
    md = cause_action_markdown(counts)
    assert md[2] == "| UO overflow | 1 | `tcp.maxConnections (callee)` 100% |"
    assert len(md) == 4  # only the rows with steps
    plot_cause_action(counts, tmp_path / "heat.png")
    assert (tmp_path / "heat.png").stat().st_size > 1000
