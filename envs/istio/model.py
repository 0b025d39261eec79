"""The typed model of a DestinationRule ``connectionPool`` and Istio's defaults for it.

Every backend applies these objects; nothing outside :mod:`envs.istio` knows Istio's field
names. Units live in names: every duration is held as whole milliseconds
(``connect_timeout_ms``), every limit as a plain integer count. ``None`` always means *unset* —
the field is absent from the DestinationRule and Istio applies its own default (see
:data:`ISTIO_DEFAULTS` and :func:`resolve`). Istio's meaning of 0 differs per field and is
documented on each field.

:func:`resolve` follows Istio's ``applyConnectionPool``
(``pilot/pkg/networking/core/cluster_traffic_policy.go``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

#: Largest value a DestinationRule integer field can carry (the proto type is int32).
INT32_MAX = 2_147_483_647
#: Largest value of a uint32 field (``tcpKeepalive.probes``).
UINT32_MAX = 2**32 - 1
#: What Istio programs into Envoy for an unset connection/pending/request/retry limit.
UNLIMITED = 2**32 - 1
#: Istio's mesh-wide default connect timeout when ``tcp.connectTimeout`` is unset.
DEFAULT_CONNECT_TIMEOUT_MS = 10_000
#: Istio's default idle timeout (tcp and http) when unset: one hour.
DEFAULT_IDLE_TIMEOUT_MS = 3_600_000
#: Linux's TCP keepalive defaults, which apply when ``tcp.tcpKeepalive`` fields are unset.
OS_KEEPALIVE_PROBES = 9
OS_KEEPALIVE_TIME_MS = 7_200_000
OS_KEEPALIVE_INTERVAL_MS = 75_000
#: Envoy's default for ``max_concurrent_streams`` on HTTP/2 clusters.
DEFAULT_MAX_CONCURRENT_STREAMS = 2**31 - 1

API_GROUP = "networking.istio.io"
#: API versions a DestinationRule may be written in; the first is what meshtune writes.
API_VERSIONS = ("networking.istio.io/v1", "networking.istio.io/v1beta1",
                "networking.istio.io/v1alpha3")
KIND = "DestinationRule"


class H2UpgradePolicy(StrEnum):
    """``http.h2UpgradePolicy``: whether HTTP/1.1 connections to the destination upgrade to h2."""

    DEFAULT = "DEFAULT"
    DO_NOT_UPGRADE = "DO_NOT_UPGRADE"
    UPGRADE = "UPGRADE"


@dataclass(frozen=True)
class TcpKeepalive:
    """``tcp.tcpKeepalive``: probes to detect dead peers. Unset fields take the OS defaults.

    Envoy takes keepalive time and interval in whole seconds; Istio truncates the durations
    (``1500ms`` → 1 s, ``500ms`` → 0 s).
    """

    probes: int | None = None
    time_ms: int | None = None
    interval_ms: int | None = None


@dataclass(frozen=True)
class TcpSettings:
    """``connectionPool.tcp``: settings common to HTTP and TCP destinations.

    Attributes:
        max_connections: ``maxConnections``; max connections to the destination per client
            sidecar. Unset or 0 → unlimited (2^32-1).
        connect_timeout_ms: ``connectTimeout``; unset → 10 000 ms.
        tcp_keepalive: ``tcpKeepalive``; unset → no SO_KEEPALIVE at all; set (even empty) →
            SO_KEEPALIVE with the OS defaults for its unset fields.
        max_connection_duration_ms: ``maxConnectionDuration``; unset → unlimited.
        idle_timeout_ms: ``idleTimeout``; unset → 1 h; ``0`` disables the idle timeout. On an
            HTTP destination it is the connection idle timeout unless ``http.idleTimeout`` is set.
    """

    max_connections: int | None = None
    connect_timeout_ms: int | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration_ms: int | None = None
    idle_timeout_ms: int | None = None


@dataclass(frozen=True)
class HttpSettings:
    """``connectionPool.http``: settings that only act on HTTP destinations.

    Attributes:
        http1_max_pending_requests: ``http1MaxPendingRequests``; requests queued while waiting
            for a connection. Unset or 0 → unlimited (2^32-1).
        http2_max_requests: ``http2MaxRequests``; max active requests (HTTP/1.1 too).
            Unset or 0 → unlimited.
        max_requests_per_connection: ``maxRequestsPerConnection``; unset or 0 → unlimited;
            1 disables keep-alive.
        max_retries: ``maxRetries``; max concurrent retries to the destination. Unset or 0 →
            unlimited (2^32-1), not "no retries".
        idle_timeout_ms: ``idleTimeout``; idle upstream connections close. Unset →
            ``tcp.idleTimeout`` if set, else 1 h.
        h2_upgrade_policy: ``h2UpgradePolicy``; unset → DEFAULT (stay HTTP/1.1).
        use_client_protocol: ``useClientProtocol``; unset → False.
        max_concurrent_streams: ``maxConcurrentStreams``; HTTP/2 only. Istio applies it only to
            clusters that are HTTP/2 by port protocol (``http2``/``grpc``), never to an
            ``http`` port upgraded with ``UPGRADE`` (istio/istio#57583), so on SockShop it has
            no effect.
    """

    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout_ms: int | None = None
    h2_upgrade_policy: H2UpgradePolicy | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: int | None = None


@dataclass(frozen=True)
class ConnectionPool:
    """``spec.trafficPolicy.connectionPool``. ``None`` for a section means it is absent."""

    tcp: TcpSettings | None = None
    http: HttpSettings | None = None

    def with_tcp(self, **changes: Any) -> ConnectionPool:
        """A copy with the given :class:`TcpSettings` fields replaced."""
        return replace(self, tcp=replace(self.tcp or TcpSettings(), **changes))

    def with_http(self, **changes: Any) -> ConnectionPool:
        """A copy with the given :class:`HttpSettings` fields replaced."""
        return replace(self, http=replace(self.http or HttpSettings(), **changes))


@dataclass(frozen=True)
class DestinationRule:
    """One DestinationRule document.

    Attributes:
        name: ``metadata.name``.
        host: ``spec.host`` as written (``carts``, ``carts.sock-shop.svc.cluster.local``).
        connection_pool: the typed ``spec.trafficPolicy.connectionPool``, or None if absent.
        namespace: ``metadata.namespace`` or None.
        api_version: the ``apiVersion`` the document was read with.
        raw: the whole document as read (a plain dict). Fields meshtune does not model —
            labels, outlier detection, subsets, unknown keys — live only here and are written
            back unchanged; the modelled ``connectionPool`` is written from ``connection_pool``.
    """

    name: str
    host: str
    connection_pool: ConnectionPool | None = None
    namespace: str | None = None
    api_version: str = API_VERSIONS[0]
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def service(self) -> str:
        """The short service name of the host (``carts`` for ``carts.ns.svc.cluster.local``)."""
        return self.host.split(".", 1)[0]


# ---------------------------------------------------------------------------------------------
# Istio's defaults: what Envoy enforces for a pool
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedPool:
    """A connection pool with every Istio default filled in: what Envoy actually enforces.

    All limits are plain integers (``UNLIMITED`` = 2^32-1 where Istio sets no limit); all
    durations are milliseconds, ``None`` only where the setting is genuinely absent in Envoy
    (no max connection duration, an idle timeout disabled with ``0s``).

    ``keepalive_*`` describe the socket only when ``keepalive_enabled``: without a
    ``tcpKeepalive`` block Envoy does not set SO_KEEPALIVE and no probes are sent at all. Keepalive
    time and interval are whole seconds in Envoy (Istio truncates), so they are multiples of 1000
    here, possibly 0.

    ``http_idle_timeout_ms`` is the upstream HTTP connection idle timeout (``http.idleTimeout``,
    falling back to ``tcp.idleTimeout``); ``tcp_idle_timeout_ms`` is the tcp_proxy idle timeout of
    a TCP destination (``tcp.idleTimeout``).
    """

    max_connections: int = UNLIMITED
    connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS
    keepalive_probes: int = OS_KEEPALIVE_PROBES
    keepalive_time_ms: int = OS_KEEPALIVE_TIME_MS
    keepalive_interval_ms: int = OS_KEEPALIVE_INTERVAL_MS
    max_connection_duration_ms: int | None = None
    tcp_idle_timeout_ms: int | None = DEFAULT_IDLE_TIMEOUT_MS
    http1_max_pending_requests: int = UNLIMITED
    http2_max_requests: int = UNLIMITED
    max_requests_per_connection: int | None = None
    max_retries: int = UNLIMITED
    http_idle_timeout_ms: int | None = DEFAULT_IDLE_TIMEOUT_MS
    h2_upgrade_policy: H2UpgradePolicy = H2UpgradePolicy.DEFAULT
    use_client_protocol: bool = False
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    keepalive_enabled: bool = False


#: The pool Istio programs when no DestinationRule names a destination.
ISTIO_DEFAULTS = ResolvedPool()


def _positive_or(value: int | None, default: int) -> int:
    """Istio copies an integer limit only when it is > 0; otherwise the default stands."""
    return value if value is not None and value > 0 else default


def _whole_seconds_ms(value_ms: int | None, default_ms: int) -> int:
    """A keepalive duration as Envoy gets it: truncated to whole seconds, in ms."""
    return default_ms if value_ms is None else (value_ms // 1000) * 1000


def resolve(pool: ConnectionPool | None) -> ResolvedPool:
    """Fill in Istio's defaults: the effective limits Envoy enforces for ``pool``.

    Follows Istio's ``applyConnectionPool``: integers are copied only when > 0 (so 0 means
    the default, i.e. unlimited), ``maxRequestsPerConnection`` 0/unset means unlimited
    (``None`` here), ``tcp.idleTimeout: 0s`` disables the TCP idle timeout (``None``); the HTTP
    idle timeout is ``http.idleTimeout`` or else ``tcp.idleTimeout``; keepalive durations are
    truncated to whole seconds; ``maxConcurrentStreams`` never reaches an ``http`` port's cluster
    (see :class:`HttpSettings`), so it resolves to Envoy's default.
    """
    if pool is None:
        return ISTIO_DEFAULTS
    tcp = pool.tcp or TcpSettings()
    http = pool.http or HttpSettings()
    ka = tcp.tcp_keepalive or TcpKeepalive()
    if tcp.idle_timeout_ms is None:
        tcp_idle: int | None = DEFAULT_IDLE_TIMEOUT_MS
    else:
        tcp_idle = tcp.idle_timeout_ms or None
    if http.idle_timeout_ms is not None:
        http_idle: int | None = http.idle_timeout_ms or None
    else:
        http_idle = tcp_idle
    return ResolvedPool(
        max_connections=_positive_or(tcp.max_connections, UNLIMITED),
        connect_timeout_ms=(tcp.connect_timeout_ms if tcp.connect_timeout_ms
                            else DEFAULT_CONNECT_TIMEOUT_MS),
        keepalive_probes=_positive_or(ka.probes, OS_KEEPALIVE_PROBES),
        keepalive_time_ms=_whole_seconds_ms(ka.time_ms, OS_KEEPALIVE_TIME_MS),
        keepalive_interval_ms=_whole_seconds_ms(ka.interval_ms, OS_KEEPALIVE_INTERVAL_MS),
        max_connection_duration_ms=tcp.max_connection_duration_ms or None,
        tcp_idle_timeout_ms=tcp_idle,
        http1_max_pending_requests=_positive_or(http.http1_max_pending_requests, UNLIMITED),
        http2_max_requests=_positive_or(http.http2_max_requests, UNLIMITED),
        max_requests_per_connection=http.max_requests_per_connection or None,
        max_retries=_positive_or(http.max_retries, UNLIMITED),
        http_idle_timeout_ms=http_idle,
        h2_upgrade_policy=http.h2_upgrade_policy or H2UpgradePolicy.DEFAULT,
        use_client_protocol=bool(http.use_client_protocol),
        max_concurrent_streams=DEFAULT_MAX_CONCURRENT_STREAMS,
        keepalive_enabled=tcp.tcp_keepalive is not None,
    )
