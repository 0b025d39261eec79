"""The Kubernetes manifests of N SockShop replicas and the sweep (``meshtune cluster render``).

Everything is built from data: the services, ports, port names, images and CPU figures come
from :mod:`envs.sockshop`; the per-service runtime details below (container port, command,
environment, memory, security context, probes) are those of microservices-demo's
``deploy/kubernetes/complete-demo.yaml``. :func:`render` returns, in apply order::

    00-namespaces.yaml          sockshop-0..N-1 (istio-injection=enabled), meshtune, monitoring
    10-prometheus.yaml          Prometheus scraping the sidecars of the SockShop namespaces
    20-rbac.yaml                ServiceAccount meshtune-ray + a Role/RoleBinding per namespace
    sockshop-K/sockshop.yaml    the 14 Deployments/Services, the load runner's ServiceAccount
                                and the ``locustfile`` ConfigMap
    sockshop-K/destinationrules.yaml   one DestinationRule per service
    30-ray.yaml                 the KubeRay RayCluster and the RayJob running the sweep
    base/sockshop.yaml          the SockShop base without a namespace (for kustomize users)
    smoke/sockshop-K-locust.yaml       a one-off load Job per namespace (a smoke test)

The command itself is :mod:`envs.cli.cluster`. See docs/cluster.md for the step-by-step guide.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from envs import istio
from envs.backends.k8s.loadjob import (
    LOAD_RUNNER_SERVICE_ACCOUNT,
    LOCUSTFILE_CONFIGMAP,
    LOCUSTFILE_KEY,
    locust_job_manifest,
)
from envs.backends.k8s.mesh import DEFAULT_NAMESPACE_PREFIX
from envs.backends.k8s.metrics import PROXY_STATS_ANNOTATION, PROXY_STATS_CONFIG
from envs.backends.k8s.rules import DR_GROUP, DR_PLURAL
from envs.sockshop import SERVICES, Service

RAY_NAMESPACE = "meshtune"
MONITORING_NAMESPACE = "meshtune-monitoring"
RAY_SERVICE_ACCOUNT = "meshtune-ray"
BACKEND_ROLE = "meshtune-backend"
PROMETHEUS_IMAGE = "prom/prometheus:v2.55.1"
#: Prometheus scrape interval; the backend's ``metrics_lag_s`` (10 s) covers it plus Envoy's
#: 5 s stats flush.
SCRAPE_INTERVAL_S = 5
RAY_VERSION = "2.60.0"
DEFAULT_RAY_IMAGE = "meshtune-ray:0.1.0"
#: Where the Dockerfile in cluster/image puts the repository inside the Ray image.
IMAGE_WORKDIR = "/home/ray/meshtune"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
#: The load test shipped in the ``locustfile`` ConfigMap by default (cluster/load/locustfile.py).
DEFAULT_LOCUSTFILE = Path(__file__).resolve().parents[3] / "cluster" / "load" / "locustfile.py"

_JAVA_OPTS = ("-Xms64m -Xmx128m -XX:+UseG1GC -Djava.security.egd=file:/dev/urandom "
              "-Dspring.zipkin.enabled=false")
_NONROOT = {"runAsNonRoot": True, "runAsUser": 10001,
            "capabilities": {"drop": ["all"], "add": ["NET_BIND_SERVICE"]},
            "readOnlyRootFilesystem": True}
_DB = {"capabilities": {"drop": ["all"], "add": ["CHOWN", "SETGID", "SETUID"]},
       "readOnlyRootFilesystem": True}


@dataclass(frozen=True)
class Runtime:
    """What complete-demo.yaml gives a service's container beyond :class:`Service`.

    Attributes:
        container_port: the port the process listens on (the Service's targetPort).
        memory_request_mi, memory_limit_mi: memory in MiB, None when unset.
        env: environment variables.
        command, args: the container's command and arguments, None for the image's.
        security: the container's securityContext, None when unset.
        tmp_volume: mount an in-memory emptyDir on /tmp (the root filesystem is read-only).
        health_path: HTTP path of the liveness/readiness probes, None for no probes.
    """

    container_port: int
    memory_request_mi: int | None = None
    memory_limit_mi: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    security: dict[str, Any] | None = None
    tmp_volume: bool = False
    health_path: str | None = None


RUNTIME: dict[str, Runtime] = {
    "carts": Runtime(80, 200, 500, {"JAVA_OPTS": _JAVA_OPTS}, security=_NONROOT,
                     tmp_volume=True),
    "carts-db": Runtime(27017, security=_DB, tmp_volume=True),
    "catalogue": Runtime(80, 100, 200, command=("/app",), args=("-port=80",), security=_NONROOT,
                         health_path="/health"),
    "catalogue-db": Runtime(3306,
                            env={"MYSQL_ROOT_PASSWORD": "fake_password",
                                 "MYSQL_DATABASE": "socksdb"}),
    "front-end": Runtime(8079, 300, 1000, {"SESSION_REDIS": "true"},
                         security={**_NONROOT, "capabilities": {"drop": ["all"]}},
                         health_path="/"),
    "orders": Runtime(80, 300, 500, {"JAVA_OPTS": _JAVA_OPTS}, security=_NONROOT,
                      tmp_volume=True),
    "orders-db": Runtime(27017, security=_DB, tmp_volume=True),
    "payment": Runtime(80, 100, 200, security=_NONROOT, health_path="/health"),
    "queue-master": Runtime(80, 300, 500, {"JAVA_OPTS": _JAVA_OPTS}),
    "rabbitmq": Runtime(5672, security={
        "capabilities": {"drop": ["all"], "add": ["CHOWN", "SETGID", "SETUID", "DAC_OVERRIDE"]},
        "readOnlyRootFilesystem": True}),
    "session-db": Runtime(6379, security=_DB),
    "shipping": Runtime(80, 300, 500, {"ZIPKIN": "zipkin.jaeger.svc.cluster.local",
                                       "JAVA_OPTS": _JAVA_OPTS}, security=_NONROOT,
                        tmp_volume=True),
    "user": Runtime(80, 100, 200, {"mongo": "user-db:27017"}, security=_NONROOT,
                    health_path="/health"),
    "user-db": Runtime(27017, security=_DB, tmp_volume=True),
}


# ---------------------------------------------------------------------------------------------
# SockShop
# ---------------------------------------------------------------------------------------------


def _meta(name: str, namespace: str | None, labels: dict[str, str] | None = None,
          annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    return meta


def _resources(service: Service, runtime: Runtime) -> dict[str, Any]:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if service.cpu_request_m is not None:
        requests["cpu"] = f"{service.cpu_request_m}m"
    if service.cpu_limit_m is not None:
        limits["cpu"] = f"{service.cpu_limit_m}m"
    if runtime.memory_request_mi is not None:
        requests["memory"] = f"{runtime.memory_request_mi}Mi"
    if runtime.memory_limit_mi is not None:
        limits["memory"] = f"{runtime.memory_limit_mi}Mi"
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def deployment(service: Service, namespace: str | None) -> dict[str, Any]:
    """The Deployment of one SockShop service (one replica, sidecar-friendly labels)."""
    runtime = RUNTIME[service.name]
    version = service.image.rsplit(":", 1)[1] if ":" in service.image else "latest"
    labels = {"app": service.name, "name": service.name, "version": version}
    container: dict[str, Any] = {
        "name": service.name,
        "image": service.image,
        "ports": [{"name": service.port_name, "containerPort": runtime.container_port}],
    }
    if runtime.command is not None:
        container["command"] = list(runtime.command)
    if runtime.args is not None:
        container["args"] = list(runtime.args)
    if runtime.env:
        container["env"] = [{"name": k, "value": v} for k, v in runtime.env.items()]
    resources = _resources(service, runtime)
    if resources:
        container["resources"] = resources
    if runtime.security is not None:
        container["securityContext"] = runtime.security
    if runtime.health_path is not None:
        probe = {"httpGet": {"path": runtime.health_path, "port": runtime.container_port}}
        container["livenessProbe"] = {**probe, "initialDelaySeconds": 300, "periodSeconds": 3}
        container["readinessProbe"] = {**probe, "initialDelaySeconds": 30, "periodSeconds": 3}
    pod_spec: dict[str, Any] = {"containers": [container],
                                "nodeSelector": {"kubernetes.io/os": "linux"}}
    if runtime.tmp_volume:
        container["volumeMounts"] = [{"name": "tmp-volume", "mountPath": "/tmp"}]
        pod_spec["volumes"] = [{"name": "tmp-volume", "emptyDir": {"medium": "Memory"}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(service.name, namespace, {"app": service.name, "name": service.name}),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"name": service.name}},
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    PROXY_STATS_ANNOTATION: json.dumps(PROXY_STATS_CONFIG)}},
                "spec": pod_spec,
            },
        },
    }


def service_manifest(service: Service, namespace: str | None) -> dict[str, Any]:
    """The ClusterIP Service with the Istio-named port (``http``, ``tcp-mongo``, ...)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(service.name, namespace, {"app": service.name, "name": service.name}),
        "spec": {
            "type": "ClusterIP",
            "selector": {"name": service.name},
            "ports": [{"name": service.port_name, "port": service.port,
                       "targetPort": RUNTIME[service.name].container_port, "protocol": "TCP"}],
        },
    }


