"""SockShop as data: what every backend (the simulator, the local mesh, the Kubernetes
manifests) reads about the application, so they cannot drift apart.

* :mod:`envs.sockshop.topology` — services, protocols, the front-end's call graph
  (``ROUTES``), the catalogue and orders' and payment's rules;
* :mod:`envs.sockshop.loadtest` — the reference Locust load test (``LOAD_TEST_LOOP``,
  ``CUSTOMER``, ``HATCH_RATE_PER_S``, ``endpoint_names``);
* :mod:`envs.sockshop.figures` — the per-service figures (CPU, work per operation, DB drivers,
  the front-end's crash and restart), each with its source.

The topology and the load test are re-exported here (``from envs.sockshop import ROUTES``);
the figures are imported from :mod:`envs.sockshop.figures`.
"""

from envs.sockshop.loadtest import (
    CUSTOMER,
    HATCH_RATE_PER_S,
    LOAD_TEST_LOOP,
    LoadStep,
    endpoint_names,
)
from envs.sockshop.topology import (
    CATALOGUE,
    ENTRY_SERVICE,
    ORDER_DECLINED_STATUS,
    ORDER_FAILED_STATUS,
    ORDERS_WAIT_MS,
    PAYMENT_LIMIT,
    ROUTES,
    SERVICE_BY_NAME,
    SERVICE_NAMES,
    SERVICES,
    SHIPPING_COST,
    Call,
    CatalogueItem,
    OnError,
    Parallel,
    Protocol,
    Route,
    Service,
    Step,
    callees,
)

__all__ = [
    "CATALOGUE",
    "CUSTOMER",
    "ENTRY_SERVICE",
    "HATCH_RATE_PER_S",
    "LOAD_TEST_LOOP",
    "ORDERS_WAIT_MS",
    "ORDER_DECLINED_STATUS",
    "ORDER_FAILED_STATUS",
    "PAYMENT_LIMIT",
    "ROUTES",
    "SERVICES",
    "SERVICE_BY_NAME",
    "SERVICE_NAMES",
    "SHIPPING_COST",
    "Call",
    "CatalogueItem",
    "LoadStep",
    "OnError",
    "Parallel",
    "Protocol",
    "Route",
    "Service",
    "Step",
    "callees",
    "endpoint_names",
]
