"""The reference load test of SockShop (microservices-demo's Locust load test,
https://github.com/microservices-demo/load-test): its 9-request loop, the customer every
virtual user logs in as, the hatch rate and the request names Locust reports.

Every backend drives this same loop: the simulator walks it, the local backend's Locust
(``envs/backends/local/loadgen.py``) and the Kubernetes load Job run it.
"""

from __future__ import annotations

from dataclasses import dataclass

from envs.sockshop.topology import CATALOGUE


@dataclass(frozen=True)
class LoadStep:
    """One request of the load test's loop: the route it hits and how Locust names it."""

    route: str
    name: str


#: The reference load test's loop: 9 requests, no wait between them. ``{item}`` is the item
#: picked from the GET /catalogue answer at the start of the loop.
LOAD_TEST_LOOP: tuple[LoadStep, ...] = (
    LoadStep("GET /catalogue", "GET /catalogue"),
    LoadStep("GET /", "GET /"),
    LoadStep("GET /login", "GET /login"),
    LoadStep("GET /category.html", "GET /category.html"),
    LoadStep("GET /detail.html", "GET /detail.html?id={item}"),
    LoadStep("DELETE /cart", "DELETE /cart"),
    LoadStep("POST /cart", "POST /cart"),
    LoadStep("GET /basket.html", "GET /basket.html"),
    LoadStep("POST /orders", "POST /orders"),
)
#: Every virtual user logs in as this one customer, so all users share one cart.
CUSTOMER = ("user", "password")
#: Locust hatch rate of the reference load test, users per second.
HATCH_RATE_PER_S = 5.0


def endpoint_names() -> tuple[str, ...]:
    """Every Locust request name the load test can produce, in a fixed order (18 names)."""
    names: list[str] = []
    for step in LOAD_TEST_LOOP:
        if "{item}" in step.name:
            names.extend(step.name.format(item=i.item_id) for i in CATALOGUE)
        else:
            names.append(step.name)
    return tuple(sorted(names))