def sockshop_base(namespace: str | None = None) -> list[dict[str, Any]]:
    """The 14 Deployments and Services, in complete-demo.yaml's order."""
    docs: list[dict[str, Any]] = []
    for service in SERVICES:
        docs += [deployment(service, namespace), service_manifest(service, namespace)]
    return docs


def load_runner(namespace: str, locustfile_text: str) -> list[dict[str, Any]]:
    """The load runner's ServiceAccount (no API access) and the locustfile ConfigMap."""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": _meta(LOAD_RUNNER_SERVICE_ACCOUNT, namespace),
         "automountServiceAccountToken": False},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": _meta(LOCUSTFILE_CONFIGMAP, namespace, {"app": "locust"}),
         "data": {LOCUSTFILE_KEY: locustfile_text}},
    ]


def destination_rules(namespace: str,
                      base: Sequence[istio.DestinationRule] = ()) -> list[dict[str, Any]]:
    """One DestinationRule per SockShop service in ``namespace``.

    Without ``base`` every rule carries no traffic policy (Istio's defaults, what the backend
    snapshots and restores); with ``base`` (``--rules FILE``) its rules are used, moved to the
    namespace, and services it lacks get an empty rule.
    """
    named: dict[str, istio.DestinationRule] = {}
    for rule in base:
        if rule.service in named:
            raise ValueError(f"DestinationRules {named[rule.service].name!r} and {rule.name!r} "
                             f"both name service {rule.service!r}")
        named[rule.service] = rule
    unknown = sorted(set(named) - {s.name for s in SERVICES})
    if unknown:
        raise ValueError(f"DestinationRules for services SockShop does not have: {unknown}")
    rules = [replace(named[s.name], namespace=namespace, host=s.name)
             if s.name in named else istio.DestinationRule(s.name, s.name, namespace=namespace)
             for s in SERVICES]
    return [istio.to_document(r) for r in rules]


