"""Tests of envs.observation: the observation of a run matches its report (the destination
blocks' causes and demand included), an endpoint without requests is unseen (not invented), the
layout (global context + one equal block per tuned service), and every channel in [0, 1]."""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs.actions import make_catalogue
from envs.backends.base import BackendError
from envs.backends.report import EndpointStats, LoadReport, ServiceStats
from envs.istio import ConnectionPool, HttpSettings, TcpSettings, resolve
from envs.knobs import knob_range, knob_value
from envs.observation import (
    DEST_CHANNELS,
    ENDPOINTS,
    HTTP_SERVICES,
    ObservationEncoder,
    destination_block,
    latency_scale,
    ratio_scale,
)
from tests.envs._support import _no_leaked_leases, channel, make  # noqa: F401  (autouse fixture)


def _expected_block(s: ServiceStats | None, name: str, pool: ConnectionPool | None) -> dict:
    """The destination block written out from the report row, independently of the module."""
    tcp = float(name not in HTTP_SERVICES)
    if s is None or s.num_requests == 0:
        return {c: (tcp if c == "tcp" else 0.0) for c in DEST_CHANNELS}
    r = resolve(pool)
    a, n, f = s.num_attempts, s.num_requests, s.in_flight_per_pool

    def scaled(ratio: float) -> float:
        return ratio / (1 + ratio)

    return {
        "seen": 1.0, "causes_seen": 1.0, "error_ratio": s.error_ratio,
        "p99": 0.0 if s.p99_ms is None else math.log1p(s.p99_ms) / math.log1p(60_000),
        "mean": 0.0 if s.mean_ms is None else math.log1p(s.mean_ms) / math.log1p(60_000),
        "uo_frac": s.uo_count / a, "uf_frac": s.uf_count / a, "ut_frac": s.ut_count / a,
        "reset_frac": s.reset_count / a, "retry_frac": s.retry_count / a,
        "urx_frac": s.urx_count / n, "retry_overflow_frac": s.retry_overflow_count / n,
        "demand_conn": scaled(f / r.max_connections),
        "demand_queue": 0.0 if tcp else scaled(
            f / (r.max_connections + r.http1_max_pending_requests)),
        "demand_requests": 0.0 if tcp else scaled(f / r.http2_max_requests),
        "tcp": tcp,
    }


def test_observation_matches_the_report():
    env = make()
    try:
        obs, _ = env.reset(seed=3)
        obs, *_ = env.step(7)
        report = env.last_report
        assert env.observation_space.contains(obs)
        for name in ENDPOINTS:
            e = report.endpoints.get(name)
            seen = channel(env, obs, f"endpoint/{name}/seen")
            if e is None or e.num_requests == 0:
                assert seen == 0.0
                assert channel(env, obs, f"endpoint/{name}/p99") == 0.0
                continue
            assert seen == 1.0
            assert channel(env, obs, f"endpoint/{name}/failure_frac") == pytest.approx(
                e.num_failures / e.num_requests, rel=1e-6)
            assert channel(env, obs, f"endpoint/{name}/p99") == pytest.approx(
                math.log1p(e.p99_ms) / math.log1p(60_000), rel=1e-6)
        seen_causes = 0
        for name, s in report.services.items():
            expected = _expected_block(s, name, env.config.get(name))
            for c, v in expected.items():
                assert channel(env, obs, f"service/{name}/{c}") == pytest.approx(
                    v, rel=1e-5, abs=1e-7), (name, c)
            seen_causes += expected["causes_seen"]
        assert seen_causes >= 8  # the simulator measures every cause
        # Action 7 is catalogue act 7 (connectTimeout -50ms) on carts; the config channel shows
        # the effective value, log-normalised.
        timeout = env.config["carts"].tcp.connect_timeout_ms
        assert channel(env, obs, "config/carts/tcp.connectTimeout") == pytest.approx(
            math.log1p(timeout) / math.log1p(2_147_483_647), rel=1e-6)
        assert channel(env, obs, "load/level") == pytest.approx(env.users / 3)
        assert channel(env, obs, "episode/progress") == pytest.approx(1 / 4)
        assert channel(env, obs, "run/failure_frac") == pytest.approx(
            report.num_failures / report.num_requests, rel=1e-6)
        assert channel(env, obs, "run/good_frac") == pytest.approx(
            report.num_good / report.offered_requests, rel=1e-6)
    finally:
        env.close()


def test_endpoint_without_requests_is_unseen_not_invented():
    """One user and one loop: only one of the ten detail pages is requested."""
    env = make(users_range=(1, 1), requests_per_user=9)
    try:
        obs, _ = env.reset(seed=0)
        report = env.last_report
        unseen = [n for n in ENDPOINTS
                  if n not in report.endpoints or report.endpoints[n].num_requests == 0]
        assert len(unseen) >= 9
        for name in unseen:
            assert channel(env, obs, f"endpoint/{name}/seen") == 0.0
            assert channel(env, obs, f"endpoint/{name}/p99") == 0.0
            assert channel(env, obs, f"endpoint/{name}/failure_frac") == 0.0
    finally:
        env.close()


