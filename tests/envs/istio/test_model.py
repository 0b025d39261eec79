"""Tests of envs.istio.model: Istio's defaults and its meaning of unset and 0 (resolve)."""

from __future__ import annotations

import pytest

from envs.istio.model import (
    DEFAULT_CONNECT_TIMEOUT_MS,
    DEFAULT_IDLE_TIMEOUT_MS,
    DEFAULT_MAX_CONCURRENT_STREAMS,
    UNLIMITED,
    ConnectionPool,
    H2UpgradePolicy,
    HttpSettings,
    TcpKeepalive,
    TcpSettings,
    resolve,
)


def test_no_rule_means_istio_defaults() -> None:
    r = resolve(None)
    assert (r.max_connections, r.http1_max_pending_requests, r.http2_max_requests,
            r.max_retries) == (UNLIMITED,) * 4
    assert r.connect_timeout_ms == DEFAULT_CONNECT_TIMEOUT_MS
    assert r.http_idle_timeout_ms == r.tcp_idle_timeout_ms == DEFAULT_IDLE_TIMEOUT_MS
    assert r.max_requests_per_connection is None and r.max_connection_duration_ms is None
    assert not r.keepalive_enabled


@pytest.mark.parametrize("value", [None, 0])
def test_zero_and_unset_limits_mean_unlimited(value: int | None) -> None:
    pool = ConnectionPool(tcp=TcpSettings(max_connections=value),
                          http=HttpSettings(http1_max_pending_requests=value,
                                            http2_max_requests=value, max_retries=value,
                                            max_requests_per_connection=value))
    r = resolve(pool)
    assert (r.max_connections, r.http1_max_pending_requests, r.http2_max_requests,
            r.max_retries) == (UNLIMITED,) * 4
    assert r.max_requests_per_connection is None


def test_positive_limits_are_copied() -> None:
    pool = ConnectionPool(tcp=TcpSettings(max_connections=1, connect_timeout_ms=25),
                          http=HttpSettings(http1_max_pending_requests=2, http2_max_requests=3,
                                            max_retries=4, max_requests_per_connection=1))
    r = resolve(pool)
    assert (r.max_connections, r.http1_max_pending_requests, r.http2_max_requests,
            r.max_retries, r.max_requests_per_connection, r.connect_timeout_ms) == (
        1, 2, 3, 4, 1, 25)


def test_idle_timeouts() -> None:
    # tcp.idleTimeout is the HTTP idle timeout too unless http.idleTimeout is set.
    r = resolve(ConnectionPool(tcp=TcpSettings(idle_timeout_ms=5_000)))
    assert r.tcp_idle_timeout_ms == 5_000 and r.http_idle_timeout_ms == 5_000
    r = resolve(ConnectionPool(tcp=TcpSettings(idle_timeout_ms=5_000),
                                     http=HttpSettings(idle_timeout_ms=700)))
    assert r.tcp_idle_timeout_ms == 5_000 and r.http_idle_timeout_ms == 700
    r = resolve(ConnectionPool(tcp=TcpSettings(idle_timeout_ms=0)))
    assert r.tcp_idle_timeout_ms is None and r.http_idle_timeout_ms is None
    r = resolve(ConnectionPool(http=HttpSettings(idle_timeout_ms=700)))
    assert r.tcp_idle_timeout_ms == DEFAULT_IDLE_TIMEOUT_MS and r.http_idle_timeout_ms == 700


def test_keepalive_is_whole_seconds_and_only_when_configured() -> None:
    r = resolve(ConnectionPool(tcp=TcpSettings(
        tcp_keepalive=TcpKeepalive(probes=0, time_ms=1_999, interval_ms=500))))
    assert r.keepalive_enabled
    assert (r.keepalive_probes, r.keepalive_time_ms, r.keepalive_interval_ms) == (9, 1_000, 0)
    r = resolve(ConnectionPool(tcp=TcpSettings(tcp_keepalive=TcpKeepalive())))
    assert r.keepalive_enabled and r.keepalive_time_ms == 7_200_000
    assert not resolve(ConnectionPool(tcp=TcpSettings(max_connections=3))).keepalive_enabled


def test_max_concurrent_streams_never_reaches_an_http_port() -> None:
    pool = ConnectionPool(http=HttpSettings(max_concurrent_streams=5,
                                            h2_upgrade_policy=H2UpgradePolicy.UPGRADE))
    assert resolve(pool).max_concurrent_streams == DEFAULT_MAX_CONCURRENT_STREAMS
