"""The score: -N · (failure % of all requests + w · traffic-weighted mean endpoint p99), and the
per-step reward built on it (StepReward)."""

from __future__ import annotations

import math

import pytest

from envs.backends.report import EndpointStats, LoadReport
from envs.reward import (
    CLASSIC_WEIGHTS,
    DEFAULT_UNHEALTHY_PENALTY,
    EVALUATION_WEIGHTS,
    N_ENDPOINTS,
    RewardWeights,
    StepReward,
    evaluation_score,
    failure_term,
    latency_term_ms,
    mean_p99_ms,
    score,
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
    assert score(REPORT, RewardWeights(0.5, "ms")) == pytest.approx(
        -18 * (FAIL_PCT + 0.5 * MEAN_P99_MS))
    assert score(REPORT, RewardWeights(2.0, "s")) == pytest.approx(
        -18 * (FAIL_PCT + 2.0 * MEAN_P99_MS / 1000))
    assert score(REPORT, RewardWeights(1000.0, "s")) == pytest.approx(
        score(REPORT, RewardWeights(1.0, "ms")))


def test_uniform_endpoints_give_the_seeds_sums():
    """All 18 endpoints at one failure rate and one p99: the notebook's Σ failure % + w·Σ p99."""
    names = endpoint_names()
    report = _report(*(_endpoint(n, 40 if "detail" in n else 400, 4 if "detail" in n else 40,
                                 250.0) for n in names))
    notebook_sum = sum(e.failure_pct for e in report.endpoints.values())
    notebook_latency_s = sum(e.p99_ms for e in report.endpoints.values()) / 1000
    assert score(report, CLASSIC_WEIGHTS) == pytest.approx(
        -(notebook_sum + 10_000 * notebook_latency_s))


def test_seed_weights_are_ten_thousand_per_second():
    assert score(REPORT, CLASSIC_WEIGHTS) == pytest.approx(-18 * (FAIL_PCT + 10 * MEAN_P99_MS))


def test_zero_weight_is_failures_only():
    assert score(REPORT, RewardWeights(0.0)) == pytest.approx(-18 * FAIL_PCT)


def test_evaluation_score_uses_fixed_weights():
    assert evaluation_score(REPORT) == pytest.approx(-18 * (FAIL_PCT + 0.1 * MEAN_P99_MS))
    assert evaluation_score(REPORT) == score(REPORT, EVALUATION_WEIGHTS)


def test_endpoint_without_requests_changes_nothing():
    with_idle = _report(*REPORT.endpoints.values(), _endpoint("GET /detail.html?id=x", 0, 0, None))
    assert score(with_idle, RewardWeights(1.0)) == score(REPORT, RewardWeights(1.0))


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
    assert evaluation_score(broken) < evaluation_score(healthy)
    assert evaluation_score(broken) < -1800


def test_more_failures_or_latency_is_worse():
    worse_fail = _report(_endpoint("GET /", 100, 1, 200.0))
    worse_lat = _report(_endpoint("GET /", 100, 0, 201.0))
    base = _report(_endpoint("GET /", 100, 0, 200.0))
    w = RewardWeights(0.1)
    assert score(worse_fail, w) < score(base, w)
    assert score(worse_lat, w) < score(base, w)


def test_report_without_requests_cannot_be_scored():
    with pytest.raises(ValueError, match="no requests"):
        score(_report(_endpoint("GET /", 0, 0, None)), RewardWeights(1.0))


def test_endpoint_with_requests_but_no_p99_is_an_error():
    with pytest.raises(ValueError, match="'GET /' saw 3 requests but its p99_ms is None"):
        score(_report(_endpoint("GET /", 3, 0, None)), RewardWeights(1.0))


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
    reward = StepReward("delta", w, -700.0, episode_len=5)
    assert reward.reset(REPORT) == score(REPORT, w)
    assert reward.step(OTHER, 1) == pytest.approx(score(OTHER, w) - score(REPORT, w))
    assert reward.step(OTHER, 2) == 0.0  # the same run again: no change
    assert reward.step(REPORT, 3) == pytest.approx(score(REPORT, w) - score(OTHER, w))
    assert reward.step(None, 4) == -700.0  # unhealthy: the penalty, once
    reward.reset(OTHER)  # a new episode starts from its own reset run
    assert reward.step(OTHER, 1) == 0.0


def test_absolute_reward_is_the_score_and_the_penalty_covers_the_lost_steps():
    w = RewardWeights(2.0, "s")
    reward = StepReward("absolute", w, -700.0, episode_len=5)
    reward.reset(REPORT)
    assert reward.step(OTHER, 1) == score(OTHER, w)
    assert reward.step(None, 2) == -700.0 * 4  # steps 2..5 will not run
    assert reward.step(None, 5) == -700.0


def test_step_reward_is_a_float_and_rejects_unknown_modes():
    reward = StepReward("delta", EVALUATION_WEIGHTS, -3, episode_len=2)
    assert type(reward.step(None, 1)) is float
    assert DEFAULT_UNHEALTHY_PENALTY == -100.0 * N_ENDPOINTS == -1800.0
    with pytest.raises(ValueError, match="reward mode must be one of"):
        StepReward("relative", EVALUATION_WEIGHTS, -1.0, episode_len=2)
