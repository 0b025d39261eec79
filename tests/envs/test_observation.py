"""Tests of envs.observation: the observation of a run matches its report, an endpoint without
requests is unseen (not invented), and the encoder on its own."""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs.actions import make_catalogue
from envs.backends.base import BackendError
from envs.backends.report import EndpointStats, LoadReport
from envs.knobs import knob_range, knob_value
from envs.observation import ENDPOINTS, ObservationEncoder
from envs.sockshop import SERVICE_NAMES
from tests.envs._support import _no_leaked_leases, channel, make  # noqa: F401  (autouse fixture)


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
                assert channel(env, obs, f"endpoint/{name}/p99_s") == 0.0
                continue
            assert seen == 1.0
            assert channel(env, obs, f"endpoint/{name}/failure_frac") == pytest.approx(
                e.num_failures / e.num_requests, rel=1e-6)
            assert channel(env, obs, f"endpoint/{name}/p99_s") == pytest.approx(
                e.p99_ms / 1000.0, rel=1e-6)
        for name in SERVICE_NAMES:
            s = report.services.get(name)
            if s is None or s.num_requests == 0:
                assert channel(env, obs, f"service/{name}/seen") == 0.0
                continue
            assert channel(env, obs, f"service/{name}/seen") == 1.0
            assert channel(env, obs, f"service/{name}/error_ratio") == pytest.approx(
                s.error_ratio, rel=1e-6)
            if f"service/{name}/p99_s" in env.observation_names:
                assert channel(env, obs, f"service/{name}/p99_s") == pytest.approx(
                    s.p99_ms / 1000.0, rel=1e-6)
            else:
                assert s.p99_ms is None  # TCP: connections, no request durations
        # Action 7 is catalogue act 7 (connectTimeout -50ms) on carts; the config channel shows
        # the effective value, log-normalised.
        timeout = env.config["carts"].tcp.connect_timeout_ms
        assert channel(env, obs, "config/carts/tcp.connectTimeout") == pytest.approx(
            math.log1p(timeout) / math.log1p(2_147_483_647), rel=1e-6)
        assert channel(env, obs, "load/users_frac") == pytest.approx(env.users / 3)
        assert channel(env, obs, "load/requests_frac") == pytest.approx(env.requests / 90)
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
            assert channel(env, obs, f"endpoint/{name}/p99_s") == 0.0
            assert channel(env, obs, f"endpoint/{name}/failure_frac") == 0.0
    finally:
        env.close()


def test_encoder_without_a_run_shows_nothing_measured():
    catalogue = make_catalogue("classic", ["carts"])
    encoder = ObservationEncoder(catalogue, max_users=4, max_requests=40)
    obs = encoder.encode(None, {}, users=2, requests=10)
    assert obs.dtype == np.float32 and encoder.space.contains(obs)
    values = dict(zip(encoder.names, obs.tolist(), strict=True))
    assert all(v == 0.0 for n, v in values.items() if n.startswith(("endpoint/", "service/")))
    for k in catalogue.knobs:
        expected = math.log1p(knob_value(None, k)) / math.log1p(knob_range(k)[1])
        assert values[f"config/carts/{k.value}"] == pytest.approx(expected, rel=1e-6)
    assert values["load/users_frac"] == 0.5 and values["load/requests_frac"] == 0.25


def test_encoder_rejects_a_report_with_unknown_endpoints():
    encoder = ObservationEncoder(make_catalogue(), max_users=1, max_requests=1)
    row = EndpointStats(name="GET /nope", num_requests=1, num_failures=0, avg_ms=1.0,
                        min_ms=1.0, max_ms=1.0, median_ms=1.0, p95_ms=1.0, p99_ms=1.0, rps=1.0)
    report = LoadReport(endpoints={row.name: row}, services={}, duration_s=1.0)
    with pytest.raises(BackendError, match="GET /nope"):
        encoder.encode(report, {}, users=1, requests=1)
