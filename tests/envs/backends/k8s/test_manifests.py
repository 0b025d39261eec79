"""``meshtune cluster render``: every manifest validated offline, no cluster involved.

* built-in kinds against the Kubernetes OpenAPI schemas (``kubernetes-validate``, strict: an
  unknown field is an error), for the oldest and newest Kubernetes versions it ships we target;
* DestinationRules against Istio's CRD schema (``tests/data/istio-destinationrule-v1.schema
  .yaml``, made strict the way the API server's ``fieldValidation=Strict`` is) and against
  istiod's webhook rules (``envs.istio.parse_rules``);
* RayCluster / RayJob against KubeRay's CRD schemas (``tests/data/kuberay-*.schema.yaml``).

The CRD schemas' CEL rules (``x-kubernetes-validations``) are not run by a JSON-Schema validator;
the webhook rules cover what they check for DestinationRules.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from envs import cli, istio
from envs.backends.k8s.loadjob import locust_job_manifest
from envs.backends.k8s.manifests import (
    BACKEND_RULES,
    DEFAULT_LOCUSTFILE,
    render,
    sweep_entrypoint,
)
from envs.backends.k8s.metrics import PROXY_STATS_ANNOTATION
from envs.sockshop import SERVICES, Protocol
from envs.sockshop.slo import ROUTE_SLO_MS

ROOT = Path(__file__).resolve().parents[4]
DATA = Path(__file__).resolve().parents[4] / "tests" / "data"
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
N = 4


def load_schema(name: str) -> dict[str, Any]:
    """A schema data file: ``#`` comment lines, then JSON."""
    text = (DATA / name).read_text()
    return json.loads("".join(ln for ln in text.splitlines(True) if not ln.startswith("#")))


