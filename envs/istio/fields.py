"""The table of modelled ``connectionPool`` fields: Istio's YAML key ↔ model attribute.

Shared by the document parser (:mod:`envs.istio.validation`) and the writer
(:mod:`envs.istio.yaml_io`): one :class:`PoolField` per field, its value kind (int32, uint32,
duration, ...), and the conversions between a YAML value and the model's type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from envs.istio.durations import format_duration_ms, parse_duration_ms
from envs.istio.model import INT32_MAX, UINT32_MAX, H2UpgradePolicy

#: How a field's value is typed, checked and written.
FieldKind = Literal["int32", "uint32", "duration", "duration_or_zero", "h2_policy", "bool"]


@dataclass(frozen=True)
class PoolField:
    """One modelled connectionPool field: its Istio key, model attribute and value kind."""

    key: str
    attr: str
    kind: FieldKind


#: The fields of ``connectionPool.tcp`` (:class:`~envs.istio.model.TcpSettings`).
TCP_FIELDS = (
    PoolField("maxConnections", "max_connections", "int32"),
    PoolField("connectTimeout", "connect_timeout_ms", "duration"),
    PoolField("maxConnectionDuration", "max_connection_duration_ms", "duration"),
    PoolField("idleTimeout", "idle_timeout_ms", "duration_or_zero"),
)
#: The fields of ``tcp.tcpKeepalive`` (:class:`~envs.istio.model.TcpKeepalive`).
KEEPALIVE_FIELDS = (
    PoolField("probes", "probes", "uint32"),
    PoolField("time", "time_ms", "duration"),
    PoolField("interval", "interval_ms", "duration"),
)
#: The fields of ``connectionPool.http`` (:class:`~envs.istio.model.HttpSettings`).
HTTP_FIELDS = (
    PoolField("http1MaxPendingRequests", "http1_max_pending_requests", "int32"),
    PoolField("http2MaxRequests", "http2_max_requests", "int32"),
    PoolField("maxRequestsPerConnection", "max_requests_per_connection", "int32"),
    PoolField("maxRetries", "max_retries", "int32"),
    PoolField("idleTimeout", "idle_timeout_ms", "duration"),
    PoolField("h2UpgradePolicy", "h2_upgrade_policy", "h2_policy"),
    PoolField("useClientProtocol", "use_client_protocol", "bool"),
    PoolField("maxConcurrentStreams", "max_concurrent_streams", "int32"),
)
#: The largest value of each integer kind.
INT_MAX = {"int32": INT32_MAX, "uint32": UINT32_MAX}


def is_int(value: Any) -> bool:
    """An integer that is not a bool (YAML ``true`` is a Python int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def value_from_yaml(f: PoolField, value: Any) -> Any:
    """Convert one YAML value to the model's type; type errors only (ranges come later).

    Raises:
        ValueError: the value has the wrong type or is not a valid duration / enum value.
    """
    if f.kind in INT_MAX:
        if not is_int(value):
            raise ValueError(f"must be an integer, not {yaml_type(value)}")
        return value
    if f.kind in ("duration", "duration_or_zero"):
        if not isinstance(value, str):
            raise ValueError(f"must be a duration string like '10s' or '250ms', "
                             f"not {yaml_type(value)}")
        return parse_duration_ms(value, allow_zero=f.kind == "duration_or_zero")
    if f.kind == "h2_policy":
        if not isinstance(value, str) or value not in H2UpgradePolicy.__members__:
            raise ValueError("must be one of " + ", ".join(H2UpgradePolicy.__members__))
        return H2UpgradePolicy(value)
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {yaml_type(value)}")
    return value


def value_to_yaml(f: PoolField, value: Any) -> Any:
    """One model value as Istio YAML."""
    if f.kind in ("duration", "duration_or_zero"):
        return format_duration_ms(value)
    if f.kind == "h2_policy":
        return H2UpgradePolicy(value).value
    return value


def yaml_type(value: Any) -> str:
    """A YAML-flavoured name of a value's type, for error messages."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)
