"""The observation of ``MeshEnv``: one load run, the configuration and the load as a vector in
[0, 1], laid out so that a policy can read every service's own block with one shared network.

:class:`ObservationEncoder` names the channels and builds the ``Box`` space and the vector.
Two parts:

* **global context** (:attr:`ObservationEncoder.global_indices`): the load level and the
  episode's progress; the run as users felt it (served within SLO, failed, abandoned, mean and
  p99 latency); per endpoint (the 18 Locust request names, :data:`ENDPOINTS`) ``failure_frac``,
  ``p99`` and ``seen``; and the destination block (below) of every SockShop service the action
  catalogue does not tune (the front-end, queue-master, …).
* **one block per tuned service** (:attr:`ObservationEncoder.service_slices`, catalogue order,
  all of one length): the destination block of that service and its configuration.

The destination block of a service (:data:`DEST_CHANNELS`) is what its callers' sidecars saw
calling it — the mesh's own signals, so that a policy sees *why* requests fail, not only where:

| channel | meaning | range |
|---|---|---|
| ``seen`` | it received requests in the run | 0/1 |
| ``causes_seen`` | the backend measured every cause below | 0/1 |
| ``error_ratio`` | failed / requests, callers' view | 0..1 |
| ``p99``, ``mean`` | request duration, :func:`latency_scale` | 0..1 |
| ``uo_frac`` | attempts rejected by a pool limit (``UO``) / attempts | 0..1 |
| ``uf_frac`` | attempts whose connection failed (``UF``) / attempts | 0..1 |
| ``ut_frac`` | attempts ended by a route's timeout (``UT``, see below) / attempts | 0..1 |
| ``reset_frac`` | attempts refused or reset by the service (``UC``/``UR``) / attempts | 0..1 |
| ``retry_frac`` | retries / attempts | 0..1 |
| ``urx_frac`` | requests failed with retries exhausted (``URX``) / requests | 0..1 |
| ``retry_overflow_frac`` | retries skipped (budget, ``maxRetries``) / requests | 0..1 |
| ``demand_conn`` | in flight per pool vs ``maxConnections``, :func:`ratio_scale` | 0..1 |
| ``demand_queue`` | in flight per pool vs ``maxConnections + http1MaxPendingRequests`` | 0..1 |
| ``demand_requests`` | in flight per pool vs ``http2MaxRequests`` | 0..1 |
| ``tcp`` | a TCP destination (no request durations; HTTP limits do not act) | 0/1 |

``ut_frac`` is Envoy's ``UT``: a route's (or a retry's per-try) timeout. DestinationRules cannot
set one and Istio's default routes set none, so it is 0 on every backend unless a VirtualService
on the cluster sets a timeout. An application that stops waiting (SockShop's orders caps each of
its calls at 5 s) is not a ``UT``: the request runs on through both sidecars, which count it when
its answer arrives, at its real duration (the simulator and the local mesh alike).

The configuration block is each catalogue knob's effective value (:func:`envs.knobs.knob_value`)
as ``log1p(v)/log1p(ceiling)`` (ceiling: the top of :func:`envs.knobs.knob_range`, so
unlimited encodes as 1.0). A statistic the run did not produce (no request, no run at all on an
unhealthy step, a cause the backend does not measure) is 0 with its ``seen`` channel 0: nothing
is invented. Every channel is declared in [0, 1] and lies there (a property test checks it).
"""

from __future__ import annotations

import functools
import math

import gymnasium as gym
import numpy as np

from envs.actions import ActionCatalogue, MeshConfig
from envs.backends.base import BackendError
from envs.backends.report import LoadReport, ServiceStats
from envs.istio import ConnectionPool, ResolvedPool, resolve
from envs.knobs import Knob, knob_range, knob_value
from envs.sockshop import SERVICE_NAMES, SERVICES, Protocol, endpoint_names

#: Locust request names, in observation order.
ENDPOINTS: tuple[str, ...] = endpoint_names()
#: Services whose traffic the mesh sees as HTTP: the only ones with a request-duration p99.
HTTP_SERVICES: frozenset[str] = frozenset(
    s.name for s in SERVICES if s.protocol is Protocol.HTTP)
#: The latency at which the latency channels saturate at 1.0, ms.
LATENCY_CEILING_MS = 60_000.0
#: The destination block's channels, in order (module docstring).
DEST_CHANNELS: tuple[str, ...] = (
    "seen", "causes_seen", "error_ratio", "p99", "mean", "uo_frac", "uf_frac", "ut_frac",
    "reset_frac", "retry_frac", "urx_frac", "retry_overflow_frac", "demand_conn",
    "demand_queue", "demand_requests", "tcp")
