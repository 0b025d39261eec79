"""Starting or joining Ray: the one place the project calls ``ray.init``.

The main job, the evaluation and the throughput benchmark connect to a given cluster address,
to the cluster of a ``ray job submit`` (``RAY_ADDRESS``), or start a private local Ray.
"""

from __future__ import annotations

import os

#: CPUs of the private local Ray (the machines this is measured on have 2 cores).
LOCAL_NUM_CPUS = 2


def init_ray(address: str | None = None, *, log_to_driver: bool = True) -> None:
    """Connect to ``address``, to the job's cluster (``RAY_ADDRESS``), or start a local Ray
    with :data:`LOCAL_NUM_CPUS` CPUs and no dashboard.

    ``log_to_driver=False`` keeps the workers' output off the console (used where a script
    prints its own tables).
    """
    import ray

    if address is not None:
        ray.init(address=address, log_to_driver=log_to_driver)
    elif os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=log_to_driver)
    else:
        ray.init(address="local", num_cpus=LOCAL_NUM_CPUS, include_dashboard=False,
                 log_to_driver=log_to_driver)