def namespaces(names: Sequence[str]) -> list[dict[str, Any]]:
    """The SockShop namespaces (sidecar injection on) and the Ray and monitoring ones."""
    docs = [{"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": ns, "labels": {"istio-injection": "enabled",
                                                 "meshtune.io/replica": ns.rsplit("-", 1)[1]}}}
            for ns in names]
    docs += [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
             for ns in (RAY_NAMESPACE, MONITORING_NAMESPACE)]
    return docs


# ---------------------------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------------------------


def prometheus_config(names: Sequence[str]) -> dict[str, Any]:
    """prometheus.yml: scrape the pods of the SockShop namespaces that Istio's injector
    annotated (``prometheus.io/scrape``, port 15020, ``/stats/prometheus``: Istio's merged
    metrics), labelled with their ``namespace`` and ``pod``."""
    return {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                   "evaluation_interval": f"{SCRAPE_INTERVAL_S}s"},
        "scrape_configs": [{
            "job_name": "istio-sidecars",
            "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": list(names)}}],
            "relabel_configs": [
                {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                 "action": "keep", "regex": "true"},
                {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
                 "action": "replace", "regex": "(.+)", "target_label": "__metrics_path__"},
                {"source_labels": ["__address__",
                                   "__meta_kubernetes_pod_annotation_prometheus_io_port"],
                 "action": "replace", "regex": r"([^:]+)(?::\d+)?;(\d+)",
                 "replacement": "$1:$2", "target_label": "__address__"},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            ],
        }],
    }


