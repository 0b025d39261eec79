"""Istio DestinationRule connection pools: the typed model every backend applies.

This module is the only code in meshtune that knows Istio's field names and rules. Everything
else passes the typed objects defined here. It provides:

* the model (:class:`ConnectionPool`, :class:`DestinationRule`) and :func:`resolve`, Istio's
  defaults and its meaning of unset and 0;
* YAML I/O of multi-document Kubernetes files (:func:`parse_rules`, :func:`read_rules`,
  :func:`dump_rules`, :func:`write_rules`) that keeps every field meshtune does not model;
* validation as istiod's webhook does it (:class:`RuleError`, :class:`ValidationError`,
  :func:`validate_pool`);
* snapshot / restore for backends (:func:`pools_of`, :func:`rules_for`, :class:`RuleFile`);
* the Envoy v3 clusters Istio programs for a pool (:func:`to_envoy_cluster`,
  :func:`envoy_clusters`, :func:`tcp_proxy_config`, :func:`field_effects`).

Units live in names: every duration is held as whole milliseconds (``connect_timeout_ms``),
every limit as a plain integer count. ``None`` always means *unset* — the field is absent from
the DestinationRule and Istio applies its own default (see :data:`ISTIO_DEFAULTS` and
:func:`resolve`). Istio's meaning of 0 differs per field and is documented on each field.

Durations: read from any Go/protobuf duration string (``10s``, ``200ms``, ``1.5s``, ``1m``,
``1h``, ``500us``, ``1m30s``); they must be whole milliseconds, as istiod requires. Written back
as ``Ns`` when whole seconds, else ``Nms`` (``1.5s`` is written ``1500ms``).

Facts checked against Istio's source: ``pilot/pkg/networking/core/cluster_traffic_policy.go``
(``applyConnectionPool``, ``applyH2Upgrade``, ``setKeepAliveSettings``),
``cluster_builder.go`` (``setH2Options``, ``setUseDownstreamProtocol``, ``buildInboundCluster``),
``networkfilter.go`` (``buildOutboundNetworkFiltersWithSingleDestination``: the tcp_proxy idle
timeout) and ``pkg/config/validation/validation.go`` (``validateConnectionPool``,
``validateOutlierDetection``, ``ValidateDuration``, ``ValidatePercent``).

Bugs of the original notebook's ``IstioConfig`` that this module does not repeat:

1. ``set_tcp_keeplive_probes`` wrote ``tcpKeepalive.time`` (as an ``"Nms"`` string) instead of
   the integer ``probes``.
2. ``reset``, ``_get_http`` and ``_get_tcp`` used the global ``ic`` instead of ``self``.
3. The environment's "initial config" was ``docs.copy()``, a shallow copy sharing the nested
   dicts with the live config, so "restoring" it put back the mutated values; here rules are
   immutable and :meth:`RuleFile.restore` writes back the original bytes.
4. ``save`` rewrote the file in place (a crash left a truncated file for ``kubectl apply``) and
   ``yaml.dump_all`` re-sorted every key; here writes are validated first and atomic.
5. ``yaml.load_all(FullLoader)``; here ``safe_load_all``.
6. No validation at all: values above int32, negative values, ``0`` taken as "no retries", an
   unset field read with ``[...]`` (KeyError), ``connectTimeout`` parsed with
   ``curr[:curr.index('m')]`` (breaks on ``10s``), keep-alive times in ms although Envoy takes
   whole seconds.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import yaml

from envs.sockshop import SERVICE_BY_NAME, SERVICE_NAMES, Protocol, Service

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


# ---------------------------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------------------------

_NS_PER_MS = 1_000_000
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": _NS_PER_MS,
            "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration_ns(text: str) -> Fraction:
    """A Go/protobuf duration string (``10s``, ``1.5s``, ``200ms``, ``1m30s``) in nanoseconds.

    Raises:
        ValueError: ``text`` is not a duration string.
    """
    s = text.strip()
    sign = -1 if s.startswith("-") else 1
    body = s[1:] if s[:1] in "+-" else s
    if body == "0":
        return Fraction(0)
    if not body:
        raise ValueError(f"not a duration: {text!r} (write e.g. '10s', '250ms', '1m30s')")
    total, pos = Fraction(0), 0
    while pos < len(body):
        m = _DURATION_PART.match(body, pos)
        if m is None:
            raise ValueError(f"not a duration: {text!r} (write e.g. '10s', '250ms', '1m30s')")
        total += Fraction(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    return sign * total


def parse_duration_ms(text: str, *, allow_zero: bool = False) -> int:
    """A duration string as whole milliseconds, checked as istiod checks durations.

    Raises:
        ValueError: not a duration, below 1 ms (``0s`` allowed only with ``allow_zero``), or not
            a whole number of milliseconds.
    """
    ns = parse_duration_ns(text)
    if allow_zero and ns == 0:
        return 0
    if ns < _NS_PER_MS:
        raise ValueError("duration must be at least 1ms" + (" (or 0s to disable)"
                                                            if allow_zero else ""))
    if ns % _NS_PER_MS:
        raise ValueError("only durations to ms precision are supported")
    return int(ns / _NS_PER_MS)


def format_duration_ms(ms: int) -> str:
    """Whole milliseconds as Istio YAML: ``Ns`` for whole seconds, else ``Nms``."""
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def envoy_duration(ms: int) -> str:
    """Whole milliseconds as a protobuf JSON duration (``10s``, ``0.250s``) for Envoy."""
    seconds, millis = divmod(ms, 1000)
    return f"{seconds}s" if millis == 0 else f"{seconds}.{millis:03d}s"


# ---------------------------------------------------------------------------------------------
# Field table: Istio's YAML names ↔ model attributes
# ---------------------------------------------------------------------------------------------

FieldKind = Literal["int32", "uint32", "duration", "duration_or_zero", "h2_policy", "bool"]


@dataclass(frozen=True)
class _Field:
    """One modelled connectionPool field: its Istio key, model attribute and value kind."""

    key: str
    attr: str
    kind: FieldKind


_TCP_FIELDS = (
    _Field("maxConnections", "max_connections", "int32"),
    _Field("connectTimeout", "connect_timeout_ms", "duration"),
    _Field("maxConnectionDuration", "max_connection_duration_ms", "duration"),
    _Field("idleTimeout", "idle_timeout_ms", "duration_or_zero"),
)
_KEEPALIVE_FIELDS = (
    _Field("probes", "probes", "uint32"),
    _Field("time", "time_ms", "duration"),
    _Field("interval", "interval_ms", "duration"),
)
_HTTP_FIELDS = (
    _Field("http1MaxPendingRequests", "http1_max_pending_requests", "int32"),
    _Field("http2MaxRequests", "http2_max_requests", "int32"),
    _Field("maxRequestsPerConnection", "max_requests_per_connection", "int32"),
    _Field("maxRetries", "max_retries", "int32"),
    _Field("idleTimeout", "idle_timeout_ms", "duration"),
    _Field("h2UpgradePolicy", "h2_upgrade_policy", "h2_policy"),
    _Field("useClientProtocol", "use_client_protocol", "bool"),
    _Field("maxConcurrentStreams", "max_concurrent_streams", "int32"),
)
_INT_MAX = {"int32": INT32_MAX, "uint32": UINT32_MAX}


def _is_int(value: Any) -> bool:
    """An integer that is not a bool (YAML ``true`` is a Python int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _value_from_yaml(f: _Field, value: Any) -> Any:
    """Convert one YAML value to the model's type; type errors only (ranges come later).

    Raises:
        ValueError: the value has the wrong type or is not a valid duration / enum value.
    """
    if f.kind in _INT_MAX:
        if not _is_int(value):
            raise ValueError(f"must be an integer, not {_yaml_type(value)}")
        return value
    if f.kind in ("duration", "duration_or_zero"):
        if not isinstance(value, str):
            raise ValueError(f"must be a duration string like '10s' or '250ms', "
                             f"not {_yaml_type(value)}")
        return parse_duration_ms(value, allow_zero=f.kind == "duration_or_zero")
    if f.kind == "h2_policy":
        if not isinstance(value, str) or value not in H2UpgradePolicy.__members__:
            raise ValueError("must be one of " + ", ".join(H2UpgradePolicy.__members__))
        return H2UpgradePolicy(value)
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {_yaml_type(value)}")
    return value


def _value_to_yaml(f: _Field, value: Any) -> Any:
    """One model value as Istio YAML."""
    if f.kind in ("duration", "duration_or_zero"):
        return format_duration_ms(value)
    if f.kind == "h2_policy":
        return H2UpgradePolicy(value).value
    return value


def _yaml_type(value: Any) -> str:
    """A YAML-flavoured name of a value's type, for error messages."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------------------------
# Validation of typed pools (shared by the file validator and code that builds pools)
# ---------------------------------------------------------------------------------------------


def _field_problems(f: _Field, value: Any, path: str) -> list[tuple[str, Any, str]]:
    """Range/type problems of one typed field value: (path, value, message) triples."""
    if value is None:
        return []
    if f.kind in _INT_MAX:
        if not _is_int(value):
            return [(path, value, "must be an integer")]
        if value < 0:
            return [(path, value, "must be non-negative")]
        if value > _INT_MAX[f.kind]:
            return [(path, value, f"must be at most {_INT_MAX[f.kind]} ({f.kind}); "
                                  "omit the field for unlimited")]
        return []
    if f.kind in ("duration", "duration_or_zero"):
        if not _is_int(value):
            return [(path, value, "must be whole milliseconds (an integer)")]
        if f.kind == "duration_or_zero" and value == 0:
            return []
        if value < 1:
            return [(path, value, "duration must be at least 1ms"
                     + (" (or 0 to disable)" if f.kind == "duration_or_zero" else ""))]
        return []
    if f.kind == "h2_policy":
        if value not in H2UpgradePolicy.__members__:
            return [(path, value, "must be one of " + ", ".join(H2UpgradePolicy.__members__))]
        return []
    if not isinstance(value, bool):
        return [(path, value, "must be true or false")]
    return []


def _pool_problems(pool: ConnectionPool) -> list[tuple[str, Any, str]]:
    """Every problem of a typed pool as (path relative to connectionPool, value, message)."""
    problems: list[tuple[str, Any, str]] = []
    if pool.tcp is None and pool.http is None:
        return [("", None, "connection pool must have at least one of tcp, http")]
    if pool.tcp is not None:
        for f in _TCP_FIELDS:
            problems += _field_problems(f, getattr(pool.tcp, f.attr), f"tcp.{f.key}")
        if pool.tcp.tcp_keepalive is not None:
            for f in _KEEPALIVE_FIELDS:
                problems += _field_problems(f, getattr(pool.tcp.tcp_keepalive, f.attr),
                                            f"tcp.tcpKeepalive.{f.key}")
    if pool.http is not None:
        for f in _HTTP_FIELDS:
            problems += _field_problems(f, getattr(pool.http, f.attr), f"http.{f.key}")
        if pool.http.h2_upgrade_policy == H2UpgradePolicy.UPGRADE \
                and pool.http.use_client_protocol is True:
            problems.append(("http.useClientProtocol", True,
                             "must not be true when h2UpgradePolicy is UPGRADE"))
    return problems


def validate_pool(pool: ConnectionPool) -> list[str]:
    """Problems istiod would reject in ``pool`` (empty list: valid), e.g.
    ``"tcp.maxConnections: must be non-negative (got -1)"``. For code that builds pools."""
    out = []
    for path, value, message in _pool_problems(pool):
        where = path or "connectionPool"
        out.append(f"{where}: {message}" + ("" if value is None else f" (got {value!r})"))
    return out


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleError:
    """One problem in a DestinationRule file.

    Attributes:
        source: the file (or ``<string>``) the document came from.
        document: 1-based index of the YAML document in the file (empty documents count).
        rule: ``metadata.name`` of the document, or None if unknown.
        field: dotted path of the offending field (``spec.trafficPolicy.connectionPool.tcp
            .maxConnections``), empty for the document as a whole.
        value: the offending value as read, or None when the field is missing.
        message: what is wrong.
    """

    source: str
    document: int
    rule: str | None
    field: str
    value: Any
    message: str

    def __str__(self) -> str:
        where = f"{self.source}: document {self.document}"
        if self.rule:
            where += f" (DestinationRule {self.rule})"
        got = "" if self.value is None else f" (got {_show(self.value)})"
        return f"{where}: {self.field or '<document>'}: {self.message}{got}"


def _show(value: Any) -> str:
    """A short rendering of a YAML value for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class ValidationError(ValueError):
    """A DestinationRule file (or rule list) was rejected. ``errors`` holds every problem."""

    def __init__(self, errors: Sequence[RuleError]):
        self.errors: tuple[RuleError, ...] = tuple(errors)
        count = len(self.errors)
        lines = "\n".join(str(e) for e in self.errors)
        super().__init__(f"{count} error{'s' if count != 1 else ''}:\n{lines}")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with the errors (Ray ships exceptions between processes)."""
        return (type(self), (self.errors,))


class _Errors:
    """Collects the errors of one document."""

    def __init__(self, source: str, document: int):
        self.source, self.document = source, document
        self.rule: str | None = None
        self.items: list[RuleError] = []

    def add(self, path: str, value: Any, message: str) -> None:
        self.items.append(RuleError(self.source, self.document, self.rule, path, value,
                                    message))


# ---------------------------------------------------------------------------------------------
# Parsing and validating documents
# ---------------------------------------------------------------------------------------------

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?"
                                r"(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HOST = re.compile(r"^(\*|(\*\.)?[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?"
                   r"(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*)$")


def _parse_section(raw: Any, path: str, fields: Sequence[_Field], cls: type, err: _Errors,
                   ) -> Any:
    """Typed settings (``cls``) from a raw tcp/http/tcpKeepalive mapping; unknown keys ignored
    here (they stay in ``raw``)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        err.add(path, raw, f"must be a mapping, not {_yaml_type(raw)}")
        return None
    values: dict[str, Any] = {}
    for f in fields:
        if f.key not in raw or raw[f.key] is None:
            continue
        try:
            values[f.attr] = _value_from_yaml(f, raw[f.key])
        except ValueError as e:
            err.add(f"{path}.{f.key}", raw[f.key], str(e))
    return cls(**values)


def _parse_pool(raw: Any, path: str, err: _Errors) -> ConnectionPool | None:
    """The typed pool of a raw ``connectionPool``, with every problem reported to ``err``."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        err.add(path, raw, f"must be a mapping, not {_yaml_type(raw)}")
        return None
    tcp = _parse_section(raw.get("tcp"), f"{path}.tcp", _TCP_FIELDS, TcpSettings, err)
    if tcp is not None and isinstance(raw["tcp"], dict):
        ka = _parse_section(raw["tcp"].get("tcpKeepalive"), f"{path}.tcp.tcpKeepalive",
                            _KEEPALIVE_FIELDS, TcpKeepalive, err)
        tcp = replace(tcp, tcp_keepalive=ka)
    http = _parse_section(raw.get("http"), f"{path}.http", _HTTP_FIELDS, HttpSettings, err)
    pool = ConnectionPool(tcp=tcp, http=http)
    section_broken = any(raw.get(k) is not None and not isinstance(raw.get(k), dict)
                         for k in ("tcp", "http"))
    for rel, value, message in _pool_problems(pool):
        if rel == "" and section_broken:
            continue  # the broken section was already reported
        err.add(f"{path}.{rel}" if rel else path, value, message)
    return pool


def _check_int(raw: Mapping[str, Any], key: str, path: str, err: _Errors, *, lo: int = 0,
               hi: int = INT32_MAX, what: str = "") -> None:
    """Report ``raw[key]`` unless it is an integer in [lo, hi]."""
    if key not in raw or raw[key] is None:
        return
    value = raw[key]
    if not _is_int(value):
        err.add(f"{path}.{key}", value, f"must be an integer, not {_yaml_type(value)}")
    elif value < lo or value > hi:
        err.add(f"{path}.{key}", value, what or f"must be in range {lo}..{hi}")


def _check_duration(raw: Mapping[str, Any], key: str, path: str, err: _Errors) -> None:
    """Report ``raw[key]`` unless it is a duration of at least 1 ms in whole ms."""
    if key not in raw or raw[key] is None:
        return
    value = raw[key]
    if not isinstance(value, str):
        err.add(f"{path}.{key}", value, f"must be a duration string, not {_yaml_type(value)}")
        return
    try:
        parse_duration_ms(value)
    except ValueError as e:
        err.add(f"{path}.{key}", value, str(e))


def _check_outlier(raw: Any, path: str, err: _Errors) -> None:
    """istiod's ``validateOutlierDetection`` (plus types)."""
    if raw is None:
        return
    if not isinstance(raw, dict):
        err.add(path, raw, f"must be a mapping, not {_yaml_type(raw)}")
        return
    for key in ("maxEjectionPercent", "minHealthPercent"):
        _check_int(raw, key, path, err, lo=0, hi=100,
                   what="percentage must be in range 0..100")
    for key in ("consecutiveErrors", "consecutive5xxErrors", "consecutiveGatewayErrors",
                "consecutiveLocalOriginFailures"):
        hi = INT32_MAX if key == "consecutiveErrors" else UINT32_MAX
        _check_int(raw, key, path, err, hi=hi, what=f"must be in range 0..{hi}")
    for key in ("interval", "baseEjectionTime"):
        _check_duration(raw, key, path, err)
    split = raw.get("splitExternalLocalOriginErrors")
    if split is not None and not isinstance(split, bool):
        err.add(f"{path}.splitExternalLocalOriginErrors", split,
                f"must be true or false, not {_yaml_type(split)}")
    local = raw.get("consecutiveLocalOriginFailures")
    if _is_int(local) and local > 0 and split is not True:
        err.add(f"{path}.consecutiveLocalOriginFailures", local,
                "is set, but splitExternalLocalOriginErrors is not true")


def _check_port_policies(raw: Any, path: str, err: _Errors) -> None:
    """istiod's ``validatePortTrafficPolicies``."""
    if raw is None:
        return
    if not isinstance(raw, list):
        err.add(path, raw, f"must be a list, not {_yaml_type(raw)}")
        return
    for i, item in enumerate(raw):
        p = f"{path}[{i}]"
        if not isinstance(item, dict):
            err.add(p, item, "port traffic policy must be a mapping")
            continue
        port = item.get("port")
        if not isinstance(port, dict) or "number" not in port:
            err.add(f"{p}.port", port, "portTrafficPolicy must have valid port "
                                       "(port: {number: N})")
        else:
            _check_int(port, "number", f"{p}.port", err, lo=1, hi=65535,
                       what="port number must be in range 1..65535")
        if not any(item.get(k) is not None for k in ("outlierDetection", "connectionPool",
                                                    "loadBalancer", "tls")):
            err.add(p, None, "port traffic policy must have at least one field")
        _parse_pool(item.get("connectionPool"), f"{p}.connectionPool", err)
        _check_outlier(item.get("outlierDetection"), f"{p}.outlierDetection", err)


def _check_traffic_policy(raw: Any, path: str, err: _Errors) -> ConnectionPool | None:
    """istiod's ``validateTrafficPolicy``; returns the typed connection pool."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        err.add(path, raw, f"must be a mapping, not {_yaml_type(raw)}")
        return None
    if not any(v is not None for v in raw.values()):
        err.add(path, raw, "traffic policy must have at least one field")
        return None
    pool = _parse_pool(raw.get("connectionPool"), f"{path}.connectionPool", err)
    _check_outlier(raw.get("outlierDetection"), f"{path}.outlierDetection", err)
    _check_port_policies(raw.get("portLevelSettings"), f"{path}.portLevelSettings", err)
    return pool


def _check_subsets(raw: Any, path: str, err: _Errors) -> None:
    """Subset names and their traffic policies."""
    if raw is None:
        return
    if not isinstance(raw, list):
        err.add(path, raw, f"must be a list, not {_yaml_type(raw)}")
        return
    for i, item in enumerate(raw):
        p = f"{path}[{i}]"
        if not isinstance(item, dict):
            err.add(p, item, "subset must be a mapping")
            continue
        name = item.get("name")
        if not isinstance(name, str) or not name:
            err.add(f"{p}.name", name, "subset name is required")
        _check_traffic_policy(item.get("trafficPolicy"), f"{p}.trafficPolicy", err)


def _parse_document(doc: Any, err: _Errors) -> DestinationRule | None:
    """One document as a DestinationRule; problems go to ``err`` (None if unusable)."""
    if not isinstance(doc, dict):
        err.add("", doc, f"a document must be a Kubernetes object (a mapping), "
                         f"not {_yaml_type(doc)}")
        return None
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if kind != KIND or api_version not in API_VERSIONS:
        err.add("kind" if kind != KIND else "apiVersion", f"{api_version} {kind}/{name}",
                "not a DestinationRule of " + API_GROUP
                + " (apiVersion v1, v1beta1 or v1alpha3)")
        return None
    if isinstance(name, str):
        err.rule = name
    if not isinstance(meta, dict):
        err.add("metadata", meta, "metadata is required")
        return None
    if not isinstance(name, str) or not name:
        err.add("metadata.name", name, "metadata.name is required")
    elif len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        err.add("metadata.name", name, "must be a lowercase RFC 1123 subdomain")
    namespace = meta.get("namespace")
    if namespace is not None and (not isinstance(namespace, str)
                                  or not _DNS1123_LABEL.match(namespace)):
        err.add("metadata.namespace", namespace, "must be a lowercase RFC 1123 label")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        err.add("spec", spec, "spec is required and must be a mapping")
        return None
    host = spec.get("host")
    if not isinstance(host, str) or not host:
        err.add("spec.host", host, "spec.host is required")
    elif not _HOST.match(host):
        err.add("spec.host", host, "must be a host name (short, FQDN or *.domain)")
    pool = _check_traffic_policy(spec.get("trafficPolicy"), "spec.trafficPolicy", err)
    _check_subsets(spec.get("subsets"), "spec.subsets", err)
    if err.items:
        return None
    return DestinationRule(name=name, host=host, connection_pool=pool, namespace=namespace,
                           api_version=api_version, raw=copy.deepcopy(doc))


def parse_rules(text: str, source: str = "<string>") -> list[DestinationRule]:
    """Parse and validate multi-document YAML; every document must be a DestinationRule.

    Empty documents are skipped (but counted in document numbers).

    Raises:
        ValidationError: with every problem of every document (malformed YAML included); the
            file is rejected whole.
    """
    errors: list[RuleError] = []
    rules: list[DestinationRule] = []
    index = 0
    try:
        for index, doc in enumerate(yaml.safe_load_all(text), start=1):
            if doc is None:
                continue
            err = _Errors(source, index)
            rule = _parse_document(doc, err)
            errors += err.items
            if rule is not None:
                rules.append(rule)
    except yaml.YAMLError as e:
        errors.append(RuleError(source, index + 1, None, "", None,
                                "malformed YAML: " + _yaml_problem(e)))
    if errors:
        raise ValidationError(errors)
    return rules


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A one-line description of a YAML syntax error with its line numbers."""
    def at(mark: Any) -> str:
        return f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""

    problem = getattr(e, "problem", None)
    if problem is None:
        return " ".join(str(e).split())
    context = getattr(e, "context", None)
    prefix = f"{context}{at(getattr(e, 'context_mark', None))}: " if context else ""
    return f"{prefix}{problem}{at(getattr(e, 'problem_mark', None))}"


def read_rules(path: str | os.PathLike[str]) -> list[DestinationRule]:
    """Read and validate a DestinationRule YAML file.

    Raises:
        OSError: the file cannot be read.
        ValidationError: the file is not valid UTF-8 YAML of valid DestinationRules.
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValidationError([RuleError(str(path), 1, None, "", None,
                                         f"not UTF-8 text: {e.reason} at byte {e.start}")]
                              ) from e
    return parse_rules(text, source=str(path))


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _merge_section(raw: Any, settings: Any, fields: Sequence[_Field]) -> dict[str, Any]:
    """A raw section with its modelled keys replaced by ``settings`` (unknown keys kept)."""
    out = dict(raw) if isinstance(raw, dict) else {}
    for f in fields:
        value = getattr(settings, f.attr)
        if value is None:
            out.pop(f.key, None)
        else:
            out[f.key] = _value_to_yaml(f, value)
    return out


def _merge_pool(raw: Any, pool: ConnectionPool) -> dict[str, Any]:
    """A raw ``connectionPool`` with the typed pool written over its modelled keys."""
    out = dict(raw) if isinstance(raw, dict) else {}
    if pool.tcp is None:
        out.pop("tcp", None)
    else:
        tcp = _merge_section(out.get("tcp"), pool.tcp, _TCP_FIELDS)
        if pool.tcp.tcp_keepalive is None:
            tcp.pop("tcpKeepalive", None)
        else:
            tcp["tcpKeepalive"] = _merge_section(tcp.get("tcpKeepalive"),
                                                 pool.tcp.tcp_keepalive, _KEEPALIVE_FIELDS)
        out["tcp"] = tcp
    if pool.http is None:
        out.pop("http", None)
    else:
        out["http"] = _merge_section(out.get("http"), pool.http, _HTTP_FIELDS)
    return out


def to_document(rule: DestinationRule) -> dict[str, Any]:
    """The Kubernetes document of ``rule``: its raw document with the modelled fields
    (apiVersion, kind, name, namespace, host, connectionPool) written over it."""
    doc = copy.deepcopy(rule.raw) if rule.raw else {}
    doc["apiVersion"] = rule.api_version
    doc["kind"] = KIND
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    meta["name"] = rule.name
    if rule.namespace is None:
        meta.pop("namespace", None)
    else:
        meta["namespace"] = rule.namespace
    doc["metadata"] = meta
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    spec["host"] = rule.host
    policy = spec.get("trafficPolicy") if isinstance(spec.get("trafficPolicy"), dict) else {}
    if rule.connection_pool is None:
        policy.pop("connectionPool", None)
    else:
        policy["connectionPool"] = _merge_pool(policy.get("connectionPool"),
                                               rule.connection_pool)
    if policy:
        spec["trafficPolicy"] = policy
    else:
        spec.pop("trafficPolicy", None)
    doc["spec"] = spec
    return doc


def dump_rules(rules: Iterable[DestinationRule]) -> str:
    """Multi-document YAML of ``rules`` (not validated; :func:`write_rules` validates)."""
    docs = [to_document(r) for r in rules]
    if not docs:
        return ""
    return yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True,
                              default_flow_style=False, allow_unicode=True)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and ``os.replace``;
    keeps the old file's permission bits (a new file gets 0644). On any error the old file is
    untouched."""
    path = Path(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_rules(path: str | os.PathLike[str], rules: Iterable[DestinationRule]) -> None:
    """Validate ``rules`` and write them to ``path`` atomically.

    Raises:
        ValidationError: a rule is invalid; nothing is written.
        OSError: the file cannot be written; the old file is untouched.
    """
    text = dump_rules(rules)
    parse_rules(text, source=str(path))  # the exact bytes to be written must pass validation
    _atomic_write(Path(path), text.encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# Snapshot and restore
# ---------------------------------------------------------------------------------------------


def pools_of(rules: Iterable[DestinationRule]) -> dict[str, ConnectionPool]:
    """Service name → connection pool of the rules that have one.

    Raises:
        ValueError: two rules give a pool to the same service (Istio would pick one silently).
    """
    pools: dict[str, ConnectionPool] = {}
    owner: dict[str, str] = {}
    for rule in rules:
        if rule.connection_pool is None:
            continue
        if rule.service in pools:
            raise ValueError(f"DestinationRules {owner[rule.service]!r} and {rule.name!r} both "
                             f"set a connection pool for service {rule.service!r}")
        pools[rule.service] = rule.connection_pool
        owner[rule.service] = rule.name
    return pools


def rules_for(pools: Mapping[str, ConnectionPool | None], namespace: str | None = None,
              base: Iterable[DestinationRule] = ()) -> list[DestinationRule]:
    """Rules that give each service in ``pools`` its pool, built on ``base``.

    Base rules keep their name, host, API version and unknown fields; those whose service is in
    ``pools`` get that pool (``None``: no connection pool, Istio's defaults); the others are kept
    as they are. A service in ``pools`` without a base rule gets a new rule named and hosted
    after the service (not created for a ``None`` pool). With ``namespace`` every rule is put in
    that namespace.

    Raises:
        ValueError: a pool is invalid (see :func:`validate_pool`).
    """
    for service, pool in pools.items():
        problems = validate_pool(pool) if pool is not None else []
        if problems:
            raise ValueError(f"invalid connection pool for {service}: " + "; ".join(problems))
    out: list[DestinationRule] = []
    covered: set[str] = set()
    for rule in base:
        if rule.service in pools:
            rule = replace(rule, connection_pool=pools[rule.service])
            covered.add(rule.service)
        if namespace is not None:
            rule = replace(rule, namespace=namespace)
        out.append(rule)
    for service, pool in pools.items():
        if service not in covered and pool is not None:
            out.append(DestinationRule(name=service, host=service, connection_pool=pool,
                                       namespace=namespace))
    return out


@dataclass(frozen=True)
class RuleFileSnapshot:
    """The exact bytes of a rule file at one moment (``None``: the file did not exist)."""

    path: Path
    content: bytes | None


class RuleFile:
    """A DestinationRule YAML file being tuned: the notebook's ``IstioConfig``, done right.

    Open a file (a missing file is an empty rule list), change pools in memory, :meth:`save`
    (validated, atomic), and :meth:`snapshot` / :meth:`restore` to put back exactly the bytes
    that were on disk.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._rules: list[DestinationRule] = (read_rules(self.path) if self.path.exists()
                                              else [])

    @property
    def rules(self) -> tuple[DestinationRule, ...]:
        """The rules as currently held in memory."""
        return tuple(self._rules)

    def pools(self) -> dict[str, ConnectionPool]:
        """Service → connection pool of the rules in memory."""
        return pools_of(self._rules)

    def set_pools(self, pools: Mapping[str, ConnectionPool | None],
                  namespace: str | None = None) -> None:
        """Give services new pools in memory (see :func:`rules_for`); call :meth:`save`."""
        self._rules = rules_for(pools, namespace=namespace, base=self._rules)

    def set_pool(self, service: str, pool: ConnectionPool | None,
                 namespace: str | None = None) -> None:
        """Give one service a new pool in memory (``None``: Istio's defaults)."""
        self.set_pools({service: pool}, namespace=namespace)

    def save(self) -> None:
        """Validate and write the rules atomically."""
        write_rules(self.path, self._rules)

    def snapshot(self) -> RuleFileSnapshot:
        """The file's current bytes on disk."""
        try:
            return RuleFileSnapshot(self.path, self.path.read_bytes())
        except FileNotFoundError:
            return RuleFileSnapshot(self.path, None)

    def restore(self, snapshot: RuleFileSnapshot) -> None:
        """Put back exactly the snapshot's bytes (or remove the file if it did not exist), then
        reload the rules from them."""
        if snapshot.path != self.path:
            raise ValueError(f"snapshot of {snapshot.path} cannot restore {self.path}")
        if snapshot.content is None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._rules = []
            return
        _atomic_write(self.path, snapshot.content)
        self._rules = read_rules(self.path)


# ---------------------------------------------------------------------------------------------
# Envoy translation
# ---------------------------------------------------------------------------------------------

CLUSTER_TYPE_URL = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_PROTOCOL_OPTIONS_TYPE_URL = f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"
TCP_PROXY_TYPE_URL = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

Direction = Literal["outbound", "inbound"]
def _service(service: str) -> Service:
    """The SockShop service, or a clear error."""
    try:
        return SERVICE_BY_NAME[service]
    except KeyError:
        raise ValueError(f"unknown SockShop service {service!r}; known: "
                         + ", ".join(SERVICE_NAMES)) from None


def service_port(service: str, direction: Direction = "outbound") -> int:
    """The port Istio names the cluster after: the Service port (outbound) or the container
    target port (inbound)."""
    svc = _service(service)
    if direction == "inbound":
        return svc.container_port
    return svc.port


def cluster_name(service: str, namespace: str = "sock-shop",
                 direction: Direction = "outbound") -> str:
    """Istio's cluster name: ``outbound|80||carts.sock-shop.svc.cluster.local`` or
    ``inbound|80||``."""
    port = service_port(service, direction)
    if direction == "inbound":
        return f"inbound|{port}||"
    if direction != "outbound":
        raise ValueError(f"direction must be 'outbound' or 'inbound', not {direction!r}")
    return f"outbound|{port}||{service}.{namespace}.svc.cluster.local"


def _http_protocol_options(pool: ConnectionPool, direction: Direction) -> dict[str, Any] | None:
    """``HttpProtocolOptions`` as Istio's applyConnectionPool + applyH2Upgrade build them, or
    None when Istio sets none."""
    tcp = pool.tcp or TcpSettings()
    http = pool.http or HttpSettings()
    idle_ms = http.idle_timeout_ms if http.idle_timeout_ms is not None else tcp.idle_timeout_ms
    per_connection = http.max_requests_per_connection or 0
    streams = http.max_concurrent_streams or 0
    options: dict[str, Any] | None = None
    if (tcp.max_connection_duration_ms is not None or idle_ms is not None or per_connection > 0
            or streams > 0):
        common: dict[str, Any] = {}
        if idle_ms is not None:
            common["idle_timeout"] = envoy_duration(idle_ms)
        if per_connection > 0:
            common["max_requests_per_connection"] = per_connection
        if tcp.max_connection_duration_ms is not None:
            common["max_connection_duration"] = envoy_duration(tcp.max_connection_duration_ms)
        # max_concurrent_streams: only set when the cluster is already explicit HTTP/2 at this
        # point, which an http-named port never is (istio/istio#57583).
        options = {"common_http_protocol_options": common}
    if http.use_client_protocol:
        options = options or {}
        options["use_downstream_protocol_config"] = {"http_protocol_options": {},
                                                     "http2_protocol_options": {}}
    if direction == "outbound" and http.h2_upgrade_policy == H2UpgradePolicy.UPGRADE:
        options = options or {}
        options.pop("use_downstream_protocol_config", None)
        options["explicit_http_config"] = {"http2_protocol_options": {}}
    if options is None:
        return None
    if "use_downstream_protocol_config" not in options and "explicit_http_config" not in options:
        options["explicit_http_config"] = {"http_protocol_options": {}}  # Istio's build()
    return {"@type": HTTP_PROTOCOL_OPTIONS_TYPE_URL, **options}


def _tcp_keepalive(keepalive: TcpKeepalive) -> dict[str, Any]:
    """``upstream_connection_options.tcp_keepalive`` as Istio's setKeepAliveSettings builds it:
    whole seconds, truncated."""
    out: dict[str, Any] = {}
    if keepalive.probes:
        out["keepalive_probes"] = keepalive.probes
    if keepalive.time_ms is not None:
        out["keepalive_time"] = keepalive.time_ms // 1000
    if keepalive.interval_ms is not None:
        out["keepalive_interval"] = keepalive.interval_ms // 1000
    return out


def to_envoy_cluster(service: str, pool: ConnectionPool | None, namespace: str = "sock-shop",
                     direction: Direction = "outbound",
                     endpoints: Sequence[tuple[str, int]] | None = None) -> dict[str, Any]:
    """The Envoy v3 ``Cluster`` Istio programs for ``service`` under ``pool`` (JSON-able dict).

    Covers what the connection pool decides: name, ``connect_timeout``, circuit-breaker
    thresholds (2^32-1 where unset), ``HttpProtocolOptions`` and TCP keepalive. Istio's mTLS
    transport socket, telemetry metadata, outlier detection and load-balancer options are not
    modelled. Without ``endpoints`` the cluster is discovered as Istio does it (outbound: EDS
    over ADS; inbound: ORIGINAL_DST); with ``endpoints`` ((address, port) pairs) it is STATIC.

    On a TCP destination Istio still writes the HTTP settings into the cluster; Envoy's
    tcp_proxy ignores them (see :func:`field_effects`), and ``tcp.idleTimeout`` /
    ``tcp.maxConnectionDuration`` act through the listener's tcp_proxy filter
    (:func:`tcp_proxy_config`).

    The dict carries ``@type`` so it can be a CDS resource (:func:`cds_document`); drop that key
    to embed it in a bootstrap's ``static_resources.clusters``.

    Raises:
        ValueError: unknown service, bad direction, or an invalid pool.
    """
    name = cluster_name(service, namespace, direction)
    if pool is not None:
        problems = validate_pool(pool)
        if problems:
            raise ValueError(f"invalid connection pool for {service}: " + "; ".join(problems))
    resolved = resolve(pool)
    cluster: dict[str, Any] = {"@type": CLUSTER_TYPE_URL, "name": name}
    if endpoints is not None:
        cluster["type"] = "STATIC"
        cluster["load_assignment"] = {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": host,
                                                             "port_value": port}}}}
                for host, port in endpoints]}],
        }
    elif direction == "outbound":
        cluster["type"] = "EDS"
        cluster["eds_cluster_config"] = {
            "service_name": name,
            "eds_config": {"ads": {}, "initial_fetch_timeout": "0s",
                           "resource_api_version": "V3"},
        }
    else:
        cluster["type"] = "ORIGINAL_DST"
    cluster["connect_timeout"] = envoy_duration(resolved.connect_timeout_ms)
    if cluster["type"] == "ORIGINAL_DST":
        cluster["lb_policy"] = "CLUSTER_PROVIDED"
    elif direction == "outbound":
        cluster["lb_policy"] = "LEAST_REQUEST"  # Istio's default LB for outbound clusters
    cluster["circuit_breakers"] = {"thresholds": [{
        "max_connections": resolved.max_connections,
        "max_pending_requests": resolved.http1_max_pending_requests,
        "max_requests": resolved.http2_max_requests,
        "max_retries": resolved.max_retries,
        "track_remaining": True,
    }]}
    if pool is not None:
        options = _http_protocol_options(pool, direction)
        if options is not None:
            cluster["typed_extension_protocol_options"] = {HTTP_PROTOCOL_OPTIONS: options}
        if pool.tcp is not None and pool.tcp.tcp_keepalive is not None:
            cluster["upstream_connection_options"] = {
                "tcp_keepalive": _tcp_keepalive(pool.tcp.tcp_keepalive)}
    return cluster


