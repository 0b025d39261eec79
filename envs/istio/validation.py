"""Istio's validation rules for DestinationRules, as istiod's admission webhook applies them.

Checks typed pools (:func:`validate_pool`, for code that builds pools) and raw Kubernetes
documents (:func:`parse_document`: a document as a typed :class:`~envs.istio.model
.DestinationRule`, every problem collected as a :class:`RuleError`; a rejected file raises
:class:`ValidationError`). Rules checked against Istio's ``pkg/config/validation/validation.go``
(``validateConnectionPool``, ``validateOutlierDetection``, ``ValidateDuration``,
``ValidatePercent``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from envs.istio.durations import parse_duration_ms
from envs.istio.fields import (
    HTTP_FIELDS,
    INT_MAX,
    KEEPALIVE_FIELDS,
    TCP_FIELDS,
    PoolField,
    is_int,
    value_from_yaml,
    yaml_type,
)
from envs.istio.model import (
    API_GROUP,
    API_VERSIONS,
    INT32_MAX,
    KIND,
    UINT32_MAX,
    ConnectionPool,
    DestinationRule,
    H2UpgradePolicy,
    HttpSettings,
    TcpKeepalive,
    TcpSettings,
)

# ---------------------------------------------------------------------------------------------
# Validation of typed pools (shared by the file validator and code that builds pools)
# ---------------------------------------------------------------------------------------------


def _field_problems(f: PoolField, value: Any, path: str) -> list[tuple[str, Any, str]]:
    """Range/type problems of one typed field value: (path, value, message) triples."""
    if value is None:
        return []
    if f.kind in INT_MAX:
        if not is_int(value):
            return [(path, value, "must be an integer")]
        if value < 0:
            return [(path, value, "must be non-negative")]
        if value > INT_MAX[f.kind]:
            return [(path, value, f"must be at most {INT_MAX[f.kind]} ({f.kind}); "
                                  "omit the field for unlimited")]
        return []
    if f.kind in ("duration", "duration_or_zero"):
        if not is_int(value):
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
        for f in TCP_FIELDS:
            problems += _field_problems(f, getattr(pool.tcp, f.attr), f"tcp.{f.key}")
        if pool.tcp.tcp_keepalive is not None:
            for f in KEEPALIVE_FIELDS:
                problems += _field_problems(f, getattr(pool.tcp.tcp_keepalive, f.attr),
                                            f"tcp.tcpKeepalive.{f.key}")
    if pool.http is not None:
        for f in HTTP_FIELDS:
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


class DocumentErrors:
    """Collects the errors of one document (``document``: its 1-based index in ``source``);
    ``rule`` is set once the document's ``metadata.name`` is known."""

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


def _parse_section(raw: Any, path: str, fields: Sequence[PoolField], cls: type, err: DocumentErrors,
                   ) -> Any:
    """Typed settings (``cls``) from a raw tcp/http/tcpKeepalive mapping; unknown keys ignored
    here (they stay in ``raw``)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        err.add(path, raw, f"must be a mapping, not {yaml_type(raw)}")
        return None
    values: dict[str, Any] = {}
    for f in fields:
        if f.key not in raw or raw[f.key] is None:
            continue
        try:
            values[f.attr] = value_from_yaml(f, raw[f.key])
        except ValueError as e:
            err.add(f"{path}.{f.key}", raw[f.key], str(e))
    return cls(**values)


def parse_pool(raw: Any, path: str, err: DocumentErrors) -> ConnectionPool | None:
    """The typed pool of a raw ``connectionPool``, with every problem reported to ``err``."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        err.add(path, raw, f"must be a mapping, not {yaml_type(raw)}")
        return None
    tcp = _parse_section(raw.get("tcp"), f"{path}.tcp", TCP_FIELDS, TcpSettings, err)
    if tcp is not None and isinstance(raw["tcp"], dict):
        ka = _parse_section(raw["tcp"].get("tcpKeepalive"), f"{path}.tcp.tcpKeepalive",
                            KEEPALIVE_FIELDS, TcpKeepalive, err)
        tcp = replace(tcp, tcp_keepalive=ka)
    http = _parse_section(raw.get("http"), f"{path}.http", HTTP_FIELDS, HttpSettings, err)
    pool = ConnectionPool(tcp=tcp, http=http)
    section_broken = any(raw.get(k) is not None and not isinstance(raw.get(k), dict)
                         for k in ("tcp", "http"))
    for rel, value, message in _pool_problems(pool):
        if rel == "" and section_broken:
            continue  # the broken section was already reported
        err.add(f"{path}.{rel}" if rel else path, value, message)
    return pool


