"""The one small interface every mesh backend implements (``sim``, ``local``, ``k8s``).

``MeshEnv`` sees only this: apply DestinationRules to the replica it owns, drive a load through
it, read back a :class:`~envs.backends.report.LoadReport`. A backend remembers the configuration
it found when it was opened and puts it back on :meth:`Backend.close`, also after an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from envs.backends.report import LoadReport
from envs.istio import DestinationRule


class BackendError(RuntimeError):
    """A backend could not do what was asked (unreachable API, dead process, failed query).

    Raised instead of returning made-up figures.
    """


@dataclass(frozen=True)
class ServiceDown:
    """Fault: ``service`` refuses every connection between ``start_s`` and ``end_s`` of the run."""

    service: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class LatencySpike:
    """Fault: ``service``'s service times are multiplied by ``factor`` in [start_s, end_s)."""

    service: str
    start_s: float
    end_s: float
    factor: float


Fault = ServiceDown | LatencySpike


@dataclass(frozen=True)
class LoadSpec:
    """One load to drive through the mesh.

    Attributes:
        users: closed loop: concurrent virtual users each running the reference 9-request loop
            (the notebook's ``num_clients``).
        requests: total requests to complete, over all users (the notebook's ``num_reqs``).
        mode: ``closed`` (users, no think time) or ``open`` (Poisson arrivals of loops).
        arrival_rate_rps: open loop only: request arrival rate, requests per second.
        hatch_rate_per_s: users started per second (the load test's 5/s).
        faults: faults injected during the run (backends that cannot inject one raise).
    """

    users: int
    requests: int
    mode: Literal["closed", "open"] = "closed"
    arrival_rate_rps: float | None = None
    hatch_rate_per_s: float = 5.0
    faults: tuple[Fault, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.requests <= 0:
            raise ValueError(f"LoadSpec.requests must be positive, got {self.requests}")
        if self.mode == "closed" and self.users <= 0:
            raise ValueError(f"LoadSpec.users must be positive in closed mode, got {self.users}")
        if self.mode == "open" and (self.arrival_rate_rps is None or self.arrival_rate_rps <= 0):
            raise ValueError("LoadSpec in open mode needs a positive arrival_rate_rps, "
                             f"got {self.arrival_rate_rps}")
        if self.mode not in ("closed", "open"):
            raise ValueError(f"LoadSpec.mode must be 'closed' or 'open', got {self.mode!r}")
        if self.hatch_rate_per_s <= 0:
            raise ValueError(f"LoadSpec.hatch_rate_per_s must be positive, "
                             f"got {self.hatch_rate_per_s}")


@runtime_checkable
class Backend(Protocol):
    """A mesh replica that can be configured, loaded and observed.

    Implementations: ``envs.backends.sim.SimMesh`` (default), ``local`` (real Envoy on
    loopback), ``k8s`` (a namespace on a cluster).
    """

    name: str

    def apply(self, rules: Sequence[DestinationRule]) -> None:
        """Make ``rules`` the replica's complete set of DestinationRules.

        A service without a rule gets Istio's defaults. Returns once the change is in effect.
        Raises ``BackendError`` (or ``ValueError`` for invalid rules) and leaves the previous
        configuration in place on failure.
        """
        ...

    def run_load(self, load: LoadSpec, seed: int) -> LoadReport:
        """Drive ``load`` through the replica and report what was observed."""
        ...

    def healthy(self) -> bool:
        """The notebook's health check: does the front-end answer ``GET /catalogue`` with 200?"""
        ...

    def close(self) -> None:
        """Restore the configuration found at open and release every resource. Idempotent."""
        ...
