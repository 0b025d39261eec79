"""Fixtures of the k8s backend's tests: fake servers started and closed around a test."""

from __future__ import annotations

from typing import Any

import pytest

from envs.backends.k8s.mesh import K8sMesh
from tests.envs.backends.k8s._fakes import (
    END,
    FAST,
    LOCUST_LOG,
    Clock,
    FakeKube,
    FakePrometheus,
    Server,
    Sleeps,
)


@pytest.fixture
def kube() -> Any:
    servers: list[Server] = []

    def start(fake: FakeKube) -> Server:
        server = Server(fake)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.close()


@pytest.fixture
def load_setup(kube: Any) -> Any:
    fake = FakeKube([], locust_log=LOCUST_LOG, job_polls_before_done=2)
    server = kube(fake)
    prom = FakePrometheus(window_s=41, eval_time=END + 10.0)
    prom_server = Server(prom)
    sleeps = Sleeps()
    m = K8sMesh(2, kube_api_url=server.url, prometheus_url=prom_server.url, sleep=sleeps,
                clock=Clock(END - 5.0, sleeps), retry=FAST, metrics_lag_s=10.0,
                poll_interval_s=2.0)
    yield m, fake, server, prom, sleeps
    m.close()
    prom_server.close()
