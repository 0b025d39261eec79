"""Tests of envs.scenarios: validation, the families' shapes, load(t), seeded draws, the
separation of held-out families from training, and the YAML files."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from envs import scenarios as sc
from envs.actions import TUNABLE_SERVICES
from envs.backends.base import LatencySpike, ServiceDown
from envs.backends.sim import SimMesh
from envs.scenarios import (
    HELD_OUT,
    RUN_FAULT_END_S,
    TRAINING,
    FaultWindow,
    Scenario,
)
from envs.sockshop.slo import NOMINAL_RATE_RPS

N = NOMINAL_RATE_RPS
HELD_OUT_SERVICES = set(sc.HELD_OUT_DOWN_SERVICES) | set(sc.HELD_OUT_SLOW_SERVICES)
TRAIN_SERVICES = set(sc.TRAIN_DOWN_SERVICES) | set(sc.TRAIN_SLOW_SERVICES)


def max_step_ratio(rates: tuple[float, ...]) -> float:
    """The largest ratio between consecutive runs' rates, up or down."""
    return max(max(a / b, b / a) for a, b in itertools.pairwise(rates))


def direction_changes(rates: tuple[float, ...]) -> int:
    """How often the rate sequence turns (rise → fall or fall → rise), flat runs ignored."""
    signs = [np.sign(b - a) for a, b in itertools.pairwise(rates)
             if abs(b - a) > 1e-9 * max(a, b)]
    return sum(1 for s, u in itertools.pairwise(signs) if s != u)


def one_line_error(match: str):
    """pytest.raises(ValueError) whose message matches ``match``; check it is one line after."""
    return pytest.raises(ValueError, match=match)


def scenario(**kw) -> Scenario:
    base = {"name": "s", "family": "hand", "rates": (60.0,) * 11, "faults": (),
            "start": "istio_default"}
    return Scenario(**{**base, **kw})


# --- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize(("kw", "field"), [
    ({"kind": "crash"}, "FaultWindow.kind"),
    ({"service": "nope"}, "FaultWindow.service: unknown service"),
    ({"service": "front-end"}, "FaultWindow.service: 'front-end' cannot be faulted"),
    ({"service": "queue-master"}, "FaultWindow.service: 'queue-master' cannot be faulted"),
    ({"start_step": -1}, "FaultWindow.start_step"),
    ({"start_step": 1.0}, "FaultWindow.start_step"),
    ({"start_step": True}, "FaultWindow.start_step"),
    ({"end_step": 2}, "FaultWindow.end_step"),
    ({"end_step": 1}, "FaultWindow.end_step"),
    ({"factor": 1.0}, "FaultWindow.factor must be > 1"),
    ({"factor": 0.5}, "FaultWindow.factor must be > 1"),
    ({"factor": math.nan}, "FaultWindow.factor must be a finite"),
    ({"factor": "8"}, "FaultWindow.factor must be a finite"),
    ({"kind": "down", "factor": 3.0}, "FaultWindow.factor must be 1 for a down"),
])
def test_fault_window_rejects_bad_fields(kw: dict, field: str) -> None:
    args = {"kind": "slow", "service": "carts", "start_step": 2, "end_step": 5, "factor": 4.0,
            **kw}
    with pytest.raises(ValueError, match=field) as err:
        FaultWindow(**args)
    assert "\n" not in str(err.value)


def test_every_tunable_service_and_database_can_be_faulted() -> None:
    assert sc.FAULTABLE_SERVICES == TUNABLE_SERVICES
    for s in TUNABLE_SERVICES:
        FaultWindow("down", s, 1, 2)
        FaultWindow("slow", s, 1, 2, 2.0)
    assert TRAIN_SERVICES.isdisjoint(HELD_OUT_SERVICES)
    assert set(TUNABLE_SERVICES) >= TRAIN_SERVICES | HELD_OUT_SERVICES