def strict(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` on every object that lists its
    properties and does not preserve unknown fields (the API server prunes or, with strict
    field validation, rejects unknown fields; a plain JSON-Schema validator would accept them)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


DR_SPEC_SCHEMA = strict(load_schema("istio-destinationrule-v1.schema.yaml")["properties"]["spec"])
KUBERAY = {kind: strict(load_schema(f"kuberay-{f}-v1.schema.yaml"))
           for kind, f in (("RayCluster", "raycluster"), ("RayJob", "rayjob"))}


def validate_destination_rule(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "networking.istio.io/v1"
    assert doc["kind"] == "DestinationRule"
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}, doc
    jsonschema.Draft7Validator(DR_SPEC_SCHEMA).validate(doc["spec"])
    istio.parse_rules(yaml.safe_dump(doc), source=doc["metadata"]["name"])  # webhook rules


def validate(doc: dict[str, Any]) -> None:
    """Validate one manifest by kind; an unknown kind fails the test."""
    kind = doc["kind"]
    if kind == "DestinationRule":
        validate_destination_rule(doc)
    elif kind in KUBERAY:
        assert doc["apiVersion"] == "ray.io/v1"
        jsonschema.Draft7Validator(KUBERAY[kind]).validate(doc)
    else:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """``meshtune cluster render --namespaces 4`` run through the real CLI entry point."""
    out = tmp_path_factory.mktemp("cluster")
    assert cli.main(["cluster", "render", "--namespaces", str(N), "--out", str(out)]) == 0
    return {str(p.relative_to(out)): [d for d in yaml.safe_load_all(p.read_text()) if d]
            for p in sorted(out.rglob("*.yaml"))}


def docs_of(rendered: dict[str, list[dict[str, Any]]], kind: str,
            namespace: str | None = None) -> list[dict[str, Any]]:
    return [d for docs in rendered.values() for d in docs if d["kind"] == kind
            and (namespace is None or d["metadata"].get("namespace") == namespace)]


def test_every_rendered_manifest_validates(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds: dict[str, int] = {}
    for path, docs in rendered.items():
        assert docs, f"{path} is empty"
        for doc in docs:
            validate(doc)
            kinds[doc["kind"]] = kinds.get(doc["kind"], 0) + 1
    assert kinds["DestinationRule"] == N * len(SERVICES)
    assert kinds["Deployment"] == (N + 1) * len(SERVICES) + 1  # + the base, + Prometheus
    assert kinds["RayCluster"] == 1 and kinds["RayJob"] == 1
    assert kinds["Job"] == N  # the smoke load Jobs


def test_validators_reject_broken_manifests(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The checks above can fail: typos and wrong types in each kind of manifest are caught."""
    rule = copy.deepcopy(docs_of(rendered, "DestinationRule", "sockshop-0")[0])
    rule["spec"]["trafficPolicy"] = {"connectionPool": {"tcp": {"maxConection": 5}}}
    with pytest.raises(jsonschema.ValidationError, match="maxConection"):
        validate(rule)
    rule["spec"]["trafficPolicy"] = {"connectionPool": {"tcp": {"maxConnections": "5"}}}
    with pytest.raises(jsonschema.ValidationError):
        validate(rule)
    rule["spec"]["trafficPolicy"] = {"connectionPool": {"tcp": {"connectTimeout": "0.5ms"}}}
    with pytest.raises(istio.ValidationError, match="connectTimeout"):  # the webhook's rule
        validate(rule)
    deployment = copy.deepcopy(docs_of(rendered, "Deployment", "sockshop-0")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    ray_job = copy.deepcopy(docs_of(rendered, "RayJob")[0])
    ray_job["spec"]["entrypoint"] = ["python"]
    with pytest.raises(jsonschema.ValidationError):
        validate(ray_job)
    ray_cluster = copy.deepcopy(docs_of(rendered, "RayCluster")[0])
    ray_cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    with pytest.raises(jsonschema.ValidationError, match="imagee"):
        validate(ray_cluster)
    del ray_cluster["spec"]["headGroupSpec"]
    with pytest.raises(jsonschema.ValidationError, match="headGroupSpec"):
        validate(ray_cluster)


def test_namespaces_are_labelled_for_injection(rendered: dict[str, list[dict[str, Any]]]) -> None:
    labelled = {d["metadata"]["name"]: d["metadata"].get("labels", {})
                for d in docs_of(rendered, "Namespace")}
    for k in range(N):
        assert labelled[f"sockshop-{k}"]["istio-injection"] == "enabled"
    assert "istio-injection" not in labelled["meshtune"]  # Ray stays out of the mesh
    assert set(labelled) == {f"sockshop-{k}" for k in range(N)} | {"meshtune",
                                                                  "meshtune-monitoring"}


def test_sockshop_follows_envs_sockshop(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for k in range(N):
        ns = f"sockshop-{k}"
        deployments = {d["metadata"]["name"]: d for d in docs_of(rendered, "Deployment", ns)}
        services = {d["metadata"]["name"]: d for d in docs_of(rendered, "Service", ns)}
        assert list(services) == [s.name for s in SERVICES]
        for s in SERVICES:
            svc = services[s.name]
            assert svc["spec"]["type"] == "ClusterIP" and "nodePort" not in str(svc)
            (port,) = svc["spec"]["ports"]
            assert (port["name"], port["port"]) == (s.port_name, s.port)
            assert port["name"] == "http" if s.protocol is Protocol.HTTP else \
                port["name"].startswith("tcp-")
            pod = deployments[s.name]["spec"]["template"]
            (container,) = pod["spec"]["containers"]
            assert container["image"] == s.image
            assert container["ports"][0]["containerPort"] == port["targetPort"]
            limits = container.get("resources", {}).get("limits", {})
            assert limits.get("cpu") == (f"{s.cpu_limit_m}m" if s.cpu_limit_m else None)
            assert pod["metadata"]["labels"]["app"] == s.name
            stats = json.loads(pod["metadata"]["annotations"][PROXY_STATS_ANNOTATION])
            assert "upstream_rq_retry" in stats["proxyStatsMatcher"]["inclusionSuffixes"]
        assert services["front-end"]["spec"]["ports"][0]["targetPort"] == 8079
        mongo = [deployments[n]["spec"]["template"]["spec"]["containers"][0]["image"]
                 for n in ("carts-db", "orders-db")]
        assert mongo == ["mongo:3.4", "mongo:3.4"]


def test_base_has_no_namespace(rendered: dict[str, list[dict[str, Any]]]) -> None:
    base = rendered["base/sockshop.yaml"]
    assert len(base) == 2 * len(SERVICES)
    assert all("namespace" not in d["metadata"] for d in base)
    assert "sock-shop" not in yaml.safe_dump_all(base)


def test_committed_base_is_up_to_date(rendered: dict[str, list[dict[str, Any]]]) -> None:
    committed = [d for d in yaml.safe_load_all((ROOT / "cluster/base/sockshop.yaml").read_text())
                 if d]
    assert committed == rendered["base/sockshop.yaml"], (
        "cluster/base/sockshop.yaml is stale: run `meshtune cluster render --namespaces 1 "
        "--out /tmp/r && cp /tmp/r/base/sockshop.yaml cluster/base/`")


