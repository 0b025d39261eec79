"""The ``k8s`` backend: one SockShop namespace (``sockshop-K``) on a real Kubernetes cluster.

What it does, and through which API (no shell, no ``kubectl``):

* **DestinationRules** through the Kubernetes Python client: every write is a server-side apply
  (``PATCH`` with ``Content-Type: application/apply-patch+yaml``, ``fieldManager=meshtune``,
  ``force=true``) on ``/apis/networking.istio.io/v1/namespaces/{ns}/destinationrules/{name}``.
  When the backend opens it lists the namespace's DestinationRules (the *snapshot*); ``close``
  — also from ``atexit`` and from ``with K8sMesh(...)`` on an exception — applies the snapshot
  back. RBAC grants no ``delete``: a rule meshtune created and must take away is applied
  without ``trafficPolicy.connectionPool`` (Istio's defaults), which for connection pools is
  the same as no rule. After each apply the answer is checked: if another field manager still
  owns connection-pool fields meshtune left out, the rule is not what was asked and the apply
  fails (re-apply the base with ``--server-side --field-manager=meshtune``).
* **Load** through Locust as an in-cluster ``batch/v1`` Job the backend creates in the
  namespace and waits for (:func:`~envs.backends.k8s.loadjob.locust_job_manifest`; the
  locustfile is the ConfigMap ``locustfile`` that ``meshtune cluster render`` writes). The Job's
  pod has a sidecar, like the ingress gateway it stands in for, so the front-end's rule acts on
  its calls and every hop is reported by a source sidecar. Both load shapes of
  :class:`~envs.backends.base.LoadSpec` run, as on the local backend: closed loop (Locust
  users) and open loop (sessions arriving as a seeded Poisson process at ``rate / 9`` per
  second, a session whose catalogue fails abandoning its other 8 requests). Faults are not
  injected here: a load with faults is refused with a :class:`BackendError`. The locustfile
  prints one ``MESHTUNE_LOCUST_REPORT {json}`` line (rows with the requests within their SLO,
  abandoned requests, mean and p99 latency); the backend reads it from the pod's log.
* **Metrics** through ``prometheus-api-client`` on Istio's standard metrics, scoped to the
  namespace, over the load's own time window shifted by ``metrics_lag_s`` (scrape interval +
  Envoy's stats flush): request counts and failures with ``reporter="source"`` (client-side
  503s never reach the destination's proxy), UO / UF from ``response_flags``, p99 with
  ``histogram_quantile`` over ``istio_request_duration_milliseconds_bucket``. TCP services
  (MongoDB, MySQL, Redis, AMQP) count connections (``istio_tcp_connections_opened_total``) and,
  as in the simulator, have no p99 (Istio has no TCP request duration). Retries come from
  Envoy's ``envoy_cluster_upstream_rq_retry``, exported because the rendered pods carry a
  ``proxyStatsMatcher`` annotation. An empty or failed query is an error.
* **Health**: ``GET {ingress_url}/catalogue`` must answer 200.

Every call is retried with exponential backoff on 409, 429 (``Retry-After`` honoured), 5xx,
an unreachable server and an empty Prometheus answer; then a :class:`BackendError` names what
failed. Other errors (400, 403, 404, 422) fail at once.

One module per job:

* :mod:`.retry` — :class:`RetryPolicy`, transient / permanent error classification;
* :mod:`.rules` — DestinationRule apply bodies, cleaned snapshots, rules without a pool;
* :mod:`.loadjob` — the Locust Job manifest, its report line, endpoint statistics;
* :mod:`.metrics` — Istio's PromQL queries and their parsing into service statistics;
* :mod:`.mesh` — :class:`K8sMesh`, the backend, and the Kubernetes API client;
* :mod:`.manifests` — the manifests ``meshtune cluster render`` writes (SockShop namespaces,
  Prometheus, RBAC, KubeRay).

The kubernetes client and prometheus-api-client are imported only when a K8sMesh is built, so
the simulator path never loads them.
"""

from __future__ import annotations

from envs.backends.k8s.mesh import K8sMesh

__all__ = ["K8sMesh"]
