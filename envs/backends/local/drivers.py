"""What a call returns (:class:`Reply`) and the callers' database drivers (:class:`TcpDriver`).

The TCP services of the services host (MongoDB, MySQL, redis, RabbitMQ stand-ins) speak
line-based JSON; a caller reaches one through its own sidecar's per-destination tcp_proxy
listener with a driver shaped by ``envs.sockshop.figures.DRIVERS``: a pool of up to N
connections, one operation at a time on each, or one multiplexed connection. A connection the
sidecar refuses (over ``tcp.maxConnections``) or breaks fails the operation, as a real driver's
exception does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass
from typing import Any

from envs.backends.local.ports import HOST

#: Status a caller sees when the connection to its sidecar breaks (never expected for HTTP: the
#: sidecar answers every HTTP request itself, with 503 when it cannot reach the callee).
LOCAL_ERROR_STATUS = 503


@dataclass
class Reply:
    """What a call returned: its status and decoded body (None if not JSON)."""

    status: int
    body: Any = None


class TcpDriver:
    """A caller's driver for one TCP destination, reached through the caller's sidecar.

    ``max_connections`` connections at most, one operation at a time on each (LIFO reuse of
    idle ones); or, ``multiplexed``, one connection carrying every operation.
    """

    def __init__(self, port: int, max_connections: int, multiplexed: bool) -> None:
        self.port = port
        self.multiplexed = multiplexed
        self._slots = asyncio.Semaphore(max_connections) if not multiplexed else None
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._ids = itertools.count()
        # multiplexed state
        self._mux: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._mux_lock = asyncio.Lock()
        self._waiting: dict[int, asyncio.Future[Reply]] = {}

    async def op(self, operation: str, args: dict[str, Any]) -> Reply:
        """Run one operation; a refused or broken connection is a failed operation (503)."""
        if self.multiplexed:
            return await self._op_mux(operation, args)
        assert self._slots is not None
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            try:
                if conn is None:
                    conn = await asyncio.open_connection(HOST, self.port)
                reader, writer = conn
                writer.write(self._line(next(self._ids), operation, args))
                line = await reader.readline()
                if not line:
                    raise ConnectionError("connection closed by the sidecar")
                msg = json.loads(line)
            except (OSError, ConnectionError, ValueError):
                if conn is not None:
                    conn[1].close()
                return Reply(LOCAL_ERROR_STATUS)
            self._idle.append(conn)
            return Reply(int(msg["status"]), msg.get("body"))

    @staticmethod
    def _line(op_id: int, operation: str, args: dict[str, Any]) -> bytes:
        return (json.dumps({"id": op_id, "op": operation, "args": args}) + "\n").encode()

    async def _op_mux(self, operation: str, args: dict[str, Any]) -> Reply:
        async with self._mux_lock:
            if self._mux is None:
                try:
                    self._mux = await asyncio.open_connection(HOST, self.port)
                except OSError:
                    return Reply(LOCAL_ERROR_STATUS)
                asyncio.get_running_loop().create_task(self._read_mux(*self._mux))
        op_id = next(self._ids)
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[op_id] = fut
        try:
            self._mux[1].write(self._line(op_id, operation, args))
        except (OSError, RuntimeError):
            self._waiting.pop(op_id, None)
            return Reply(LOCAL_ERROR_STATUS)
        return await fut

    async def _read_mux(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                fut = self._waiting.pop(int(msg["id"]), None)
                if fut is not None and not fut.done():
                    fut.set_result(Reply(int(msg["status"]), msg.get("body")))
        except (OSError, ValueError):
            pass
        finally:
            writer.close()
            if self._mux is not None and self._mux[1] is writer:
                self._mux = None
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_result(Reply(LOCAL_ERROR_STATUS))
            self._waiting.clear()
