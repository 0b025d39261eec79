"""Tests of envs.sockshop.topology: SockShop's services, call graph and catalogue, as every
backend reads them (facts from https://github.com/microservices-demo/microservices-demo's
deploy/kubernetes/complete-demo.yaml and the services' sources)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from envs.sockshop.topology import (
    CATALOGUE,
    ENTRY_SERVICE,
    ORDER_DECLINED_STATUS,
    ORDERS_WAIT_MS,
    PAYMENT_LIMIT,
    ROUTES,
    SERVICE_BY_NAME,
    SERVICE_NAMES,
    SERVICES,
    SHIPPING_COST,
    Call,
    OnError,
    Parallel,
    Protocol,
    Route,
    Step,
    callees,
)

# (name, port, protocol, app protocol, port name), in complete-demo.yaml order.
COMPLETE_DEMO = [
    ("carts", 80, Protocol.HTTP, "http", "http"),
    ("carts-db", 27017, Protocol.TCP, "mongo", "tcp-mongo"),
    ("catalogue", 80, Protocol.HTTP, "http", "http"),
    ("catalogue-db", 3306, Protocol.TCP, "mysql", "tcp-mysql"),
    ("front-end", 80, Protocol.HTTP, "http", "http"),
    ("orders", 80, Protocol.HTTP, "http", "http"),
    ("orders-db", 27017, Protocol.TCP, "mongo", "tcp-mongo"),
    ("payment", 80, Protocol.HTTP, "http", "http"),
    ("queue-master", 80, Protocol.HTTP, "http", "http"),
    ("rabbitmq", 5672, Protocol.TCP, "amqp", "tcp-amqp"),
    ("session-db", 6379, Protocol.TCP, "redis", "tcp-redis"),
    ("shipping", 80, Protocol.HTTP, "http", "http"),
    ("user", 80, Protocol.HTTP, "http", "http"),
    ("user-db", 27017, Protocol.TCP, "mongo", "tcp-mongo"),
]
HOLY_SOCK = "03fef6ac-1896-4ce8-bd69-b798f85c6e0b"


def all_calls(steps: tuple[Step, ...]) -> Iterator[Call]:
    """Every call in ``steps``, depth first, including the callees' own calls."""
    for step in steps:
        for call in step.calls if isinstance(step, Parallel) else (step,):
            yield call
            yield from all_calls(call.then)


def only_call(steps: tuple[Step, ...], service: str, operation: str) -> Call:
    """The one call to ``service`` ``operation`` among ``steps`` (not descending)."""
    found = [c for s in steps for c in (s.calls if isinstance(s, Parallel) else (s,))
             if (c.service, c.operation) == (service, operation)]
    assert len(found) == 1, (service, operation, found)
    return found[0]


API_ROUTES = [r for r in ROUTES.values() if not r.static]


# --- services ---------------------------------------------------------------------------------

def test_fourteen_services_in_complete_demo_order() -> None:
    assert len(SERVICES) == 14
    assert tuple(row[0] for row in COMPLETE_DEMO) == SERVICE_NAMES
    assert list(SERVICE_BY_NAME) == list(SERVICE_NAMES)
    assert ENTRY_SERVICE == "front-end"


@pytest.mark.parametrize(("name", "port", "protocol", "app_protocol", "port_name"), COMPLETE_DEMO)
def test_ports_and_protocols(name: str, port: int, protocol: Protocol, app_protocol: str,
                             port_name: str) -> None:
    service = SERVICE_BY_NAME[name]
    assert (service.port, service.protocol, service.app_protocol, service.port_name) == \
        (port, protocol, app_protocol, port_name)
    # Istio's protocol selection by port name: http → HTTP, tcp-* → opaque TCP
    assert service.port_name.startswith("http" if protocol is Protocol.HTTP else "tcp-")


def test_cpu_requests_and_limits_of_complete_demo() -> None:
    expected = {"carts": (100, 300), "catalogue": (100, 200), "front-end": (100, 300),
                "orders": (100, 500), "payment": (99, 200), "queue-master": (100, 300),
                "shipping": (100, 300), "user": (100, 300)}
    for service in SERVICES:
        assert (service.cpu_request_m, service.cpu_limit_m) == expected.get(service.name,
                                                                            (None, None))


