"""The front-end's call graph (``envs.sockshop.ROUTES``) compiled once into flat NumPy arrays.

The simulator core walks these arrays, never the dataclasses. A *node* is one
:class:`~envs.sockshop.Call` (or a route's root at the front-end); its downstream steps are a
contiguous run in the step arrays, each step a contiguous run of node ids that are issued
together (a :class:`~envs.sockshop.Parallel` group, or a single call).

A *cluster* is one Envoy outbound cluster: a (calling sidecar, destination) pair. The load
generator reaches the front-end through the ingress gateway, which is a calling sidecar too
(index ``GATEWAY`` in the caller column).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.sockshop import (
    CATALOGUE,
    LOAD_TEST_LOOP,
    ORDER_DECLINED_STATUS,
    PAYMENT_LIMIT,
    ROUTES,
    SERVICE_NAMES,
    SERVICES,
    SHIPPING_COST,
    Call,
    OnError,
    Parallel,
    Protocol,
    Route,
    Step,
    endpoint_names,
    figures,
)

#: Caller index of the ingress gateway (one past the last service).
GATEWAY = len(SERVICE_NAMES)

ON_ERROR_CODE: dict[OnError, int] = {
    OnError.PROPAGATE: 0, OnError.AS_500: 1, OnError.AS_401: 2, OnError.IGNORE: 3,
    OnError.BODY_AS_200: 4,
}

#: Operations with application semantics beyond "take time, answer".
KIND_PLAIN = 0
KIND_CART_DELETE = 1   # carts-db: empties the shared cart
KIND_CART_ADD = 2      # carts-db: addToCart's find-then-save (see figures.CART_FOUND_REREADS)
KIND_CART_READ = 3     # carts-db: reads the items; orders' amount = items + shipping
KIND_PAYMENT = 4       # payment: declines amounts over PAYMENT_LIMIT (orders answers 406)

#: ``node_crash`` codes (mirror core.CRASH_ON_*).
_CRASH_CODE = {"sidecar_503": 1, "any_failure": 2}

_KINDS: dict[tuple[str, str], int] = {
    ("carts-db", "delete cart"): KIND_CART_DELETE,
    ("carts-db", "upsert item"): KIND_CART_ADD,
    ("carts-db", "find items"): KIND_CART_READ,
    ("payment", "POST /paymentAuth"): KIND_PAYMENT,
}


@dataclass(frozen=True)
class CompiledGraph:
    """SockShop's call graph and load-test loop as arrays (see the module docstring).

    Node arrays (index = node id): ``node_svc`` callee service index, ``node_cluster`` the
    outbound cluster the call leaves through, ``node_kind`` (``KIND_*``), ``node_on_error``
    (``ON_ERROR_CODE``), ``node_timeout_ms`` (0 = the caller waits forever), ``node_ok_status``,
    ``node_step_first``/``node_step_count`` (its downstream steps), ``node_work_ms`` (CPU work
    before the first step, ms of one core), ``node_cont_ms`` (CPU work after each step).
    ``node_crash`` (0, or how the call's failure crashes the front-end, see
    ``figures.FRONTEND_CRASH_ON``).
    Step arrays: ``step_call_first``/``step_call_count`` into ``step_calls`` (node ids).
    Cluster arrays: ``cluster_caller`` (service index or ``GATEWAY``), ``cluster_dest``.
    Loop arrays (9 entries): ``loop_root`` root node of the route, ``loop_endpoint`` endpoint
    index (-1 for the detail page, whose name depends on the item), ``detail_endpoint`` per
    catalogue item. ``item_price`` per catalogue item.
    """

    node_svc: np.ndarray
    node_cluster: np.ndarray
    node_kind: np.ndarray
    node_on_error: np.ndarray
    node_timeout_ms: np.ndarray
    node_ok_status: np.ndarray
    node_step_first: np.ndarray
    node_step_count: np.ndarray
    node_work_ms: np.ndarray
    node_cont_ms: np.ndarray
    node_crash: np.ndarray
    node_label: tuple[str, ...]
    step_call_first: np.ndarray
    step_call_count: np.ndarray
    step_calls: np.ndarray
    cluster_caller: np.ndarray
    cluster_dest: np.ndarray
    loop_root: np.ndarray
    loop_endpoint: np.ndarray
    detail_endpoint: np.ndarray
    item_price: np.ndarray
    endpoint_names: tuple[str, ...]
    route_root: dict[str, int]
    svc_is_tcp: np.ndarray
    svc_cores: np.ndarray
    svc_workers: np.ndarray
    svc_work_sigma: np.ndarray
    payment_limit: float
    shipping_cost: float
    declined_status: int


def compile_graph() -> CompiledGraph:
    """Compile ``envs.sockshop`` + ``profile`` into a :class:`CompiledGraph`."""
    svc_index = {name: i for i, name in enumerate(SERVICE_NAMES)}
    nodes: list[dict] = []
    steps: list[list[int]] = []
    clusters: dict[tuple[int, int], int] = {}

    def cluster_of(caller: int, dest: int) -> int:
        return clusters.setdefault((caller, dest), len(clusters))

    def add_steps(caller: int, node_steps: tuple[Step, ...]) -> tuple[int, int]:
        # Reserve the step slots first so a node's steps are contiguous.
        first = len(steps)
        for _ in node_steps:
            steps.append([])
        for k, step in enumerate(node_steps):
            calls = step.calls if isinstance(step, Parallel) else (step,)
            steps[first + k] = [add_call(caller, c) for c in calls]
        return first, len(node_steps)

    def add_call(caller: int, call: Call) -> int:
        if call.service not in svc_index:
            raise ValueError(f"call graph names unknown service {call.service!r}")
        key = (call.service, call.operation)
        if key not in figures.OPERATION_WORK_MS:
            raise ValueError(f"figures.OPERATION_WORK_MS has no entry for {key}")
        dest = svc_index[call.service]
        nid = len(nodes)
        nodes.append({})
        first, count = add_steps(dest, call.then)
        nodes[nid] = dict(
            svc=dest, cluster=cluster_of(caller, dest), kind=_KINDS.get(key, KIND_PLAIN),
            on_error=ON_ERROR_CODE[call.on_error], timeout=float(call.timeout_ms or 0),
            ok=call.ok_status, step_first=first, step_count=count,
            work=figures.OPERATION_WORK_MS[key], cont=figures.OPERATION_CONT_MS.get(key, 0.0),
            crash=(_CRASH_CODE[figures.FRONTEND_CRASH_ON[key]]
                   if caller == svc_index["front-end"] and key in figures.FRONTEND_CRASH_ON
                   else 0),
            label=f"{call.service} {call.operation}")
        return nid

    def add_route(route: Route) -> int:
        if route.key not in figures.FRONTEND_WORK_MS:
            raise ValueError(f"figures.FRONTEND_WORK_MS has no entry for route {route.key}")
        fe = svc_index["front-end"]
        work, cont = figures.FRONTEND_WORK_MS[route.key]
        nid = len(nodes)
        nodes.append({})
        first, count = add_steps(fe, route.steps)
        nodes[nid] = dict(
            svc=fe, cluster=cluster_of(GATEWAY, fe), kind=KIND_PLAIN,
            on_error=ON_ERROR_CODE[OnError.PROPAGATE], timeout=0.0, ok=route.ok_status,
            step_first=first, step_count=count, work=work, cont=cont, crash=0,
            label=f"front-end {route.key}")
        return nid

    route_root = {key: add_route(route) for key, route in ROUTES.items()}

    names = endpoint_names()
    name_index = {n: i for i, n in enumerate(names)}
    loop_root, loop_endpoint = [], []
    for step in LOAD_TEST_LOOP:
        loop_root.append(route_root[step.route])
        loop_endpoint.append(-1 if "{item}" in step.name else name_index[step.name])
    detail_step = next(s for s in LOAD_TEST_LOOP if "{item}" in s.name)
    detail_endpoint = [name_index[detail_step.name.format(item=i.item_id)] for i in CATALOGUE]

    flat_calls: list[int] = []
    step_first: list[int] = []
    for s in steps:
        step_first.append(len(flat_calls))
        flat_calls.extend(s)
    cl_pairs = sorted(clusters.items(), key=lambda kv: kv[1])

    def arr(key: str, dtype: type) -> np.ndarray:
        return np.array([n[key] for n in nodes], dtype=dtype)

    profiles = [figures.SERVICE_PROFILES[s.name] for s in SERVICES]
    return CompiledGraph(
        node_svc=arr("svc", np.int64), node_cluster=arr("cluster", np.int64),
        node_kind=arr("kind", np.int64), node_on_error=arr("on_error", np.int64),
        node_timeout_ms=arr("timeout", np.float64), node_ok_status=arr("ok", np.int64),
        node_step_first=arr("step_first", np.int64), node_step_count=arr("step_count", np.int64),
        node_work_ms=arr("work", np.float64), node_cont_ms=arr("cont", np.float64),
        node_crash=arr("crash", np.int64),
        node_label=tuple(n["label"] for n in nodes),
        step_call_first=np.array(step_first, dtype=np.int64),
        step_call_count=np.array([len(s) for s in steps], dtype=np.int64),
        step_calls=np.array(flat_calls, dtype=np.int64),
        cluster_caller=np.array([k[0] for k, _ in cl_pairs], dtype=np.int64),
        cluster_dest=np.array([k[1] for k, _ in cl_pairs], dtype=np.int64),
        loop_root=np.array(loop_root, dtype=np.int64),
        loop_endpoint=np.array(loop_endpoint, dtype=np.int64),
        detail_endpoint=np.array(detail_endpoint, dtype=np.int64),
        item_price=np.array([i.price for i in CATALOGUE], dtype=np.float64),
        endpoint_names=names, route_root=route_root,
        svc_is_tcp=np.array([s.protocol == Protocol.TCP for s in SERVICES], dtype=np.int64),
        svc_cores=np.array([p.cores for p in profiles], dtype=np.float64),
        svc_workers=np.array([p.workers for p in profiles], dtype=np.int64),
        svc_work_sigma=np.array([p.work_sigma for p in profiles], dtype=np.float64),
        payment_limit=PAYMENT_LIMIT, shipping_cost=SHIPPING_COST,
        declined_status=ORDER_DECLINED_STATUS,
    )
