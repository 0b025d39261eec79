"""Istio DestinationRule connection pools: the typed model every backend applies.

This package is the only code in meshtune that knows Istio's field names and rules. Everything
else passes the typed objects defined here. Its modules, one job each:

* :mod:`~envs.istio.model`: the model (:class:`ConnectionPool`, :class:`DestinationRule`) and
  :func:`resolve`, Istio's defaults and its meaning of unset and 0;
* :mod:`~envs.istio.durations`: Go/protobuf duration strings ↔ whole milliseconds;
* :mod:`~envs.istio.fields`: the table of modelled fields (Istio's YAML key ↔ model attribute);
* :mod:`~envs.istio.validation`: validation as istiod's webhook does it (:class:`RuleError`,
  :class:`ValidationError`, :func:`validate_pool`);
* :mod:`~envs.istio.yaml_io`: YAML I/O of multi-document Kubernetes files
  (:func:`parse_rules`, :func:`read_rules`, :func:`dump_rules`, :func:`write_rules`) that keeps
  every field meshtune does not model;
* :mod:`~envs.istio.rule_file`: snapshot / restore for backends (:func:`pools_of`,
  :func:`rules_for`, :class:`RuleFile`);
* :mod:`~envs.istio.envoy`: the Envoy v3 clusters Istio programs for a pool
  (:func:`to_envoy_cluster`, :func:`envoy_clusters`, :func:`tcp_proxy_config`);
* :mod:`~envs.istio.effects`: which set fields take effect (:func:`field_effects`).

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

Bugs of the original notebook's ``IstioConfig`` that this package does not repeat:

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

from envs.istio.durations import (
    envoy_duration,
    format_duration_ms,
    parse_duration_ms,
    parse_duration_ns,
)
from envs.istio.effects import FieldEffect, effective_fields, field_effects
from envs.istio.envoy import (
    CLUSTER_TYPE_URL,
    HTTP_PROTOCOL_OPTIONS,
    HTTP_PROTOCOL_OPTIONS_TYPE_URL,
    TCP_PROXY_TYPE_URL,
    Direction,
    cds_document,
    cluster_name,
    envoy_clusters,
    port_connection_pool,
    service_port,
    tcp_proxy_config,
    to_envoy_cluster,
)
from envs.istio.model import (
    API_GROUP,
    API_VERSIONS,
    DEFAULT_CONNECT_TIMEOUT_MS,
    DEFAULT_IDLE_TIMEOUT_MS,
    DEFAULT_MAX_CONCURRENT_STREAMS,
    INT32_MAX,
    ISTIO_DEFAULTS,
    KIND,
    OS_KEEPALIVE_INTERVAL_MS,
    OS_KEEPALIVE_PROBES,
    OS_KEEPALIVE_TIME_MS,
    UINT32_MAX,
    UNLIMITED,
    ConnectionPool,
    DestinationRule,
    H2UpgradePolicy,
    HttpSettings,
    ResolvedPool,
    TcpKeepalive,
    TcpSettings,
    resolve,
)
from envs.istio.rule_file import RuleFile, RuleFileSnapshot, pools_of, rules_for
from envs.istio.validation import RuleError, ValidationError, validate_pool
from envs.istio.yaml_io import dump_rules, parse_rules, read_rules, to_document, write_rules

__all__ = [
    "API_GROUP",
    "API_VERSIONS",
    "CLUSTER_TYPE_URL",
    "DEFAULT_CONNECT_TIMEOUT_MS",
    "DEFAULT_IDLE_TIMEOUT_MS",
    "DEFAULT_MAX_CONCURRENT_STREAMS",
    "HTTP_PROTOCOL_OPTIONS",
    "HTTP_PROTOCOL_OPTIONS_TYPE_URL",
    "INT32_MAX",
    "ISTIO_DEFAULTS",
    "KIND",
    "OS_KEEPALIVE_INTERVAL_MS",
    "OS_KEEPALIVE_PROBES",
    "OS_KEEPALIVE_TIME_MS",
    "TCP_PROXY_TYPE_URL",
    "UINT32_MAX",
    "UNLIMITED",
    "ConnectionPool",
    "DestinationRule",
    "Direction",
    "FieldEffect",
    "H2UpgradePolicy",
    "HttpSettings",
    "ResolvedPool",
    "RuleError",
    "RuleFile",
    "RuleFileSnapshot",
    "TcpKeepalive",
    "TcpSettings",
    "ValidationError",
    "cds_document",
    "cluster_name",
    "dump_rules",
    "effective_fields",
    "envoy_clusters",
    "envoy_duration",
    "field_effects",
    "format_duration_ms",
    "parse_duration_ms",
    "parse_duration_ns",
    "parse_rules",
    "pools_of",
    "port_connection_pool",
    "read_rules",
    "resolve",
    "rules_for",
    "service_port",
    "tcp_proxy_config",
    "to_document",
    "to_envoy_cluster",
    "validate_pool",
    "write_rules",
]
