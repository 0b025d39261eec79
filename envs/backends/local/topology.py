"""Who calls whom in SockShop, read from ``envs.sockshop.ROUTES``: the sidecars' outbound
clusters, the operations each service serves, and the wire form of an operation.

Shared by the Envoy configuration (:mod:`envs.backends.local.envoy_config`) and the services
host (:mod:`envs.backends.local.shop`), so the two cannot disagree.
"""

from __future__ import annotations

from envs.sockshop import (
    ENTRY_SERVICE,
    ROUTES,
    SERVICE_BY_NAME,
    SERVICE_NAMES,
    Call,
    Parallel,
    Step,
)
from envs.sockshop import Protocol as WireProtocol

#: The caller name of the ingress gateway (not a SockShop service).
GATEWAY = "ingress"
#: The one customer every virtual user logs in as (the load test's shared customer id).
CUSTOMER_ID = "57a98d98e4b00679b4a830b2"
#: Ids used for the ``{id}`` placeholder of the address / card lookups.
RECORD_ID = "1"


def _calls(step: Step) -> tuple[Call, ...]:
    return step.calls if isinstance(step, Parallel) else (step,)


def _walk(caller: str, steps: tuple[Step, ...], out: dict[str, set[str]],
          ops: dict[str, dict[str, Call]]) -> None:
    for step in steps:
        for call in _calls(step):
            out.setdefault(caller, set()).add(call.service)
            known = ops.setdefault(call.service, {}).get(call.operation)
            if known is not None and known.then != call.then:
                raise ValueError(f"{call.service} {call.operation!r} has two different call "
                                 "graphs in envs.sockshop.ROUTES")
            ops[call.service][call.operation] = call
            _walk(call.service, call.then, out, ops)


def _build() -> tuple[dict[str, tuple[str, ...]], dict[str, dict[str, Call]]]:
    callees: dict[str, set[str]] = {GATEWAY: {ENTRY_SERVICE}}
    operations: dict[str, dict[str, Call]] = {}
    for route in ROUTES.values():
        _walk(ENTRY_SERVICE, route.steps, callees, operations)
    ordered = {caller: tuple(s for s in SERVICE_NAMES if s in dests)
               for caller, dests in callees.items()}
    return ordered, operations


_CALLEES, _OPERATIONS = _build()


def callees_of(caller: str) -> tuple[str, ...]:
    """Destinations ``caller`` (a service or :data:`GATEWAY`) sends traffic to, in SockShop
    order: its sidecar's outbound clusters."""
    if caller != GATEWAY and caller not in SERVICE_BY_NAME:
        raise ValueError(f"unknown caller {caller!r}")
    return _CALLEES.get(caller, ())


def tcp_callees_of(caller: str) -> tuple[str, ...]:
    """The TCP destinations among :func:`callees_of` (each gets its own tcp_proxy listener)."""
    return tuple(d for d in callees_of(caller)
                 if SERVICE_BY_NAME[d].protocol == WireProtocol.TCP)


def http_callees_of(caller: str) -> tuple[str, ...]:
    """The HTTP destinations among :func:`callees_of` (virtual hosts of the outbound listener)."""
    return tuple(d for d in callees_of(caller)
                 if SERVICE_BY_NAME[d].protocol == WireProtocol.HTTP)


def operations_of(service: str) -> dict[str, Call]:
    """Operations ``service`` serves (``GET /carts/{customer}/items`` → the call, whose ``then``
    is what the service does for it). The front-end's routes are in ``ROUTES`` instead."""
    return dict(_OPERATIONS.get(service, {}))


def is_tcp(service: str) -> bool:
    """Whether the mesh treats ``service`` as opaque TCP."""
    return SERVICE_BY_NAME[service].protocol == WireProtocol.TCP


def split_operation(operation: str) -> tuple[str, str]:
    """``"GET /carts/{customer}/items"`` → ``("GET", "/carts/{customer}/items")``."""
    method, _, path = operation.partition(" ")
    if not path.startswith("/"):
        raise ValueError(f"not an HTTP operation: {operation!r}")
    return method, path


def concrete_path(template: str, item_id: str = "") -> str:
    """The request path of an operation's path template, placeholders filled in."""
    return (template.replace("{customer}", CUSTOMER_ID).replace("{id}", RECORD_ID)
            .replace("{item}", item_id or "none"))
