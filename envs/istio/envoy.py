"""Istio's translation of a connection pool into the Envoy v3 clusters it programs.

:func:`to_envoy_cluster` / :func:`envoy_clusters` build the clusters (name, connect timeout,
circuit breakers, ``HttpProtocolOptions``, TCP keepalive), :func:`tcp_proxy_config` the
listener filter of a TCP destination, :func:`cds_document` a CDS file. Checked against Istio's
``pilot/pkg/networking/core/cluster_traffic_policy.go`` (``applyConnectionPool``,
``applyH2Upgrade``, ``setKeepAliveSettings``), ``cluster_builder.go`` (``setH2Options``,
``setUseDownstreamProtocol``, ``buildInboundCluster``) and ``networkfilter.go``
(``buildOutboundNetworkFiltersWithSingleDestination``: the tcp_proxy idle timeout).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from envs.istio.durations import envoy_duration
from envs.istio.model import (
    ConnectionPool,
    DestinationRule,
    H2UpgradePolicy,
    HttpSettings,
    TcpKeepalive,
    TcpSettings,
    resolve,
)
from envs.istio.validation import DocumentErrors, ValidationError, parse_pool, validate_pool
from envs.sockshop import SERVICE_BY_NAME, SERVICE_NAMES, Protocol, Service

CLUSTER_TYPE_URL = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_PROTOCOL_OPTIONS_TYPE_URL = f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"
TCP_PROXY_TYPE_URL = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

#: Which side of a sidecar a cluster serves: the client's outbound or the server's inbound.
Direction = Literal["outbound", "inbound"]


def sockshop_service(service: str) -> Service:
    """The SockShop service named ``service``.

    Raises:
        ValueError: not a SockShop service (the message lists the known ones).
    """
    try:
        return SERVICE_BY_NAME[service]
    except KeyError:
        raise ValueError(f"unknown SockShop service {service!r}; known: "
                         + ", ".join(SERVICE_NAMES)) from None


def service_port(service: str, direction: Direction = "outbound") -> int:
    """The port Istio names the cluster after: the Service port (outbound) or the container
    target port (inbound)."""
    svc = sockshop_service(service)
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
    if sockshop_service(service).protocol != Protocol.TCP:
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
            err = DocumentErrors(rule.name, 0)
            pool = parse_pool(item["connectionPool"],
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
