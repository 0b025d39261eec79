"""Tests of envs.istio.validation: istiod's rules on documents (every problem reported with
its document, rule and field) and on typed pools."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
import yaml

from envs.istio.model import (
    ConnectionPool,
    DestinationRule,
    H2UpgradePolicy,
    HttpSettings,
    TcpKeepalive,
    TcpSettings,
)
from envs.istio.validation import RuleError, ValidationError, validate_pool
from envs.istio.yaml_io import parse_rules


def base_doc() -> dict[str, Any]:
    """A valid DestinationRule document with tcp and http sections."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "carts", "namespace": "sock-shop"},
        "spec": {"host": "carts", "trafficPolicy": {"connectionPool": {
            "tcp": {"maxConnections": 10, "connectTimeout": "1s"},
            "http": {"http1MaxPendingRequests": 5, "maxRetries": 2},
        }}},
    }


def with_value(path: str, value: Any, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``doc`` (default :func:`base_doc`) with the dotted ``path`` set to ``value``
    (``DELETE`` removes it); missing mappings are created."""
    doc = copy.deepcopy(doc or base_doc())
    keys = path.split(".")
    node = doc
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is DELETE:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return doc


DELETE = object()
POOL = "spec.trafficPolicy.connectionPool"


def parse_doc(doc: Any, source: str = "rules.yaml") -> list[DestinationRule]:
    return parse_rules(yaml.safe_dump(doc, sort_keys=False), source=source)


def errors_of(doc: Any) -> list[RuleError]:
    with pytest.raises(ValidationError) as info:
        parse_doc(doc)
    return list(info.value.errors)


INVALID = [
    # (path, value, field reported, message fragment)
    (f"{POOL}.tcp.maxConnections", -1, f"{POOL}.tcp.maxConnections", "non-negative"),
    (f"{POOL}.tcp.maxConnections", 2_147_483_648, f"{POOL}.tcp.maxConnections", "at most"),
    (f"{POOL}.tcp.maxConnections", "100", f"{POOL}.tcp.maxConnections", "integer"),
    (f"{POOL}.tcp.maxConnections", True, f"{POOL}.tcp.maxConnections", "integer"),
    (f"{POOL}.tcp.maxConnections", 1.5, f"{POOL}.tcp.maxConnections", "integer"),
    (f"{POOL}.http.http1MaxPendingRequests", -5, f"{POOL}.http.http1MaxPendingRequests",
     "non-negative"),
    (f"{POOL}.http.http2MaxRequests", -1, f"{POOL}.http.http2MaxRequests", "non-negative"),
    (f"{POOL}.http.maxRequestsPerConnection", -1, f"{POOL}.http.maxRequestsPerConnection",
     "non-negative"),
    (f"{POOL}.http.maxRetries", 4_000_000_000, f"{POOL}.http.maxRetries", "at most"),
    (f"{POOL}.http.maxConcurrentStreams", -1, f"{POOL}.http.maxConcurrentStreams",
     "non-negative"),
    (f"{POOL}.http.useClientProtocol", "yes", f"{POOL}.http.useClientProtocol", "true or false"),
    (f"{POOL}.http.useClientProtocol", 1, f"{POOL}.http.useClientProtocol", "true or false"),
    (f"{POOL}.http.h2UpgradePolicy", "SOMETIMES", f"{POOL}.http.h2UpgradePolicy", "one of"),
    (f"{POOL}.tcp.connectTimeout", "500us", f"{POOL}.tcp.connectTimeout", "at least 1ms"),
    (f"{POOL}.tcp.connectTimeout", "0s", f"{POOL}.tcp.connectTimeout", "at least 1ms"),
    (f"{POOL}.tcp.connectTimeout", "1500us", f"{POOL}.tcp.connectTimeout", "ms precision"),
    (f"{POOL}.tcp.connectTimeout", 10, f"{POOL}.tcp.connectTimeout", "duration string"),
    (f"{POOL}.tcp.connectTimeout", "soon", f"{POOL}.tcp.connectTimeout", "not a duration"),
    (f"{POOL}.tcp.maxConnectionDuration", "0s", f"{POOL}.tcp.maxConnectionDuration",
     "at least 1ms"),
    (f"{POOL}.tcp.idleTimeout", "-1s", f"{POOL}.tcp.idleTimeout", "at least 1ms"),
    (f"{POOL}.http.idleTimeout", "0s", f"{POOL}.http.idleTimeout", "at least 1ms"),
    (f"{POOL}.tcp.tcpKeepalive", {"probes": -1}, f"{POOL}.tcp.tcpKeepalive.probes",
     "non-negative"),
    (f"{POOL}.tcp.tcpKeepalive", {"time": "0.5ms"}, f"{POOL}.tcp.tcpKeepalive.time",
     "at least 1ms"),
    (f"{POOL}.tcp.tcpKeepalive", {"interval": 5}, f"{POOL}.tcp.tcpKeepalive.interval",
     "duration string"),
    (f"{POOL}.tcp", [1, 2], f"{POOL}.tcp", "mapping"),
    (POOL, {}, POOL, "at least one of tcp, http"),
    (POOL, {"unknownSection": {}}, POOL, "at least one of tcp, http"),
    ("spec.trafficPolicy", {}, "spec.trafficPolicy", "at least one field"),
    ("spec.trafficPolicy.outlierDetection", {"maxEjectionPercent": 101},
     "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "0..100"),
    ("spec.trafficPolicy.outlierDetection", {"minHealthPercent": -1},
     "spec.trafficPolicy.outlierDetection.minHealthPercent", "0..100"),
    ("spec.trafficPolicy.outlierDetection", {"consecutive5xxErrors": -3},
     "spec.trafficPolicy.outlierDetection.consecutive5xxErrors", "range"),
    ("spec.trafficPolicy.outlierDetection", {"interval": "100us"},
     "spec.trafficPolicy.outlierDetection.interval", "at least 1ms"),
    ("spec.host", DELETE, "spec.host", "required"),
    ("spec.host", "", "spec.host", "required"),
    ("spec.host", "not a host", "spec.host", "host name"),
    ("metadata.name", DELETE, "metadata.name", "required"),
    ("metadata.name", "Carts_DR", "metadata.name", "RFC 1123"),
    ("metadata.namespace", "Sock Shop", "metadata.namespace", "RFC 1123"),
    ("spec", DELETE, "spec", "required"),
    ("kind", "Service", "kind", "not a DestinationRule"),
    ("apiVersion", "networking.istio.io/v2", "apiVersion", "not a DestinationRule"),
    ("apiVersion", "v1", "apiVersion", "not a DestinationRule"),
    ("spec.trafficPolicy.portLevelSettings",
     [{"port": {"number": 80}, "connectionPool": {"http": {"maxRetries": -1}}}],
     "spec.trafficPolicy.portLevelSettings[0].connectionPool.http.maxRetries", "non-negative"),
    ("spec.trafficPolicy.portLevelSettings", [{"connectionPool": {"tcp": {}}}],
     "spec.trafficPolicy.portLevelSettings[0].port", "valid port"),
    ("spec.trafficPolicy.portLevelSettings", [{"port": {"number": 80}}],
     "spec.trafficPolicy.portLevelSettings[0]", "at least one field"),
    ("spec.subsets", [{"name": "v1", "trafficPolicy": {"connectionPool": {
        "tcp": {"maxConnections": -2}}}}],
     "spec.subsets[0].trafficPolicy.connectionPool.tcp.maxConnections", "non-negative"),
    ("spec.subsets", [{"labels": {"v": "1"}}], "spec.subsets[0].name", "required"),
]


@pytest.mark.parametrize(("path", "value", "field", "message"), INVALID)
def test_invalid_documents_are_rejected(path: str, value: Any, field: str, message: str) -> None:
    errors = errors_of(with_value(path, value))
    matching = [e for e in errors if e.field == field]
    assert matching, f"no error for {field}: {[str(e) for e in errors]}"
    assert message in matching[0].message
    assert matching[0].document == 1
    assert matching[0].source == "rules.yaml"


def test_upgrade_with_client_protocol_is_rejected() -> None:
    doc = with_value(f"{POOL}.http", {"h2UpgradePolicy": "UPGRADE", "useClientProtocol": True})
    [error] = errors_of(doc)
    assert error.field == f"{POOL}.http.useClientProtocol"
    assert "UPGRADE" in error.message


VALID = [
    (f"{POOL}.tcp.maxConnections", 0),
    (f"{POOL}.tcp.maxConnections", 2_147_483_647),
    (f"{POOL}.http.maxRetries", 0),
    (f"{POOL}.tcp.idleTimeout", "0s"),
    (f"{POOL}.tcp.connectTimeout", "1ms"),
    (f"{POOL}.tcp.connectTimeout", "1.5s"),
    (f"{POOL}.tcp.tcpKeepalive", {}),
    (f"{POOL}.tcp.tcpKeepalive", {"probes": 4_294_967_295, "time": "2h", "interval": "75s"}),
    (f"{POOL}.http", {"h2UpgradePolicy": "DO_NOT_UPGRADE", "useClientProtocol": True}),
    (f"{POOL}.http", {"h2UpgradePolicy": "UPGRADE", "useClientProtocol": False}),
    (f"{POOL}.http", DELETE),
    (f"{POOL}.tcp", {}),
    (f"{POOL}.tcp.futureField", "kept"),
    ("spec.trafficPolicy.outlierDetection", {"maxEjectionPercent": 100, "minHealthPercent": 0,
                                             "interval": "10s"}),
    ("spec.trafficPolicy", DELETE),
    ("metadata.namespace", DELETE),
    ("spec.host", "carts.sock-shop.svc.cluster.local"),
    ("apiVersion", "networking.istio.io/v1alpha3"),
]


@pytest.mark.parametrize(("path", "value"), VALID)
def test_valid_documents_are_accepted(path: str, value: Any) -> None:
    [rule] = parse_doc(with_value(path, value))
    assert rule.name == "carts"


def test_yaml_null_values_count_as_unset() -> None:
    [rule] = parse_doc(with_value(f"{POOL}.tcp.maxConnections", None))
    assert rule.connection_pool.tcp.max_connections is None


def test_file_with_several_errors_lists_every_one() -> None:
    first = with_value(f"{POOL}.tcp.maxConnections", -1)
    first["spec"]["trafficPolicy"]["connectionPool"]["http"]["maxRetries"] = "many"
    second = with_value("metadata.name", "orders", with_value("spec.host", DELETE))
    third = with_value(f"{POOL}.tcp.connectTimeout", "100us",
                       with_value("metadata.name", "user"))
    text = yaml.safe_dump_all([first, base_doc(), second, None, third], sort_keys=False)
    with pytest.raises(ValidationError) as info:
        parse_rules(text, source="mesh.yaml")
    found = {(e.document, e.rule, e.field, repr(e.value)) for e in info.value.errors}
    assert found == {
        (1, "carts", f"{POOL}.tcp.maxConnections", "-1"),
        (1, "carts", f"{POOL}.http.maxRetries", "'many'"),
        (3, "orders", "spec.host", "None"),
        (5, "user", f"{POOL}.tcp.connectTimeout", "'100us'"),
    }
    [error] = [e for e in info.value.errors if e.field.endswith("maxConnections")]
    assert str(error) == ("mesh.yaml: document 1 (DestinationRule carts): "
                          f"{POOL}.tcp.maxConnections: must be non-negative (got -1)")
    assert "4 errors" in str(info.value)


def test_malformed_yaml_names_the_document() -> None:
    text = yaml.safe_dump(base_doc()) + "---\nspec: [unclosed\n"
    with pytest.raises(ValidationError) as info:
        parse_rules(text, source="bad.yaml")
    [error] = info.value.errors
    assert error.document == 2 and "malformed YAML" in error.message
    assert "line" in error.message


def test_non_mapping_document_is_an_error() -> None:
    with pytest.raises(ValidationError, match=r"document 1.*mapping"):
        parse_rules("- a\n- b\n")


def test_validation_error_pickles_with_its_errors() -> None:
    with pytest.raises(ValidationError) as info:
        parse_doc(with_value(f"{POOL}.tcp.maxConnections", -1))
    copy_ = pickle.loads(pickle.dumps(info.value))
    assert copy_.errors == info.value.errors and str(copy_) == str(info.value)


def test_empty_documents_are_skipped_but_counted() -> None:
    text = "---\n---\n" + yaml.safe_dump(with_value(f"{POOL}.tcp.maxConnections", -1))
    with pytest.raises(ValidationError) as info:
        parse_rules(text)
    assert info.value.errors[0].document == 2  # "---" "---" doc: the first is empty
    assert parse_rules("") == []
    assert parse_rules("---\n---\n") == []


def test_validate_pool_on_typed_pools() -> None:
    assert validate_pool(ConnectionPool(tcp=TcpSettings(max_connections=5))) == []
    assert validate_pool(ConnectionPool(tcp=TcpSettings(idle_timeout_ms=0))) == []
    assert validate_pool(ConnectionPool()) == [
        "connectionPool: connection pool must have at least one of tcp, http"]
    bad = ConnectionPool(
        tcp=TcpSettings(max_connections=-1, connect_timeout_ms=0,
                        tcp_keepalive=TcpKeepalive(probes=-2)),
        http=HttpSettings(max_retries=2**31, h2_upgrade_policy=H2UpgradePolicy.UPGRADE,
                          use_client_protocol=True, idle_timeout_ms=0),
    )
    problems = validate_pool(bad)
    assert problems == [
        "tcp.maxConnections: must be non-negative (got -1)",
        "tcp.connectTimeout: duration must be at least 1ms (got 0)",
        "tcp.tcpKeepalive.probes: must be non-negative (got -2)",
        "http.maxRetries: must be at most 2147483647 (int32); omit the field for unlimited "
        "(got 2147483648)",
        "http.idleTimeout: duration must be at least 1ms (got 0)",
        "http.useClientProtocol: must not be true when h2UpgradePolicy is UPGRADE (got True)",
    ]
    assert validate_pool(ConnectionPool(http=HttpSettings(max_retries=True)))
