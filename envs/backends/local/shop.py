"""The 14 SockShop services of one local replica: their application behaviour, as one
asyncio host (:class:`ShopHost`).

Design (decided for 2 cores): one Python process runs every service's application, each on its
own loopback port behind its own Envoy sidecar; a service reaches another only through its
sidecar (HTTP to the sidecar's outbound listener with ``Host: <service>``, TCP to the sidecar's
per-destination tcp_proxy listener). Sharing one process costs nothing in fidelity because no
service burns CPU: work is *modelled* with SockShop's figures, the simulator's too
(``envs.sockshop.figures``): each service is a processor-sharing CPU of ``cores`` cores
(every job at most one core, ``cpu.py``) realised with asyncio timers, and ``workers`` requests
at once (further ones queue FIFO). Work per operation is the figures' mean, drawn lognormal with
the service's ``work_sigma`` exactly as the simulator draws it. The call graph is
``envs.sockshop.ROUTES`` with the simulator's application semantics: the shared cart
(``DELETE /cart`` empties it, carts' ``addToCart`` re-reads it ``CART_FOUND_REREADS`` times
when the item is already in it and fails with 500 if it vanished), orders' amount = cart items
+ shipping, payment declines amounts over ``PAYMENT_LIMIT`` (orders answers 406), orders caps
every wait at 5 s (504 → 500), failures mapped by each call's ``on_error``.

The front-end's Node.js process crashes like the simulator's (``figures.FRONTEND_CRASH_ON``:
a sidecar's plain-text 503, or any failure, of the calls whose reply it parses unguarded): its
server closes, every connection to it is reset (the gateway answers 503), and it serves again
after ``FRONTEND_RESTART_MS`` plus kubelet's CrashLoopBackOff for repeated crashes. A control
endpoint (``POST /reset``: empty cart, clean restart history, front-end up, every fault
cleared; ``GET /stats``: crashes and down time since the reset; ``POST /fault``: a fault of
``envs.backends.base``, on or off) lets the backend start every run from the same state, as the
simulator does, and inject its faults:

* a service **down** (``ServiceDown``): its server closes its listening socket and aborts every
  open connection, so its sidecar's connections to it are refused and requests in flight are
  reset — what a stopped process does; it listens again when the fault ends;
* a service **slowed** ×k (``LatencySpike``): every work draw of the service is multiplied by
  ``k`` while the fault is on.

The TCP services (MongoDB, MySQL, redis, RabbitMQ) are line-based JSON servers; their callers
use a driver shaped by ``figures.DRIVERS`` (``drivers.py``: a pool of up to N connections, one
operation at a time on each, or one multiplexed connection). A connection the sidecar refuses
(over ``tcp.maxConnections``) fails the operation, as a real driver's exception does.

The process that runs a :class:`ShopHost` is ``python -m envs.backends.local.apps --replica K
--seed S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import sys
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

from envs.backends.local.cpu import ProcessorSharing
from envs.backends.local.drivers import LOCAL_ERROR_STATUS, Reply, TcpDriver
from envs.backends.local.ports import HOST, ReplicaPorts
from envs.backends.local.topology import (
    concrete_path,
    is_tcp,
    operations_of,
    split_operation,
    tcp_callees_of,
)
from envs.sockshop import (
    CATALOGUE,
    ORDER_DECLINED_STATUS,
    PAYMENT_LIMIT,
    ROUTES,
    SERVICE_NAMES,
    SHIPPING_COST,
    Call,
    OnError,
    Parallel,
    Step,
    figures,
)

#: Status of a timed-out wait (orders' 5 s cap), mapped to 500 by the caller like the simulator.
TIMEOUT_STATUS = 504
_PRICES = {item.item_id: item.price for item in CATALOGUE}


def restart_delay_ms(crash_number: int) -> float:
    """Time until the front-end serves again after its ``crash_number``-th crash (1-based):
    the restart itself plus kubelet's CrashLoopBackOff (none for the first, then 10 s, 20 s,
    ... capped), as the simulator has it."""
    if crash_number < 1:
        raise ValueError(f"crash_number must be >= 1, got {crash_number}")
    delay = figures.FRONTEND_RESTART_MS
    if crash_number > 1:
        delay += min(figures.CRASH_BACKOFF_CAP_MS,
                     figures.CRASH_BACKOFF_BASE_MS * 2.0 ** (crash_number - 2))
    return delay


@dataclass
class Context:
    """Per-request data a handler passes down its steps."""

    item_id: str = ""
    price: float = 0.0
    amount: float | None = None
    bad_body: bool = False
    replies: dict[tuple[str, str], Reply] = field(default_factory=dict)


class ShopHost:
    """Every service of one replica: servers, their CPUs and workers, callers' clients."""

    def __init__(self, replica: int, seed: int) -> None:
        self.ports = ReplicaPorts(replica)
        self.rng = random.Random(seed)
        self.cpu = {s: ProcessorSharing(figures.SERVICE_PROFILES[s].cores) for s in SERVICE_NAMES}
        self.workers = {
            s: (asyncio.Semaphore(p.workers) if p.workers < figures.UNBOUNDED_WORKERS else None)
            for s, p in figures.SERVICE_PROFILES.items()}
        self.cart: dict[str, int] = {}
        self.sessions: dict[str, ClientSession] = {}
        self.drivers: dict[tuple[str, str], TcpDriver] = {}
        self._runners: list[web.AppRunner] = []
        self._frontend: web.AppRunner | None = None
        self._frontend_restart: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.frontend_down_until = 0.0
        self.frontend_crashes = 0
        self.frontend_down_ms = 0.0
        self._service_runners: dict[str, web.AppRunner] = {}
        self._tcp_servers: dict[str, asyncio.base_events.Server] = {}
        self._tcp_writers: dict[str, set[asyncio.StreamWriter]] = {s: set() for s in SERVICE_NAMES}
        #: services taken down by a ``ServiceDown`` fault
        self.down: set[str] = set()
        #: work multiplier per service slowed by a ``LatencySpike`` fault
        self.slow: dict[str, float] = {}

    # ----- work ----------------------------------------------------------------------------

    def draw_work_ms(self, service: str, mean_ms: float) -> float:
        """The simulator's draw: lognormal with mean ``mean_ms`` and the service's sigma."""
        sigma = figures.SERVICE_PROFILES[service].work_sigma
        factor = self.slow.get(service, 1.0)  # a LatencySpike fault's multiplier
        return factor * mean_ms * math.exp(sigma * self.rng.gauss(0.0, 1.0) - 0.5 * sigma * sigma)

    async def work(self, service: str, mean_ms: float) -> None:
        """Run one chunk of ``service``'s CPU work (mean ``mean_ms``)."""
        await self.cpu[service].run(self.draw_work_ms(service, mean_ms))

    @contextlib.asynccontextmanager
    async def worker(self, service: str):  # type: ignore[no-untyped-def]
        """Hold one of ``service``'s workers (FIFO queue when all are busy)."""
        sem = self.workers[service]
        if sem is None:
            yield
        else:
            async with sem:
                yield

    # ----- calls ---------------------------------------------------------------------------

    def _payload(self, call: Call, ctx: Context) -> dict[str, Any] | None:
        if call.operation == "POST /carts/{customer}/items":
            return {"id": ctx.item_id, "price": ctx.price}
        if call.operation == "POST /paymentAuth":
            return {"amount": ctx.amount}
        return None

    async def _http_call(self, caller: str, call: Call, ctx: Context) -> Reply:
        method, template = split_operation(call.operation)
        url = f"http://{HOST}:{self.ports.outbound_http(caller)}" + concrete_path(
            template, ctx.item_id)
        try:
            async with self.sessions[caller].request(
                    method, url, headers={"Host": call.service},
                    json=self._payload(call, ctx)) as resp:
                text = await resp.read()
                try:
                    body = json.loads(text) if text else None
                except ValueError:
                    body = None
                return Reply(resp.status, body)
        except (TimeoutError, OSError, ValueError) as exc:
            print(f"{caller} -> {call.service}: {exc!r}", file=sys.stderr)
            return Reply(LOCAL_ERROR_STATUS)

    async def _tcp_call(self, caller: str, call: Call, ctx: Context, phase: int) -> Reply:
        args: dict[str, Any] = {"item": ctx.item_id, "price": ctx.price, "phase": phase}
        return await self.drivers[(caller, call.service)].op(call.operation, args)

    async def call(self, caller: str, call: Call, ctx: Context, phase: int = 0) -> Reply:
        """One request from ``caller`` through its sidecar; the caller's wait is capped at
        ``call.timeout_ms`` (the request itself runs on, as the callers' futures do)."""
        if is_tcp(call.service):
            coro = self._tcp_call(caller, call, ctx, phase)
        else:
            coro = self._http_call(caller, call, ctx)
        if call.timeout_ms is None:
            return await coro
        task = asyncio.ensure_future(coro)
        try:
            return await asyncio.wait_for(asyncio.shield(task), call.timeout_ms / 1000.0)
        except TimeoutError:
            return Reply(TIMEOUT_STATUS)

    async def run_steps(self, service: str, steps: tuple[Step, ...], ctx: Context,
                        cont_ms: float = 0.0) -> int | None:
        """Run ``service``'s downstream steps in order (calls of a step in parallel); returns
        the failure status that ends the request, or None. ``cont_ms``: CPU work after each
        step (the front-end handling a reply)."""
        for step in steps:
            calls = step.calls if isinstance(step, Parallel) else (step,)
            replies = await asyncio.gather(*(self._call_with_rereads(service, c, ctx)
                                             for c in calls))
            failed: int | None = None
            for call, reply in zip(calls, replies, strict=True):
                ctx.replies[(call.service, call.operation)] = reply
                if service == "front-end" and self._crashes_frontend(call, reply):
                    await self._crash_frontend()
                if call.operation == "GET /catalogue/{item}" and reply.status < 400:
                    ctx.price = float(reply.body["price"])
                if call.operation == "GET /carts/{customer}/items" and reply.status < 400:
                    ctx.amount = SHIPPING_COST + sum(
                        float(i["price"]) * int(i["quantity"]) for i in reply.body or ())
                if call.operation == "POST /paymentAuth" and reply.status < 400:
                    if ctx.amount is not None and ctx.amount > PAYMENT_LIMIT:
                        failed = failed or ORDER_DECLINED_STATUS
                elif reply.status >= 400 and failed is None:
                    failed = self._on_error(call, reply, ctx)
            if cont_ms > 0:
                await self.work(service, cont_ms)
            if failed is not None:
                return failed
        return None

    def _crashes_frontend(self, call: Call, reply: Reply) -> bool:
        mode = figures.FRONTEND_CRASH_ON.get((call.service, call.operation))
        if mode is None or asyncio.get_running_loop().time() < self.frontend_down_until:
            return False
        if mode == "sidecar_503":
            return reply.status == 503 and reply.body is None  # Envoy's plain-text reply
        if mode == "any_failure":
            return reply.status >= 400
        raise ValueError(f"unknown FRONTEND_CRASH_ON mode {mode!r}")

    async def _crash_frontend(self) -> None:
        """Node.js exits: close the server, reset every connection, come back after the
        restart delay. Does not return: the calling request dies with the process."""
        loop = asyncio.get_running_loop()
        self.frontend_crashes += 1
        restart_ms = restart_delay_ms(self.frontend_crashes)
        self.frontend_down_until = loop.time() + restart_ms / 1000.0
        self.frontend_down_ms += restart_ms
        print(f"front-end crashed (#{self.frontend_crashes}); back in {restart_ms:.0f} ms",
              file=sys.stderr, flush=True)
        runner, self._frontend = self._frontend, None
        if runner is not None:
            task = loop.create_task(self._kill(runner))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._frontend_restart = loop.call_later(restart_ms / 1000.0, self._restart_frontend)
        await asyncio.Event().wait()  # cancelled by _kill with every other request

    @staticmethod
    async def _kill(runner: web.AppRunner) -> None:
        server = runner.server
        if server is not None:
            for handler in list(server.connections):
                if handler.transport is not None:
                    handler.transport.abort()  # the peer sees a reset
        await runner.cleanup()

    def _restart_frontend(self) -> None:
        self._frontend_restart = None
        task = asyncio.get_running_loop().create_task(self._start_frontend())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_frontend(self) -> None:
        if self._frontend is not None or "front-end" in self.down:
            return
        app = web.Application()
        for key in ROUTES:
            method, path = split_operation(key)
            app.router.add_route(method, path, self._frontend_handler(key))
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, HOST, self.ports.app("front-end"), reuse_address=True,
                          backlog=1024, shutdown_timeout=0.1).start()
        self._frontend = runner

    async def reset(self) -> None:
        """A fresh start for the next run: empty cart, no crash history, no fault, every
        service up."""
        self.slow.clear()
        for service in sorted(self.down):
            await self.set_down(service, False)
        self.cart.clear()
        self.frontend_crashes = 0
        self.frontend_down_ms = 0.0
        self.frontend_down_until = 0.0
        if self._frontend_restart is not None:
            self._frontend_restart.cancel()
            self._frontend_restart = None
        await self._start_frontend()

    async def _control(self) -> web.AppRunner:
        async def reset(_: web.Request) -> web.Response:
            await self.reset()
            return web.json_response({"ok": True})

        async def stats(_: web.Request) -> web.Response:
            return web.json_response({"frontend_crashes": self.frontend_crashes,
                                      "frontend_down_ms": self.frontend_down_ms,
                                      "frontend_up": self._frontend is not None})

        async def fault(request: web.Request) -> web.Response:
            body = await request.json()
            service, kind, on = str(body["service"]), str(body["kind"]), bool(body["on"])
            if service not in SERVICE_NAMES or kind not in ("down", "slow"):
                return web.json_response({"error": f"bad fault {body!r}"}, status=400)
            if kind == "down":
                await self.set_down(service, on)
            elif on:
                factor = float(body["factor"])
                if not factor > 0:
                    return web.json_response({"error": f"bad factor {factor}"}, status=400)
                self.slow[service] = factor
            else:
                self.slow.pop(service, None)
            return web.json_response({"ok": True, "down": sorted(self.down),
                                      "slow": self.slow})

        app = web.Application()
        app.router.add_post("/reset", reset)
        app.router.add_get("/stats", stats)
        app.router.add_post("/fault", fault)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, HOST, self.ports.control, reuse_address=True).start()
        return runner

    @staticmethod
    def _on_error(call: Call, reply: Reply, ctx: Context) -> int | None:
        if call.on_error == OnError.BODY_AS_200:
            ctx.bad_body = True
            return None
        if call.on_error == OnError.IGNORE:
            return None
        if call.on_error == OnError.AS_401:
            return 401
        if call.on_error == OnError.AS_500 or is_tcp(call.service) or reply.status == 504:
            return 500
        return reply.status

    async def _call_with_rereads(self, caller: str, call: Call, ctx: Context) -> Reply:
        """carts' ``addToCart``: when the item is already in the cart, carts-db is asked again
        ``CART_FOUND_REREADS`` times (the simulator's phases); every other call once."""
        if call.operation != "upsert item":
            return await self.call(caller, call, ctx)
        reply = await self.call(caller, call, ctx, phase=0)
        while reply.status < 400 and int((reply.body or {}).get("phase", -1)) > 0:
            reply = await self.call(caller, call, ctx, phase=int(reply.body["phase"]))
        return reply

    # ----- HTTP services -------------------------------------------------------------------

    def _service_handler(self, service: str, call: Call):  # type: ignore[no-untyped-def]
        mean_ms = figures.OPERATION_WORK_MS[(service, call.operation)]

        async def handle(request: web.Request) -> web.Response:
            body = await request.json() if request.can_read_body else None
            ctx = Context()
            if isinstance(body, dict):
                ctx.item_id = str(body.get("id", ""))
                if "price" in body:
                    ctx.price = float(body["price"])
                if body.get("amount") is not None:
                    ctx.amount = float(body["amount"])
            if "item" in request.match_info:
                ctx.item_id = request.match_info["item"]
            async with self.worker(service):
                await self.work(service, mean_ms)
                failed = await self.run_steps(service, call.then, ctx)
            if failed is not None:
                return web.json_response({"error": failed}, status=failed)
            return web.json_response(self._answer(service, call, ctx), status=call.ok_status)

        return handle

    def _answer(self, service: str, call: Call, ctx: Context) -> Any:
        if call.operation == "GET /catalogue":
            return [{"id": i.item_id, "price": i.price} for i in CATALOGUE]
        if call.operation == "GET /catalogue/{item}":
            return {"id": ctx.item_id, "price": _PRICES[ctx.item_id]}
        if call.operation == "GET /carts/{customer}/items":
            reply = ctx.replies.get(("carts-db", "find items"))
            return reply.body if reply is not None else []
        if call.operation == "POST /paymentAuth":
            return {"authorised": ctx.amount is not None and ctx.amount <= PAYMENT_LIMIT}
        return {"ok": True}

    def _frontend_handler(self, route_key: str):  # type: ignore[no-untyped-def]
        route = ROUTES[route_key]
        work_ms, cont_ms = figures.FRONTEND_WORK_MS[route_key]

        async def handle(request: web.Request) -> web.Response:
            ctx = Context()
            if request.can_read_body:
                with contextlib.suppress(ValueError):
                    body = await request.json()
                    if isinstance(body, dict):
                        ctx.item_id = str(body.get("id", ""))
            async with self.worker("front-end"):
                await self.work("front-end", work_ms)
                failed = await self.run_steps("front-end", route.steps, ctx, cont_ms)
            if failed is not None:
                return web.json_response({"error": failed}, status=failed)
            if route_key == "GET /catalogue":
                reply = ctx.replies[("catalogue", "GET /catalogue")]
                if ctx.bad_body or not isinstance(reply.body, list):
                    return web.Response(text="upstream error", status=200)
                return web.json_response(reply.body, status=200)
            if route.static:
                return web.Response(text="<html>sock shop</html>", content_type="text/html")
            return web.json_response({"ok": True}, status=route.ok_status)

        return handle

    # ----- TCP services --------------------------------------------------------------------

    def _tcp_handler(self, service: str):  # type: ignore[no-untyped-def]
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            tasks: set[asyncio.Task[None]] = set()
            self._tcp_writers[service].add(writer)
            try:
                while True:
                    line = await reader.readline()
                    if not line:
                        break
                    task = asyncio.ensure_future(self._tcp_op(service, json.loads(line), writer))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            except (OSError, ValueError):
                pass
            finally:
                for task in tasks:
                    task.cancel()
                self._tcp_writers[service].discard(writer)
                writer.close()

        return serve

    async def _tcp_op(self, service: str, msg: dict[str, Any],
                      writer: asyncio.StreamWriter) -> None:
        operation = str(msg["op"])
        args = msg.get("args") or {}
        async with self.worker(service):
            await self.work(service, figures.OPERATION_WORK_MS[(service, operation)])
            status, body = self._db_effect(operation, args)
        with contextlib.suppress(OSError, RuntimeError):
            writer.write((json.dumps({"id": msg["id"], "status": status, "body": body})
                          + "\n").encode())

    def _db_effect(self, operation: str, args: dict[str, Any]) -> tuple[int, Any]:
        """The state change of a DB operation, as the simulator applies it at its end."""
        item = str(args.get("item", ""))
        if operation == "delete cart":
            self.cart.clear()
        elif operation == "find items":
            return 200, [{"id": i, "quantity": q, "price": _PRICES[i]}
                         for i, q in self.cart.items()]
        elif operation == "upsert item":
            phase = int(args.get("phase", 0))
            if phase == 0:
                if self.cart.get(item, 0) > 0:
                    return 200, {"phase": 1}
                self.cart[item] = self.cart.get(item, 0) + 1
                return 200, {"phase": -1}
            if self.cart.get(item, 0) == 0:
                return 500, {"error": "Cannot find item in cart"}
            if phase >= figures.CART_FOUND_REREADS:
                self.cart[item] += 1
                return 200, {"phase": -1}
            return 200, {"phase": phase + 1}
        return 200, None

    # ----- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the callers' clients and start every service's server."""
        for caller in SERVICE_NAMES:
            self.sessions[caller] = ClientSession(
                connector=TCPConnector(limit=0, force_close=False),
                timeout=ClientTimeout(total=None))
            for dest in tcp_callees_of(caller):
                drv = figures.DRIVERS[(caller, dest)]
                slot = tcp_callees_of(caller).index(dest)
                self.drivers[(caller, dest)] = TcpDriver(
                    self.ports.outbound_tcp(caller, slot), drv.max_connections, drv.multiplexed)
        for service in SERVICE_NAMES:
            await self._start_service(service)
        self._runners.append(await self._control())

    async def _start_service(self, service: str) -> None:
        """Open ``service``'s server on its application port (no-op if it is already up)."""
        if service == "front-end":
            await self._start_frontend()
            return
        if service in self._tcp_servers or service in self._service_runners:
            return
        port = self.ports.app(service)
        if is_tcp(service):
            self._tcp_servers[service] = await asyncio.start_server(
                self._tcp_handler(service), HOST, port, reuse_address=True, backlog=1024)
            return
        app = web.Application()
        for operation, call in operations_of(service).items():
            method, path = split_operation(operation)
            app.router.add_route(method, path, self._service_handler(service, call))
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, HOST, port, reuse_address=True, backlog=1024,
                          shutdown_timeout=0.1).start()
        self._service_runners[service] = runner

    async def set_down(self, service: str, down: bool) -> None:
        """Take ``service`` down (``down``: stop listening, abort every connection: refused
        connects and reset requests, as a stopped process gives) or bring it back up."""
        if not down:
            self.down.discard(service)
            await self._start_service(service)
            return
        self.down.add(service)
        if service == "front-end":
            if self._frontend_restart is not None:
                self._frontend_restart.cancel()
                self._frontend_restart = None
            runner, self._frontend = self._frontend, None
            if runner is not None:
                await self._kill(runner)
        elif is_tcp(service):
            server = self._tcp_servers.pop(service, None)
            if server is not None:
                server.close()
                for writer in list(self._tcp_writers[service]):
                    writer.transport.abort()
                await server.wait_closed()
        else:
            runner = self._service_runners.pop(service, None)
            if runner is not None:
                await self._kill(runner)

    async def stop(self) -> None:
        """Close every server and client."""
        if self._frontend_restart is not None:
            self._frontend_restart.cancel()
        for server in self._tcp_servers.values():
            server.close()
        for runner in [*self._runners, *self._service_runners.values(),
                       *([self._frontend] if self._frontend else [])]:
            await runner.cleanup()
        for session in self.sessions.values():
            await session.close()