def test_encoder_without_a_run_shows_nothing_measured():
    catalogue = make_catalogue("classic", ["carts"])
    encoder = ObservationEncoder(catalogue, episode_len=4)
    obs = encoder.encode(None, {}, load_level=0.5, step=2)
    assert obs.dtype == np.float32 and encoder.space.contains(obs)
    values = dict(zip(encoder.names, obs.tolist(), strict=True))
    assert all(v == 0.0 for n, v in values.items()
               if n.startswith(("endpoint/", "service/", "run/")) and not n.endswith("/tcp"))
    for k in catalogue.knobs:
        expected = math.log1p(knob_value(None, k)) / math.log1p(knob_range(k)[1])
        assert values[f"config/carts/{k.value}"] == pytest.approx(expected, rel=1e-6)
    assert values["load/level"] == 0.5 and values["episode/progress"] == 0.5
    assert values["service/carts-db/tcp"] == 1.0 and values["service/carts/tcp"] == 0.0


def test_layout_is_a_global_context_and_one_equal_block_per_tuned_service():
    catalogue = make_catalogue("classic")
    encoder = ObservationEncoder(catalogue, episode_len=20)
    slices = encoder.service_slices
    assert len(slices) == len(catalogue.services)
    assert len({len(s) for s in slices}) == 1
    assert len(slices[0]) == len(DEST_CHANNELS) + len(catalogue.knobs)
    every = sorted(encoder.global_indices + tuple(i for s in slices for i in s))
    assert every == list(range(len(encoder.names)))
    for service, block in zip(catalogue.services, slices, strict=True):
        names = [encoder.names[i] for i in block]
        assert all(n.startswith((f"service/{service}/", f"config/{service}/")) for n in names)
        # the same channel in the same position of every block
        assert [n.split("/", 2)[2] for n in names] == [
            encoder.names[i].split("/", 2)[2] for i in slices[0]]
    assert all(encoder.names[i].split("/")[1] not in catalogue.services
               for i in encoder.global_indices if encoder.names[i].startswith("service/"))
    assert np.all(encoder.space.low == 0.0) and np.all(encoder.space.high == 1.0)


def _row(**kw) -> ServiceStats:
    base = dict(name="carts", num_requests=100, p99_ms=250.0, error_ratio=0.1, uo_count=4,
                uf_count=2, retry_count=10, num_attempts=110, mean_ms=40.0, ut_count=1,
                reset_count=3, urx_count=2, retry_overflow_count=5, in_flight_per_pool=6.0)
    return ServiceStats(**{**base, **kw})


def test_destination_block_causes_and_demand_by_hand():
    pool = ConnectionPool(tcp=TcpSettings(max_connections=4),
                          http=HttpSettings(http1_max_pending_requests=2, http2_max_requests=12))
    block = dict(zip(DEST_CHANNELS, destination_block(_row(), "carts", {"carts": pool}),
                     strict=True))
    assert block["uo_frac"] == pytest.approx(4 / 110)
    assert block["reset_frac"] == pytest.approx(3 / 110)
    assert block["retry_frac"] == pytest.approx(10 / 110)
    assert block["urx_frac"] == pytest.approx(2 / 100)
    assert block["retry_overflow_frac"] == pytest.approx(5 / 100)
    assert block["demand_conn"] == pytest.approx(ratio_scale(6 / 4)) == pytest.approx(0.6)
    assert block["demand_queue"] == pytest.approx(0.5)  # 6 in flight for 4 + 2 places
    assert block["demand_requests"] == pytest.approx(ratio_scale(0.5))
    assert block["p99"] == pytest.approx(latency_scale(250.0))
    assert block["causes_seen"] == 1.0 and block["tcp"] == 0.0


def test_a_backend_that_does_not_measure_causes_shows_them_unseen():
    row = ServiceStats("carts", 100, 250.0, 0.1, 4, 2, 10)
    block = dict(zip(DEST_CHANNELS, destination_block(row, "carts", {}), strict=True))
    assert block["seen"] == 1.0 and block["causes_seen"] == 0.0
    assert block["error_ratio"] == pytest.approx(0.1)
    assert all(block[c] == 0.0 for c in DEST_CHANNELS[5:-1])


@pytest.mark.parametrize(("kw", "message"), [
    ({"error_ratio": 3.0}, "error_ratio 3.0 outside"),
    ({"uo_count": 200}, "outside 0..110"),
    ({"num_attempts": 50}, "50 attempts for 100 requests"),
    ({"p99_ms": None}, "has no p99"),
])
def test_a_row_breaking_the_invariants_is_a_backend_error(kw, message):
    with pytest.raises(BackendError, match=message):
        destination_block(_row(**kw), "carts", {})


def test_scales_are_bounded():
    assert latency_scale(0.0) == 0.0 and latency_scale(60_000.0) == pytest.approx(1.0)
    assert latency_scale(1e9) == 1.0
    assert ratio_scale(0.0) == 0.0 and ratio_scale(1.0) == 0.5 and ratio_scale(1e12) < 1.0


def test_encoder_rejects_a_report_with_unknown_endpoints():
    encoder = ObservationEncoder(make_catalogue(), episode_len=1)
    row = EndpointStats(name="GET /nope", num_requests=1, num_failures=0, avg_ms=1.0,
                        min_ms=1.0, max_ms=1.0, median_ms=1.0, p95_ms=1.0, p99_ms=1.0, rps=1.0)
    report = LoadReport(endpoints={row.name: row}, services={}, duration_s=1.0)
    with pytest.raises(BackendError, match="GET /nope"):
        encoder.encode(report, {}, load_level=0.0, step=0)
