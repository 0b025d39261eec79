"""Envoy configuration of one local replica: a sidecar per service plus the ingress gateway.

Clusters come from Istio's translation (``envs.istio.envoy_clusters`` / ``tcp_proxy_config``),
never from a second one here. What this module adds is the plumbing Istio's pilot would add:

* each sidecar's **outbound clusters** (one per destination its service calls, with that
  destination's DestinationRule limits) and its **inbound cluster** (its own rule's
  ``connectionPool``, as Istio applies it on the callee side), STATIC on loopback;
* an outbound HTTP listener routing by ``Host`` with Istio's default retry policy (2 retries on
  ``connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`` 503, the
  ``previous_hosts`` predicate, no route timeout) and a virtual cluster per destination (its
  stats are per caller request, after retries: the ``reporter="source"`` view);
* an outbound tcp_proxy listener per TCP destination, an inbound listener (HTTP connection
  manager or tcp_proxy) in front of the application;
* Istio's automatic mutual TLS between sidecars (given a ``tls_dir``): outbound clusters carry
  an ``UpstreamTlsContext``, inbound listeners a ``DownstreamTlsContext`` that requires the
  client's certificate, with one ECDSA P-256 identity per replica (:func:`make_mesh_identity`).
  Envoy's ``connect_timeout`` covers the TLS handshake, so ``tcp.connectTimeout`` acts on a
  real connection set-up (TCP + mTLS), as in the mesh; sidecar → application stays plain.

Clusters and listeners are delivered by file (``path_config_source`` with a
``watched_directory``; see :func:`write_atomically`) so a DestinationRule change reaches the
running sidecars without a restart. Every resource file carries a ``version_info`` (a hash of
its content) that the admin ``/config_dump`` shows once Envoy has taken the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from envs.backends.local.ports import HOST, ReplicaPorts
from envs.backends.local.topology import (
    GATEWAY,
    callees_of,
    http_callees_of,
    is_tcp,
    tcp_callees_of,
)
from envs.istio import (
    TCP_PROXY_TYPE_URL,
    DestinationRule,
    cluster_name,
    envoy_clusters,
    port_connection_pool,
    service_port,
    tcp_proxy_config,
)
from envs.sockshop import SERVICE_NAMES

LISTENER_TYPE_URL = "type.googleapis.com/envoy.config.listener.v3.Listener"
HCM_TYPE_URL = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
                ".v3.HttpConnectionManager")
ROUTER_TYPE_URL = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
PREVIOUS_HOSTS_TYPE_URL = ("type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3"
                           ".PreviousHostsPredicate")
#: Istio's default retry policy of every HTTP route it generates.
ISTIO_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
ISTIO_NUM_RETRIES = 2
#: Istio's cluster-name tag (its bootstrap): names with dots would break Envoy's default one.
CLUSTER_NAME_TAG_REGEX = r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)"
#: Histogram buckets in ms, finer than Envoy's defaults so that PromQL p99s mean something.
HISTOGRAM_BUCKETS_MS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300,
                        400, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500, 10000, 20000, 60000)
UPSTREAM_TLS_TYPE_URL = ("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
                         ".UpstreamTlsContext")
DOWNSTREAM_TLS_TYPE_URL = ("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
                           ".DownstreamTlsContext")
#: The workload identity every sidecar of a replica presents (Istio's default service account).
SPIFFE_ID = "spiffe://cluster.local/ns/{namespace}/sa/default"
#: The proxies of a replica: every SockShop service's sidecar, then the ingress gateway.
PROXIES: tuple[str, ...] = (*SERVICE_NAMES, GATEWAY)


def vhost_name(service: str) -> str:
    """Virtual host (and stat) name of a destination: no dots or dashes, which Envoy's tag
    extraction would split on."""
    return service.replace("-", "_")


def _admin_port(ports: ReplicaPorts, proxy: str) -> int:
    return ports.ingress_admin if proxy == GATEWAY else ports.admin(proxy)


def admin_port(ports: ReplicaPorts, proxy: str) -> int:
    """The admin port of ``proxy`` (a service's sidecar or :data:`GATEWAY`)."""
    if proxy not in PROXIES:
        raise ValueError(f"unknown proxy {proxy!r}")
    return _admin_port(ports, proxy)


def _addr(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": HOST, "port_value": port}}


def bootstrap(proxy: str, ports: ReplicaPorts, config_dir: Path) -> dict[str, Any]:
    """The static bootstrap of ``proxy``: admin on loopback, stats every second, clusters and
    listeners from the files in ``config_dir/cds`` and ``config_dir/lds``."""
    def files(kind: str) -> dict[str, Any]:
        directory = config_dir / kind
        return {"path_config_source": {"path": str(directory / f"{kind}.json"),
                                       "watched_directory": {"path": str(directory)}},
                "resource_api_version": "V3"}

    return {
        "node": {"id": f"{proxy}.replica-{ports.replica}", "cluster": proxy},
        "admin": {"address": _addr(_admin_port(ports, proxy))},
        "stats_flush_interval": "1s",
        "stats_config": {
            # only what the report reads: fewer series for Prometheus to scrape each second
            "stats_matcher": {"inclusion_list": {"patterns": [{"prefix": "cluster."},
                                                              {"prefix": "vhost."}]}},
            "stats_tags": [{"tag_name": "cluster_name", "regex": CLUSTER_NAME_TAG_REGEX}],
            "histogram_bucket_settings": [{"match": {"safe_regex": {"regex": ".*"}},
                                           "buckets": list(HISTOGRAM_BUCKETS_MS)}],
        },
        "dynamic_resources": {"cds_config": files("cds"), "lds_config": files("lds")},
    }


def _rule_by_service(rules: Sequence[DestinationRule]) -> dict[str, DestinationRule]:
    return {r.service: r for r in rules}


def make_mesh_identity(tls_dir: Path, namespace: str) -> None:
    """Write the replica's mTLS identity into ``tls_dir``: a self-signed ECDSA P-256
    certificate (``cert.pem``, also the trust anchor) and its key (``key.pem``), made with the
    ``openssl`` command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed for the mesh's mTLS certificate")
    tls_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(tls_dir / "key.pem"), "-out", str(tls_dir / "cert.pem"),
         "-days", "30", "-subj", "/O=meshtune/CN=sidecar",
         "-addext", f"subjectAltName=URI:{SPIFFE_ID.format(namespace=namespace)}"],
        check=True, capture_output=True)


def _common_tls(tls_dir: Path) -> dict[str, Any]:
    return {"tls_certificates": [{"certificate_chain": {"filename": str(tls_dir / "cert.pem")},
                                  "private_key": {"filename": str(tls_dir / "key.pem")}}],
            "validation_context": {"trusted_ca": {"filename": str(tls_dir / "cert.pem")}}}


def _upstream_tls(dest: str, namespace: str, tls_dir: Path) -> dict[str, Any]:
    sni = f"outbound_.{service_port(dest)}_._.{dest}.{namespace}.svc.cluster.local"
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": UPSTREAM_TLS_TYPE_URL, "sni": sni,
                             "common_tls_context": _common_tls(tls_dir)}}


def _downstream_tls(tls_dir: Path) -> dict[str, Any]:
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": DOWNSTREAM_TLS_TYPE_URL,
                             "require_client_certificate": True,
                             "common_tls_context": _common_tls(tls_dir)}}


def clusters_for(proxy: str, rules: Sequence[DestinationRule], ports: ReplicaPorts,
                 namespace: str, tls_dir: Path | None = None) -> list[dict[str, Any]]:
    """``proxy``'s clusters under ``rules``: outbound to each destination it calls (pointing at
    the destination's sidecar inbound listener; mTLS when ``tls_dir`` is given), then its own
    inbound cluster (pointing at its application). Raises ValueError for rules Istio would
    reject."""
    out_eps = {s: [(HOST, ports.inbound(s))] for s in SERVICE_NAMES}
    outbound = {c["name"]: c for c in envoy_clusters(rules, namespace, "outbound", out_eps)}
    clusters = []
    for dest in callees_of(proxy):
        cluster = dict(outbound[cluster_name(dest, namespace, "outbound")])
        if tls_dir is not None:
            cluster["transport_socket"] = _upstream_tls(dest, namespace, tls_dir)
        clusters.append(cluster)
    if proxy != GATEWAY:
        in_eps = {s: [(HOST, ports.app(s))] for s in SERVICE_NAMES}
        inbound = envoy_clusters(rules, namespace, "inbound", in_eps)
        clusters.append(inbound[SERVICE_NAMES.index(proxy)])
    return clusters


def _route(cluster: str, retries: bool) -> dict[str, Any]:
    route: dict[str, Any] = {"cluster": cluster, "timeout": "0s"}
    if retries:
        route["retry_policy"] = {
            "retry_on": ISTIO_RETRY_ON,
            "num_retries": ISTIO_NUM_RETRIES,
            "retriable_status_codes": [503],
            "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                                      "typed_config": {"@type": PREVIOUS_HOSTS_TYPE_URL}}],
            "host_selection_retry_max_attempts": "5",
        }
    return {"match": {"prefix": "/"}, "route": route}


def _hcm(stat_prefix: str, virtual_hosts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "envoy.filters.network.http_connection_manager",
            "typed_config": {"@type": HCM_TYPE_URL, "stat_prefix": stat_prefix,
                             "route_config": {"name": stat_prefix, "validate_clusters": False,
                                              "virtual_hosts": virtual_hosts},
                             "http_filters": [{"name": "envoy.filters.http.router",
                                               "typed_config": {"@type": ROUTER_TYPE_URL}}]}}


def _listener(name: str, port: int, network_filter: dict[str, Any],
              transport_socket: dict[str, Any] | None = None) -> dict[str, Any]:
    chain: dict[str, Any] = {"filters": [network_filter]}
    if transport_socket is not None:
        chain["transport_socket"] = transport_socket
    return {"@type": LISTENER_TYPE_URL, "name": name, "address": _addr(port),
            "filter_chains": [chain]}


def _outbound_vhost(dest: str, namespace: str) -> dict[str, Any]:
    port = service_port(dest)
    fqdn = f"{dest}.{namespace}.svc.cluster.local"
    return {"name": vhost_name(dest),
            "domains": [dest, f"{dest}:{port}", fqdn, f"{fqdn}:{port}"],
            "routes": [_route(cluster_name(dest, namespace, "outbound"), retries=True)],
            "virtual_clusters": [{"name": "all",
                                  "headers": [{"name": ":method", "present_match": True}]}]}


def listeners_for(proxy: str, rules: Sequence[DestinationRule], ports: ReplicaPorts,
                  namespace: str, tls_dir: Path | None = None) -> list[dict[str, Any]]:
    """``proxy``'s listeners: outbound HTTP (by Host), outbound tcp_proxy per TCP destination
    (its idle timeout and max duration from the destination's rule), inbound (mTLS when
    ``tls_dir`` is given)."""
    if proxy == GATEWAY:
        dest = callees_of(GATEWAY)[0]
        vhost = _outbound_vhost(dest, namespace)
        vhost["domains"] = ["*"]
        return [_listener("ingress", ports.ingress, _hcm("ingress", [vhost]))]
    listeners = []
    http_dests = http_callees_of(proxy)
    if http_dests:
        listeners.append(_listener(
            "outbound_http", ports.outbound_http(proxy),
            _hcm("outbound_http", [_outbound_vhost(d, namespace) for d in http_dests])))
    by_service = _rule_by_service(rules)
    for slot, dest in enumerate(tcp_callees_of(proxy)):
        rule = by_service.get(dest)
        pool = None if rule is None else port_connection_pool(rule, service_port(dest))
        listeners.append(_listener(
            f"outbound_tcp_{vhost_name(dest)}", ports.outbound_tcp(proxy, slot),
            {"name": "envoy.filters.network.tcp_proxy",
             "typed_config": tcp_proxy_config(dest, pool, namespace)}))
    inbound_cluster = cluster_name(proxy, namespace, "inbound")
    if is_tcp(proxy):
        inbound_filter = {"name": "envoy.filters.network.tcp_proxy",
                          "typed_config": {"@type": TCP_PROXY_TYPE_URL, "stat_prefix": "inbound",
                                           "cluster": inbound_cluster}}
    else:
        inbound_filter = _hcm("inbound", [{"name": "inbound", "domains": ["*"],
                                           "routes": [_route(inbound_cluster, retries=False)]}])
    listeners.append(_listener("inbound", ports.inbound(proxy), inbound_filter,
                               None if tls_dir is None else _downstream_tls(tls_dir)))
    return listeners


def discovery_document(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A file-based xDS ``DiscoveryResponse`` whose ``version_info`` is a hash of its content."""
    text = json.dumps(resources, sort_keys=True)
    return {"version_info": hashlib.sha256(text.encode()).hexdigest()[:16],
            "resources": resources}


def write_atomically(path: Path, document: dict[str, Any]) -> bool:
    """Write ``document`` as JSON to ``path`` by renaming a temporary file into place (Envoy's
    directory watch reacts to the rename, never to an in-place edit). Returns False, writing
    nothing, when the file already holds exactly this document."""
    data = json.dumps(document, indent=1, sort_keys=True).encode()
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True
