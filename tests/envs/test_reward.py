"""The objectives — the SLO score (served within SLO among the offered requests) and the classic
score -N · (failure % + w · traffic-weighted mean endpoint p99) — and the per-step reward built
on them (StepReward)."""

from __future__ import annotations

import math

import pytest

from envs.backends.report import EndpointStats, LoadReport
from envs.reward import (
    CLASSIC_WEIGHTS,
    DEFAULT_UNHEALTHY_PENALTY,
    EVALUATION_WEIGHTS,
    N_ENDPOINTS,
    ClassicObjective,
    RewardWeights,
    SloObjective,
    StepReward,
    classic_evaluation_score,
    classic_score,
    evaluation_score,
    failure_term,
    latency_term_ms,
    mean_p99_ms,
    slo_score,
)
from envs.sockshop import endpoint_names


def _endpoint(name: str, n: int, fails: int, p99_ms: float | None) -> EndpointStats:
    lat = p99_ms
    return EndpointStats(name=name, num_requests=n, num_failures=fails, avg_ms=lat, min_ms=lat,
                         max_ms=lat, median_ms=lat, p95_ms=lat, p99_ms=p99_ms, rps=1.0)


def _report(*endpoints: EndpointStats) -> LoadReport:
    return LoadReport(endpoints={e.name: e for e in endpoints}, services={}, duration_s=10.0)


REPORT = _report(
    _endpoint("GET /", 100, 0, 200.0),
    _endpoint("POST /cart", 50, 5, 600.0),
    _endpoint("POST /orders", 40, 10, 1000.0),
)
# 15 of 190 requests failed; traffic-weighted p99 = (100·200 + 50·600 + 40·1000) / 190 ms.
FAIL_PCT = 100.0 * 15 / 190
MEAN_P99_MS = 90_000.0 / 190


def test_n_is_the_reference_load_tests_endpoint_count():
    assert N_ENDPOINTS == 18


def test_terms():
    assert failure_term(REPORT) == pytest.approx(18 * FAIL_PCT)
    assert mean_p99_ms(REPORT) == pytest.approx(MEAN_P99_MS)
    assert latency_term_ms(REPORT) == pytest.approx(18 * MEAN_P99_MS)


def test_score_in_ms_and_in_s_agree():
    assert classic_score(REPORT, RewardWeights(0.5, "ms")) == pytest.approx(
        -18 * (FAIL_PCT + 0.5 * MEAN_P99_MS))
    assert classic_score(REPORT, RewardWeights(2.0, "s")) == pytest.approx(
        -18 * (FAIL_PCT + 2.0 * MEAN_P99_MS / 1000))
    assert classic_score(REPORT, RewardWeights(1000.0, "s")) == pytest.approx(
        classic_score(REPORT, RewardWeights(1.0, "ms")))


def test_uniform_endpoints_give_the_seeds_sums():
    """All 18 endpoints at one failure rate and one p99: the notebook's Σ failure % + w·Σ p99."""
    names = endpoint_names()
    report = _report(*(_endpoint(n, 40 if "detail" in n else 400, 4 if "detail" in n else 40,
                                 250.0) for n in names))
    notebook_sum = sum(e.failure_pct for e in report.endpoints.values())
    notebook_latency_s = sum(e.p99_ms for e in report.endpoints.values()) / 1000
    assert classic_score(report, CLASSIC_WEIGHTS) == pytest.approx(
        -(notebook_sum + 10_000 * notebook_latency_s))


def test_seed_weights_are_ten_thousand_per_second():
    assert classic_score(REPORT, CLASSIC_WEIGHTS) == pytest.approx(
        -18 * (FAIL_PCT + 10 * MEAN_P99_MS))


def test_zero_weight_is_failures_only():
    assert classic_score(REPORT, RewardWeights(0.0)) == pytest.approx(-18 * FAIL_PCT)


def test_classic_evaluation_score_uses_fixed_weights():
    assert classic_evaluation_score(REPORT) == pytest.approx(-18 * (FAIL_PCT + 0.1 * MEAN_P99_MS))
    assert classic_evaluation_score(REPORT) == classic_score(REPORT, EVALUATION_WEIGHTS)