@pytest.mark.parametrize(("kw", "field"), [
    ({"name": ""}, "Scenario.name"),
    ({"name": "a\nb"}, "Scenario.name"),
    ({"family": None}, "Scenario.family"),
    ({"rates": ()}, "Scenario.rates needs"),
    ({"rates": (60.0,)}, "Scenario.rates needs"),
    ({"rates": "60,60"}, "Scenario.rates must be a list"),
    ({"rates": (60.0, 0.0)}, r"Scenario.rates\[1\] must be a finite number > 0"),
    ({"rates": (60.0, -5.0)}, r"Scenario.rates\[1\]"),
    ({"rates": (math.inf, 60.0)}, r"Scenario.rates\[0\]"),
    ({"rates": (60.0, math.nan)}, r"Scenario.rates\[1\]"),
    ({"rates": (60.0, True)}, r"Scenario.rates\[1\]"),
    ({"rates": (60.0, "60")}, r"Scenario.rates\[1\]"),
    ({"faults": (FaultWindow("down", "carts", 5, 12),)}, r"Scenario.faults\[0\].*ends at run 12"),
    ({"faults": ({"kind": "down"},)}, r"Scenario.faults\[0\] must be a FaultWindow"),
    ({"start": "classic_fixed"}, "Scenario.start"),
])
def test_scenario_rejects_bad_fields(kw: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field) as err:
        scenario(**kw)
    assert "\n" not in str(err.value)


def test_a_window_may_end_with_the_episode_and_rates_may_be_an_array() -> None:
    s = scenario(rates=np.full(11, 60), faults=(FaultWindow("down", "carts", 0, 11),))
    assert s.rates == (60.0,) * 11 and all(isinstance(r, float) for r in s.rates)
    assert s.episode_len == 10
    assert all(s.faults_at(t) for t in range(11))


# --- load(t) ----------------------------------------------------------------------------------

def test_load_gives_the_runs_rate_request_count_and_active_faults() -> None:
    down = FaultWindow("down", "carts", 2, 4)
    slow = FaultWindow("slow", "catalogue", 3, 6, 8.0)
    rates = tuple(30.0 + 7.3 * t for t in range(9))
    s = scenario(rates=rates, faults=(down, slow))
    for t in range(9):
        load = s.load(t, 26.7)
        assert load.mode == "open" and load.users == 0
        assert load.arrival_rate_rps == rates[t]
        assert load.requests == round(rates[t] * 26.7)
        expected = []
        if 2 <= t < 4:
            expected.append(ServiceDown("carts", 0.0, RUN_FAULT_END_S))
        if 3 <= t < 6:
            expected.append(LatencySpike("catalogue", 0.0, RUN_FAULT_END_S, 8.0))
        assert load.faults == tuple(expected), t
        assert s.faults_at(t) == tuple(f for f in (down, slow) if f.active(t))
    assert math.isfinite(RUN_FAULT_END_S)


def test_load_requests_at_least_one_and_bad_arguments_raise() -> None:
    s = scenario(rates=(0.01, 60.0))
    assert s.load(0, 10.0).requests == 1
    assert s.load(1, 0.5).requests == 30
    for t in (-1, 2, 1.0):
        with one_line_error("run index t"):
            s.load(t, 10.0)
    for step_s in (0, -1.0, math.inf, "10"):
        with one_line_error("step_s"):
            s.load(1, step_s)


def test_the_simulator_accepts_a_scenarios_faults_and_they_cover_the_run() -> None:
    s = scenario(rates=(60.0, 60.0, 60.0), faults=(FaultWindow("down", "carts", 1, 2),
                                                   FaultWindow("slow", "user", 1, 3, 5.0)))
    mesh = SimMesh()
    try:
        clean = mesh.run_load(s.load(0, 2.0), seed=3)
        faulted = mesh.run_load(s.load(1, 2.0), seed=3)
    finally:
        mesh.close()
    assert clean.num_requests == faulted.num_requests == 120
    assert faulted.num_failures > clean.num_failures  # carts down really bites
    assert faulted.duration_s < RUN_FAULT_END_S


