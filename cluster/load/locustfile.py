"""SockShop's reference load test (microservices-demo/load-test) for Locust 2.x, for meshtune.

Shipped to the cluster as the ConfigMap ``locustfile`` (``meshtune cluster render``) and run by
the Job the ``k8s`` backend creates. It must stay standalone: the Locust image has no meshtune.

Each user runs the reference loop with no wait: ``GET /catalogue`` (pick a random item) →
``GET /`` → ``GET /login`` (Basic ``user:password``) → ``GET /category.html`` →
``GET /detail.html?id=<item>`` → ``DELETE /cart`` → ``POST /cart`` → ``GET /basket.html`` →
``POST /orders``. As in the original, a catalogue answer that is not a JSON list of items ends
the loop early (the original raised there).

Environment:
    MESHTUNE_TOTAL_REQUESTS: stop the runner once this many requests completed, over all users
        (Locust 2 has no total-request option). Requests already in flight may finish after.
    MESHTUNE_SEED: seed of the item choices (user k draws from ``Random(seed * 1_000_003 + k)``).
    MESHTUNE_QUIT_SIDECAR: ``1`` asks the Istio sidecar to exit when Locust quits, so the Job
        completes (``POST 127.0.0.1:15020/quitquitquit``).
    MESHTUNE_DRAIN_S: seconds to wait before that, so Prometheus scrapes the sidecar's final
        counters (the load pod's sidecar is the source reporter of every front-end request).

At exit it prints one line to stdout: ``MESHTUNE_LOCUST_REPORT {json}`` with the run's start and
end (Unix seconds) and one row per request name (counts; avg/min/max/median/p95/p99 in ms).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import sys
import time
import urllib.request
from typing import Any

import gevent
from locust import HttpUser, constant, events, task

REPORT_MARKER = "MESHTUNE_LOCUST_REPORT "
QUIT_SIDECAR_URL = "http://127.0.0.1:15020/quitquitquit"
TOTAL_REQUESTS = int(os.environ.get("MESHTUNE_TOTAL_REQUESTS", "0"))
SEED = int(os.environ.get("MESHTUNE_SEED", "0"))
QUIT_SIDECAR = os.environ.get("MESHTUNE_QUIT_SIDECAR", "0") == "1"
DRAIN_S = float(os.environ.get("MESHTUNE_DRAIN_S", "0"))
AUTHORIZATION = "Basic " + base64.b64encode(b"user:password").decode()

_user_numbers = itertools.count()
_run: dict[str, Any] = {"requests": 0, "stopping": False, "start_time": None, "end_time": None,
                        "environment": None}


class SockShopUser(HttpUser):
    """One virtual user running the reference loop back to back."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.rng = random.Random(SEED * 1_000_003 + next(_user_numbers))

    @task
    def reference_loop(self) -> None:
        catalogue = self.client.get("/catalogue")
        try:
            item_id = self.rng.choice(catalogue.json())["id"]
        except (ValueError, TypeError, KeyError, IndexError):
            return
        self.client.get("/")
        self.client.get("/login", headers={"Authorization": AUTHORIZATION})
        self.client.get("/category.html")
        self.client.get(f"/detail.html?id={item_id}")
        self.client.delete("/cart")
        self.client.post("/cart", json={"id": item_id, "quantity": 1})
        self.client.get("/basket.html")
        self.client.post("/orders")


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    _run["environment"] = environment


@events.test_start.add_listener
def _on_test_start(**_: Any) -> None:
    _run["start_time"] = time.time()


@events.request.add_listener
def _on_request(**_: Any) -> None:
    _run["requests"] += 1
    if TOTAL_REQUESTS and _run["requests"] >= TOTAL_REQUESTS and not _run["stopping"]:
        _run["stopping"] = True
        _run["end_time"] = time.time()
        gevent.spawn(_run["environment"].runner.quit)


@events.test_stop.add_listener
def _on_test_stop(**_: Any) -> None:
    if _run["end_time"] is None:
        _run["end_time"] = time.time()


def report(environment: Any) -> dict[str, Any]:
    """The run's figures as the JSON object of the report line."""
    rows = []
    for (name, method), entry in sorted(environment.stats.entries.items()):
        n = entry.num_requests
        rows.append({
            "method": method, "name": name, "num_requests": n,
            "num_failures": entry.num_failures,
            "avg_ms": entry.avg_response_time if n else None,
            "min_ms": entry.min_response_time if n else None,
            "max_ms": entry.max_response_time if n else None,
            "median_ms": entry.median_response_time if n else None,
            "p95_ms": entry.get_response_time_percentile(0.95) if n else None,
            "p99_ms": entry.get_response_time_percentile(0.99) if n else None,
        })
    return {"start_time": _run["start_time"], "end_time": _run["end_time"],
            "total_requests": _run["requests"], "seed": SEED, "endpoints": rows}


@events.quitting.add_listener
def _on_quitting(environment: Any, **_: Any) -> None:
    sys.stdout.write(REPORT_MARKER + json.dumps(report(environment)) + "\n")
    sys.stdout.flush()
    if QUIT_SIDECAR:
        time.sleep(DRAIN_S)
        request = urllib.request.Request(QUIT_SIDECAR_URL, method="POST")
        try:
            urllib.request.urlopen(request, timeout=5).close()
        except OSError as exc:  # the Job still ends at activeDeadlineSeconds
            sys.stderr.write(f"could not stop the Istio sidecar: {exc}\n")