def test_endpoint_without_requests_changes_nothing():
    with_idle = _report(*REPORT.endpoints.values(), _endpoint("GET /detail.html?id=x", 0, 0, None))
    assert classic_score(with_idle, RewardWeights(1.0)) == classic_score(REPORT, RewardWeights(1.0))


def test_a_shop_failing_fast_on_few_endpoints_never_beats_a_healthy_one():
    """The load test aborts a loop when GET /catalogue fails: a broken catalogue leaves the
    other endpoints without requests. Plain sums over the report's endpoints would score that
    better than a healthy shop; this score does not (evaluation weights)."""
    broken = _report(_endpoint("GET /catalogue", 1588, 1588, 85.0),
                     _endpoint("POST /orders", 6, 6, 63.0),
                     _endpoint("POST /cart", 2, 2, 65.0),
                     _endpoint("GET /basket.html", 4, 4, 69.0))
    healthy = _report(*(_endpoint(n, 17 if "detail" in n else 170, 0, 350.0)
                        for n in endpoint_names()))
    plain_broken = -(400 + 0.1 * (85 + 63 + 65 + 69))
    plain_healthy = -(0.1 * 350 * 18)
    assert plain_broken > plain_healthy  # the hole the traffic weighting closes
    assert classic_evaluation_score(broken) < classic_evaluation_score(healthy)
    assert classic_evaluation_score(broken) < -1800


def test_more_failures_or_latency_is_worse():
    worse_fail = _report(_endpoint("GET /", 100, 1, 200.0))
    worse_lat = _report(_endpoint("GET /", 100, 0, 201.0))
    base = _report(_endpoint("GET /", 100, 0, 200.0))
    w = RewardWeights(0.1)
    assert classic_score(worse_fail, w) < classic_score(base, w)
    assert classic_score(worse_lat, w) < classic_score(base, w)


def test_report_without_requests_cannot_be_scored():
    with pytest.raises(ValueError, match="no requests"):
        classic_score(_report(_endpoint("GET /", 0, 0, None)), RewardWeights(1.0))


def test_endpoint_with_requests_but_no_p99_is_an_error():
    with pytest.raises(ValueError, match="'GET /' saw 3 requests but its p99_ms is None"):
        classic_score(_report(_endpoint("GET /", 3, 0, None)), RewardWeights(1.0))


@pytest.mark.parametrize("weight", [-1.0, math.inf, math.nan, "1", True])
def test_bad_weight_is_rejected(weight):
    with pytest.raises(ValueError, match="latency_weight"):
        RewardWeights(weight)


def test_bad_unit_is_rejected():
    with pytest.raises(ValueError, match="latency_unit must be one of"):
        RewardWeights(1.0, "us")  # type: ignore[arg-type]


# --- StepReward ---------------------------------------------------------------------------------

OTHER = _report(_endpoint("GET /", 100, 50, 900.0))


def test_delta_reward_is_the_change_since_the_previous_run():
    w = RewardWeights(0.5, "ms")
    reward = StepReward("delta", ClassicObjective(w), -700.0, episode_len=5)
    assert reward.reset(REPORT) == classic_score(REPORT, w)
    assert reward.step(OTHER, 1) == pytest.approx(
        classic_score(OTHER, w) - classic_score(REPORT, w))
    assert reward.step(OTHER, 2) == 0.0  # the same run again: no change
    assert reward.step(REPORT, 3) == pytest.approx(
        classic_score(REPORT, w) - classic_score(OTHER, w))
    assert reward.step(None, 4) == -700.0  # unhealthy: the penalty, once
    reward.reset(OTHER)  # a new episode starts from its own reset run
    assert reward.step(OTHER, 1) == 0.0


def test_absolute_reward_is_the_score_and_the_penalty_covers_the_lost_steps():
    w = RewardWeights(2.0, "s")
    reward = StepReward("absolute", ClassicObjective(w), -700.0, episode_len=5)
    reward.reset(REPORT)
    assert reward.step(OTHER, 1) == classic_score(OTHER, w)
    assert reward.step(None, 2) == -700.0 * 4  # steps 2..5 will not run
    assert reward.step(None, 5) == -700.0


