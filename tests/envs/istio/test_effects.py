"""Tests of envs.istio.effects: which set fields take effect on HTTP and TCP destinations."""

from __future__ import annotations

from envs.istio.effects import effective_fields, field_effects
from envs.istio.model import ConnectionPool, H2UpgradePolicy, HttpSettings, TcpSettings
from tests.envs.istio._fixtures import FULL_POOL


def test_effective_fields_http_vs_tcp() -> None:
    http_fields = effective_fields("orders", FULL_POOL)
    assert http_fields == {
        "tcp.maxConnections", "tcp.connectTimeout", "tcp.tcpKeepalive",
        "tcp.tcpKeepalive.probes", "tcp.tcpKeepalive.time", "tcp.tcpKeepalive.interval",
        "tcp.maxConnectionDuration", "http.http1MaxPendingRequests", "http.http2MaxRequests",
        "http.maxRetries", "http.maxRequestsPerConnection", "http.idleTimeout"}
    effects = {e.field: e for e in field_effects("orders", FULL_POOL)}
    assert not effects["tcp.idleTimeout"].takes_effect  # http.idleTimeout wins
    for db in ("carts-db", "catalogue-db", "session-db", "rabbitmq"):
        assert effective_fields(db, FULL_POOL) == {
            "tcp.maxConnections", "tcp.connectTimeout", "tcp.tcpKeepalive",
            "tcp.tcpKeepalive.probes", "tcp.tcpKeepalive.time", "tcp.tcpKeepalive.interval",
            "tcp.maxConnectionDuration", "tcp.idleTimeout"}
        effects = {e.field: e for e in field_effects(db, FULL_POOL)}
        assert "tcp_proxy.idle_timeout" in effects["tcp.idleTimeout"].where
        assert "TCP destination" in effects["http.maxRetries"].where


def test_effective_fields_zero_and_protocol_settings() -> None:
    pool = ConnectionPool(tcp=TcpSettings(max_connections=0),
                          http=HttpSettings(max_retries=0, use_client_protocol=False,
                                            h2_upgrade_policy=H2UpgradePolicy.UPGRADE,
                                            max_concurrent_streams=100))
    assert effective_fields("carts", pool) == {"http.h2UpgradePolicy"}
    assert effective_fields("carts", pool, direction="inbound") == frozenset()
    assert effective_fields("carts", None) == frozenset()