def prometheus(names: Sequence[str]) -> list[dict[str, Any]]:
    """Prometheus in the monitoring namespace, allowed to discover pods only in ``names``."""
    ns = MONITORING_NAMESPACE
    labels = {"app": "prometheus"}
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta("prometheus", ns)},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("prometheus", ns, labels),
         "data": {"prometheus.yml": yaml.safe_dump(prometheus_config(names), sort_keys=False)}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": _meta("prometheus", ns, labels),
         "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
             "metadata": {"labels": labels},
             "spec": {
                 "serviceAccountName": "prometheus",
                 "containers": [{
                     "name": "prometheus", "image": PROMETHEUS_IMAGE,
                     "args": ["--config.file=/etc/prometheus/prometheus.yml",
                              "--storage.tsdb.path=/prometheus",
                              "--storage.tsdb.retention.time=2d",
                              "--web.listen-address=:9090"],
                     "ports": [{"name": "http-web", "containerPort": 9090}],
                     "readinessProbe": {"httpGet": {"path": "/-/ready", "port": 9090}},
                     "resources": {"requests": {"cpu": "250m", "memory": "512Mi"},
                                   "limits": {"cpu": "1", "memory": "2Gi"}},
                     "volumeMounts": [{"name": "config", "mountPath": "/etc/prometheus"},
                                      {"name": "data", "mountPath": "/prometheus"}],
                 }],
                 "volumes": [{"name": "config", "configMap": {"name": "prometheus"}},
                             {"name": "data", "emptyDir": {}}],
             }}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta("prometheus", ns, labels),
         "spec": {"type": "ClusterIP", "selector": labels,
                  "ports": [{"name": "http-web", "port": 9090, "targetPort": 9090}]}},
    ]
    for target in names:
        docs += [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": _meta("prometheus-discovery", target),
             "rules": [{"apiGroups": [""], "resources": ["pods"],
                        "verbs": ["get", "list", "watch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": _meta("prometheus-discovery", target),
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                         "name": "prometheus-discovery"},
             "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": ns}]},
        ]
    return docs


# ---------------------------------------------------------------------------------------------
# RBAC and Ray
# ---------------------------------------------------------------------------------------------

