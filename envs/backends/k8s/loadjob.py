"""The load of the k8s backend: Locust as an in-cluster ``batch/v1`` Job, and its report.

:func:`locust_job_manifest` is the Job that runs the reference load test once against the
front-end of a SockShop namespace (the locustfile is the ConfigMap ``locustfile`` that
``meshtune cluster render`` writes). The Job's pod has a sidecar, like the ingress gateway it
stands in for, so the front-end's rule acts on its calls and every hop is reported by a source
sidecar. The load is closed-loop (users) or open-loop (Poisson sessions, ``MESHTUNE_RATE_RPS``),
as on the other backends. The locustfile prints one ``MESHTUNE_LOCUST_REPORT {json}`` line;
:func:`parse_locust_report` reads it from the pod's log, :func:`endpoint_stats` turns its rows
into :class:`~envs.backends.report.EndpointStats` and :func:`run_figures` checks the run and
returns the rest of the :class:`~envs.backends.report.LoadReport` (abandoned requests, latency
over all requests, the open loop's arrivals).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from envs.backends.base import BackendError
from envs.backends.k8s.metrics import PROXY_STATS_ANNOTATION, PROXY_STATS_CONFIG
from envs.backends.report import EndpointStats
from envs.sockshop import ENTRY_SERVICE
from envs.sockshop.slo import ROUTE_SLO_MS

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
                        hatch_rate_per_s: float, *, mode: str = "closed",
                        arrival_rate_rps: float | None = None, image: str = LOCUST_IMAGE,
                        run_time_limit_s: int = 900, sidecar_drain_s: int = 15,
                        generate_name: str = "locust-",
                        name: str | None = None) -> dict[str, Any]:
    """The ``batch/v1`` Job that runs the reference load test once against the front-end.

    ``mode`` is the load's shape (:class:`~envs.backends.base.LoadSpec`): ``closed``, ``users``
    concurrent users started at ``hatch_rate_per_s`` per second; ``open``, sessions of the
    9-request loop arriving as a Poisson process at ``arrival_rate_rps / 9`` per second
    (``arrival_rate_rps``: offered requests per second, passed as ``MESHTUNE_RATE_RPS``; Locust
    runs the one user that drives the arrivals, and ``users`` and ``hatch_rate_per_s`` are not
    used). Either way ``requests`` requests in total (the locustfile stops the runner there),
    item choices (and arrivals) seeded with ``seed``, and every request counted against its
    route's latency objective (:data:`envs.sockshop.slo.ROUTE_SLO_MS`, passed as
    ``MESHTUNE_SLO_MS``). Locust's own ``--run-time`` (``run_time_limit_s``, seconds) and the
    Job's ``activeDeadlineSeconds`` bound a run that never reaches ``requests``. The pod carries
    the Istio sidecar; the proxy is up before Locust starts (``holdApplicationUntilProxyStarts``)
    and the locustfile asks it to exit at the end so the Job completes — ``sidecar_drain_s``
    seconds after the load, so that Prometheus scrapes the sidecar's final counters first.

    Raises:
        ValueError: an unknown ``mode``; a non-positive ``requests`` or ``run_time_limit_s``;
            closed, a non-positive ``users`` or ``hatch_rate_per_s`` or an
            ``arrival_rate_rps``; open, an ``arrival_rate_rps`` that is not a positive number.
    """
    if requests <= 0 or run_time_limit_s <= 0:
        raise ValueError("requests and run_time_limit_s must be positive, got "
                         f"{requests}, {run_time_limit_s}")
    if mode == "closed":
        if users <= 0 or hatch_rate_per_s <= 0:
            raise ValueError("a closed load's users and hatch_rate_per_s must be positive, got "
                             f"{users}, {hatch_rate_per_s}")
        if arrival_rate_rps is not None:
            raise ValueError(f"a closed load has no arrival rate, got {arrival_rate_rps}")
        shape = ["-u", str(users), "-r", _number(hatch_rate_per_s)]
        shape_env: list[dict[str, str]] = []
    elif mode == "open":
        if (isinstance(arrival_rate_rps, bool) or not isinstance(arrival_rate_rps, int | float)
                or not math.isfinite(arrival_rate_rps) or arrival_rate_rps <= 0):
            raise ValueError("an open load's arrival_rate_rps (offered requests per second) "
                             f"must be a positive number, got {arrival_rate_rps!r}")
        shape = ["-u", "1", "-r", "1"]  # the one user that drives the arrivals
        shape_env = [{"name": "MESHTUNE_RATE_RPS", "value": repr(float(arrival_rate_rps))}]
    else:
        raise ValueError(f"mode must be 'closed' or 'open', got {mode!r}")
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
                            *shape,
                            "--run-time", f"{run_time_limit_s}s",
                            "--exit-code-on-error", "0", "--only-summary",
                        ],
                        "env": [
                            {"name": "MESHTUNE_TOTAL_REQUESTS", "value": str(requests)},
                            {"name": "MESHTUNE_SEED", "value": str(seed)},
                            *shape_env,
                            {"name": "MESHTUNE_SLO_MS", "value": json.dumps(ROUTE_SLO_MS)},
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
        failures = int(row["num_failures"])
        good = row.get("num_good")
        if good is not None:
            good = int(good)
            if not 0 <= good <= n - failures:
                raise BackendError(f"Locust row {key!r} counts {good} requests within their SLO "
                                   f"of {n - failures} successful ones")
        out[key] = EndpointStats(name=key, num_requests=n, num_failures=failures,
                                 rps=n / duration_s, num_good=good, **times)
    return out, duration_s


def run_figures(report: Mapping[str, Any], mode: str, requests: int) -> dict[str, Any]:
    """Check a Locust report of a ``mode`` load of ``requests`` requests and return the
    :class:`~envs.backends.report.LoadReport` fields beyond the endpoint rows:
    ``num_abandoned`` (requests), ``latency_mean_ms`` and ``latency_p99_ms`` (ms, None when the
    report has none) and ``extra`` (open loop: ``rate_rps``, ``sessions_arrived``,
    ``max_lag_ms``), as the local backend reports them.

    Raises:
        BackendError: the report is of the other mode (a locustfile ConfigMap from before open
            loads: it ignores ``MESHTUNE_RATE_RPS``), it lists errors of the run, or, open loop,
            the run stopped before ``requests`` requests, an endpoint row does not count its
            requests within their SLO, or a figure is missing.
    """
    shown = report.get("mode", "closed")
    if shown != mode:
        hint = (": the namespace's locustfile ConfigMap predates open loads (it ignores "
                "MESHTUNE_RATE_RPS); apply the output of `meshtune cluster render` again"
                if mode == "open" and "mode" not in report else "")
        raise BackendError(f"asked for a load of mode {mode!r}, the Locust report is of mode "
                           f"{shown!r}{hint}")
    errors = report.get("errors") or []
    if errors:
        raise BackendError(f"the Locust run reported {len(errors)} error(s): {errors[:3]}")
    try:
        figures: dict[str, Any] = {
            # an open report must count its abandoned requests; a closed run abandons none
            # (and a locustfile from before open loads does not write the figure)
            "num_abandoned": int(report["abandoned"] if mode == "open"
                                 else report.get("abandoned", 0)),
            "latency_mean_ms": _optional_float(report.get("latency_mean_ms")),
            "latency_p99_ms": _optional_float(report.get("latency_p99_ms")),
            "extra": {},
        }
        if mode == "open":
            if not report["reached_total"]:
                raise BackendError(f"the open load did not reach {requests} requests within the "
                                   f"run-time limit (counted {report.get('total_requests')})")
            missing = sorted(f"{r['method']} {r['name']}" for r in report["endpoints"]
                             if int(r["num_requests"]) and r.get("num_good") is None)
            if missing:
                raise BackendError(f"the open load's report does not count requests within "
                                   f"their SLO for {missing}")
            figures["extra"] = {"rate_rps": float(report["rate_rps"]),
                                "sessions_arrived": int(report["sessions_arrived"]),
                                "max_lag_ms": float(report["max_lag_ms"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise BackendError(f"the Locust report of the {mode} load lacks a figure or has a "
                           f"malformed one: {exc!r}") from exc
    if figures["num_abandoned"] < 0 or (mode == "closed" and figures["num_abandoned"]):
        raise BackendError(f"the Locust report of the {mode} load counts "
                           f"{figures['num_abandoned']} abandoned requests")
    return figures


def _optional_float(value: Any) -> float | None:
    """``value`` as a float, None as None."""
    return None if value is None else float(value)