#: The global run channels, in order.
RUN_CHANNELS: tuple[str, ...] = ("seen", "good_frac", "failure_frac", "abandoned_frac", "p99",
                                 "mean")


def latency_scale(ms: float) -> float:
    """A latency in ms as ``log1p(ms)/log1p(60 s)``, saturating at 1.0 from 60 s on."""
    return min(1.0, math.log1p(max(ms, 0.0)) / math.log1p(LATENCY_CEILING_MS))


def ratio_scale(ratio: float) -> float:
    """A non-negative ratio ``r`` as ``r / (1 + r)`` in [0, 1) (0.5 at r = 1)."""
    return ratio / (1.0 + ratio) if ratio > 0 else 0.0


@functools.lru_cache(maxsize=4096)
def _resolved(pool: ConnectionPool | None) -> ResolvedPool:
    """``resolve(pool)``, remembered: a step changes one service's pool at most."""
    return resolve(pool)


@functools.lru_cache(maxsize=4096)
def config_block(pool: ConnectionPool | None, knobs: tuple[Knob, ...]) -> tuple[float, ...]:
    """The configuration block of one pool: ``log1p(v)/log1p(ceiling)`` per knob (also what
    :func:`rl.policies.inert_acts` compares against)."""
    return tuple(math.log1p(knob_value(pool, k)) / math.log1p(knob_range(k)[1]) for k in knobs)


def _frac(count: int | None, total: int) -> float:
    if count is None or total <= 0:
        return 0.0
    if count < 0 or count > total:
        raise BackendError(f"a cause count {count} outside 0..{total}")
    return count / total


def destination_block(stats: ServiceStats | None, service: str,
                      pool_config: MeshConfig) -> list[float]:
    """The :data:`DEST_CHANNELS` of ``service`` from its report row (None: no run or no
    request) under the configuration ``pool_config`` (service → pool; absent: Istio's defaults).

    Raises:
        BackendError: the row breaks the report's invariants (a ratio outside [0, 1], a cause
            counted on more attempts than were sent, a request without a p99).
    """
    tcp = service not in HTTP_SERVICES
    if stats is None or stats.num_requests == 0:
        return [0.0] * (len(DEST_CHANNELS) - 1) + [float(tcp)]
    if not 0.0 <= stats.error_ratio <= 1.0:
        raise BackendError(f"service {service!r} reports error_ratio {stats.error_ratio} "
                           "outside [0, 1]")
    causes = (stats.num_attempts, stats.ut_count, stats.reset_count, stats.urx_count,
              stats.retry_overflow_count, stats.in_flight_per_pool)
    measured = all(c is not None for c in causes)
    attempts = stats.num_attempts or 0
    if measured and attempts < stats.num_requests:
        raise BackendError(f"service {service!r} reports {attempts} attempts for "
                           f"{stats.num_requests} requests")
    if not tcp and stats.p99_ms is None:
        raise BackendError(f"service {service!r} saw {stats.num_requests} requests but has "
                           "no p99")
    p99 = latency_scale(stats.p99_ms) if stats.p99_ms is not None else 0.0
    mean = latency_scale(stats.mean_ms) if stats.mean_ms is not None else 0.0
    if not measured:
        return [1.0, 0.0, stats.error_ratio, p99, mean] + [0.0] * 10 + [float(tcp)]
    pool = _resolved(pool_config.get(service))
    in_flight = float(stats.in_flight_per_pool or 0.0)
    conn = pool.max_connections
    return [
        1.0, 1.0, stats.error_ratio, p99, mean,
        _frac(stats.uo_count, attempts), _frac(stats.uf_count, attempts),
        _frac(stats.ut_count, attempts), _frac(stats.reset_count, attempts),
        _frac(stats.retry_count, attempts), _frac(stats.urx_count, stats.num_requests),
        _frac(stats.retry_overflow_count, stats.num_requests),
        ratio_scale(in_flight / conn),
        0.0 if tcp else ratio_scale(in_flight / (conn + pool.http1_max_pending_requests)),
        0.0 if tcp else ratio_scale(in_flight / pool.http2_max_requests),
        float(tcp),
    ]


