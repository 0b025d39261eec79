"""Backends by name: the one place a backend name is checked and turned into a class.

``MeshEnv`` (through :mod:`envs.settings`), the experiments' ``--backend`` flags and the
benchmarks all go through :func:`backend_factory` / :func:`make_backend`; nothing else compares
backend names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from envs.backends.base import Backend, BackendError

#: backend name -> "module:factory". Imported lazily so the simulator never pulls in k8s code.
BACKENDS: dict[str, str] = {
    "sim": "envs.backends.sim:SimMesh",
    "local": "envs.backends.local:LocalMesh",
    "k8s": "envs.backends.k8s:K8sMesh",
}

#: Typical wall time of one env step (a load run plus an apply and a health check), s: what
#: callers size their timeouts from (RLlib's sample timeout). sim: ~3 ms (BENCHMARKS.md,
#: Simulator speed); local: ~17 s on 2 cores (BENCHMARKS.md, Transfer); k8s: an estimate (a
#: Locust Job's start and run), never measured on a cluster.
TYPICAL_STEP_S: dict[str, float] = {"sim": 0.01, "local": 20.0, "k8s": 120.0}

#: What to install when a backend's module cannot be imported.
_EXTRAS: dict[str, str] = {
    "local": "pip install -e '.[local]' (and Prometheus: apt-get install prometheus)",
    "k8s": "pip install -e '.[k8s]'",
}


def backend_factory(name: str) -> Callable[..., Backend]:
    """The class (or factory) registered as ``name``.

    Raises ``ValueError`` naming the known backends for an unknown name, and
    :class:`~envs.backends.base.BackendError` naming the missing module (and what to install)
    when the backend's code cannot be imported.
    """
    try:
        target = BACKENDS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(BACKENDS))
        raise ValueError(f"unknown backend {name!r}; known: {known} (envs.backends.registry)"
                         ) from None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; install it with {_EXTRAS[name]}" if name in _EXTRAS else ""
        raise BackendError(f"backend {name!r} cannot be loaded: {exc}{hint}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise BackendError(f"backend {name!r} is registered as {target!r} but {module_name} "
                           f"has no {attr!r}") from None


def make_backend(name: str, **kwargs: Any) -> Backend:
    """Build the backend registered as ``name`` with keyword arguments ``kwargs``."""
    return backend_factory(name)(**kwargs)
