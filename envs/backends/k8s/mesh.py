"""``K8sMesh``: the k8s backend, one SockShop namespace (``sockshop-K``) of a real cluster.

It ties the package's parts together (see :mod:`envs.backends.k8s` for what it does and
through which API): DestinationRules are server-side applied (:mod:`.rules`), snapshotted when
the backend opens and applied back on ``close``; the load runs as a Locust Job
(:mod:`.loadjob`); the service statistics come from Prometheus (:mod:`.metrics`); every call is
retried (:mod:`.retry`). :func:`_kube_api_client` builds the Kubernetes API client.

The kubernetes client and prometheus-api-client are imported only when a K8sMesh is built, so
the simulator path never loads them.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import math
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from envs import istio
from envs.backends.base import BackendError, LoadSpec
from envs.backends.k8s.loadjob import (
    JOB_SLACK_S,
    LOCUST_CONTAINER,
    LOCUST_IMAGE,
    endpoint_stats,
    locust_job_manifest,
    parse_locust_report,
    run_figures,
)
from envs.backends.k8s.metrics import istio_queries, service_stats
from envs.backends.k8s.retry import (
    RetryPolicy,
    TransientError,
    classify_kube,
    classify_prometheus,
)
from envs.backends.k8s.rules import (
    APPLY_PATCH_CONTENT_TYPE,
    DR_GROUP,
    DR_PLURAL,
    DR_VERSION,
    FIELD_MANAGER,
    clean_document,
    connection_pool_of,
    rule_documents,
    without_connection_pool,
)
from envs.backends.report import LoadReport, ServiceStats

T = TypeVar("T")

#: The SockShop namespaces are ``{prefix}K`` (here and in ``meshtune cluster render``).
DEFAULT_NAMESPACE_PREFIX = "sockshop-"
#: Where ``meshtune cluster render`` puts Prometheus (namespace ``meshtune-monitoring``).
DEFAULT_PROMETHEUS_URL = "http://prometheus.meshtune-monitoring.svc:9090"
#: The front-end inside the cluster; ``{namespace}`` is filled in.
DEFAULT_INGRESS_URL = "http://front-end.{namespace}.svc.cluster.local"


class K8sMesh:
    """One SockShop replica: the namespace ``{namespace_prefix}{replica}`` of a cluster.

    Runs closed- and open-loop loads (:meth:`run_load`) as a Locust Job; faults are refused.

    Args:
        replica: the replica index K (namespace ``sockshop-K``), leased by the env.
        namespace_prefix: prefix of the SockShop namespaces.
        prometheus_url: Prometheus that scrapes the namespace's sidecars.
        ingress_url: base URL of the front-end for the health check; ``{namespace}`` is filled
            in. Default: the front-end Service inside the cluster.
        kube_api_url: the API server's URL without credentials (``kubectl proxy``, tests);
            default: the in-cluster ServiceAccount, else the local kubeconfig.
        locust_image: image of the load Job.
        settle_s: wait after an apply for istiod to push the change to the sidecars.
        metrics_lag_s: how much later than the load Prometheus sees it (scrape interval +
            Envoy's stats flush); the query window is shifted by it.
        load_timeout_s: the longest a load may run before it is abandoned.
        poll_interval_s: how often the Job's status is read.
        request_timeout_s: timeout of each HTTP call.
        retry: the backoff policy of every API and Prometheus call.
        sleep, clock: injectable for tests (seconds; ``clock`` is Unix time).
    """

    name = "k8s"

    def __init__(self, replica: int, namespace_prefix: str = DEFAULT_NAMESPACE_PREFIX,
                 prometheus_url: str = DEFAULT_PROMETHEUS_URL, ingress_url: str | None = None,
                 kube_api_url: str | None = None, locust_image: str = LOCUST_IMAGE,
                 settle_s: float = 3.0, metrics_lag_s: float = 10.0,
                 load_timeout_s: float = 900.0, poll_interval_s: float = 2.0,
                 request_timeout_s: float = 10.0, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time):
        if not isinstance(replica, int) or isinstance(replica, bool) or replica < 0:
            raise ValueError(f"replica must be a non-negative int, got {replica!r}")
        for label, value in (("settle_s", settle_s), ("metrics_lag_s", metrics_lag_s)):
            if value < 0:
                raise ValueError(f"{label} must be non-negative, got {value}")
        for label, value in (("load_timeout_s", load_timeout_s),
                             ("poll_interval_s", poll_interval_s),
                             ("request_timeout_s", request_timeout_s)):
            if value <= 0:
                raise ValueError(f"{label} must be positive, got {value}")
        self.replica = replica
        self.namespace = f"{namespace_prefix}{replica}"
        self.ingress_url = (ingress_url or DEFAULT_INGRESS_URL).format(
            namespace=self.namespace).rstrip("/")
        self.prometheus_url = prometheus_url.rstrip("/")
        self.locust_image = locust_image
        self.settle_s, self.metrics_lag_s = settle_s, metrics_lag_s
        self.load_timeout_s, self.poll_interval_s = load_timeout_s, poll_interval_s
        self.request_timeout_s = request_timeout_s
        self.retry = retry or RetryPolicy()
        self._sleep, self._clock = sleep, clock
        self._closed = False
        self._api_client = _kube_api_client(kube_api_url)
        from kubernetes import client
        from prometheus_api_client import PrometheusConnect

        self._custom = client.CustomObjectsApi(self._api_client)
        self._batch = client.BatchV1Api(self._api_client)
        self._core = client.CoreV1Api(self._api_client)
        self._prometheus = PrometheusConnect(url=self.prometheus_url, disable_ssl=True,
                                             retry=False, timeout=request_timeout_s)
        #: name -> the document as found when the backend opened (cleaned for re-apply).
        try:
            self.snapshot: dict[str, dict[str, Any]] = self._list_rules()
        except BackendError:
            self._release_clients()
            raise
        #: name -> the document meshtune believes is in the cluster now.
        self._current: dict[str, dict[str, Any]] = copy.deepcopy(self.snapshot)
        atexit.register(self._close_at_exit)

    # -- context manager / atexit ------------------------------------------------------------

    def __enter__(self) -> K8sMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _close_at_exit(self) -> None:
        """Restore at interpreter exit; a failure is reported on stderr (nothing can raise)."""
        try:
            self.close()
        except BackendError as exc:
            sys.stderr.write(f"meshtune k8s backend: restoring {self.namespace} at exit "
                             f"failed: {exc}\n")

    # -- DestinationRules --------------------------------------------------------------------

    def _kube(self, what: str, call: Callable[[], T]) -> T:
        return self.retry.run(what, call, classify_kube, self._sleep)

    def _list_rules(self) -> dict[str, dict[str, Any]]:
        """The namespace's DestinationRules, cleaned, by name."""
        answer = self._kube(
            f"listing DestinationRules in {self.namespace}",
            lambda: self._custom.list_namespaced_custom_object(
                DR_GROUP, DR_VERSION, self.namespace, DR_PLURAL,
                _request_timeout=self.request_timeout_s))
        items = answer.get("items") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise BackendError(f"listing DestinationRules in {self.namespace}: the answer has "
                               f"no items list: {str(answer)[:200]}")
        return {d["metadata"]["name"]: clean_document(d) for d in items}

    def _server_side_apply(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """One server-side apply; returns the object as the server stored it."""
        name = doc["metadata"]["name"]
        answer = self._kube(
            f"server-side apply of DestinationRule {self.namespace}/{name}",
            lambda: self._custom.patch_namespaced_custom_object(
                DR_GROUP, DR_VERSION, self.namespace, DR_PLURAL, name, dict(doc),
                field_manager=FIELD_MANAGER, force=True,
                _content_type=APPLY_PATCH_CONTENT_TYPE,
                _request_timeout=self.request_timeout_s))
        if not isinstance(answer, dict):
            raise BackendError(f"server-side apply of {self.namespace}/{name}: unexpected "
                               f"answer {str(answer)[:200]}")
        sent, stored = connection_pool_of(doc), connection_pool_of(answer)
        if sent != stored:
            managers = sorted({m.get("manager", "?") for m in
                               (answer.get("metadata") or {}).get("managedFields") or []}
                              - {FIELD_MANAGER})
            raise BackendError(
                f"DestinationRule {self.namespace}/{name}: after the apply its connectionPool "
                f"is {stored!r}, not the {sent!r} meshtune sent; other field managers "
                f"{managers} own fields of it. Re-apply the rendered rules with "
                "`kubectl apply --server-side --field-manager=meshtune --force-conflicts`.")
        return answer

    def _apply_documents(self, desired: Mapping[str, dict[str, Any]]) -> None:
        """Apply every document that differs from the current one; on a failure, apply back
        what was changed and raise."""
        changed: list[str] = []
        try:
            for name in sorted(desired):
                if desired[name] == self._current.get(name):
                    continue
                self._server_side_apply(desired[name])
                changed.append(name)
        except BackendError as exc:
            undo_errors = []
            for name in changed:
                previous = self._current.get(name) or without_connection_pool(desired[name])
                try:
                    self._server_side_apply(previous)
                except BackendError as undo:
                    undo_errors.append(str(undo))
            note = (f"; rolled back {len(changed)} rule(s)" if not undo_errors else
                    f"; rolling back failed too: {'; '.join(undo_errors)}")
            raise BackendError(f"{exc}{note}") from exc
        self._current.update(copy.deepcopy(dict(desired)))

    def apply(self, rules: Sequence[istio.DestinationRule]) -> None:
        """Make ``rules`` the namespace's connection pools (see :class:`Backend`).

        Rules of the namespace that ``rules`` does not name keep their other fields and lose
        their connection pool. Waits ``settle_s`` for istiod to push the change.

        Raises:
            ValueError (istio.ValidationError): a rule istiod would reject; nothing is sent.
            BackendError: the API failed; what was changed is applied back first.
        """
        self._check_open()
        docs = {d["metadata"]["name"]: d for d in rule_documents(rules, self.namespace)}
        desired: dict[str, dict[str, Any]] = {}
        for name in set(self._current) | set(docs):
            desired[name] = docs.get(name) or without_connection_pool(self._current[name])
        self._apply_documents(desired)
        self._sleep(self.settle_s)

    def current_documents(self) -> dict[str, dict[str, Any]]:
        """What meshtune believes the namespace's DestinationRules are now, by name."""
        return copy.deepcopy(self._current)

    # -- health ------------------------------------------------------------------------------

    def healthy(self) -> bool:
        """``GET {ingress_url}/catalogue`` answers 200 within ``request_timeout_s``."""
        self._check_open()
        try:
            with urllib.request.urlopen(f"{self.ingress_url}/catalogue",
                                        timeout=self.request_timeout_s) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    # -- load --------------------------------------------------------------------------------

    def run_load(self, load: LoadSpec, seed: int) -> LoadReport:
        """Run the reference load test as a Job in the namespace, then read Prometheus.

        Closed loop: ``load.users`` users; open loop: sessions arriving at
        ``load.arrival_rate_rps / 9`` per second, a session whose catalogue fails abandoning its
        other 8 requests (``num_abandoned``), as on the local backend. Either way until
        ``load.requests`` requests, with every endpoint's requests within their SLO counted.

        Raises:
            BackendError: faults (not supported here), the Job failed or timed out, its report
                is missing, of the other mode or lists errors, an open load stopped before
                ``load.requests``, or a metric query failed.
        """
        self._check_open()
        if load.faults:
            raise BackendError(f"the k8s backend cannot inject faults, got {list(load.faults)}")
        body = locust_job_manifest(
            self.namespace, load.users, load.requests, seed, load.hatch_rate_per_s,
            mode=load.mode,
            arrival_rate_rps=load.arrival_rate_rps if load.mode == "open" else None,
            image=self.locust_image, run_time_limit_s=math.ceil(self.load_timeout_s))
        created = self._kube(f"creating the Locust Job in {self.namespace}",
                             lambda: self._batch.create_namespaced_job(
                                 self.namespace, body,
                                 _headers={"Content-Type": "application/json"},
                                 _request_timeout=self.request_timeout_s))
        job = created.metadata.name
        self._wait_for_job(job)
        report = parse_locust_report(self._job_log(job))
        endpoints, duration_s = endpoint_stats(report)
        figures = run_figures(report, load.mode, load.requests)
        start, end = float(report["start_time"]), float(report["end_time"])
        services, eval_time = self._query_services(start, end)
        return LoadReport(endpoints=endpoints, services=services, duration_s=duration_s,
                          users=load.users if load.mode == "closed" else 0, backend=self.name,
                          extra={"namespace": self.namespace, "job": job,
                                 "prometheus_eval_time": eval_time, **figures["extra"]},
                          num_abandoned=figures["num_abandoned"],
                          latency_mean_ms=figures["latency_mean_ms"],
                          latency_p99_ms=figures["latency_p99_ms"])

    def _wait_for_job(self, job: str) -> None:
        limit_s = self.load_timeout_s + JOB_SLACK_S
        deadline = self._clock() + limit_s
        while True:
            status = self._kube(f"reading Job {self.namespace}/{job}",
                                lambda: self._batch.read_namespaced_job_status(
                                    job, self.namespace,
                                    _request_timeout=self.request_timeout_s)).status
            if status is not None and (status.succeeded or 0) >= 1:
                return
            if status is not None and (status.failed or 0) >= 1:
                raise BackendError(f"Locust Job {self.namespace}/{job} failed; its log:\n"
                                   f"{self._job_log(job)[-2000:]}")
            if self._clock() > deadline:
                raise BackendError(f"Locust Job {self.namespace}/{job} did not finish within "
                                   f"{limit_s:.0f} s (load_timeout_s + {JOB_SLACK_S} s for "
                                   "scheduling, image pull and the sidecar's drain)")
            self._sleep(self.poll_interval_s)

    def _job_log(self, job: str) -> str:
        pods = self._kube(f"listing the pods of Job {self.namespace}/{job}",
                          lambda: self._core.list_namespaced_pod(
                              self.namespace, label_selector=f"job-name={job}",
                              _request_timeout=self.request_timeout_s)).items
        if not pods:
            raise BackendError(f"Job {self.namespace}/{job} has no pod")
        pod = pods[-1].metadata.name
        return self._kube(f"reading the log of pod {self.namespace}/{pod}",
                          lambda: self._core.read_namespaced_pod_log(
                              pod, self.namespace, container=LOCUST_CONTAINER,
                              _request_timeout=self.request_timeout_s))

    # -- metrics -----------------------------------------------------------------------------

    def _query(self, name: str, query: str, eval_time: float) -> list[dict[str, Any]]:
        def call() -> list[dict[str, Any]]:
            result = self._prometheus.custom_query(query, params={"time": f"{eval_time:.3f}"})
            if not result:
                raise TransientError(f"no series for {query}")
            return result

        return self.retry.run(f"Prometheus query {name} for {self.namespace}", call,
                              classify_prometheus, self._sleep)

    def _query_services(self, start: float, end: float) -> tuple[dict[str, ServiceStats], float]:
        """Service stats over [start, end] as Prometheus sees it ``metrics_lag_s`` later."""
        eval_time = end + self.metrics_lag_s
        wait = eval_time - self._clock()
        if wait > 0:
            self._sleep(wait)
        window_s = max(1, math.ceil(end - start))
        queries = istio_queries(self.namespace, window_s)
        results = {name: self._query(name, q, eval_time) for name, q in queries.items()}
        return service_stats(results, self.namespace, float(window_s)), eval_time

    # -- close -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(f"K8sMesh for {self.namespace} is closed")

    def close(self) -> None:
        """Apply the snapshot back (rules meshtune created lose their connection pool) and
        release the clients. Idempotent.

        Raises:
            BackendError: the restore failed; the error names the rules left changed.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._close_at_exit)
        try:
            restore = {name: self.snapshot.get(name) or without_connection_pool(doc)
                       for name, doc in self._current.items()}
            self._apply_documents(restore)
        finally:
            self._release_clients()

    def _release_clients(self) -> None:
        """Close the HTTP sessions of the Kubernetes and Prometheus clients."""
        with contextlib.suppress(Exception):  # closing pools cannot lose data
            self._prometheus.close()
        with contextlib.suppress(Exception):
            self._api_client.close()


def _kube_api_client(kube_api_url: str | None) -> Any:
    """An ApiClient with client-side retries off (the backend retries itself)."""
    from kubernetes import client, config

    if kube_api_url is not None:
        configuration = client.Configuration(host=kube_api_url.rstrip("/"))
    else:
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            try:
                config.load_kube_config(client_configuration=configuration)
            except (config.ConfigException, OSError) as exc:
                raise BackendError("no Kubernetes credentials: not in a pod with a "
                                   f"ServiceAccount and no usable kubeconfig ({exc})") from exc
    configuration.retries = False
    return client.ApiClient(configuration)
