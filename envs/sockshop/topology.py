"""SockShop's topology: its services and protocols, the front-end's call graph and the
application's own data (the catalogue's socks, orders' and payment's rules).

This is the one description of the application that the simulator, the local mesh and the
Kubernetes manifests all read, so the three cannot drift apart. Facts come from
microservices-demo: ``deploy/kubernetes/complete-demo.yaml`` of
https://github.com/microservices-demo/microservices-demo and the services' sources (one
repository each under https://github.com/microservices-demo) at the deployed image tags.

Call graph notation: a :class:`Route` is what the front-end does for one HTTP route, as a
sequence of :data:`Step` s. A step is a :class:`Call` (one request to a service, which itself
runs its own ``then`` steps before answering) or a :class:`Parallel` group of calls that are
issued together and all awaited.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Protocol(StrEnum):
    """How the mesh sees a destination's traffic: HTTP (all connectionPool settings act) or
    opaque TCP (only ``tcp.*`` settings act)."""

    HTTP = "http"
    TCP = "tcp"


@dataclass(frozen=True)
class Service:
    """One SockShop Kubernetes Service/Deployment.

    Attributes:
        name: the Service name, also the host name callers use.
        port: the Service port callers connect to.
        port_name: the Istio-style named port (protocol prefix), used by the manifests.
        protocol: HTTP or TCP, as the sidecars treat it.
        app_protocol: wire protocol (``http``, ``mongo``, ``mysql``, ``redis``, ``amqp``).
        image: the container image of complete-demo.yaml, except that the MongoDBs pin
            ``mongo:3.4`` where complete-demo.yaml says an untagged ``mongo`` (which now pulls
            6+, and mongo 6+ breaks carts).
        cpu_request_m: CPU request in millicores, or None when the manifest sets none.
        cpu_limit_m: CPU limit in millicores, or None when the manifest sets none.
        role: what the service does in the shop.
        on_request_path: whether any front-end route calls it (directly or transitively).
        target_port: the container port the Service forwards to, when it differs from ``port``
            (the inbound sidecar cluster's port).
    """

    name: str
    port: int
    port_name: str
    protocol: Protocol
    app_protocol: str
    image: str
    cpu_request_m: int | None
    cpu_limit_m: int | None
    role: str
    on_request_path: bool = True
    target_port: int | None = None

    @property
    def container_port(self) -> int:
        """The port the workload listens on (``target_port`` or ``port``)."""
        return self.target_port or self.port


#: The 14 services, in the order of complete-demo.yaml (the notebook's document order).
SERVICES: tuple[Service, ...] = (
    Service("carts", 80, "http", Protocol.HTTP, "http", "weaveworksdemos/carts:0.4.8",
            100, 300, "cart API (Java 8 Spring Boot, -Xmx128m)"),
    Service("carts-db", 27017, "tcp-mongo", Protocol.TCP, "mongo", "mongo:3.4",
            None, None, "carts' MongoDB"),
    Service("catalogue", 80, "http", Protocol.HTTP, "http", "weaveworksdemos/catalogue:0.3.5",
            100, 200, "catalogue API (Go, go-kit)"),
    Service("catalogue-db", 3306, "tcp-mysql", Protocol.TCP, "mysql",
            "weaveworksdemos/catalogue-db:0.3.0", None, None,
            "catalogue's MySQL 5.7 (server-first protocol)"),
    Service("front-end", 80, "http", Protocol.HTTP, "http", "weaveworksdemos/front-end:0.3.12",
            100, 300, "web pages and API gateway (Node.js 4, Express)", target_port=8079),
    Service("orders", 80, "http", Protocol.HTTP, "http", "weaveworksdemos/orders:0.4.7",
            100, 500, "order placement (Java Spring Boot)"),
    Service("orders-db", 27017, "tcp-mongo", Protocol.TCP, "mongo", "mongo:3.4",
            None, None, "orders' MongoDB"),
    Service("payment", 80, "http", Protocol.HTTP, "http", "weaveworksdemos/payment:0.4.3",
            99, 200, "payment authorisation (Go); declines amounts over 100"),
    Service("queue-master", 80, "http", Protocol.HTTP, "http",
            "weaveworksdemos/queue-master:0.3.1", 100, 300,
            "consumes the shipping queue (Java Spring Boot), off the request path",
            on_request_path=False),
    Service("rabbitmq", 5672, "tcp-amqp", Protocol.TCP, "amqp", "rabbitmq:3.6.8-management",
            None, None, "shipping queue"),
    Service("session-db", 6379, "tcp-redis", Protocol.TCP, "redis", "redis:alpine",
            None, None, "front-end session store"),
    Service("shipping", 80, "http", Protocol.HTTP, "http", "weaveworksdemos/shipping:0.4.8",
            100, 300, "shipping (Java Spring Boot); publishes to rabbitmq"),
    Service("user", 80, "http", Protocol.HTTP, "http", "weaveworksdemos/user:0.4.7",
            100, 300, "users, addresses, cards (Go)"),
    Service("user-db", 27017, "tcp-mongo", Protocol.TCP, "mongo",
            "weaveworksdemos/user-db:0.3.0", None, None, "users' MongoDB, pre-seeded"),
)

SERVICE_BY_NAME: dict[str, Service] = {s.name: s for s in SERVICES}
SERVICE_NAMES: tuple[str, ...] = tuple(s.name for s in SERVICES)
#: The entry point the load test drives (through the ingress gateway).
ENTRY_SERVICE = "front-end"


class OnError(StrEnum):
    """What a caller does when a call fails (status >= 400, sidecar 503, or its wait expires)."""

    PROPAGATE = "propagate"      # the failure status is passed through to the caller's caller
    AS_500 = "as_500"            # any non-success becomes 500
    AS_401 = "as_401"            # any non-success becomes 401 (front-end login)
    IGNORE = "ignore"            # errors are ignored; the caller goes on
    BODY_AS_200 = "body_as_200"  # the front-end answers 200 with whatever body came back


@dataclass(frozen=True)
class Call:
    """One request from a caller to ``service``.

    Attributes:
        service: the callee.
        operation: the callee's endpoint (``GET /catalogue``) or DB operation (``find``).
        then: the callee's own downstream steps, run in order before it answers.
        on_error: what the caller does with a failure of this call.
        timeout_ms: how long the caller waits before giving up (None: forever; the front-end's
            HTTP client has no timeouts; orders caps every wait at 5 s).
        ok_status: the status the callee answers with on success.
    """

    service: str
    operation: str
    then: tuple[Step, ...] = ()
    on_error: OnError = OnError.PROPAGATE
    timeout_ms: int | None = None
    ok_status: int = 200


@dataclass(frozen=True)
class Parallel:
    """Calls issued together; the caller goes on when all have answered."""

    calls: tuple[Call, ...]


Step = Call | Parallel


@dataclass(frozen=True)
class Route:
    """What the front-end does for one HTTP route.

    Attributes:
        method: HTTP method.
        path: path pattern (``/detail.html``, ``/cart``).
        steps: the front-end's downstream steps, in order (empty for static pages).
        ok_status: the status returned on success.
        static: a static page served by the front-end alone (no session, no backend call).
    """

    method: str
    path: str
    steps: tuple[Step, ...]
    ok_status: int = 200
    static: bool = False

    @property
    def key(self) -> str:
        """``METHOD /path`` — the route's identifier."""
        return f"{self.method} {self.path}"


ORDERS_WAIT_MS = 5_000
"""orders caps every wait on a dependency at 5 s; a timeout or a 5xx gives 500."""
PAYMENT_LIMIT = 100.0
"""payment 0.4.3 authorises amounts up to and including 100; larger ones are declined (406)."""
SHIPPING_COST = 4.99
"""orders adds this to the cart's items to get the amount it asks payment to authorise."""
ORDER_DECLINED_STATUS = 406
ORDER_FAILED_STATUS = 500

_SESSION = Call("session-db", "session read/write")


def _db(service: str, operation: str) -> tuple[Step, ...]:
    return (Call(service, operation),)


def _orders_wait(call: Call) -> Call:
    return Call(call.service, call.operation, call.then, OnError.AS_500, ORDERS_WAIT_MS,
                call.ok_status)


#: Every front-end route the load test uses (plus GET /cart), keyed by ``METHOD /path``.
ROUTES: dict[str, Route] = {r.key: r for r in (
    Route("GET", "/", (), static=True),
    Route("GET", "/category.html", (), static=True),
    Route("GET", "/detail.html", (), static=True),
    Route("GET", "/basket.html", (), static=True),
    Route("GET", "/catalogue", (
        _SESSION,
        Call("catalogue", "GET /catalogue", _db("catalogue-db", "SELECT socks"),
             on_error=OnError.BODY_AS_200),
    )),
    Route("GET", "/login", (
        _SESSION,
        Call("user", "GET /login", _db("user-db", "find user"), on_error=OnError.AS_401),
        Call("carts", "GET /carts/{customer}/merge", _db("carts-db", "merge carts"),
             on_error=OnError.IGNORE),
    )),
    Route("DELETE", "/cart", (
        _SESSION,
        Call("carts", "DELETE /carts/{customer}", _db("carts-db", "delete cart"),
             ok_status=202),
    ), ok_status=202),
    Route("POST", "/cart", (
        _SESSION,
        Call("catalogue", "GET /catalogue/{item}", _db("catalogue-db", "SELECT sock"),
             on_error=OnError.AS_500),
        Call("carts", "POST /carts/{customer}/items", _db("carts-db", "upsert item"),
             on_error=OnError.AS_500, ok_status=201),
    ), ok_status=201),
    Route("GET", "/cart", (
        _SESSION,
        Call("carts", "GET /carts/{customer}/items", _db("carts-db", "find items")),
    )),
    Route("POST", "/orders", (
        _SESSION,
        Call("user", "GET /customers/{customer}", _db("user-db", "find customer"),
             on_error=OnError.AS_500),
        Parallel((
            Call("user", "GET /customers/{customer}/addresses", _db("user-db", "find addresses"),
                 on_error=OnError.AS_500),
            Call("user", "GET /customers/{customer}/cards", _db("user-db", "find cards"),
                 on_error=OnError.AS_500),
        )),
        Call("orders", "POST /orders", (
            Parallel(tuple(_orders_wait(c) for c in (
                Call("user", "GET /addresses/{id}", _db("user-db", "find address")),
                Call("user", "GET /customers/{customer}", _db("user-db", "find customer")),
                Call("user", "GET /cards/{id}", _db("user-db", "find card")),
                Call("carts", "GET /carts/{customer}/items", _db("carts-db", "find items")),
            ))),
            _orders_wait(Call("payment", "POST /paymentAuth")),
            _orders_wait(Call("shipping", "POST /shipping",
                              (Call("rabbitmq", "publish shipment", on_error=OnError.IGNORE),),
                              ok_status=201)),
            Call("orders-db", "save order", on_error=OnError.AS_500),
        ), ok_status=201),
    ), ok_status=201),
)}


@dataclass(frozen=True)
class CatalogueItem:
    """A sock in the catalogue: its id and price in dollars."""

    item_id: str
    price: float


#: The 10 socks catalogue-db (``weaveworksdemos/catalogue-db:0.3.0``) is seeded with: what
#: ``GET /catalogue`` lists, the load test picks its item from, and orders prices the cart by.
CATALOGUE: tuple[CatalogueItem, ...] = (
    CatalogueItem("6d62d909-f957-430e-8689-b5129c0bb75e", 17.15),
    CatalogueItem("a0a4f044-b040-410d-8ead-4de0446aec7e", 7.99),
    CatalogueItem("808a2de1-1aaa-4c25-a9b9-6612e8f29a38", 17.32),
    CatalogueItem("510a0d7e-8e83-4193-b483-e27e09ddc34d", 15.00),
    CatalogueItem("03fef6ac-1896-4ce8-bd69-b798f85c6e0b", 99.99),
    CatalogueItem("d3588630-ad8e-49df-bbd7-3167f7efb246", 10.99),
    CatalogueItem("819e1fbf-8b7e-4f6d-811f-693534916a8b", 14.00),
    CatalogueItem("zzz4f044-b040-410d-8ead-4de0446aec7e", 12.00),
    CatalogueItem("3395a43e-2d88-40de-b95f-e00e1502085b", 18.00),
    CatalogueItem("837ab141-399e-4c1f-9abc-bace40296bac", 15.00),
)


def callees(route: Route) -> set[str]:
    """All services a route reaches, directly or transitively."""
    found: set[str] = set()

    def walk(steps: tuple[Step, ...]) -> None:
        for step in steps:
            calls = step.calls if isinstance(step, Parallel) else (step,)
            for call in calls:
                found.add(call.service)
                walk(call.then)

    walk(route.steps)
    return found
