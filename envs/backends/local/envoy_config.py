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
  real connection set-up (TCP + mTLS), as in the mesh; sidecar → application stays plain;
* optionally Envoy's **adaptive concurrency** filter (the gradient controller,
  :class:`AdaptiveConcurrency`) on every HTTP service's inbound listener, before the router —
  what a cluster user would insert with an EnvoyFilter (``docs/cluster.md``): no
  DestinationRule field expresses it.

How many worker threads each Envoy runs (``--concurrency``, :data:`DEFAULT_ENVOY_WORKERS` as
Istio's sidecars) is a replica option too (:func:`check_envoy_workers`); the supervisor passes it.

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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
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
#: Envoy worker threads per proxy (``--concurrency``): Istio's sidecar injector runs its
#: sidecars with 2 (``proxy.istio.io/config`` ``concurrency``, default 2).
DEFAULT_ENVOY_WORKERS = 2
#: Most worker threads a proxy may get here (the machine has 2 cores; 16 proxies share them).
MAX_ENVOY_WORKERS = 8
ADAPTIVE_CONCURRENCY_TYPE_URL = ("type.googleapis.com/envoy.extensions.filters.http"
                                 ".adaptive_concurrency.v3.AdaptiveConcurrency")
#: Stats prefix of the filter on the inbound listener (its HCM's stat_prefix is ``inbound``).
ADAPTIVE_CONCURRENCY_STATS = "http.inbound.adaptive_concurrency.gradient_controller."


def check_envoy_workers(value: object) -> int:
    """``value`` as a number of Envoy worker threads per proxy (1..:data:`MAX_ENVOY_WORKERS`);
    ValueError in one line otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 1 <= value <= MAX_ENVOY_WORKERS:
        raise ValueError(f"envoy_workers must be an int in 1..{MAX_ENVOY_WORKERS} (Envoy worker "
                         f"threads per sidecar; Istio runs 2), got {value!r}")
    return value


def _duration(seconds: float) -> str:
    return f"{seconds:.6f}".rstrip("0").rstrip(".") + "s"


@dataclass(frozen=True)
class AdaptiveConcurrency:
    """Envoy's adaptive concurrency filter with the gradient controller, as this mesh puts it
    on every HTTP service's inbound listener (Envoy API v3
    ``extensions/filters/http/adaptive_concurrency/v3/adaptive_concurrency.proto``).

    The controller measures an ideal round-trip time (minRTT) every ``min_rtt_interval_s``
    (± ``jitter_pct`` %) by letting at most ``min_concurrency`` requests through until
    ``min_rtt_request_count`` have completed (also right at the start), then every
    ``update_interval_s`` sets the concurrency limit to ``L + √L`` with ``L = limit ×
    gradient``, ``gradient = minRTT × (1 + buffer_pct/100) / sampleRTT`` clamped to [0.5, 2]
    (sampleRTT: the ``sample_percentile`` of the latencies of the last interval), within
    ``min_concurrency`` .. ``max_concurrency_limit``. One controller per listener, shared by
    the proxy's workers. A request over the limit gets
    ``limit_exceeded_status`` at once (the callee's sidecar answers; the caller's sidecar
    retries a 503 under Istio's retry policy).

    Defaults: the example configuration of Envoy's filter documentation (p90, 100 ms updates,
    minRTT every 60 s with 10 % jitter over 50 requests) and the proto's documented defaults for
    the rest (limit ≤ 1000, ``min_concurrency`` 3, buffer 25 %, 503).

    Attributes:
        sample_percentile: percentile of the sampled latencies (``sample_aggregate_percentile``),
            in (0, 100].
        max_concurrency_limit: upper bound of the limit (``concurrency_limit_params``), ≥ 1.
        update_interval_s: period of the limit's recalculation
            (``concurrency_update_interval``), s, > 0.
        min_rtt_interval_s: period of the minRTT measurement (``min_rtt_calc_params.interval``),
            s, ≥ 0.001.
        min_rtt_request_count: requests sampled per minRTT measurement (``request_count``), ≥ 1.
        jitter_pct: random delay of a minRTT window, % of the interval, in [0, 100].
        min_concurrency: the limit while minRTT is measured (``min_concurrency``), ≥ 1.
        buffer_pct: tolerance added to the measured minRTT, % of it, in [0, 100].
        limit_exceeded_status: HTTP status of a blocked request (``concurrency_limit_exceeded
            _status``), 400..599.
    """

    sample_percentile: float = 90.0
    max_concurrency_limit: int = 1000
    update_interval_s: float = 0.1
    min_rtt_interval_s: float = 60.0
    min_rtt_request_count: int = 50
    jitter_pct: float = 10.0
    min_concurrency: int = 3
    buffer_pct: float = 25.0
    limit_exceeded_status: int = 503

    def __post_init__(self) -> None:
        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or value != value or value in (float("inf"), float("-inf")):
                raise ValueError(f"AdaptiveConcurrency.{name} must be a finite number, "
                                 f"got {value!r}")
            return float(value)

        def integer(name: str, lo: int, hi: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"AdaptiveConcurrency.{name} must be an int in {lo}..{hi}, "
                                 f"got {value!r}")

        if not 0 < number("sample_percentile") <= 100:
            raise ValueError(f"AdaptiveConcurrency.sample_percentile must be in (0, 100], got "
                             f"{self.sample_percentile!r}")
        if not number("update_interval_s") > 0:
            raise ValueError(f"AdaptiveConcurrency.update_interval_s must be > 0 s, got "
                             f"{self.update_interval_s!r}")
        if not number("min_rtt_interval_s") >= 0.001:
            raise ValueError(f"AdaptiveConcurrency.min_rtt_interval_s must be >= 0.001 s, got "
                             f"{self.min_rtt_interval_s!r}")
        for name in ("jitter_pct", "buffer_pct"):
            if not 0 <= number(name) <= 100:
                raise ValueError(f"AdaptiveConcurrency.{name} must be in [0, 100], got "
                                 f"{getattr(self, name)!r}")
        integer("max_concurrency_limit", 1, 2**32 - 1)
        integer("min_rtt_request_count", 1, 2**32 - 1)
        integer("min_concurrency", 1, 2**32 - 1)
        integer("limit_exceeded_status", 400, 599)

    @classmethod
    def from_value(cls, value: object) -> AdaptiveConcurrency | None:
        """The filter's parameters from a backend option: None / False (off), True (the
        defaults), a mapping of this class's fields (as ``env_config['backend_kwargs']`` carries
        it) or an instance. ValueError in one line for anything else."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            known = [f.name for f in fields(cls)]
            unknown = sorted(str(k) for k in value if k not in known)
            if unknown:
                raise ValueError(f"adaptive_concurrency: unknown field(s) {unknown} (known: "
                                 f"{', '.join(known)})")
            return cls(**{str(k): v for k, v in value.items()})
        raise ValueError(f"adaptive_concurrency must be None, True or a mapping of "
                         f"AdaptiveConcurrency's fields, got {value!r}")

    def to_dict(self) -> dict[str, float | int]:
        """Plain data (the inverse of :meth:`from_value`)."""
        return asdict(self)

    def http_filter(self) -> dict[str, Any]:
        """The HTTP filter entry (``envoy.filters.http.adaptive_concurrency``, JSON form)."""
        return {"name": "envoy.filters.http.adaptive_concurrency",
                "typed_config": {
                    "@type": ADAPTIVE_CONCURRENCY_TYPE_URL,
                    "gradient_controller_config": {
                        "sample_aggregate_percentile": {"value": float(self.sample_percentile)},
                        "concurrency_limit_params": {
                            "max_concurrency_limit": self.max_concurrency_limit,
                            "concurrency_update_interval": _duration(self.update_interval_s)},
                        "min_rtt_calc_params": {
                            "interval": _duration(self.min_rtt_interval_s),
                            "request_count": self.min_rtt_request_count,
                            "jitter": {"value": float(self.jitter_pct)},
                            "min_concurrency": self.min_concurrency,
                            "buffer": {"value": float(self.buffer_pct)}}},
                    "concurrency_limit_exceeded_status": {"code": self.limit_exceeded_status}}}


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
            "stats_matcher": {"inclusion_list": {"patterns": [
                {"prefix": "cluster."}, {"prefix": "vhost."},
                {"prefix": ADAPTIVE_CONCURRENCY_STATS}]}},
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


def _hcm(stat_prefix: str, virtual_hosts: list[dict[str, Any]],
         before_router: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"name": "envoy.filters.network.http_connection_manager",
            "typed_config": {"@type": HCM_TYPE_URL, "stat_prefix": stat_prefix,
                             "route_config": {"name": stat_prefix, "validate_clusters": False,
                                              "virtual_hosts": virtual_hosts},
                             "http_filters": [*before_router,
                                              {"name": "envoy.filters.http.router",
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
                  namespace: str, tls_dir: Path | None = None,
                  adaptive: AdaptiveConcurrency | None = None) -> list[dict[str, Any]]:
    """``proxy``'s listeners: outbound HTTP (by Host), outbound tcp_proxy per TCP destination
    (its idle timeout and max duration from the destination's rule), inbound (mTLS when
    ``tls_dir`` is given; an HTTP service's with the ``adaptive`` concurrency filter before
    the router when given)."""
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
                                           "routes": [_route(inbound_cluster, retries=False)]}],
                              () if adaptive is None else (adaptive.http_filter(),))
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