def test_images_pin_what_complete_demo_deploys() -> None:
    images = {s.name: s.image for s in SERVICES}
    assert images["front-end"] == "weaveworksdemos/front-end:0.3.12"
    assert images["orders"] == "weaveworksdemos/orders:0.4.7"
    assert images["payment"] == "weaveworksdemos/payment:0.4.3"
    assert images["rabbitmq"] == "rabbitmq:3.6.8-management"
    assert images["carts-db"] == images["orders-db"] == "mongo:3.4"
    assert all(":" in image for image in images.values())  # every image is tagged


def test_only_queue_master_is_off_the_request_path() -> None:
    reached = set().union(*(callees(r) for r in ROUTES.values()))
    on_path = {s.name for s in SERVICES if s.on_request_path}
    assert on_path == reached | {ENTRY_SERVICE}
    assert set(SERVICE_NAMES) - on_path == {"queue-master"}


# --- call graph -------------------------------------------------------------------------------

def test_every_call_target_exists() -> None:
    for route in ROUTES.values():
        for call in all_calls(route.steps):
            assert call.service in SERVICE_BY_NAME, (route.key, call)
            assert call.service != ENTRY_SERVICE  # the front-end never calls itself


def test_tcp_services_make_no_calls() -> None:
    for route in ROUTES.values():
        for call in all_calls(route.steps):
            if SERVICE_BY_NAME[call.service].protocol is Protocol.TCP:
                assert call.then == (), (route.key, call)


def test_static_routes_have_no_steps() -> None:
    static = {r.key for r in ROUTES.values() if r.static}
    assert static == {"GET /", "GET /category.html", "GET /detail.html", "GET /basket.html"}
    for key in static:
        assert ROUTES[key].steps == ()
        assert callees(ROUTES[key]) == set()


def test_every_api_route_starts_with_session_db() -> None:
    assert {r.key for r in API_ROUTES} == {"GET /catalogue", "GET /login", "DELETE /cart",
                                           "POST /cart", "GET /cart", "POST /orders"}
    for route in API_ROUTES:
        first = route.steps[0]
        assert isinstance(first, Call)
        assert first.service == "session-db"
        assert first.then == ()


def test_front_end_waits_forever() -> None:
    """The front-end's HTTP client has no timeouts: none of its own calls carries one."""
    for route in API_ROUTES:
        for step in route.steps:
            for call in step.calls if isinstance(step, Parallel) else (step,):
                assert call.timeout_ms is None, (route.key, call)


def test_route_statuses_and_error_handling() -> None:
    assert {k: r.ok_status for k, r in ROUTES.items() if not r.static} == {
        "GET /catalogue": 200, "GET /login": 200, "DELETE /cart": 202, "POST /cart": 201,
        "GET /cart": 200, "POST /orders": 201}
    catalogue = ROUTES["GET /catalogue"].steps
    assert only_call(catalogue, "catalogue", "GET /catalogue").on_error is OnError.BODY_AS_200
    login = ROUTES["GET /login"].steps
    assert only_call(login, "user", "GET /login").on_error is OnError.AS_401
    assert only_call(login, "carts", "GET /carts/{customer}/merge").on_error is OnError.IGNORE
    delete = ROUTES["DELETE /cart"].steps
    assert only_call(delete, "carts", "DELETE /carts/{customer}").on_error is OnError.PROPAGATE
    add = ROUTES["POST /cart"].steps
    assert [c.service for c in add] == ["session-db", "catalogue", "carts"]  # item looked up first
    assert all(c.on_error is OnError.AS_500 for c in add[1:])
    assert only_call(add, "carts", "POST /carts/{customer}/items").ok_status == 201


