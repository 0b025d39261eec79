"""Starting or joining Ray: the one place the project calls ``ray.init``.

The main job, the evaluation and the throughput benchmark connect to a given cluster address, to
the cluster of a ``ray job submit`` (``RAY_ADDRESS``), or start a private local Ray:

* **every core** of the machine by default (``num_cpus`` caps it);
* **the dashboard on 127.0.0.1** (its URL is printed), so a run can be watched;
* **loopback only**: a private local Ray runs in Ray's single-machine mode
  (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the mode Ray uses on laptops), in which its node
  address is 127.0.0.1 and the GCS, raylet, workers and agents listen on 127.0.0.1 only. Ray reads
  the variable when it is imported, so :func:`keep_local_ray_on_loopback` runs when the ``rl``
  package is imported (before anything imports Ray), unless a cluster is named by
  ``RAY_ADDRESS``.

A cluster that cannot be reached is a :class:`RaySetupError` with one line naming the address,
after a short TCP probe instead of Ray's minutes of retries.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass

#: Ray's switch between its multi-machine addressing (the node's routable IP) and its
#: single-machine mode (127.0.0.1). "0" selects the single-machine mode.
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: Host the private local Ray's dashboard listens on.
DASHBOARD_HOST = "127.0.0.1"
#: Seconds a cluster address may take to accept a TCP connection before it counts unreachable.
PROBE_TIMEOUT_S = 5.0


class RaySetupError(RuntimeError):
    """Ray could not be started or joined (the message is one line naming what and where)."""


@dataclass(frozen=True)
class RayRuntime:
    """What :func:`init_ray` started or joined.

    Attributes:
        local: a private local Ray was started (False: an existing cluster was joined).
        num_cpus: CPUs Ray schedules on (the cluster's total when joined).
        dashboard_url: ``http://host:port`` of the dashboard, or None when it does not run.
    """

    local: bool
    num_cpus: int
    dashboard_url: str | None


def keep_local_ray_on_loopback() -> None:
    """Select Ray's single-machine mode (127.0.0.1 only) unless ``RAY_ADDRESS`` names a cluster
    or the user set the variable. Must run before Ray is imported (``rl/__init__.py`` does)."""
    if not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault(SINGLE_MACHINE_ENV, "0")


def local_num_cpus(cap: int | None = None) -> int:
    """CPUs of a private local Ray: every core of this machine, at most ``cap``."""
    cores = os.cpu_count() or 1
    if cap is None:
        return cores
    if cap < 1:
        raise RaySetupError(f"--num-cpus must be >= 1, got {cap}")
    return min(cap, cores)


def _probe(address: str) -> None:
    """Raise :class:`RaySetupError` if ``host:port`` (or ``ray://host:port``) does not accept a
    TCP connection within :data:`PROBE_TIMEOUT_S` (``auto`` is left to Ray)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise RaySetupError(f"Ray address {address!r} is not host:port (or ray://host:port)")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise RaySetupError(f"cannot reach a Ray cluster at {address}: "
                            f"{exc.strerror or exc}") from None


def init_ray(address: str | None = None, *, num_cpus: int | None = None,
             log_to_driver: bool = True, dashboard: bool = True) -> RayRuntime:
    """Connect to ``address``, to the job's cluster (``RAY_ADDRESS``), or start a private
    local Ray on 127.0.0.1 with :func:`local_num_cpus` CPUs and (``dashboard``) its dashboard.

    ``log_to_driver=False`` keeps the workers' output off the console (where a script prints its
    own tables). The dashboard's URL, when it runs, is printed on stderr.
    """
    import ray

    joined = address or os.environ.get("RAY_ADDRESS")
    if joined:
        _probe(joined)
        init_kwargs: dict[str, object] = {"address": joined}
    else:
        init_kwargs = {"address": "local", "num_cpus": local_num_cpus(num_cpus),
                       "include_dashboard": dashboard, "dashboard_host": DASHBOARD_HOST}
    try:
        context = ray.init(**init_kwargs, log_to_driver=log_to_driver)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"at {joined}" if joined else "locally"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RaySetupError(f"cannot start or join Ray {where}: {first}") from None
    url = context.dashboard_url or None
    runtime = RayRuntime(local=not joined, num_cpus=int(ray.cluster_resources().get("CPU", 0)),
                         dashboard_url=f"http://{url}" if url and "://" not in url else url)
    if runtime.dashboard_url:
        print(f"[meshtune] Ray dashboard: {runtime.dashboard_url}", file=sys.stderr, flush=True)
    return runtime