# --- builders ---------------------------------------------------------------------------------

def test_builders_give_the_exact_shapes() -> None:
    s = sc.steady(60.0, 20, "tuned")
    assert s.rates == (60.0,) * 21 and s.start == "tuned" and s.faults == ()
    assert s.family == "steady" and s.episode_len == 20
    assert sc.ramp_rates(30.0, 90.0, 4) == (30.0, 45.0, 60.0, 75.0, 90.0)
    assert sc.step_rates(50.0, 3.0, 2, 4) == (50.0, 50.0, 150.0, 150.0, 150.0)
    assert sc.step_rates(120.0, 0.25, 3, 4) == (120.0, 120.0, 120.0, 30.0, 30.0)
    d = sc.diurnal_rates(60.0, 0.5, 1, 0.0, 8)
    assert d == pytest.approx([60 * (1 + 0.5 * math.sin(2 * math.pi * t / 8)) for t in range(9)])
    assert max(d) == pytest.approx(90.0) and min(d) == pytest.approx(30.0)
    with one_line_error("episode_len"):
        sc.steady(60.0, 0)
    with one_line_error("step at"):
        sc.step_rates(50.0, 2.0, 0, 4)
    with one_line_error("amplitude"):
        sc.diurnal_rates(60.0, 1.0, 1, 0.0, 8)


def test_describe_is_one_line_with_the_faults() -> None:
    s = scenario(faults=(FaultWindow("slow", "catalogue", 2, 8, 8.0),))
    text = s.describe()
    assert "\n" not in text and "catalogue x8 t2-7" in text and "start=istio_default" in text
    assert "no fault" in sc.steady(60.0, 5).describe()


# --- every family's shape ---------------------------------------------------------------------

EPISODE_LENS = (8, 13, 20)


def samples(dist: sc.Distribution, family: str, n: int = 150) -> list[Scenario]:
    rng = np.random.default_rng(7)
    fam = dist.family(family)
    return [fam.sample(rng, EPISODE_LENS[i % 3], "istio_default") for i in range(n)]


def check_step(s: Scenario, up: bool, base: tuple[float, float], k: tuple[float, float]) -> None:
    values = sorted(set(s.rates), reverse=not up)
    assert len(values) == 2
    before, after = s.rates[0], s.rates[-1]
    at = s.rates.index(after)
    assert 2 <= at <= s.episode_len - 1
    assert all(r == before for r in s.rates[:at]) and all(r == after for r in s.rates[at:])
    ratio = after / before if up else before / after
    assert k[0] - 1e-9 <= ratio <= k[1] + 1e-9
    assert base[0] * N - 0.05 <= before <= base[1] * N + 0.05


def check_fault(s: Scenario, kinds: set[str], down: tuple[str, ...], slow: tuple[str, ...]) -> None:
    assert len(s.faults) == 1
    f = s.faults[0]
    assert f.kind in kinds
    assert f.service in (down if f.kind == "down" else slow)
    assert f.start_step >= 1 and f.end_step <= s.episode_len
    assert 2 <= f.end_step - f.start_step <= 6
    if f.kind == "slow":
        assert 4.0 <= f.factor <= 10.0


def check_monotone_shift(s: Scenario) -> None:
    assert direction_changes(s.rates) == 0 and s.rates[0] != s.rates[-1]


@pytest.mark.parametrize("family", ["steady", "overload", "fault_down", "fault_slow",
                                    "fault_down_unseen", "fault_slow_unseen"])
