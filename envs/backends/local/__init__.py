"""The ``local`` backend: SockShop on real Envoy sidecars, real Locust and a real Prometheus,
all on 127.0.0.1 (see :mod:`envs.backends.local.mesh`)."""

from envs.backends.local.mesh import LocalMesh, start_replica, stop_replica

__all__ = ["LocalMesh", "start_replica", "stop_replica"]
