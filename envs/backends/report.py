"""LoadReport: what one load run through a mesh replica observed.

Two views of the same run, whichever backend produced it:

* per endpoint, what Locust prints (the notebook's table): request and failure counts and latency
  statistics as seen by the load generator, plus p95 and p99;
* per service, what Prometheus would give from the sidecars' telemetry: request count, p99,
  error ratio and the counts of circuit-breaker rejections (UO) and connect failures (UF).

A statistic that cannot be computed (an endpoint that saw no request has no latency) is ``None``
— never a made-up number.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class EndpointStats:
    """Locust's row for one request name.

    Attributes:
        name: Locust's request name (``GET /catalogue``, ``GET /detail.html?id=…``).
        num_requests: requests completed.
        num_failures: requests with status >= 400 or a connection error.
        avg_ms, min_ms, max_ms, median_ms, p95_ms, p99_ms: response-time statistics in
            milliseconds over all requests (failed ones included, as Locust does); None when
            ``num_requests`` is 0.
        rps: requests per second over the run's duration.
        num_good: successful requests answered within the endpoint's latency objective
            (:func:`envs.sockshop.slo.slo_ms`); None when the backend did not count them.
    """

    name: str
    num_requests: int
    num_failures: int
    avg_ms: float | None
    min_ms: float | None
    max_ms: float | None
    median_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    rps: float
    num_good: int | None = None

    @property
    def failure_pct(self) -> float:
        """Failures as a percentage of requests (0.0 when there were none)."""
        return 100.0 * self.num_failures / self.num_requests if self.num_requests else 0.0


@dataclass(frozen=True)
class ServiceStats:
    """Prometheus-shaped figures for one destination service (client-side reporter), summed over
    the sidecars that call it. The fields after ``retry_count`` are the causes and the demand
    (None: the backend did not measure it). Invariants: ``uo + uf + ut + reset <= num_attempts``,
    ``retry_count <= num_attempts``, ``urx_count`` and ``retry_overflow_count <= num_requests``,
    ``0 <= error_ratio <= 1``.

    Attributes:
        name: the destination service.
        num_requests: requests (or TCP connections, for TCP services) sent to it by callers.
        p99_ms: 99th percentile of request duration in ms; None when it saw no request.
        error_ratio: share (0..1) of those requests that failed, as the callers saw them.
        uo_count: requests rejected by a circuit breaker (503 UO: pending or active overflow).
        uf_count: connection attempts that failed or timed out (UF), retried ones included.
        retry_count: retries the callers' sidecars sent to it.
        num_attempts: attempts sent to it: first tries and retries (>= ``num_requests``).
        mean_ms: mean attempt duration as the callers saw it, ms (HTTP destinations).
        ut_count: attempts that ended in a route's timeout (Envoy flag ``UT``, 504): 0 unless
            a VirtualService sets a timeout (none here; an application that stops waiting,
            like orders after 5 s, is not a UT: its request runs on and counts when it ends).
        reset_count: attempts refused or reset by the destination itself (a service down:
            connection refused, in-flight request reset; flags ``UC``/``UR``).
        urx_count: requests that failed after exhausting their retries (flag ``URX``).
        retry_overflow_count: retries not sent because the retry budget or ``maxRetries`` was
            used up (Envoy's ``upstream_rq_retry_overflow``).
        in_flight_per_pool: demand: over the calling sidecars' connection pools to this
            destination, the largest time-averaged number of requests in flight in one pool
            (active + pending), requests.
    """

    name: str
    num_requests: int
    p99_ms: float | None
    error_ratio: float
    uo_count: int
    uf_count: int
    retry_count: int = 0
    num_attempts: int | None = None
    mean_ms: float | None = None
    ut_count: int | None = None
    reset_count: int | None = None
    urx_count: int | None = None
    retry_overflow_count: int | None = None
    in_flight_per_pool: float | None = None


@dataclass(frozen=True)
class LoadReport:
    """The result of one load run.

    Attributes:
        endpoints: Locust rows by request name.
        services: Prometheus figures by service name.
        duration_s: wall (or simulated) time the load took, in seconds.
        users: concurrent users (closed loop) or 0 for an open-loop run.
        backend: the backend that produced the report (``sim``, ``local``, ``k8s``).
        extra: backend-specific figures that are not part of the shared contract.
        num_abandoned: requests never sent because their session gave up (open loop: a
            session whose ``GET /catalogue`` failed leaves without its other 8 requests).
        latency_mean_ms, latency_p99_ms: mean and nearest-rank p99 over all recorded requests
            (failed included, as Locust's "Aggregated" row), ms; None if not measured.
    """

    endpoints: dict[str, EndpointStats]
    services: dict[str, ServiceStats]
    duration_s: float
    users: int = 0
    backend: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    num_abandoned: int = 0
    latency_mean_ms: float | None = None
    latency_p99_ms: float | None = None

    @property
    def num_requests(self) -> int:
        """Total requests over all endpoints."""
        return sum(e.num_requests for e in self.endpoints.values())

    @property
    def num_failures(self) -> int:
        """Total failed requests over all endpoints."""
        return sum(e.num_failures for e in self.endpoints.values())

    @property
    def total_rps(self) -> float:
        """Requests per second over all endpoints."""
        return self.num_requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def failure_pct(self) -> float:
        """Failed requests as a percentage of all requests."""
        n = self.num_requests
        return 100.0 * self.num_failures / n if n else 0.0

    @property
    def offered_requests(self) -> int:
        """Requests the users meant to make: recorded plus abandoned."""
        return self.num_requests + self.num_abandoned

    @property
    def num_good(self) -> int:
        """Successful requests within their endpoint's latency objective, over all endpoints.

        Raises:
            ValueError: an endpoint that saw requests has no ``num_good`` (not measured).
        """
        missing = sorted(e.name for e in self.endpoints.values()
                         if e.num_requests and e.num_good is None)
        if missing:
            raise ValueError(f"{self.backend or 'backend'} report does not count requests "
                             f"within their SLO for {missing}")
        return sum(e.num_good or 0 for e in self.endpoints.values())

    @property
    def goodput_rps(self) -> float:
        """Requests served within their SLO per second of the run."""
        return self.num_good / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def good_pct(self) -> float:
        """Requests served within their SLO as a percentage of the offered requests."""
        n = self.offered_requests
        return 100.0 * self.num_good / n if n else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (None for statistics that do not exist)."""
        return {
            "backend": self.backend,
            "users": self.users,
            "duration_s": self.duration_s,
            "total_rps": self.total_rps,
            "num_requests": self.num_requests,
            "num_failures": self.num_failures,
            "num_abandoned": self.num_abandoned,
            "latency_mean_ms": self.latency_mean_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "endpoints": {k: asdict(v) for k, v in self.endpoints.items()},
            "services": {k: asdict(v) for k, v in self.services.items()},
            "extra": self.extra,
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadReport:
        """Inverse of :meth:`to_dict`."""
        return cls(
            endpoints={k: EndpointStats(**v) for k, v in data["endpoints"].items()},
            services={k: ServiceStats(**v) for k, v in data["services"].items()},
            duration_s=float(data["duration_s"]),
            users=int(data.get("users", 0)),
            backend=str(data.get("backend", "")),
            extra=dict(data.get("extra", {})),
            num_abandoned=int(data.get("num_abandoned", 0)),
            latency_mean_ms=data.get("latency_mean_ms"),
            latency_p99_ms=data.get("latency_p99_ms"),
        )

    def to_locust_table(self) -> str:
        """Locust's console table (the notebook's columns plus p95 and p99), with a total row."""
        head = (f"{'Name':<60} {'# reqs':>7} {'# fails':>14} {'Avg':>7} {'Min':>7} "
                f"{'Max':>7} {'Median':>7} {'p95':>7} {'p99':>7} {'req/s':>7}")
        lines = [head, "-" * len(head)]

        def ms(v: float | None) -> str:
            return "-" if v is None or math.isnan(v) else f"{v:.0f}"

        for e in self.endpoints.values():
            fails = f"{e.num_failures}({e.failure_pct:.2f}%)"
            lines.append(f"{e.name:<60} {e.num_requests:>7} {fails:>14} {ms(e.avg_ms):>7} "
                         f"{ms(e.min_ms):>7} {ms(e.max_ms):>7} {ms(e.median_ms):>7} "
                         f"{ms(e.p95_ms):>7} {ms(e.p99_ms):>7} {e.rps:>7.2f}")
        lines.append("-" * len(head))
        fails = f"{self.num_failures}({self.failure_pct:.2f}%)"
        lines.append(f"{'Aggregated':<60} {self.num_requests:>7} {fails:>14} "
                     f"{'':>7} {'':>7} {'':>7} {'':>7} {'':>7} {'':>7} {self.total_rps:>7.2f}")
        return "\n".join(lines)
