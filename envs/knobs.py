"""Knob semantics: what one ``connectionPool`` setting an action can move means to Envoy.

A :class:`Knob` names a field of a DestinationRule's connection pool by its Istio path. This
module says where the field lives in the typed model (:mod:`envs.istio`), what value Envoy
enforces for it (:func:`knob_value`, :func:`effective_value`), the range an action clamps it to
(:func:`knob_range`), how to set it (:func:`with_knob`), and which input values Istio would
reject (:func:`check_input_field`). The action catalogues built on it are in
:mod:`envs.actions`.

Effective values
----------------
The *effective* value is what Envoy enforces (:func:`envs.istio.resolve`): an unset or 0 limit
is unlimited, 2^32-1, capped here to ``INT32_MAX`` = 2147483647, the largest value a
DestinationRule can carry; an unset connectTimeout is 10 000 ms; an unset or 0
maxRequestsPerConnection (unlimited) is INT32_MAX; unset keepalive fields are the Linux defaults
(9 probes, 7200 s, 75 s); an unset http idleTimeout is tcp.idleTimeout when that is set, else
1 h (disabled, ``tcp.idleTimeout: 0s``, reads as INT32_MAX). Durations are in milliseconds;
useClientProtocol is 0 or 1.

Ranges
------
Counts and millisecond durations: [1, INT32_MAX]; keepalive probes: [1, 127]; keepalive time
and interval: [1 s, 32767 s] in whole seconds, because Istio truncates them to seconds for Envoy
(a sub-second value would become 0) and the kernel rejects TCP_KEEPCNT > 127 and
TCP_KEEPIDLE / TCP_KEEPINTVL outside 1..32767 s when Envoy sets them on the upstream socket.

Input fields
------------
A field an action reads that Istio would reject (negative, above INT32_MAX, a duration below
1 ms, a non-boolean useClientProtocol) is a ValueError naming the service and field.
"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum

from envs.istio import INT32_MAX, UNLIMITED, ConnectionPool, TcpKeepalive, resolve

#: Largest keepalive probe count the Linux kernel accepts (MAX_TCP_KEEPCNT).
MAX_KEEPALIVE_PROBES = 127
#: Largest keepalive time / interval the Linux kernel accepts, ms (MAX_TCP_KEEPIDLE = 32767 s).
MAX_KEEPALIVE_MS = 32_767_000
#: Milliseconds per second.
MS_PER_S = 1_000


class Knob(StrEnum):
    """A connection-pool setting an action can move; the value is Istio's field path.

    Durations are held in milliseconds (the ``_MS`` suffix), like the model in
    :mod:`envs.istio`.
    """

    MAX_CONNECTIONS = "tcp.maxConnections"
    CONNECT_TIMEOUT_MS = "tcp.connectTimeout"
    KEEPALIVE_PROBES = "tcp.tcpKeepalive.probes"
    KEEPALIVE_TIME_MS = "tcp.tcpKeepalive.time"
    KEEPALIVE_INTERVAL_MS = "tcp.tcpKeepalive.interval"
    HTTP1_MAX_PENDING_REQUESTS = "http.http1MaxPendingRequests"
    HTTP2_MAX_REQUESTS = "http.http2MaxRequests"
    MAX_REQUESTS_PER_CONNECTION = "http.maxRequestsPerConnection"
    MAX_RETRIES = "http.maxRetries"
    HTTP_IDLE_TIMEOUT_MS = "http.idleTimeout"
    USE_CLIENT_PROTOCOL = "http.useClientProtocol"


# Where each knob lives in the typed model: (section, attribute). "keepalive" = tcp.tcpKeepalive.
_FIELD: dict[Knob, tuple[str, str]] = {
    Knob.MAX_CONNECTIONS: ("tcp", "max_connections"),
    Knob.CONNECT_TIMEOUT_MS: ("tcp", "connect_timeout_ms"),
    Knob.KEEPALIVE_PROBES: ("keepalive", "probes"),
    Knob.KEEPALIVE_TIME_MS: ("keepalive", "time_ms"),
    Knob.KEEPALIVE_INTERVAL_MS: ("keepalive", "interval_ms"),
    Knob.HTTP1_MAX_PENDING_REQUESTS: ("http", "http1_max_pending_requests"),
    Knob.HTTP2_MAX_REQUESTS: ("http", "http2_max_requests"),
    Knob.MAX_REQUESTS_PER_CONNECTION: ("http", "max_requests_per_connection"),
    Knob.MAX_RETRIES: ("http", "max_retries"),
    Knob.HTTP_IDLE_TIMEOUT_MS: ("http", "idle_timeout_ms"),
    Knob.USE_CLIENT_PROTOCOL: ("http", "use_client_protocol"),
}
# The ResolvedPool attribute holding each knob's effective value.
_RESOLVED: dict[Knob, str] = {
    Knob.MAX_CONNECTIONS: "max_connections",
    Knob.CONNECT_TIMEOUT_MS: "connect_timeout_ms",
    Knob.KEEPALIVE_PROBES: "keepalive_probes",
    Knob.KEEPALIVE_TIME_MS: "keepalive_time_ms",
    Knob.KEEPALIVE_INTERVAL_MS: "keepalive_interval_ms",
    Knob.HTTP1_MAX_PENDING_REQUESTS: "http1_max_pending_requests",
    Knob.HTTP2_MAX_REQUESTS: "http2_max_requests",
    Knob.MAX_REQUESTS_PER_CONNECTION: "max_requests_per_connection",
    Knob.MAX_RETRIES: "max_retries",
    Knob.HTTP_IDLE_TIMEOUT_MS: "http_idle_timeout_ms",
    Knob.USE_CLIENT_PROTOCOL: "use_client_protocol",
}
#: The knobs that are durations, held in ms.
DURATION_KNOBS: frozenset[Knob] = frozenset({
    Knob.CONNECT_TIMEOUT_MS, Knob.KEEPALIVE_TIME_MS, Knob.KEEPALIVE_INTERVAL_MS,
    Knob.HTTP_IDLE_TIMEOUT_MS})
#: The durations Envoy receives in whole seconds (held in ms, multiples of :data:`MS_PER_S`).
WHOLE_SECOND_KNOBS: frozenset[Knob] = frozenset({Knob.KEEPALIVE_TIME_MS,
                                                 Knob.KEEPALIVE_INTERVAL_MS})
_RANGE: dict[Knob, tuple[int, int]] = {
    knob: (1, INT32_MAX) for knob in Knob if knob is not Knob.USE_CLIENT_PROTOCOL}
_RANGE |= {
    Knob.KEEPALIVE_PROBES: (1, MAX_KEEPALIVE_PROBES),
    Knob.KEEPALIVE_TIME_MS: (MS_PER_S, MAX_KEEPALIVE_MS),
    Knob.KEEPALIVE_INTERVAL_MS: (MS_PER_S, MAX_KEEPALIVE_MS),
    Knob.USE_CLIENT_PROTOCOL: (0, 1),
}


def knob_range(knob: Knob) -> tuple[int, int]:
    """The ``(floor, ceiling)`` an action clamps ``knob`` to, in the knob's unit (count, ms, or
    0/1 for useClientProtocol). Also the range :func:`knob_value` reports for action-made pools.
    """
    return _RANGE[Knob(knob)]


def knob_value(pool: ConnectionPool | None, knob: Knob) -> float:
    """The effective value of ``knob`` in ``pool`` (``None`` = no rule), as Envoy enforces it.

    Istio's defaults fill unset fields (:func:`envs.istio.resolve`); unlimited (2^32-1, an unset
    maxRequestsPerConnection, a disabled idle timeout) reads as INT32_MAX; keepalive time and
    interval are truncated to whole seconds (what Envoy receives) and reported in ms; durations
    are in ms; useClientProtocol is 0.0 or 1.0. For normalised observations.
    """
    return float(effective_value(pool, Knob(knob)))


def effective_value(pool: ConnectionPool | None, knob: Knob) -> int:
    """:func:`knob_value` as an integer (count, ms, or 0/1): what an action adds its delta to."""
    value = getattr(resolve(pool), _RESOLVED[knob])
    if knob is Knob.USE_CLIENT_PROTOCOL:
        return int(value)
    if value is None:  # maxRequestsPerConnection unset/0, or an idle timeout disabled: unlimited
        value = UNLIMITED
    if knob in WHOLE_SECOND_KNOBS:
        value = value // MS_PER_S * MS_PER_S
    return min(value, INT32_MAX)


def _raw(pool: ConnectionPool | None, knob: Knob) -> int | bool | None:
    """The field as written in the rule (None when unset)."""
    section, attr = _FIELD[knob]
    if pool is None:
        return None
    if section == "keepalive":
        holder = pool.tcp.tcp_keepalive if pool.tcp is not None else None
    else:
        holder = getattr(pool, section)
    return None if holder is None else getattr(holder, attr)


def with_knob(pool: ConnectionPool | None, knob: Knob, value: int | bool) -> ConnectionPool:
    """A copy of ``pool`` (an empty one for ``None``) with ``knob`` set explicitly to ``value``."""
    pool = pool or ConnectionPool()
    section, attr = _FIELD[knob]
    if section == "tcp":
        return pool.with_tcp(**{attr: value})
    if section == "http":
        return pool.with_http(**{attr: value})
    keepalive = (pool.tcp.tcp_keepalive if pool.tcp is not None else None) or TcpKeepalive()
    return pool.with_tcp(tcp_keepalive=replace(keepalive, **{attr: value}))


def check_input_field(service: str, pool: ConnectionPool | None, knob: Knob) -> None:
    """Reject a field an action would read that Istio itself would reject (ValueError naming
    ``service`` and the field); an unset field passes."""
    raw = _raw(pool, knob)
    if raw is None:
        return
    where = f"{service}: {knob.value} = {raw!r}"
    if knob is Knob.USE_CLIENT_PROTOCOL:
        if not isinstance(raw, bool):
            raise ValueError(f"{where} is not a boolean")
        return
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ValueError(f"{where} is not an integer")
    if raw < 0 or raw > INT32_MAX:
        raise ValueError(f"{where} is outside Istio's range 0..{INT32_MAX}")
    if knob in DURATION_KNOBS and raw < 1:
        raise ValueError(f"{where} ms is below Istio's minimum duration of 1 ms")


__all__ = ["DURATION_KNOBS", "MAX_KEEPALIVE_MS", "MAX_KEEPALIVE_PROBES", "MS_PER_S",
           "WHOLE_SECOND_KNOBS", "Knob", "check_input_field", "effective_value", "knob_range",
           "knob_value", "with_knob"]
