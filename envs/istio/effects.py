"""Field effects: which set fields of a pool change what Envoy does for a service, and where.

A field can be valid and still do nothing: 0 on a limit (Istio treats it as unset), HTTP
settings on a TCP destination (Envoy's tcp_proxy ignores them), ``maxConcurrentStreams`` on an
``http`` port (istio/istio#57583). See :mod:`envs.istio.envoy` for where the others land.
"""

from __future__ import annotations

from dataclasses import dataclass

from envs.istio.envoy import Direction, sockshop_service
from envs.istio.model import ConnectionPool, H2UpgradePolicy
from envs.sockshop import Protocol


@dataclass(frozen=True)
class FieldEffect:
    """Whether one set field of a pool changes what Envoy does for a service.

    Attributes:
        field: Istio path below ``connectionPool`` (``tcp.maxConnections``).
        takes_effect: False if Envoy behaves as if the field were unset.
        where: the Envoy setting it lands in, or why it has no effect.
    """

    field: str
    takes_effect: bool
    where: str


_NO_HTTP_ON_TCP = ("no effect: {svc} is a TCP destination; Envoy's tcp_proxy ignores HTTP "
                   "settings (Istio still writes them into the cluster)")


def field_effects(service: str, pool: ConnectionPool | None,
                  direction: Direction = "outbound") -> list[FieldEffect]:
    """For every field set in ``pool``: does it take effect on ``service``, and where."""
    is_tcp = sockshop_service(service).protocol == Protocol.TCP
    if pool is None:
        return []
    out: list[FieldEffect] = []
    cb = "cluster.circuit_breakers.thresholds[0]."
    common = "HttpProtocolOptions.common_http_protocol_options."

    def limit(path: str, value: int | None, envoy_field: str, http_only: bool) -> None:
        if value is None:
            return
        if http_only and is_tcp:
            out.append(FieldEffect(path, False, _NO_HTTP_ON_TCP.format(svc=service)))
        elif value == 0:
            out.append(FieldEffect(path, False, "no effect: Istio treats 0 as unset "
                                                "(unlimited, 2^32-1)"))
        else:
            out.append(FieldEffect(path, True, cb + envoy_field))

    tcp, http = pool.tcp, pool.http
    if tcp is not None:
        limit("tcp.maxConnections", tcp.max_connections, "max_connections", False)
        if tcp.connect_timeout_ms is not None:
            out.append(FieldEffect("tcp.connectTimeout", True, "cluster.connect_timeout"))
        if tcp.tcp_keepalive is not None:
            ka = tcp.tcp_keepalive
            out.append(FieldEffect("tcp.tcpKeepalive", True,
                                   "cluster.upstream_connection_options.tcp_keepalive "
                                   "(SO_KEEPALIVE on)"))
            if ka.probes is not None:
                out.append(FieldEffect("tcp.tcpKeepalive.probes", ka.probes > 0,
                                       "tcp_keepalive.keepalive_probes" if ka.probes > 0 else
                                       "no effect: 0 means the OS default"))
            for key, value in (("time", ka.time_ms), ("interval", ka.interval_ms)):
                if value is not None:
                    where = f"tcp_keepalive.keepalive_{key} = {value // 1000} s (truncated)"
                    if value < 1000:
                        where += "; below 1 s it becomes 0, which the kernel rejects"
                    out.append(FieldEffect(f"tcp.tcpKeepalive.{key}", True, where))
        if tcp.max_connection_duration_ms is not None:
            out.append(FieldEffect("tcp.maxConnectionDuration", True,
                                   "tcp_proxy.max_downstream_connection_duration" if is_tcp
                                   else common + "max_connection_duration"))
        if tcp.idle_timeout_ms is not None:
            if is_tcp:
                out.append(FieldEffect("tcp.idleTimeout", True,
                                       "tcp_proxy.idle_timeout (listener filter; 0 disables)"))
            elif http is not None and http.idle_timeout_ms is not None:
                out.append(FieldEffect("tcp.idleTimeout", False,
                                       "no effect: http.idleTimeout takes precedence"))
            else:
                out.append(FieldEffect("tcp.idleTimeout", True, common + "idle_timeout"))
    if http is not None:
        limit("http.http1MaxPendingRequests", http.http1_max_pending_requests,
              "max_pending_requests", True)
        limit("http.http2MaxRequests", http.http2_max_requests, "max_requests", True)
        limit("http.maxRetries", http.max_retries, "max_retries", True)
        simple = (
            ("http.maxRequestsPerConnection", http.max_requests_per_connection,
             lambda v: v > 0, common + "max_requests_per_connection",
             "no effect: 0 means unlimited"),
            ("http.idleTimeout", http.idle_timeout_ms, lambda v: True, common + "idle_timeout",
             ""),
            ("http.useClientProtocol", http.use_client_protocol, bool,
             "HttpProtocolOptions.use_downstream_protocol_config",
             "no effect: false is the default"),
        )
        for path, value, acts, where, why_not in simple:
            if value is None:
                continue
            if is_tcp:
                out.append(FieldEffect(path, False, _NO_HTTP_ON_TCP.format(svc=service)))
            else:
                out.append(FieldEffect(path, acts(value), where if acts(value) else why_not))
        if http.h2_upgrade_policy is not None:
            policy = http.h2_upgrade_policy
            if is_tcp:
                out.append(FieldEffect("http.h2UpgradePolicy", False,
                                       _NO_HTTP_ON_TCP.format(svc=service)))
            elif policy != H2UpgradePolicy.UPGRADE:
                out.append(FieldEffect("http.h2UpgradePolicy", False,
                                       "no effect: HTTP/1.1 is the mesh default"))
            elif direction == "inbound":
                out.append(FieldEffect("http.h2UpgradePolicy", False,
                                       "no effect: Istio upgrades outbound clusters only"))
            else:
                out.append(FieldEffect("http.h2UpgradePolicy", True,
                                       "HttpProtocolOptions.explicit_http_config"
                                       ".http2_protocol_options"))
        if http.max_concurrent_streams is not None:
            out.append(FieldEffect("http.maxConcurrentStreams", False,
                                   _NO_HTTP_ON_TCP.format(svc=service) if is_tcp else
                                   "no effect: Istio applies it only to ports declared HTTP/2 "
                                   "(http2/grpc), not to http ports even when upgraded "
                                   "(istio/istio#57583)"))
    return out


def effective_fields(service: str, pool: ConnectionPool | None,
                     direction: Direction = "outbound") -> frozenset[str]:
    """The fields set in ``pool`` that change what Envoy does for ``service``."""
    return frozenset(e.field for e in field_effects(service, pool, direction) if e.takes_effect)