def test_each_namespace_has_its_destination_rules(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    for k in range(N):
        rules = istio.parse_rules(yaml.safe_dump_all(
            rendered[f"sockshop-{k}/destinationrules.yaml"]))
        assert [r.service for r in rules] == [s.name for s in SERVICES]
        assert all(r.namespace == f"sockshop-{k}" and r.connection_pool is None for r in rules)


def test_rules_file_seeds_every_namespace(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(istio.dump_rules([istio.DestinationRule(
        "carts", "carts.sock-shop.svc.cluster.local",
        istio.ConnectionPool(tcp=istio.TcpSettings(max_connections=7)), namespace="sock-shop")]))
    out = tmp_path / "out"
    assert cli.main(["cluster", "render", "--namespaces", "2", "--out", str(out),
                     "--rules", str(rules)]) == 0
    docs = list(yaml.safe_load_all((out / "sockshop-1/destinationrules.yaml").read_text()))
    carts = next(d for d in docs if d["metadata"]["name"] == "carts")
    assert carts["metadata"]["namespace"] == "sockshop-1" and carts["spec"]["host"] == "carts"
    assert carts["spec"]["trafficPolicy"]["connectionPool"] == {"tcp": {"maxConnections": 7}}
    for d in docs:
        validate_destination_rule(d)


def test_prometheus_scrapes_the_sidecars(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (config_map,) = [d for d in docs_of(rendered, "ConfigMap", "meshtune-monitoring")]
    config = yaml.safe_load(config_map["data"]["prometheus.yml"])
    (job,) = config["scrape_configs"]
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod"
    assert sd["namespaces"]["names"] == [f"sockshop-{k}" for k in range(N)]
    relabel = job["relabel_configs"]
    assert relabel[0] == {"source_labels": [
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "action": "keep",
        "regex": "true"}
    targets = {r["target_label"] for r in relabel if "target_label" in r}
    assert {"__metrics_path__", "__address__", "namespace", "pod"} <= targets
    # it may discover pods in the SockShop namespaces, nothing else
    roles = docs_of(rendered, "Role")
    discovery = [r for r in roles if r["metadata"]["name"] == "prometheus-discovery"]
    assert sorted(r["metadata"]["namespace"] for r in discovery) == [
        f"sockshop-{k}" for k in range(N)]
    assert all(r["rules"] == [{"apiGroups": [""], "resources": ["pods"],
                               "verbs": ["get", "list", "watch"]}] for r in discovery)
    assert not docs_of(rendered, "ClusterRole")


def test_backend_role_in_every_namespace(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for k in range(N):
        ns = f"sockshop-{k}"
        (role,) = [r for r in docs_of(rendered, "Role", ns)
                   if r["metadata"]["name"] == "meshtune-backend"]
        assert role["rules"] == BACKEND_RULES
        (binding,) = [b for b in docs_of(rendered, "RoleBinding", ns)
                      if b["metadata"]["name"] == "meshtune-backend"]
        assert binding["roleRef"]["name"] == "meshtune-backend"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "meshtune-ray",
                                        "namespace": "meshtune"}]
    verbs = {v for r in BACKEND_RULES for v in r["verbs"]}
    assert verbs == {"get", "list", "patch", "create"}  # never delete, update or watch


def test_load_runner_ships_the_locustfile(rendered: dict[str, list[dict[str, Any]]]) -> None:
    text = DEFAULT_LOCUSTFILE.read_text()
    compile(text, "locustfile.py", "exec")
    for k in range(N):
        (cm,) = [d for d in docs_of(rendered, "ConfigMap", f"sockshop-{k}")
                 if d["metadata"]["name"] == "locustfile"]
        assert cm["data"]["locustfile.py"] == text
        (sa,) = [d for d in docs_of(rendered, "ServiceAccount", f"sockshop-{k}")]
        assert sa["metadata"]["name"] == "load-runner"
        assert sa["automountServiceAccountToken"] is False


def test_backend_load_job_validates() -> None:
    job = locust_job_manifest("sockshop-3", users=20, requests=1600, seed=4,
                              hatch_rate_per_s=2.5)
    job["metadata"]["name"] = job["metadata"].pop("generateName") + "x"
    validate(job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("-r") + 1] == "2.5"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert "MESHTUNE_RATE_RPS" not in env  # closed loop
    assert json.loads(env["MESHTUNE_SLO_MS"]) == ROUTE_SLO_MS
    with pytest.raises(ValueError, match="positive"):
        locust_job_manifest("sockshop-3", users=0, requests=10, seed=0, hatch_rate_per_s=5.0)
    with pytest.raises(ValueError, match="closed load has no arrival rate"):
        locust_job_manifest("sockshop-3", users=2, requests=10, seed=0, hatch_rate_per_s=5.0,
                            arrival_rate_rps=6.0)
    with pytest.raises(ValueError, match="mode must be 'closed' or 'open'"):
        locust_job_manifest("sockshop-3", users=2, requests=10, seed=0, hatch_rate_per_s=5.0,
                            mode="burst")


def test_open_load_job_carries_the_rate() -> None:
    job = locust_job_manifest("sockshop-3", users=0, requests=1600, seed=4, hatch_rate_per_s=5.0,
                              mode="open", arrival_rate_rps=60)
    job["metadata"]["name"] = job["metadata"].pop("generateName") + "x"
    validate(job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("-u") + 1] == "1"  # the one user that drives the arrivals
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MESHTUNE_RATE_RPS"] == "60.0"
    assert env["MESHTUNE_TOTAL_REQUESTS"] == "1600" and env["MESHTUNE_SEED"] == "4"
    assert json.loads(env["MESHTUNE_SLO_MS"]) == ROUTE_SLO_MS
    for bad in (0, -1.0, float("nan"), float("inf"), None, True, "60"):
        with pytest.raises(ValueError, match=r"arrival_rate_rps .* must be a positive number"):
            locust_job_manifest("sockshop-3", users=0, requests=10, seed=0,
                                hatch_rate_per_s=5.0, mode="open", arrival_rate_rps=bad)


def test_ray_job_runs_the_sweep_on_the_k8s_backend(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    (job,) = docs_of(rendered, "RayJob")
    (cluster,) = docs_of(rendered, "RayCluster")
    assert job["spec"]["entrypoint"].startswith("python experiments/pg_sweep.py --backend k8s ")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    pods = [cluster["spec"]["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in cluster["spec"]["workerGroupSpecs"]]
    assert all(p["serviceAccountName"] == "meshtune-ray" for p in pods)
    assert all(c["image"].startswith("rayproject/ray") is False
               for p in pods for c in p["containers"])  # the image with meshtune installed
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == "/home/ray/meshtune"


@pytest.mark.parametrize(("namespaces", "trials", "runners"), [(1, 1, 1), (4, 2, 2), (5, 2, 2)])
def test_sweep_never_runs_more_envs_than_namespaces(namespaces: int, trials: int,
                                                    runners: int) -> None:
    from rl.sweep import sweep_settings

    words = sweep_entrypoint(namespaces).split()
    assert int(words[words.index("--max-concurrent-trials") + 1]) == trials
    assert int(words[words.index("--num-env-runners") + 1]) == runners
    assert "--envs-per-runner" not in words
    # what pg_sweep makes of those flags: one env per runner on k8s (each leases a namespace)
    envs = sweep_settings(backend="k8s", num_env_runners=runners).envs_per_runner
    assert trials * runners * envs <= namespaces


def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cluster", "render", "--namespaces", "0", "--out", str(tmp_path)]) == 2
    assert "--namespaces must be a positive integer" in capsys.readouterr().err
    assert cli.main(["cluster", "render", "--namespaces", "2", "--out", str(tmp_path),
                     "--namespace-prefix", "Sock_"]) == 2
    assert "not a DNS-1123 label" in capsys.readouterr().err
    assert cli.main(["cluster", "render", "--namespaces", "2", "--out", str(tmp_path),
                     "--locustfile", str(tmp_path / "missing.py")]) == 2
    assert "cannot read the locustfile" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="positive integer"):
        render(-1, locustfile_text="")