class ObservationEncoder:
    """Turns a run (report, configuration, load) into the observation vector (module doc).

    Args:
        catalogue: the env's action catalogue: its services get a block each.
        episode_len: steps of an episode (``progress`` = step / this).

    Attributes:
        names: the channel names, in vector order.
        space: the matching ``gymnasium.spaces.Box`` (every channel in [0, 1]).
        global_indices: indices of the global context.
        service_slices: per catalogue service, the indices of its own block (equal lengths).
    """

    def __init__(self, catalogue: ActionCatalogue, episode_len: int) -> None:
        self.catalogue = catalogue
        self.episode_len = episode_len
        self._context_services = tuple(s for s in SERVICE_NAMES if s not in catalogue.services)
        names = ["load/level", "episode/progress"]
        names += [f"run/{c}" for c in RUN_CHANNELS]
        for e in ENDPOINTS:
            names += [f"endpoint/{e}/failure_frac", f"endpoint/{e}/p99", f"endpoint/{e}/seen"]
        for s in self._context_services:
            names += [f"service/{s}/{c}" for c in DEST_CHANNELS]
        self.global_indices: tuple[int, ...] = tuple(range(len(names)))
        slices: list[tuple[int, ...]] = []
        for s in catalogue.services:
            block = [f"service/{s}/{c}" for c in DEST_CHANNELS]
            block += [f"config/{s}/{k.value}" for k in catalogue.knobs]
            slices.append(tuple(range(len(names), len(names) + len(block))))
            names += block
        self.service_slices: tuple[tuple[int, ...], ...] = tuple(slices)
        self.names: tuple[str, ...] = tuple(names)
        n = len(names)
        self.space = gym.spaces.Box(np.zeros(n, np.float32), np.ones(n, np.float32),
                                    dtype=np.float32)

    def encode(self, report: LoadReport | None, config: MeshConfig, load_level: float,
               step: int) -> np.ndarray:
        """The observation; ``report`` None means no load ran (every ``seen`` channel 0).

        Args:
            report: the run, or None.
            config: the configuration in force (service → pool).
            load_level: the offered load in [0, 1] (``MeshEnv``: ``r/(1+r)`` of the rate over
                the nominal rate, or users / max users under the classic load).
            step: the step of the episode (0 at reset).

        Raises:
            BackendError: the report names an endpoint or service SockShop does not have, or
                breaks the report's invariants.
        """
        values: list[float] = [load_level, min(1.0, step / self.episode_len)]
        if report is not None:
            strange = sorted(set(report.endpoints) - set(ENDPOINTS))
            strange += sorted(set(report.services) - set(SERVICE_NAMES))
            if strange:
                raise BackendError(f"{report.backend or 'backend'} report has unknown "
                                   f"endpoints/services {strange}")
        values += self._run(report)
        for name in ENDPOINTS:
            e = report.endpoints.get(name) if report is not None else None
            if e is None or e.num_requests == 0:
                values += [0.0, 0.0, 0.0]
                continue
            if e.p99_ms is None:
                raise BackendError(f"endpoint {name!r} saw {e.num_requests} requests but has "
                                   "no p99")
            values += [e.num_failures / e.num_requests, latency_scale(e.p99_ms), 1.0]
        services = report.services if report is not None else {}
        for name in self._context_services:
            values += destination_block(services.get(name), name, config)
        for name in self.catalogue.services:
            values += destination_block(services.get(name), name, config)
            values += config_block(config.get(name), self.catalogue.knobs)
        out = np.asarray(values, dtype=np.float32)
        if not (np.all(out >= 0.0) and np.all(out <= 1.0)):
            bad = [self.names[i] for i in np.flatnonzero((out < 0.0) | (out > 1.0))]
            raise BackendError(f"observation channels outside [0, 1]: {bad[:5]}")
        return out

    @staticmethod
    def _run(report: LoadReport | None) -> list[float]:
        """The :data:`RUN_CHANNELS` of the run (all 0 without a run)."""
        if report is None or report.offered_requests == 0:
            return [0.0] * len(RUN_CHANNELS)
        offered = report.offered_requests
        good = 0.0
        if all(e.num_good is not None for e in report.endpoints.values() if e.num_requests):
            good = report.num_good / offered
        p99 = report.latency_p99_ms
        mean = report.latency_mean_ms
        return [1.0, good, report.num_failures / max(report.num_requests, 1),
                report.num_abandoned / offered,
                latency_scale(p99) if p99 is not None else 0.0,
                latency_scale(mean) if mean is not None else 0.0]


__all__ = ["DEST_CHANNELS", "ENDPOINTS", "HTTP_SERVICES", "LATENCY_CEILING_MS", "RUN_CHANNELS",
           "ObservationEncoder", "config_block", "destination_block", "latency_scale",
           "ratio_scale"]