def tcp_proxy_config(service: str, pool: ConnectionPool | None, namespace: str = "sock-shop",
                     ) -> dict[str, Any]:
    """The ``tcp_proxy`` network filter config Istio puts on the client's outbound listener for
    a TCP destination: where ``tcp.idleTimeout`` (unset: Envoy's 1 h; ``0s``: disabled) and
    ``tcp.maxConnectionDuration`` act.

    Raises:
        ValueError: unknown service, or an HTTP service (its listener runs the HTTP connection
            manager, not tcp_proxy).
    """
    if _service(service).protocol != Protocol.TCP:
        raise ValueError(f"{service} is an HTTP destination; only TCP destinations use tcp_proxy")
    name = cluster_name(service, namespace, "outbound")
    config: dict[str, Any] = {"@type": TCP_PROXY_TYPE_URL, "stat_prefix": name, "cluster": name}
    tcp = pool.tcp if pool is not None and pool.tcp is not None else TcpSettings()
    if tcp.idle_timeout_ms is not None:
        config["idle_timeout"] = envoy_duration(tcp.idle_timeout_ms)
    if tcp.max_connection_duration_ms is not None:
        config["max_downstream_connection_duration"] = envoy_duration(
            tcp.max_connection_duration_ms)
    return config


def envoy_clusters(rules: Iterable[DestinationRule], namespace: str = "sock-shop",
                   direction: Direction = "outbound",
                   endpoints: Mapping[str, Sequence[tuple[str, int]]] | None = None,
                   ) -> list[dict[str, Any]]:
    """The clusters of all 14 SockShop services (in SockShop order) under ``rules``; services
    without a rule get Istio's defaults.

    Raises:
        ValueError: a rule names a host that is not a SockShop service of ``namespace``, two
            rules set a pool for one service, or a pool is invalid.
    """
    by_service: dict[str, DestinationRule] = {}
    for rule in rules:
        _check_rule_targets(rule, namespace)
        if rule.service in by_service:
            raise ValueError(f"DestinationRules {by_service[rule.service].name!r} and "
                             f"{rule.name!r} both target service {rule.service!r}")
        by_service[rule.service] = rule
    clusters = []
    for s in SERVICE_NAMES:
        rule = by_service.get(s)
        pool = None if rule is None else port_connection_pool(rule, service_port(s))
        clusters.append(to_envoy_cluster(s, pool, namespace, direction,
                                         None if endpoints is None else endpoints[s]))
    return clusters