def test_steady_families(family: str) -> None:
    dist = HELD_OUT if family.endswith("unseen") else TRAINING
    low, high = {"steady": (0.5, 1.75), "overload": (1.8, 3.0)}.get(family, (0.5, 1.25))
    for s in samples(dist, family):
        assert s.family == family and len(s.rates) == s.episode_len + 1
        assert len(set(s.rates)) == 1 and low * N - 0.05 <= s.rates[0] <= high * N + 0.05
        if family in ("steady", "overload"):
            assert s.faults == ()
        else:
            kind = "down" if "down" in family else "slow"
            down, slow = ((sc.HELD_OUT_DOWN_SERVICES, sc.HELD_OUT_SLOW_SERVICES)
                          if dist is HELD_OUT else (sc.TRAIN_DOWN_SERVICES,
                                                    sc.TRAIN_SLOW_SERVICES))
            check_fault(s, {kind}, down, slow)


def test_ramp_family_is_linear_and_moves_at_least_half_the_nominal_rate() -> None:
    ups = 0
    for s in samples(TRAINING, "ramp"):
        assert s.faults == ()
        assert np.allclose(np.diff(s.rates, 2), 0.0, atol=1e-9)
        assert abs(s.rates[-1] - s.rates[0]) >= 0.5 * N - 0.1
        assert min(s.rates) >= 0.5 * N - 0.05 and max(s.rates) <= 2.0 * N + 0.05
        ups += s.rates[-1] > s.rates[0]
    assert 0 < ups < 150  # both directions


@pytest.mark.parametrize(("dist", "family", "up", "base", "k"), [
    (TRAINING, "step_up", True, (0.5, 1.0), (2.0, 3.0)),
    (TRAINING, "step_down", False, (1.5, 2.5), (2.0, 3.0)),
    (HELD_OUT, "step_up_x4", True, (0.5, 1.0), (3.5, 4.5)),
    (HELD_OUT, "step_down_x4", False, (2.0, 3.0), (3.5, 4.5)),
])
def test_step_families_step_by_k_at_the_drawn_step(dist, family, up, base, k) -> None:
    drawn = samples(dist, family)
    for s in drawn:
        assert s.faults == ()
        check_step(s, up, base, k)
    # the step really moves around the episode
    assert len({s.rates.index(s.rates[-1]) for s in drawn}) > 5


@pytest.mark.parametrize(("dist", "family", "periods"), [
    (TRAINING, "diurnal", 1), (HELD_OUT, "diurnal_2p", 2)])
def test_diurnal_families_have_their_number_of_periods(dist, family, periods) -> None:
    for s in samples(dist, family):
        assert s.faults == ()
        r = np.array(s.rates)
        assert r[0] == pytest.approx(r[-1])  # whole periods
        assert (r.max() - r.min()) / (r.max() + r.min()) <= 0.6 + 1e-9
        assert r.min() >= 0.75 * N * 0.4 - 0.1 and r.max() <= 1.25 * N * 1.6 + 0.1
        # the mean over whole periods is the drawn mean, within 0.75..1.25 × nominal
        assert 0.75 * N - 0.05 <= r[:-1].mean() <= 1.25 * N + 0.05
        changes = direction_changes(s.rates)
        assert changes <= 2 if periods == 1 else changes >= 3


@pytest.mark.parametrize(("dist", "family"), [(TRAINING, "shift_fault"),
                                              (HELD_OUT, "shift_fault_unseen")])
def test_shift_fault_families_shift_the_load_and_fault_a_service(dist, family) -> None:
    kinds = set()
    for s in samples(dist, family, n=300):
        check_monotone_shift(s)
        down, slow = ((sc.HELD_OUT_DOWN_SERVICES, sc.HELD_OUT_SLOW_SERVICES) if dist is HELD_OUT
                      else (sc.TRAIN_DOWN_SERVICES, sc.TRAIN_SLOW_SERVICES))
        check_fault(s, {"down", "slow"}, down, slow)
        assert max_step_ratio(s.rates) <= 3.0 + 1e-9
        kinds.add((s.faults[0].kind, s.name.split()[1]))
    assert kinds == {(f, load) for f in ("down", "slow") for load in ("step_up", "step_down",
                                                                       "ramp")}


