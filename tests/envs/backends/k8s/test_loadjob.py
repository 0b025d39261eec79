"""The Locust load Job (``envs.backends.k8s.loadjob``) as the backend runs it against the fake
Kubernetes API: a failed Job, a log without the report line, a Job that never finishes."""

from __future__ import annotations

from typing import Any

import pytest

from envs.backends.base import BackendError, LoadSpec
from envs.backends.k8s.mesh import K8sMesh
from tests.envs.backends.k8s._fakes import (
    FAST,
    Clock,
    FakeKube,
    Sleeps,
    closed_port_url,
    mesh,
)


def test_failed_job_is_an_error_with_its_log(kube: Any) -> None:
    server = kube(FakeKube([], locust_log="Traceback: locustfile broke\n", job_outcome="failed"))
    m = mesh(server.url)
    with pytest.raises(BackendError, match=r"(?s)Locust Job sockshop-2/locust-00001 failed.*"
                                           r"locustfile broke"):
        m.run_load(LoadSpec(users=10, requests=180), seed=7)
    m.close()


def test_job_without_report_line_is_an_error(kube: Any) -> None:
    server = kube(FakeKube([], locust_log="no report here\n"))
    m = mesh(server.url)
    with pytest.raises(BackendError, match="no MESHTUNE_LOCUST_REPORT line"):
        m.run_load(LoadSpec(users=10, requests=180), seed=7)
    m.close()


def test_job_timeout_is_an_error(kube: Any) -> None:
    server = kube(FakeKube([], job_polls_before_done=10**9))
    sleeps = Sleeps()
    m = K8sMesh(2, kube_api_url=server.url, prometheus_url=closed_port_url(), sleep=sleeps,
                clock=Clock(0.0, sleeps), retry=FAST, load_timeout_s=10.0, poll_interval_s=30.0)
    with pytest.raises(BackendError, match="did not finish within 190 s"):
        m.run_load(LoadSpec(users=10, requests=180), seed=7)
    m.close()
