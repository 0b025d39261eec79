"""The embedded default backend: a request-level simulator of SockShop under Istio.

``SimMesh`` (``envs.backends.sim.mesh``) is the backend; ``profile`` the service profile (plain
data); ``graph`` the call graph compiled to arrays; ``core`` the Numba-jitted event loop.
"""

from envs.backends.sim.mesh import HEALTH_CHECK_SEED, SimMesh

__all__ = ["HEALTH_CHECK_SEED", "SimMesh"]