def test_step_reward_is_a_float_and_rejects_unknown_modes():
    reward = StepReward("delta", ClassicObjective(EVALUATION_WEIGHTS), -3, episode_len=2)
    assert type(reward.step(None, 1)) is float
    assert DEFAULT_UNHEALTHY_PENALTY == -100.0 * N_ENDPOINTS == -1800.0
    with pytest.raises(ValueError, match="reward mode must be one of"):
        StepReward("relative", ClassicObjective(EVALUATION_WEIGHTS), -1.0, episode_len=2)


# ----- the SLO objective ------------------------------------------------------------------


def _slo_report(abandoned: int = 0) -> LoadReport:
    """190 requests: 15 failed, 140 within SLO, so 35 late; plus ``abandoned`` never sent."""
    rows = [("GET /", 100, 0, 90), ("POST /cart", 50, 5, 30), ("POST /orders", 40, 10, 20)]
    endpoints = {n: EndpointStats(n, k, f, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, num_good=g)
                 for n, k, f, g in rows}
    return LoadReport(endpoints=endpoints, services={}, duration_s=10.0,
                      num_abandoned=abandoned)


def test_slo_score_counts_failed_abandoned_and_late_against_the_offered():
    report = _slo_report(abandoned=10)
    assert report.offered_requests == 200
    assert report.num_good == 140
    assert report.good_pct == pytest.approx(70.0)
    assert report.goodput_rps == pytest.approx(14.0)
    # failed 15 + abandoned 10 + late 35
    assert slo_score(report, 1.0) == pytest.approx(-100.0 * 60 / 200)
    assert slo_score(report, 0.5) == pytest.approx(-100.0 * (25 + 17.5) / 200)
    assert slo_score(report, 0.0) == pytest.approx(-100.0 * 25 / 200)
    assert evaluation_score(report) == pytest.approx(report.good_pct - 100.0)
    assert SloObjective(0.5).score(report) == slo_score(report, 0.5)
    assert SloObjective(0.5).evaluation(report) == evaluation_score(report)


def test_slo_score_of_a_perfect_and_of_a_broken_run():
    perfect = _report(EndpointStats("GET /", 10, 0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                                    num_good=10))
    broken = _report(EndpointStats("GET /", 10, 10, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                                   num_good=0))
    assert slo_score(perfect) == 0.0
    assert slo_score(broken) == -100.0 == SloObjective().worst


def test_serving_fewer_or_later_never_scores_better():
    base = _slo_report()
    fewer = _slo_report(abandoned=20)
    assert slo_score(fewer, 1.0) < slo_score(base, 1.0)
    assert slo_score(fewer, 0.0) < slo_score(base, 0.0)


def test_slo_score_needs_the_counts():
    unmeasured = _report(_endpoint("GET /", 3, 0, 10.0))
    with pytest.raises(ValueError, match="does not count requests within their SLO"):
        slo_score(unmeasured)
    with pytest.raises(ValueError, match="no requests"):
        slo_score(_report())
    too_good = _report(EndpointStats("GET /", 10, 5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                                     num_good=8))
    with pytest.raises(ValueError, match="more requests within their SLO"):
        slo_score(too_good)


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, True, "1"])
def test_late_weight_is_checked(bad):
    with pytest.raises(ValueError, match=r"late_weight must be a number in \[0, 1\]"):
        SloObjective(bad)


def test_the_classic_objective_is_the_notebooks_score():
    objective = ClassicObjective(CLASSIC_WEIGHTS)
    assert objective.score(REPORT) == classic_score(REPORT, CLASSIC_WEIGHTS)
    assert objective.evaluation(REPORT) == classic_evaluation_score(REPORT)
    assert objective.worst == DEFAULT_UNHEALTHY_PENALTY == -1800.0


def test_step_reward_with_the_slo_objective():
    reward = StepReward("delta", SloObjective(), -100.0, episode_len=3)
    assert reward.reset(_slo_report()) == pytest.approx(slo_score(_slo_report()))
    assert reward.step(_slo_report(abandoned=10), 1) == pytest.approx(
        slo_score(_slo_report(abandoned=10)) - slo_score(_slo_report()))
    assert reward.step(None, 2) == -100.0
