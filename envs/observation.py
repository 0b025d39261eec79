"""The observation of ``MeshEnv``: one load run, the configuration and the load as a vector.

:class:`ObservationEncoder` names the channels and builds the ``Box`` space and the vector:
per endpoint (the 18 Locust request names, :data:`ENDPOINTS`) ``failure_frac`` (failed /
requests, 0..1), ``p99_s`` (s) and ``seen``; per SockShop service ``error_ratio`` (callers'
view, 0..1), ``p99_s`` (s, :data:`HTTP_SERVICES` only: Istio reports TCP traffic as
connections, without request durations) and ``seen``; per tunable service × catalogue knob the
knob's effective value (:func:`envs.knobs.knob_value`) as ``log1p(v)/log1p(ceiling)`` in 0..1
(ceiling: the top of :func:`envs.knobs.knob_range`, so unlimited encodes as 1.0); and the load
as ``users_frac`` and ``requests_frac``. A statistic the run did not produce (no request, or no
run at all on an unhealthy step) is 0 with its ``seen`` channel 0: nothing is invented. The
table of channels is in :class:`envs.mesh_env.MeshEnv`'s docstring.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from envs.actions import ActionCatalogue, MeshConfig
from envs.backends.base import BackendError
from envs.backends.report import LoadReport
from envs.knobs import knob_range, knob_value
from envs.sockshop import SERVICE_NAMES, SERVICES, Protocol, endpoint_names

#: Locust request names, in observation order.
ENDPOINTS: tuple[str, ...] = endpoint_names()
#: Services whose traffic the mesh sees as HTTP: the only ones with a request-duration p99.
HTTP_SERVICES: frozenset[str] = frozenset(
    s.name for s in SERVICES if s.protocol is Protocol.HTTP)


class ObservationEncoder:
    """Turns a run (report, configuration, load) into the observation vector (module doc).

    Args:
        catalogue: the env's action catalogue: its services × knobs are the configuration block.
        max_users: the top of the env's users range (``users_frac`` = users / this).
        max_requests: the most requests a run can have (``requests_frac`` = requests / this).

    Attributes:
        names: the channel names, in vector order.
        space: the matching ``gymnasium.spaces.Box``.
    """

    def __init__(self, catalogue: ActionCatalogue, max_users: int, max_requests: int) -> None:
        self.catalogue = catalogue
        self.max_users = max_users
        self.max_requests = max_requests
        names: list[str] = []
        low: list[float] = []
        high: list[float] = []

        def add(name: str, lo: float, hi: float) -> None:
            names.append(name)
            low.append(lo)
            high.append(hi)

        for e in ENDPOINTS:
            add(f"endpoint/{e}/failure_frac", 0.0, 1.0)
            add(f"endpoint/{e}/p99_s", 0.0, np.inf)
            add(f"endpoint/{e}/seen", 0.0, 1.0)
        for s in SERVICE_NAMES:
            add(f"service/{s}/error_ratio", 0.0, 1.0)
            if s in HTTP_SERVICES:
                add(f"service/{s}/p99_s", 0.0, np.inf)
            add(f"service/{s}/seen", 0.0, 1.0)
        for s in catalogue.services:
            for k in catalogue.knobs:
                add(f"config/{s}/{k.value}", 0.0, 1.0)
        add("load/users_frac", 0.0, 1.0)
        add("load/requests_frac", 0.0, 1.0)
        self.names: tuple[str, ...] = tuple(names)
        self.space = gym.spaces.Box(np.array(low, np.float32), np.array(high, np.float32),
                                    dtype=np.float32)
        self._log_ceiling = {k: math.log1p(knob_range(k)[1]) for k in catalogue.knobs}

    def encode(self, report: LoadReport | None, config: MeshConfig, users: int,
               requests: int) -> np.ndarray:
        """The observation; ``report`` None means no load ran (every ``seen`` channel 0).

        Raises:
            BackendError: the report names an endpoint or service SockShop does not have.
        """
        values: list[float] = []
        if report is not None:
            strange = sorted(set(report.endpoints) - set(ENDPOINTS))
            strange += sorted(set(report.services) - set(SERVICE_NAMES))
            if strange:
                raise BackendError(f"{report.backend or 'backend'} report has unknown "
                                   f"endpoints/services {strange}")
        for name in ENDPOINTS:
            e = report.endpoints.get(name) if report is not None else None
            if e is None or e.num_requests == 0:
                values += [0.0, 0.0, 0.0]
            else:
                if e.p99_ms is None:
                    raise BackendError(f"endpoint {name!r} saw {e.num_requests} requests but "
                                       "has no p99")
                values += [e.num_failures / e.num_requests, e.p99_ms / 1000.0, 1.0]
        for name in SERVICE_NAMES:
            s = report.services.get(name) if report is not None else None
            http = name in HTTP_SERVICES
            if s is None or s.num_requests == 0:
                values += [0.0, 0.0, 0.0] if http else [0.0, 0.0]
            elif http:
                if s.p99_ms is None:
                    raise BackendError(f"service {name!r} saw {s.num_requests} requests but "
                                       "has no p99")
                values += [s.error_ratio, s.p99_ms / 1000.0, 1.0]
            else:
                values += [s.error_ratio, 1.0]
        for service in self.catalogue.services:
            pool = config.get(service)
            for k in self.catalogue.knobs:
                values.append(math.log1p(knob_value(pool, k)) / self._log_ceiling[k])
        values += [users / self.max_users, requests / self.max_requests]
        return np.asarray(values, dtype=np.float32)


__all__ = ["ENDPOINTS", "HTTP_SERVICES", "ObservationEncoder"]
