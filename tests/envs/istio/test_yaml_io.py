"""Tests of envs.istio.yaml_io: the YAML round trip keeps every unknown field, writes are
validated and atomic."""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import replace
from pathlib import Path

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
from envs.istio.validation import ValidationError
from envs.istio.yaml_io import dump_rules, parse_rules, read_rules, to_document, write_rules
from tests.envs.istio._fixtures import DATA

# ------------------------------------------------------------------------------- round trip


def test_reads_the_fixture_file() -> None:
    rules = read_rules(DATA)
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
    rules = read_rules(DATA)
    dumped = list(yaml.safe_load_all(dump_rules(rules)))
    # Durations are normalised (1.5s → 1500ms); everything else is identical.
    original[0]["spec"]["trafficPolicy"]["connectionPool"]["http"]["idleTimeout"] = "1500ms"
    assert dumped == original
    assert parse_rules(dump_rules(rules)) == rules


def test_changing_the_pool_touches_only_modelled_keys() -> None:
    carts = read_rules(DATA)[0]
    pool = carts.connection_pool.with_tcp(max_connections=7, connect_timeout_ms=None,
                                          tcp_keepalive=TcpKeepalive(probes=3))
    pool = pool.with_http(max_retries=None, h2_upgrade_policy=H2UpgradePolicy.UPGRADE)
    doc = to_document(replace(carts, connection_pool=pool))
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
    carts = read_rules(DATA)[0]
    doc = to_document(replace(carts, connection_pool=None))
    assert "connectionPool" not in doc["spec"]["trafficPolicy"]
    assert doc["spec"]["trafficPolicy"]["loadBalancer"] == {"simple": "ROUND_ROBIN"}
    catalogue = read_rules(DATA)[1]
    doc = to_document(replace(catalogue, connection_pool=None))
    assert "trafficPolicy" not in doc["spec"]


def test_new_rules_are_written_as_v1() -> None:
    rule = DestinationRule("orders", "orders", ConnectionPool(
        tcp=TcpSettings(connect_timeout_ms=250, idle_timeout_ms=0)), namespace="ns-1")
    text = dump_rules([rule])
    assert yaml.safe_load(text) == {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "orders", "namespace": "ns-1"},
        "spec": {"host": "orders", "trafficPolicy": {"connectionPool": {
            "tcp": {"connectTimeout": "250ms", "idleTimeout": "0s"}}}},
    }
    assert parse_rules(text) == [rule]


# ------------------------------------------------------------------------------- writing


def test_write_rules_round_trips_and_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    shutil.copy(DATA, path)
    path.chmod(0o640)
    rules = read_rules(path)
    changed = [replace(rules[1], connection_pool=ConnectionPool(
        http=HttpSettings(max_retries=9)))]
    write_rules(path, rules[:1] + changed)
    assert read_rules(path) == rules[:1] + changed
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
    rules = read_rules(path)
    with pytest.raises(ValidationError) as info:
        write_rules(path, [*rules, bad_rule])
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

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        write_rules(path, [DestinationRule("a", "carts", None)])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rules.yaml"]


def test_read_rules_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_rules(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValidationError, match="not UTF-8"):
        read_rules(binary)
