"""Replica leases: no two environments ever drive the same mesh replica.

A replica is one isolated copy of SockShop (a port block for ``local``, the namespace
``sockshop-K`` for ``k8s``; the simulator gives every env its own in-process copy). RLlib's
worker indices cannot tell replicas apart: ``vector_index`` is always 0 on the new API stack and
concurrent Tune trials and evaluation runners reuse the same worker indices. So every env
*leases* its replica index from one table:

* when Ray is initialised, a named Ray actor :data:`LEASE_ACTOR_NAME` in the namespace
  :data:`LEASE_NAMESPACE` holds the table for the whole cluster (all trials, all runners). It is
  detached, so it outlives the runner that happened to create it, and takes no CPU;
* otherwise a table local to this process.

A lease is given back with :meth:`ReplicaLease.release` (``MeshEnv.close`` does it). A process
that dies without releasing (SIGKILL, a crashed Ray actor) is noticed by its pid the next time
the table is asked, when it ran on the table's machine, and its lease is freed
(:func:`freed_leases` lists them); a holder on another machine keeps its lease until the Ray
cluster ends. The error for a taken replica names its holder so it can be found.

A lease says who drives a replica, not how the replica is configured: the DestinationRules a
dead holder had applied are put back by the backend, which can reach the replica even when no
one asks this table again (``local``: the replica's supervisor, from the holder records of
:mod:`envs.backends.local.mesh`, within a second of the death; the simulator's copy dies with
its holder).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

#: Name of the Ray actor that holds the cluster-wide lease table.
LEASE_ACTOR_NAME = "meshtune_replica_lease"
#: Ray namespace of that actor (fixed, so every job on the cluster finds the same table).
LEASE_NAMESPACE = "meshtune"


class ReplicaTakenError(RuntimeError):
    """The replica asked for is leased by someone else (or no replica is free)."""


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this machine (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


@dataclass(frozen=True)
class _Held:
    """One lease in the table: its private token, who holds it, and where that process runs."""

    token: str
    holder: str
    pid: int | None
    host: str | None


class LeaseTable:
    """The table of leased replicas: replica index -> its holder.

    Plain Python; used directly for the process-local table and as the body of the Ray actor.
    Methods return values instead of raising so the Ray actor's answers stay plain data.

    A holder that died without releasing (a SIGKILLed env runner) is found by its pid when it ran
    on the table's own machine: its lease is freed (and listed in :meth:`freed`) before the table
    answers. A holder on another machine cannot be checked by pid and keeps its lease until the
    table ends.
    """

    def __init__(self) -> None:
        self._held: dict[int, _Held] = {}
        self._freed: list[tuple[int, str]] = []

    def _free_dead_holders(self) -> None:
        here = socket.gethostname()
        for replica, held in list(self._held.items()):
            if held.pid is not None and held.host == here and not pid_alive(held.pid):
                del self._held[replica]
                self._freed.append((replica, held.holder))

    def acquire(self, replica: int | None, token: str, holder: str,
                max_replicas: int | None, pid: int | None = None,
                host: str | None = None) -> tuple[int | None, str]:
        """Lease ``replica`` (or the lowest free index when None) to ``token``, held by process
        ``pid`` on ``host`` (when given, a dead holder's lease can be freed).

        Returns ``(index, "")`` on success, ``(None, reason)`` when it is taken or none is free.
        """
        self._free_dead_holders()
        if replica is None:
            replica = 0
            while replica in self._held:
                replica += 1
            if max_replicas is not None and replica >= max_replicas:
                return None, (f"all {max_replicas} replicas are leased: "
                              + "; ".join(f"{k}: {h.holder}"
                                          for k, h in sorted(self._held.items())))
        elif replica in self._held:
            return None, f"replica {replica} is already leased by {self._held[replica].holder}"
        self._held[replica] = _Held(token, holder, pid, host)
        return replica, ""

    def release(self, replica: int, token: str) -> bool:
        """Give ``replica`` back if ``token`` holds it; returns whether it did."""
        held = self._held.get(replica)
        if held is None or held.token != token:
            return False
        del self._held[replica]
        return True

    def holders(self) -> dict[int, str]:
        """Every leased replica and the description of its holder (dead holders freed first)."""
        self._free_dead_holders()
        return {k: h.holder for k, h in sorted(self._held.items())}

    def freed(self) -> list[tuple[int, str]]:
        """``(replica, holder)`` of every lease freed because its holder had died, oldest
        first."""
        return list(self._freed)


_LOCAL_TABLE = LeaseTable()
_LOCAL_LOCK = threading.Lock()
_ray_actor_class: Any = None


def _ray_ready() -> bool:
    """Whether Ray is initialised in this process (never imports Ray: if nothing imported it,
    nothing initialised it)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def _lease_actor() -> Any:
    """The cluster's lease actor, created on first use (race-free with ``get_if_exists``)."""
    global _ray_actor_class
    import ray

    if _ray_actor_class is None:
        _ray_actor_class = ray.remote(LeaseTable)
    return _ray_actor_class.options(
        name=LEASE_ACTOR_NAME, namespace=LEASE_NAMESPACE, lifetime="detached",
        get_if_exists=True, num_cpus=0, max_restarts=0,
    ).remote()


def _describe_holder(label: str) -> str:
    """Who is leasing, for error messages: label, host, pid and Ray job/actor when known."""
    parts = [label] if label else []
    parts.append(f"pid {os.getpid()} on {socket.gethostname()}")
    if _ray_ready():
        import ray

        ctx = ray.get_runtime_context()
        parts.append(f"ray job {ctx.get_job_id()}")
        actor_id = ctx.get_actor_id()
        if actor_id:
            parts.append(f"actor {actor_id}")
    return ", ".join(parts)


@dataclass
class ReplicaLease:
    """A held replica. ``release`` is idempotent.

    Attributes:
        replica: the leased replica index (passed to the backend as ``replica=K``).
        token: the lease's private identity (only its holder can release it).
        holder: who holds it (pid, host, Ray job/actor).
        scope: ``"ray"`` (cluster-wide actor) or ``"process"`` (this process only).
    """

    replica: int
    token: str
    holder: str
    scope: Literal["ray", "process"]
    released: bool = field(default=False)

    def release(self) -> None:
        """Give the replica back. Safe to call more than once."""
        if self.released:
            return
        if self.scope == "ray":
            import ray

            if ray.is_initialized():
                ray.get(_lease_actor().release.remote(self.replica, self.token))
            # Ray already shut down: the table died with the cluster, nothing to give back.
        else:
            with _LOCAL_LOCK:
                _LOCAL_TABLE.release(self.replica, self.token)
        self.released = True


def acquire_replica(replica: int | None = None, *, label: str = "",
                    max_replicas: int | None = None) -> ReplicaLease:
    """Lease a mesh replica: ``replica`` exactly, or the lowest free index when None.

    Uses the cluster-wide Ray actor when Ray is initialised, else this process's table.

    Args:
        replica: the index wanted (>= 0), or None for any free one.
        label: a short description of the holder for error messages (e.g. the env's worker).
        max_replicas: when leasing any free index, the number of replicas that exist.

    Raises:
        ValueError: ``replica`` or ``max_replicas`` is not a valid index/count.
        ReplicaTakenError: ``replica`` is leased by someone else, or none is free.
    """
    if replica is not None and (isinstance(replica, bool) or not isinstance(replica, int)
                                or replica < 0):
        raise ValueError(f"replica must be a non-negative int or None, got {replica!r}")
    if max_replicas is not None and (not isinstance(max_replicas, int) or max_replicas < 1):
        raise ValueError(f"max_replicas must be a positive int or None, got {max_replicas!r}")
    token = uuid.uuid4().hex
    holder = _describe_holder(label)
    pid, host = os.getpid(), socket.gethostname()
    if _ray_ready():
        import ray

        got, reason = ray.get(_lease_actor().acquire.remote(replica, token, holder,
                                                            max_replicas, pid, host))
        scope: Literal["ray", "process"] = "ray"
    else:
        with _LOCAL_LOCK:
            got, reason = _LOCAL_TABLE.acquire(replica, token, holder, max_replicas, pid, host)
        scope = "process"
    if got is None:
        raise ReplicaTakenError(f"cannot lease a mesh replica ({scope} lease table): {reason}")
    return ReplicaLease(replica=got, token=token, holder=holder, scope=scope)


def leased_replicas() -> dict[int, str]:
    """The replicas leased now (index -> holder) in the table :func:`acquire_replica` uses."""
    if _ray_ready():
        import ray

        return dict(ray.get(_lease_actor().holders.remote()))
    with _LOCAL_LOCK:
        return _LOCAL_TABLE.holders()


def freed_leases() -> list[tuple[int, str]]:
    """``(replica, holder)`` of the leases freed because their holder died, in the table
    :func:`acquire_replica` uses."""
    if _ray_ready():
        import ray

        return [tuple(x) for x in ray.get(_lease_actor().freed.remote())]  # type: ignore[misc]
    with _LOCAL_LOCK:
        return _LOCAL_TABLE.freed()


__all__ = ["LEASE_ACTOR_NAME", "LEASE_NAMESPACE", "LeaseTable", "ReplicaLease",
           "ReplicaTakenError", "acquire_replica", "freed_leases", "leased_replicas",
           "pid_alive"]