def test_post_orders_sequence() -> None:
    steps = ROUTES["POST /orders"].steps
    assert steps[1] == only_call(steps, "user", "GET /customers/{customer}")
    parallel = steps[2]
    assert isinstance(parallel, Parallel)
    assert sorted(c.operation for c in parallel.calls) == [
        "GET /customers/{customer}/addresses", "GET /customers/{customer}/cards"]
    orders = steps[3]
    assert isinstance(orders, Call)
    assert (orders.service, orders.on_error, orders.ok_status) == \
        ("orders", OnError.PROPAGATE, 201)  # 201 / 406 / 500 passed through
    assert len(steps) == 4


def test_orders_waits_are_five_seconds() -> None:
    assert ORDERS_WAIT_MS == 5_000
    orders = only_call(ROUTES["POST /orders"].steps, "orders", "POST /orders")
    gets, payment, shipping, save = orders.then
    assert isinstance(gets, Parallel)
    assert sorted(c.service for c in gets.calls) == ["carts", "user", "user", "user"]
    assert (payment.service, shipping.service, save.service) == \
        ("payment", "shipping", "orders-db")
    http_waits = [*gets.calls, payment, shipping]
    for call in http_waits:
        assert call.timeout_ms == 5_000, call
        assert call.on_error is OnError.AS_500, call
    assert save.on_error is OnError.AS_500
    # shipping still answers 201 when rabbitmq is down
    (publish,) = shipping.then
    assert (publish.service, publish.on_error) == ("rabbitmq", OnError.IGNORE)
    assert shipping.ok_status == 201


@pytest.mark.parametrize(("route", "expected"), [
    ("GET /", set()),
    ("GET /category.html", set()),
    ("GET /detail.html", set()),
    ("GET /basket.html", set()),
    ("GET /catalogue", {"session-db", "catalogue", "catalogue-db"}),
    ("GET /login", {"session-db", "user", "user-db", "carts", "carts-db"}),
    ("DELETE /cart", {"session-db", "carts", "carts-db"}),
    ("POST /cart", {"session-db", "catalogue", "catalogue-db", "carts", "carts-db"}),
    ("GET /cart", {"session-db", "carts", "carts-db"}),
    ("POST /orders", {"session-db", "user", "user-db", "orders", "carts", "carts-db", "payment",
                      "shipping", "rabbitmq", "orders-db"}),
])
def test_callees_of_each_route(route: str, expected: set[str]) -> None:
    assert callees(ROUTES[route]) == expected


def test_callees_descends_into_parallel_groups() -> None:
    route = Route("GET", "/x", (Parallel((Call("user", "a", (Call("user-db", "b"),)),
                                          Call("payment", "c"))),))
    assert callees(route) == {"user", "user-db", "payment"}


# --- catalogue and orders' rules ---------------------------------------------------------------

def test_catalogue_prices() -> None:
    assert {i.item_id: i.price for i in CATALOGUE} == {
        "6d62d909-f957-430e-8689-b5129c0bb75e": 17.15,
        "a0a4f044-b040-410d-8ead-4de0446aec7e": 7.99,
        "808a2de1-1aaa-4c25-a9b9-6612e8f29a38": 17.32,
        "510a0d7e-8e83-4193-b483-e27e09ddc34d": 15.00,
        HOLY_SOCK: 99.99,
        "d3588630-ad8e-49df-bbd7-3167f7efb246": 10.99,
        "819e1fbf-8b7e-4f6d-811f-693534916a8b": 14.00,
        "zzz4f044-b040-410d-8ead-4de0446aec7e": 12.00,
        "3395a43e-2d88-40de-b95f-e00e1502085b": 18.00,
        "837ab141-399e-4c1f-9abc-bace40296bac": 15.00,
    }
    assert len(CATALOGUE) == 10


def test_payment_limit_declines_only_the_holy_sock() -> None:
    assert (PAYMENT_LIMIT, SHIPPING_COST, ORDER_DECLINED_STATUS) == (100.0, 4.99, 406)
    declined = {i.item_id for i in CATALOGUE if i.price + SHIPPING_COST > PAYMENT_LIMIT}
    assert declined == {HOLY_SOCK}  # 99.99 + 4.99 = 104.98 > 100