#: What the k8s backend calls (tests/envs/backends/k8s/test_mesh.py checks it against the
#: backend's traffic): server-side apply needs patch, plus create for a rule that does not exist
#: yet; ``get`` on destinationrules is the one extra, for inspecting rules as the
#: ServiceAccount. No delete.
BACKEND_RULES: list[dict[str, Any]] = [
    {"apiGroups": [DR_GROUP], "resources": [DR_PLURAL],
     "verbs": ["get", "list", "patch", "create"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]},
    {"apiGroups": ["batch"], "resources": ["jobs/status"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]


def rbac(names: Sequence[str]) -> list[dict[str, Any]]:
    """The Ray pods' ServiceAccount and, in each SockShop namespace, a Role granting only what
    the backend needs (:data:`BACKEND_RULES`) bound to it."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": _meta(RAY_SERVICE_ACCOUNT, RAY_NAMESPACE)}]
    for ns in names:
        docs += [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": _meta(BACKEND_ROLE, ns), "rules": BACKEND_RULES},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": _meta(BACKEND_ROLE, ns),
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                         "name": BACKEND_ROLE},
             "subjects": [{"kind": "ServiceAccount", "name": RAY_SERVICE_ACCOUNT,
                           "namespace": RAY_NAMESPACE}]},
        ]
    return docs


def sweep_entrypoint(n_namespaces: int) -> str:
    """The RayJob's command: the sweep on the k8s backend, with at most ``n_namespaces`` envs
    at once (trials × env runners), one per SockShop namespace."""
    runners = 2 if n_namespaces >= 2 else 1
    trials = max(1, n_namespaces // runners)
    return (f"python experiments/pg_sweep.py --backend k8s --max-concurrent-trials {trials} "
            f"--num-env-runners {runners} --output /home/ray/results/pg_sweep")


def _ray_container(name: str, image: str, cpu: str, memory: str,
                   ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name, "image": image,
        "env": [{"name": "RAY_USAGE_STATS_ENABLED", "value": "0"}],
        "resources": {"requests": {"cpu": cpu, "memory": memory},
                      "limits": {"cpu": cpu, "memory": memory}},
    }
    if ports:
        container["ports"] = ports
    return container


def ray(n_namespaces: int, image: str) -> list[dict[str, Any]]:
    """A RayCluster (head + one worker group, both with the backend's ServiceAccount) and a
    RayJob that runs the sweep on it."""
    head_ports = [{"containerPort": 6379, "name": "gcs-server"},
                  {"containerPort": 8265, "name": "dashboard"},
                  {"containerPort": 10001, "name": "client"}]
    cluster = {
        "apiVersion": "ray.io/v1", "kind": "RayCluster",
        "metadata": _meta("meshtune", RAY_NAMESPACE),
        "spec": {
            "rayVersion": RAY_VERSION,
            "authOptions": {"mode": "token"},
            "headGroupSpec": {
                "rayStartParams": {"dashboard-host": "0.0.0.0"},
                "template": {"spec": {
                    "serviceAccountName": RAY_SERVICE_ACCOUNT,
                    "containers": [_ray_container("ray-head", image, "2", "8Gi", head_ports)]}},
            },
            "workerGroupSpecs": [{
                "groupName": "env-runners",
                "replicas": max(1, (n_namespaces + 1) // 2),
                "minReplicas": 1,
                "maxReplicas": max(1, n_namespaces),
                "rayStartParams": {},
                "template": {"spec": {
                    "serviceAccountName": RAY_SERVICE_ACCOUNT,
                    "containers": [_ray_container("ray-worker", image, "2", "6Gi")]}},
            }],
        },
    }
    job = {
        "apiVersion": "ray.io/v1", "kind": "RayJob",
        "metadata": _meta("meshtune-sweep", RAY_NAMESPACE),
        "spec": {
            "entrypoint": sweep_entrypoint(n_namespaces),
            "clusterSelector": {"ray.io/cluster": "meshtune"},
            "runtimeEnvYAML": yaml.safe_dump({"working_dir": IMAGE_WORKDIR,
                                              "env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}},
                                             sort_keys=False),
            "submissionMode": "K8sJobMode",
        },
    }
    return [cluster, job]


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """YAML that writes multi-line strings (the locustfile, prometheus.yml) as ``|`` blocks
    and never uses anchors/aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(docs: Sequence[dict[str, Any]]) -> str:
    """Multi-document YAML, keys in the order written."""
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, explicit_start=True,
                         default_flow_style=False, width=1000, allow_unicode=True)


def render(n_namespaces: int, *, namespace_prefix: str = DEFAULT_NAMESPACE_PREFIX,
           ray_image: str = DEFAULT_RAY_IMAGE, locustfile_text: str,
           base_rules: Sequence[istio.DestinationRule] = ()) -> dict[str, str]:
    """Every manifest file, relative path → YAML text.

    Raises:
        ValueError: ``n_namespaces`` is not a positive int, or a namespace name is not a
            DNS label.
    """
    if not isinstance(n_namespaces, int) or isinstance(n_namespaces, bool) or n_namespaces < 1:
        raise ValueError(f"--namespaces must be a positive integer, got {n_namespaces!r}")
    names = [f"{namespace_prefix}{k}" for k in range(n_namespaces)]
    for ns in names:
        if not _DNS_LABEL.fullmatch(ns):
            raise ValueError(f"namespace {ns!r} is not a DNS-1123 label "
                             f"(check --namespace-prefix {namespace_prefix!r})")
    files = {
        "00-namespaces.yaml": dump(namespaces(names)),
        "10-prometheus.yaml": dump(prometheus(names)),
        "20-rbac.yaml": dump(rbac(names)),
        "30-ray.yaml": dump(ray(n_namespaces, ray_image)),
        "base/sockshop.yaml": dump(sockshop_base(None)),
    }
    for ns in names:
        files[f"{ns}/sockshop.yaml"] = dump(sockshop_base(ns) + load_runner(ns, locustfile_text))
        files[f"{ns}/destinationrules.yaml"] = dump(destination_rules(ns, base_rules))
        files[f"smoke/{ns}-locust.yaml"] = dump([locust_job_manifest(
            ns, users=10, requests=900, seed=0, hatch_rate_per_s=5.0, run_time_limit_s=600,
            generate_name="locust-smoke-")])
    return files


def write_files(files: dict[str, str], out: Path) -> None:
    """Write ``files`` under ``out`` (directories created; existing files replaced)."""
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
