"""rl.evaluation.steady_gap: the gap-closed arithmetic and left-out cases on hand-made numbers,
the cases (rates, seeds, held out from training), and a tiny run on the simulator (every
column, the oracle at least as good as every method, the same seeds giving the same numbers)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs.actions import CLASSIC_KNOBS, LADDERS, make_catalogue
from envs.scenarios import TRAINING, draw
from envs.sockshop.slo import NOMINAL_RATE_RPS
from rl.baselines import reachable_space
from rl.evaluation.cases import SCENARIOS, case_seeds
from rl.evaluation.scenario_eval import CASE_SEED_BASE
from rl.evaluation.seeds import VALIDATION_FIRST_SEED, held_out_seeds, training_seeds
from rl.evaluation.steady_gap import (
    FAMILY_SEED_BASE,
    IN_RANGE,
    METRICS,
    OUT_OF_RANGE,
    OUT_OF_RANGE_FACTOR,
    TRAINING_MAX_FACTOR,
    agent_space,
    case_gaps,
    evaluate_steady,
    gap_summary,
    median_ci95,
    pct,
    policy_vs_search,
    report_markdown,
    results_json,
    steady_cases,
)
from tests.rl.evaluation._policies import ObsHash


def test_gap_closed_of_every_method_on_hand_made_scores() -> None:
    scores = {"start": -50.0, "policy": -20.0, "tpe_21": -35.0, "istio_default": -60.0,
              "gateway_throttle": -50.0, "oracle": -10.0}
    gaps = case_gaps(scores, min_gap=1.0)
    assert set(gaps) == {"policy", "tpe_21", "istio_default", "gateway_throttle"}
    assert gaps["policy"] == pytest.approx(0.75)
    assert gaps["tpe_21"] == pytest.approx(0.375)
    assert gaps["istio_default"] == pytest.approx(-0.25)  # worse than the start
    assert gaps["gateway_throttle"] == pytest.approx(0.0)


@pytest.mark.parametrize("oracle, counted", [(-49.5, False), (-49.0, False), (-48.9, True),
                                             (-55.0, False)])
def test_a_case_without_a_gap_is_left_out(oracle: float, counted: bool) -> None:
    gaps = case_gaps({"start": -50.0, "policy": -49.0, "oracle": oracle}, min_gap=1.0)
    assert (gaps["policy"] is not None) is counted


def test_gap_summary_leaves_out_and_counts_cases_without_a_gap() -> None:
    s = gap_summary([0.5, None, 1.0, 0.9, None, 0.2], seed=3)
    assert s.n == 4 and s.left_out == 2
    assert s.median == pytest.approx(0.7)
    assert 0.2 <= s.ci95[0] <= s.median <= s.ci95[1] <= 1.0
    assert gap_summary([0.5, None, 1.0, 0.9, None, 0.2], seed=3) == s  # seeded
    assert s.cell() == f"70 % [{pct(s.ci95[0])}, {pct(s.ci95[1])}]"
    none = gap_summary([None, None])
    assert none.n == 0 and none.left_out == 2 and math.isnan(none.median)
    assert none.cell() == "—"
    one = gap_summary([0.25])
    assert one.cell() == "25 %" and math.isnan(one.ci95[0])


def test_percent_cells() -> None:
    assert pct(0.734) == "73 %" and pct(-0.004) == "0 %" and pct(-0.25) == "-25 %"
    assert pct(0.12, sign=True) == "+12 %" and pct(math.nan) == "—"


def test_median_interval() -> None:
    assert median_ci95([3.0, 3.0, 3.0]) == (3.0, 3.0)
    assert all(math.isnan(v) for v in median_ci95([1.0]))
    low, high = median_ci95(list(np.linspace(0, 1, 101)), seed=1)
    assert 0.3 < low < 0.5 < high < 0.7


def test_policy_against_a_search_case_by_case() -> None:
    v = policy_vs_search([1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 5.0, 1.0],
                         [0.9, None, 0.5, 1.0], [0.8, None, 0.7, 0.4])
    assert v["wins"] == 2.5 and v["n"] == 4 and v["rate"] == pytest.approx(0.625)
    assert 0 < v["ci95"][0] < 0.625 < v["ci95"][1] < 1
    assert v["gap_diff_median"] == pytest.approx(0.1)  # median of +0.1, -0.2, +0.6
    with pytest.raises(ValueError, match="one value per case"):
        policy_vs_search([1.0], [1.0, 2.0], [None], [None])


def test_cases_rates_starts_and_seeds() -> None:
    cases = steady_cases(IN_RANGE, 40, 20)
    assert [c.seed for c in cases] == [FAMILY_SEED_BASE[IN_RANGE] + i for i in range(40)]
    rates = [c.rate_rps for c in cases]
    assert all(0.5 * NOMINAL_RATE_RPS <= r <= 1.75 * NOMINAL_RATE_RPS for r in rates)
    assert len(set(rates)) > 30  # drawn, not one rate
    for c in cases:
        assert c.scenario.start == "classic_random" and not c.scenario.faults
        assert set(c.scenario.rates) == {c.rate_rps} and c.scenario.episode_len == 20
    assert steady_cases(IN_RANGE, 40, 20) == cases
    out = steady_cases(OUT_OF_RANGE, 3, 8)
    assert [c.rate_rps for c in out] == [OUT_OF_RANGE_FACTOR * NOMINAL_RATE_RPS] * 3
    assert {c.load_index for c in cases}.isdisjoint(c.load_index for c in out)
    with pytest.raises(ValueError, match="unknown steady family"):
        steady_cases("users_40", 1, 8)


def test_out_of_range_rate_is_above_every_training_rate() -> None:
    rng = np.random.default_rng(0)
    highest = max(max(draw(TRAINING, rng, 20).rates) for _ in range(3000))
    assert highest <= TRAINING_MAX_FACTOR * NOMINAL_RATE_RPS + 1e-6
    assert highest > 2.7 * NOMINAL_RATE_RPS  # the bound is what training reaches
    assert OUT_OF_RANGE_FACTOR > TRAINING_MAX_FACTOR


def test_case_seeds_are_held_out() -> None:
    ours = {c.seed for f in (IN_RANGE, OUT_OF_RANGE) for c in steady_cases(f, 500, 8)}
    assert len(ours) == 1000
    others = set(held_out_seeds(1000)) | set(held_out_seeds(1000, VALIDATION_FIRST_SEED))
    for sweep_seed in range(100):
        others |= training_seeds(sweep_seed, num_env_runners=8)
    others |= {s for sc in SCENARIOS for s in case_seeds(sc, 1000)}  # --classic's
    others |= set(range(CASE_SEED_BASE, CASE_SEED_BASE + 1000))  # the held-out scenarios'
    assert not ours & others


def test_the_searches_cover_the_policy_s_knob_space() -> None:
    setpoint = make_catalogue("setpoint")
    space = agent_space(setpoint)
    assert space.services == setpoint.services and "front-end" in space.services
    assert space.knobs == CLASSIC_KNOBS
    assert all(space.high[k] == max(LADDERS[k]) for k in space.knobs)
    classic = make_catalogue("classic")
    assert agent_space(classic, 100, 8) == reachable_space("classic", classic.services, 100, 8)


@pytest.mark.slow
def test_a_tiny_run_on_the_simulator() -> None:
    catalogue = make_catalogue("setpoint")

    def run() -> tuple:
        result = evaluate_steady(ObsHash(len(catalogue)), catalogue,
                                 {IN_RANGE: 2, OUT_OF_RANGE: 1}, episode_len=8,
                                 fresh_seeds=2, oracle_runs=12, log=lambda _: None)
        return result, results_json(result)

    result, data = run()
    assert [len(v) for v in result.cases.values()] == [2, 1]
    for family, cases in result.cases.items():
        for r in cases:
            assert list(r.scores) == ["start", "policy", "tpe_9", "istio_default",
                                      "gateway_throttle", "oracle"]
            for name, fresh in r.scores.items():  # every method on the same fresh seeds
                assert len(fresh.runs) == 2 and all(m.eval_score is not None for m in fresh.runs)
                assert r.scores["oracle"].score >= fresh.score, (family, name)
            assert [s.load_seed for s in r.policy_run.steps] == r.episode_seeds
            assert not set(r.fresh_seeds) & set(r.episode_seeds)
            assert r.policy_run.episode_len == 8
        out_gaps = cases[0].gaps() if family == OUT_OF_RANGE else None
        if out_gaps is not None:  # at 4x the random start collapses: there is a gap to close
            assert all(g is None or g <= 1.0 + 1e-9 for g in out_gaps.values())
    assert result.cases[OUT_OF_RANGE][0].gap > 1.0
    md = "\n".join(report_markdown(result))
    for header in ("gap closed, median [95 % CI]", "score",
                   *(h for _, h, _ in METRICS), "Target: policy median gap closed ≥ 90 %",
                   "Target: policy median gap closed ≥ 80 %", "oracle from"):
        assert header in md, header
    for method in ("start", "policy", "tpe_9", "istio_default", "gateway_throttle", "oracle"):
        assert f"| {method} |" in md, method
    _, again = run()
    data.pop("wall_s")
    again.pop("wall_s")
    assert again == data  # the same seeds give the same numbers
