"""The latency objectives (SLOs) of SockShop's endpoints and the nominal open load: what the
default objective (:class:`envs.reward.SloObjective`) counts a request "served" against.

One SLO per route of the reference load test (all ``GET /detail.html?id=…`` request names share
the route's SLO). Each is the route's p99 under Istio's defaults at the nominal open load
(:data:`NOMINAL_RATE_RPS`, simulated cluster, median over 20 load seeds of 1,600 requests), times
about 1.5, rounded up to a round number of ms:

| route | p99 at nominal load, ms | SLO, ms |
|---|---|---|
| GET /catalogue | 121 | 200 |
| GET / | 55 | 100 |
| GET /login | 199 | 300 |
| GET /category.html | 57 | 100 |
| GET /detail.html | 29–43 | 100 |
| DELETE /cart | 137 | 200 |
| POST /cart | 215 | 300 |
| GET /basket.html | 61 | 100 |
| POST /orders | 282 | 400 |

Measured with ``python scripts/derive_slos.py`` (it prints this table). The shop's capacity
with Istio's defaults on the simulated cluster is about 108 requests/s (offered 150 req/s,
served 108), so the nominal load is a little over half of it.
"""

from __future__ import annotations

from envs.sockshop.loadtest import LOAD_TEST_LOOP

#: Offered requests per second of the nominal open load (sessions of the 9-request loop arrive
#: at a ninth of this rate).
NOMINAL_RATE_RPS = 60.0

#: Latency objective per load-test route, ms (module docstring: how they were set).
ROUTE_SLO_MS: dict[str, float] = {
    "GET /catalogue": 200.0,
    "GET /": 100.0,
    "GET /login": 300.0,
    "GET /category.html": 100.0,
    "GET /detail.html": 100.0,
    "DELETE /cart": 200.0,
    "POST /cart": 300.0,
    "GET /basket.html": 100.0,
    "POST /orders": 400.0,
}


def route_of(endpoint: str) -> str:
    """The load-test route of Locust request name ``endpoint`` (``GET /detail.html?id=x`` →
    ``GET /detail.html``).

    Raises:
        ValueError: no route of the reference load test produces this name.
    """
    for step in LOAD_TEST_LOOP:
        if "{item}" in step.name:
            prefix = step.name.split("{item}")[0]
            if endpoint.startswith(prefix) and len(endpoint) > len(prefix):
                return step.route
        elif endpoint == step.name:
            return step.route
    raise ValueError(f"unknown endpoint {endpoint!r}: the reference load test has no such "
                     "request name")


def slo_ms(endpoint: str) -> float:
    """The latency objective of Locust request name ``endpoint``, ms (ValueError if unknown)."""
    return ROUTE_SLO_MS[route_of(endpoint)]


__all__ = ["NOMINAL_RATE_RPS", "ROUTE_SLO_MS", "route_of", "slo_ms"]
