"""The load of the k8s backend: Locust as an in-cluster ``batch/v1`` Job, and its report.

:func:`locust_job_manifest` is the Job that runs the reference load test once against the
front-end of a SockShop namespace (the locustfile is the ConfigMap ``locustfile`` that
``meshtune cluster render`` writes). The Job's pod has a sidecar, like the ingress gateway it
stands in for, so the front-end's rule acts on its calls and every hop is reported by a source
sidecar. The locustfile prints one ``MESHTUNE_LOCUST_REPORT {json}`` line;
:func:`parse_locust_report` reads it from the pod's log and :func:`endpoint_stats` turns its rows
into :class:`~envs.backends.report.EndpointStats`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from envs.backends.base import BackendError
from envs.backends.k8s.metrics import PROXY_STATS_ANNOTATION, PROXY_STATS_CONFIG
from envs.backends.report import EndpointStats
from envs.sockshop import ENTRY_SERVICE

LOCUST_IMAGE = "locustio/locust:2.47.0"
LOCUSTFILE_CONFIGMAP = "locustfile"
LOCUSTFILE_KEY = "locustfile.py"
LOAD_RUNNER_SERVICE_ACCOUNT = "load-runner"
LOCUST_CONTAINER = "locust"
LOAD_JOB_LABEL = "meshtune.io/load"
#: Time a load Job may take beyond ``load_timeout_s``: scheduling, image pull, sidecar drain.
JOB_SLACK_S = 180
#: The marker of the one line of the Locust pod's log that carries the report.
REPORT_MARKER = "MESHTUNE_LOCUST_REPORT "


def locust_job_manifest(namespace: str, users: int, requests: int, seed: int,
                        hatch_rate_per_s: float, *, image: str = LOCUST_IMAGE,
                        run_time_limit_s: int = 900, sidecar_drain_s: int = 15,
                        generate_name: str = "locust-",
                        name: str | None = None) -> dict[str, Any]:
    """The ``batch/v1`` Job that runs the reference load test once against the front-end.

    ``users`` concurrent users, ``requests`` requests in total (the locustfile stops the runner
    there), item choices seeded with ``seed``. Locust's own ``--run-time`` and the Job's
    ``activeDeadlineSeconds`` bound a run that never reaches ``requests``. The pod carries the
    Istio sidecar; the proxy is up before Locust starts (``holdApplicationUntilProxyStarts``) and
    the locustfile asks it to exit at the end so the Job completes — ``sidecar_drain_s`` after
    the load, so that Prometheus scrapes the sidecar's final counters first.
    """
    if users <= 0 or requests <= 0 or hatch_rate_per_s <= 0 or run_time_limit_s <= 0:
        raise ValueError("users, requests, hatch_rate_per_s and run_time_limit_s must be "
                         f"positive, got {users}, {requests}, {hatch_rate_per_s}, "
                         f"{run_time_limit_s}")
    proxy_config = {"holdApplicationUntilProxyStarts": True, **PROXY_STATS_CONFIG}
    meta: dict[str, Any] = {"namespace": namespace,
                            "labels": {"app": "locust", LOAD_JOB_LABEL: "true"}}
    if name is not None:
        meta["name"] = name
    else:
        meta["generateName"] = generate_name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": run_time_limit_s + sidecar_drain_s + 120,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {
                    "labels": {"app": "locust", LOAD_JOB_LABEL: "true"},
                    "annotations": {PROXY_STATS_ANNOTATION: json.dumps(proxy_config)},
                },
                "spec": {
                    "serviceAccountName": LOAD_RUNNER_SERVICE_ACCOUNT,
                    "automountServiceAccountToken": False,
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": LOCUST_CONTAINER,
                        "image": image,
                        "args": [
                            "-f", f"/mnt/locust/{LOCUSTFILE_KEY}", "--headless",
                            "--host", f"http://{ENTRY_SERVICE}.{namespace}.svc.cluster.local",
                            "-u", str(users), "-r", _number(hatch_rate_per_s),
                            "--run-time", f"{run_time_limit_s}s",
                            "--exit-code-on-error", "0", "--only-summary",
                        ],
                        "env": [
                            {"name": "MESHTUNE_TOTAL_REQUESTS", "value": str(requests)},
                            {"name": "MESHTUNE_SEED", "value": str(seed)},
                            {"name": "MESHTUNE_QUIT_SIDECAR", "value": "1"},
                            {"name": "MESHTUNE_DRAIN_S", "value": str(sidecar_drain_s)},
                        ],
                        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"},
                                      "limits": {"cpu": "1", "memory": "512Mi"}},
                        "volumeMounts": [{"name": "locustfile", "mountPath": "/mnt/locust",
                                          "readOnly": True}],
                    }],
                    "volumes": [{"name": "locustfile",
                                 "configMap": {"name": LOCUSTFILE_CONFIGMAP}}],
                },
            },
        },
    }


def _number(value: float) -> str:
    """A number as a short command-line string (``5`` rather than ``5.0``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def parse_locust_report(log: str) -> dict[str, Any]:
    """The JSON report of the last ``MESHTUNE_LOCUST_REPORT`` line of a Locust pod's log.

    Raises:
        BackendError: no such line, or it is not the expected JSON.
    """
    lines = [ln for ln in log.splitlines() if ln.startswith(REPORT_MARKER)]
    if not lines:
        tail = "\n".join(log.splitlines()[-20:])
        raise BackendError(f"the Locust log has no {REPORT_MARKER.strip()} line; its end:\n"
                           f"{tail}")
    try:
        report = json.loads(lines[-1][len(REPORT_MARKER):])
        float(report["start_time"]), float(report["end_time"])
        list(report["endpoints"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BackendError(f"malformed Locust report line: {lines[-1][:200]!r}") from exc
    return report


def endpoint_stats(report: Mapping[str, Any]) -> tuple[dict[str, EndpointStats], float]:
    """Locust's rows as :class:`EndpointStats` (keyed ``METHOD name``) and the run's duration."""
    duration_s = float(report["end_time"]) - float(report["start_time"])
    if duration_s <= 0:
        raise BackendError(f"the Locust report has a non-positive duration ({duration_s} s)")
    out: dict[str, EndpointStats] = {}
    for row in report["endpoints"]:
        key = f"{row['method']} {row['name']}"
        n = int(row["num_requests"])
        times: dict[str, float | None] = {}
        for field in ("avg_ms", "min_ms", "max_ms", "median_ms", "p95_ms", "p99_ms"):
            value = row.get(field)
            if n > 0 and value is None:
                raise BackendError(f"Locust row {key!r} has {n} requests but no {field}")
            times[field] = float(value) if n > 0 else None
        out[key] = EndpointStats(name=key, num_requests=n, num_failures=int(row["num_failures"]),
                                 rps=n / duration_s, **times)
    return out, duration_s