def port_connection_pool(rule: DestinationRule, port: int) -> ConnectionPool | None:
    """The pool Istio applies to ``rule``'s host on ``port``: a ``portLevelSettings`` entry for
    that port with a ``connectionPool`` replaces the rule's top-level pool (Istio's
    ``GetPortLevelTrafficPolicy``); otherwise the top-level pool."""
    policy = rule.raw.get("spec", {}).get("trafficPolicy") if rule.raw else None
    levels = policy.get("portLevelSettings") if isinstance(policy, dict) else None
    for i, item in enumerate(levels or ()):
        if (isinstance(item, dict) and isinstance(item.get("port"), dict)
                and item["port"].get("number") == port and item.get("connectionPool")):
            err = _Errors(rule.name, 0)
            pool = _parse_pool(item["connectionPool"],
                               f"spec.trafficPolicy.portLevelSettings[{i}].connectionPool", err)
            if err.items:
                raise ValidationError(err.items)
            return pool
    return rule.connection_pool


def _check_rule_targets(rule: DestinationRule, namespace: str) -> None:
    """Raise ValueError unless ``rule`` targets a SockShop service in ``namespace``."""
    parts = rule.host.split(".")
    if parts[0] not in SERVICE_BY_NAME:
        raise ValueError(f"DestinationRule {rule.name!r}: host {rule.host!r} is not a SockShop "
                         "service")
    host_ns = parts[1] if len(parts) > 1 else rule.namespace
    if host_ns is not None and host_ns != namespace:
        raise ValueError(f"DestinationRule {rule.name!r}: host {rule.host!r} is in namespace "
                         f"{host_ns!r}, not {namespace!r}")


def cds_document(clusters: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A CDS file (``DiscoveryResponse``) Envoy can load through ``path_config_source``."""
    return {"resources": list(clusters)}


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
    is_tcp = _service(service).protocol == Protocol.TCP
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