def _check_int(raw: Mapping[str, Any], key: str, path: str, err: DocumentErrors, *, lo: int = 0,
               hi: int = INT32_MAX, what: str = "") -> None:
    """Report ``raw[key]`` unless it is an integer in [lo, hi]."""
    if key not in raw or raw[key] is None:
        return
    value = raw[key]
    if not is_int(value):
        err.add(f"{path}.{key}", value, f"must be an integer, not {yaml_type(value)}")
    elif value < lo or value > hi:
        err.add(f"{path}.{key}", value, what or f"must be in range {lo}..{hi}")


def _check_duration(raw: Mapping[str, Any], key: str, path: str, err: DocumentErrors) -> None:
    """Report ``raw[key]`` unless it is a duration of at least 1 ms in whole ms."""
    if key not in raw or raw[key] is None:
        return
    value = raw[key]
    if not isinstance(value, str):
        err.add(f"{path}.{key}", value, f"must be a duration string, not {yaml_type(value)}")
        return
    try:
        parse_duration_ms(value)
    except ValueError as e:
        err.add(f"{path}.{key}", value, str(e))


def _check_outlier(raw: Any, path: str, err: DocumentErrors) -> None:
    """istiod's ``validateOutlierDetection`` (plus types)."""
    if raw is None:
        return
    if not isinstance(raw, dict):
        err.add(path, raw, f"must be a mapping, not {yaml_type(raw)}")
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
                f"must be true or false, not {yaml_type(split)}")
    local = raw.get("consecutiveLocalOriginFailures")
    if is_int(local) and local > 0 and split is not True:
        err.add(f"{path}.consecutiveLocalOriginFailures", local,
                "is set, but splitExternalLocalOriginErrors is not true")


def _mappings(raw: Any, path: str, err: DocumentErrors,
              what: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The ``(path, item)`` of each mapping in the optional list ``raw``; a non-list, or an item
    that is not a mapping (``"<what> must be a mapping"``), goes to ``err`` instead."""
    if raw is None:
        return
    if not isinstance(raw, list):
        err.add(path, raw, f"must be a list, not {yaml_type(raw)}")
        return
    for i, item in enumerate(raw):
        p = f"{path}[{i}]"
        if isinstance(item, dict):
            yield p, item
        else:
            err.add(p, item, f"{what} must be a mapping")


def _check_port_policies(raw: Any, path: str, err: DocumentErrors) -> None:
    """istiod's ``validatePortTrafficPolicies``."""
    for p, item in _mappings(raw, path, err, "port traffic policy"):
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
        parse_pool(item.get("connectionPool"), f"{p}.connectionPool", err)
        _check_outlier(item.get("outlierDetection"), f"{p}.outlierDetection", err)


def _check_traffic_policy(raw: Any, path: str, err: DocumentErrors) -> ConnectionPool | None:
    """istiod's ``validateTrafficPolicy``; returns the typed connection pool."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        err.add(path, raw, f"must be a mapping, not {yaml_type(raw)}")
        return None
    if not any(v is not None for v in raw.values()):
        err.add(path, raw, "traffic policy must have at least one field")
        return None
    pool = parse_pool(raw.get("connectionPool"), f"{path}.connectionPool", err)
    _check_outlier(raw.get("outlierDetection"), f"{path}.outlierDetection", err)
    _check_port_policies(raw.get("portLevelSettings"), f"{path}.portLevelSettings", err)
    return pool


def _check_subsets(raw: Any, path: str, err: DocumentErrors) -> None:
    """Subset names and their traffic policies."""
    for p, item in _mappings(raw, path, err, "subset"):
        name = item.get("name")
        if not isinstance(name, str) or not name:
            err.add(f"{p}.name", name, "subset name is required")
        _check_traffic_policy(item.get("trafficPolicy"), f"{p}.trafficPolicy", err)


def parse_document(doc: Any, err: DocumentErrors) -> DestinationRule | None:
    """One document as a DestinationRule; problems go to ``err`` (None if unusable)."""
    if not isinstance(doc, dict):
        err.add("", doc, f"a document must be a Kubernetes object (a mapping), "
                         f"not {yaml_type(doc)}")
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