def test_families_refuse_too_short_episodes() -> None:
    with one_line_error("episode_len must be an int >= 8"):
        sc.draw(TRAINING, np.random.default_rng(0), 7)


# --- seeded draws -----------------------------------------------------------------------------

def test_the_same_seed_gives_the_same_scenarios() -> None:
    def run(seed: int, dist: str) -> list[Scenario]:
        rng = np.random.default_rng(seed)
        return [sc.draw(dist, rng, 20) for _ in range(60)]

    assert run(3, "training") == run(3, "training")
    assert run(3, "held_out") == run(3, "held_out")
    assert run(3, "training") != run(4, "training")
    assert sc.held_out_cases(5, 24, 20) == sc.held_out_cases(5, 24, 20)
    assert sc.held_out_cases(5, 24, 20) != sc.held_out_cases(6, 24, 20)
    assert sc.held_out_cases(5, 12, 20) == sc.held_out_cases(5, 24, 20)[:12]


def test_held_out_cases_are_balanced_over_families_and_starts() -> None:
    cases = sc.held_out_cases(0, 36, 20)
    families = [f.name for f, _ in HELD_OUT.families]
    assert [c.family for c in cases] == families * 6
    for family in families:
        assert sorted(c.start for c in cases if c.family == family) == sorted(sc.STARTS * 2)
    assert len({c.name for c in cases}) == 36
    assert sc.held_out_cases(0, 0, 20) == []
    with one_line_error("n must be"):
        sc.held_out_cases(0, -1, 20)


def test_draw_rejects_an_unknown_distribution() -> None:
    with one_line_error("unknown scenario distribution 'test'"):
        sc.draw("test", np.random.default_rng(0), 20)


# --- held-out separation ----------------------------------------------------------------------

def test_no_training_draw_falls_in_a_held_out_region() -> None:
    rng = np.random.default_rng(2024)
    seen_families, seen_services, seen_starts = set(), set(), set()
    for i in range(4000):
        s = sc.draw(TRAINING, rng, 8 + i % 23)
        seen_families.add(s.family)
        seen_starts.add(s.start)
        for f in s.faults:
            assert f.service not in HELD_OUT_SERVICES, s.describe()
            seen_services.add(f.service)
        assert max_step_ratio(s.rates) <= 3.0 + 1e-9, s.describe()
        assert direction_changes(s.rates) <= 2, s.describe()
    assert seen_families == {f.name for f, _ in TRAINING.families}
    assert seen_services == TRAIN_SERVICES
    assert seen_starts == set(sc.STARTS)


def test_every_held_out_draw_lies_in_its_held_out_region() -> None:
    rng = np.random.default_rng(99)
    for i in range(1500):
        s = sc.draw(HELD_OUT, rng, 8 + i % 23)
        if s.family in ("step_up_x4", "step_down_x4"):
            assert max_step_ratio(s.rates) >= 3.5 - 1e-9
        elif s.family == "diurnal_2p":
            assert direction_changes(s.rates) >= 3
        else:
            assert s.faults and all(f.service in HELD_OUT_SERVICES for f in s.faults)


# --- files ------------------------------------------------------------------------------------

def test_dict_and_yaml_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    drawn = [sc.draw(TRAINING, rng, 20) for _ in range(40)] + sc.held_out_cases(1, 12, 10)
    drawn.append(sc.steady(60.0, 3))
    for s in drawn:
        assert Scenario.from_dict(s.to_dict()) == s
    path = tmp_path / "scenarios.yaml"
    sc.save_scenarios(path, drawn)
    assert sc.load_scenarios(path) == drawn


