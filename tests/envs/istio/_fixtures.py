"""Test data shared by the envs.istio tests: the fixture rule file and a pool that sets every
field Envoy acts on."""

from __future__ import annotations

from pathlib import Path

from envs.istio.model import ConnectionPool, HttpSettings, TcpKeepalive, TcpSettings

#: A multi-document rule file with unknown fields, comments and a port-level pool.
DATA = Path(__file__).resolve().parents[3] / "tests" / "data" / "istio_rules.yaml"

#: A pool setting every tcp/http field that lands in an Envoy setting (durations in ms).
FULL_POOL = ConnectionPool(
    tcp=TcpSettings(max_connections=3, connect_timeout_ms=250, max_connection_duration_ms=60_000,
                    idle_timeout_ms=0,
                    tcp_keepalive=TcpKeepalive(probes=4, time_ms=1_500, interval_ms=2_000)),
    http=HttpSettings(http1_max_pending_requests=2, http2_max_requests=10,
                      max_requests_per_connection=1, max_retries=5, idle_timeout_ms=30_000),
)
