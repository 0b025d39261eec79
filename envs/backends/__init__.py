"""Mesh backends, chosen by name. ``MeshEnv`` calls :func:`make_backend` and nothing else here."""

from __future__ import annotations

import importlib
from typing import Any

from envs.backends.base import Backend, BackendError, LoadSpec
from envs.backends.report import EndpointStats, LoadReport, ServiceStats

#: backend name -> "module:factory". Imported lazily so the simulator never pulls in k8s code.
BACKENDS: dict[str, str] = {
    "sim": "envs.backends.sim:SimMesh",
    "local": "envs.backends.local:LocalMesh",
    "k8s": "envs.backends.k8s:K8sMesh",
}


def make_backend(name: str, **kwargs: Any) -> Backend:
    """Build the backend registered as ``name`` with keyword arguments ``kwargs``."""
    try:
        target = BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise ValueError(f"unknown backend {name!r}; known: {known}") from None
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory(**kwargs)


__all__ = ["BACKENDS", "Backend", "BackendError", "EndpointStats", "LoadReport", "LoadSpec",
           "ServiceStats", "make_backend"]