def test_hand_written_yaml(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("""
- name: carts outage
  family: hand
  start: tuned
  rates: [60, 60, 90, 90, 60]
  faults:
    - {kind: down, service: carts, start_step: 1, end_step: 3}
    - {kind: slow, service: catalogue, start_step: 2, end_step: 5, factor: 8}
- name: plain
  family: steady
  rates: [60, 60]
""")
    a, b = sc.load_scenarios(path)
    assert a.rates == (60.0, 60.0, 90.0, 90.0, 60.0) and a.start == "tuned"
    assert a.faults == (FaultWindow("down", "carts", 1, 3),
                        FaultWindow("slow", "catalogue", 2, 5, 8.0))
    assert b.start == "istio_default" and b.faults == ()


@pytest.mark.parametrize(("text", "match"), [
    ("- name: [unclosed\n", "malformed YAML at line"),
    ("name: x\n", "expected a YAML list"),
    ("- 3\n", "scenario 0: a scenario must be a mapping"),
    ("- {name: a, family: f, rates: [60, 60], colour: red}\n", r"unknown field\(s\) \['colour'\]"),
    ("- {name: a, family: f}\n", r"missing field\(s\) \['rates'\]"),
    ("- {name: a, family: f, rates: [60, 0]}\n", r"scenario 0 \(a\): Scenario.rates\[1\]"),
    ("- {name: a, family: f, rates: [60, 60], start: warm}\n", "Scenario.start"),
    ("- {name: a, family: f, rates: [60, 60], faults: {kind: down}}\n",
     "Scenario.faults must be a list"),
    ("- {name: a, family: f, rates: [60, 60], faults: [{kind: down, service: web, "
     "start_step: 0, end_step: 1}]}\n",
     r"scenario 0 \(a\): Scenario.faults\[0\]: FaultWindow.service: unknown service 'web'"),
    ("- {name: a, family: f, rates: [60, 60], faults: [{kind: slow, service: carts, "
     "start_step: 0, end_step: 1}]}\n", "FaultWindow.factor must be > 1"),
    ("- {name: a, family: f, rates: [60, 60], faults: [{kind: slow, service: carts}]}\n",
     r"missing field\(s\) \['start_step', 'end_step'\]"),
    ("- {name: a, family: f, rates: [60, 60], faults: [{kind: down, service: carts, "
     "start_step: 1, end_step: 3}]}\n", "ends at run 3"),
])
def test_bad_yaml_raises_one_line_naming_file_and_field(tmp_path: Path, text: str,
                                                         match: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        sc.load_scenarios(path)
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_the_overload_family_has_twice_the_weight_of_the_others() -> None:
    weights = {f.name: w for f, w in TRAINING.families}
    assert weights.pop("overload") == sc.OVERLOAD_WEIGHT == 2.0
    assert set(weights.values()) == {1.0}
    rng = np.random.default_rng(0)
    drawn = [sc.draw(TRAINING, rng, 20).family for _ in range(4000)]
    share = drawn.count("overload") / len(drawn)
    assert share == pytest.approx(2.0 / (len(weights) + 2.0), abs=0.02)


def test_the_envs_spec_lists_every_family_and_faulted_service() -> None:
    """``help(MeshEnv)`` names every family of both distributions and every service each
    distribution faults, so the spec cannot fall behind the data."""
    import re

    from envs.mesh_env import MeshEnv
    from envs.scenarios import (
        HELD_OUT,
        HELD_OUT_DOWN_SERVICES,
        HELD_OUT_SLOW_SERVICES,
        TRAIN_DOWN_SERVICES,
        TRAIN_SLOW_SERVICES,
        TRAINING,
    )

    doc = " ".join(MeshEnv.__doc__.split())
    section = doc[doc.index("## Scenarios"):doc.index("## Starting State")]
    for dist in (TRAINING, HELD_OUT):
        for family, _ in dist.families:
            assert f"``{family.name}``" in section, family.name
    training, held_out = section.split("held_out", 1)
    for services, part in ((TRAIN_DOWN_SERVICES + TRAIN_SLOW_SERVICES, training),
                           (HELD_OUT_DOWN_SERVICES + HELD_OUT_SLOW_SERVICES, held_out)):
        for service in services:
            assert re.search(rf"\b{re.escape(service)}\b", part), service
