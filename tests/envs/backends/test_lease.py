"""Replica leases: N holders get N distinct replicas; a taken replica cannot be leased twice;
a dead holder's lease is freed."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from envs.backends.lease import (
    LEASE_ACTOR_NAME,
    LEASE_NAMESPACE,
    LeaseTable,
    ReplicaTakenError,
    acquire_replica,
    freed_leases,
    leased_replicas,
    pid_alive,
)


@pytest.fixture(autouse=True)
def _no_leftover_leases():
    """Every test starts and must end with an empty process-local table."""
    assert leased_replicas() == {}
    yield
    assert leased_replicas() == {}, "a test leaked a lease"


def test_n_leases_get_n_distinct_replicas_lowest_first():
    leases = [acquire_replica() for _ in range(5)]
    try:
        assert [lease.replica for lease in leases] == [0, 1, 2, 3, 4]
        assert all(lease.scope == "process" for lease in leases)
        assert sorted(leased_replicas()) == [0, 1, 2, 3, 4]
    finally:
        for lease in leases:
            lease.release()


def test_second_lease_of_taken_replica_fails_naming_the_holder():
    first = acquire_replica(3, label="env on worker 2")
    try:
        with pytest.raises(ReplicaTakenError, match=r"replica 3 is already leased by "
                                                    r"env on worker 2, pid \d+"):
            acquire_replica(3)
        # Any-free leasing skips the taken index.
        other = acquire_replica()
        assert other.replica == 0
        other.release()
    finally:
        first.release()


def test_release_frees_the_replica_and_is_idempotent():
    lease = acquire_replica(0)
    lease.release()
    lease.release()
    again = acquire_replica(0)
    assert again.replica == 0
    # The old lease's token no longer holds replica 0: releasing it again must not free it.
    lease.released = False
    lease.release()
    assert 0 in leased_replicas()
    again.release()


def test_lowest_free_index_is_reused_after_release():
    a, b, c = acquire_replica(), acquire_replica(), acquire_replica()
    b.release()
    d = acquire_replica()
    assert d.replica == 1
    for lease in (a, c, d):
        lease.release()


def test_max_replicas_bounds_any_free_leasing():
    a, b = acquire_replica(max_replicas=2), acquire_replica(max_replicas=2)
    with pytest.raises(ReplicaTakenError, match="all 2 replicas are leased"):
        acquire_replica(max_replicas=2)
    a.release()
    b.release()


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_bad_replica_index_is_rejected(bad):
    with pytest.raises(ValueError, match="replica must be a non-negative int"):
        acquire_replica(bad)


def test_lease_table_only_token_holder_releases():
    table = LeaseTable()
    assert table.acquire(None, "t1", "h1", None) == (0, "")
    assert table.release(0, "someone-else") is False
    assert table.holders() == {0: "h1"}
    assert table.release(0, "t1") is True
    assert table.holders() == {}


@contextlib.contextmanager
def _local_ray(namespace: str) -> Iterator[Any]:
    """A private local Ray (1 CPU, no dashboard) in ``namespace``, shut down afterwards."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
             namespace=namespace)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_ray_lease_is_cluster_wide_across_processes():
    """With Ray initialised, leases taken in different worker processes never collide."""
    with _local_ray("meshtune-test-lease") as ray:
        @ray.remote(num_cpus=0)
        class Holder:
            def lease(self, replica=None):
                from envs.backends.lease import acquire_replica

                self.lease_ = acquire_replica(replica, label="holder actor")
                return self.lease_.replica, self.lease_.scope, os.getpid()

            def try_lease(self, replica):
                from envs.backends.lease import ReplicaTakenError, acquire_replica

                try:
                    acquire_replica(replica)
                except ReplicaTakenError as e:
                    return str(e)
                return "no error"

            def release(self):
                self.lease_.release()

        holders = [Holder.remote() for _ in range(3)]
        got = ray.get([h.lease.remote() for h in holders])
        replicas = sorted(r for r, _, _ in got)
        assert replicas == [0, 1, 2]
        assert {scope for _, scope, _ in got} == {"ray"}
        assert len({pid for _, _, pid in got}) == 3
        # The driver shares the table: a lease here skips the three taken replicas.
        mine = acquire_replica()
        assert mine.scope == "ray" and mine.replica == 3
        # Another process asking for a taken replica gets a clear refusal naming the holder.
        message = ray.get(holders[0].try_lease.remote(1))
        assert "replica 1 is already leased by holder actor" in message
        # The table lives in the named actor, in the fixed namespace.
        actor = ray.get_actor(LEASE_ACTOR_NAME, namespace=LEASE_NAMESPACE)
        assert sorted(ray.get(actor.holders.remote())) == [0, 1, 2, 3]
        ray.get([h.release.remote() for h in holders])
        mine.release()
        assert leased_replicas() == {}


def test_a_dead_holders_lease_is_freed_and_recorded():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = socket.gethostname()
    table = LeaseTable()
    assert table.acquire(2, "t1", "env of a killed runner", None, gone.pid, here) == (2, "")
    assert table.acquire(5, "t2", "env on another machine", None, gone.pid, "elsewhere") \
        == (5, "")
    # The holder of replica 2 is dead: the replica is leased again; the freeing is recorded.
    assert table.acquire(2, "t3", "new env", None, os.getpid(), here) == (2, "")
    assert table.freed() == [(2, "env of a killed runner")]
    # A live holder keeps its lease, and so does one whose pid cannot be checked from here.
    assert table.acquire(2, "t4", "x", None, os.getpid(), here)[0] is None
    assert table.acquire(5, "t5", "x", None, os.getpid(), here)[0] is None
    assert table.holders() == {2: "new env", 5: "env on another machine"}


@pytest.mark.slow
def test_ray_lease_of_a_killed_actor_is_freed():
    """A holder actor killed without releasing (like a crashed env runner) gives its replica
    back: the next lease of it succeeds, and no replica is ever held twice."""
    with _local_ray("meshtune-test-lease-dead") as ray:
        @ray.remote(num_cpus=0)
        class Holder:
            def lease(self, replica: int) -> int:
                from envs.backends.lease import acquire_replica

                self.lease_ = acquire_replica(replica, label="doomed actor")
                return os.getpid()

        holder = Holder.remote()
        pid = ray.get(holder.lease.remote(0))
        with pytest.raises(ReplicaTakenError, match="doomed actor"):
            acquire_replica(0)
        ray.kill(holder, no_restart=True)
        deadline = time.monotonic() + 30
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not pid_alive(pid)
        mine = acquire_replica(0)
        assert mine.replica == 0 and mine.scope == "ray"
        assert [r for r, _ in freed_leases()] == [0]
        assert list(leased_replicas()) == [0]
        mine.release()
        assert leased_replicas() == {}
