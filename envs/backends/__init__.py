"""Mesh backends behind one small interface (:mod:`envs.backends.base`), chosen by name through
:mod:`envs.backends.registry`.

* ``base`` — the ``Backend`` protocol, ``LoadSpec`` and faults; ``report`` — ``LoadReport``;
* ``registry`` — backend names → classes (the one place a name is checked);
* ``lease`` — which process holds which replica;
* ``sim/``, ``local/``, ``k8s/`` — the three backends.
"""

from envs.backends.base import Backend, BackendError, LoadSpec
from envs.backends.registry import BACKENDS, backend_factory, make_backend
from envs.backends.report import EndpointStats, LoadReport, ServiceStats

__all__ = ["BACKENDS", "Backend", "BackendError", "EndpointStats", "LoadReport", "LoadSpec",
           "ServiceStats", "backend_factory", "make_backend"]
