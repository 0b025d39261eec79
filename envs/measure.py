"""Measure a mesh configuration: apply it, check the front-end answers, run a load, score the run.

The one "apply → healthy → run → score" path of the project: ``MeshEnv`` steps through
:func:`apply_config` and :func:`run_checked`, the search baselines and the held-out evaluation
through :func:`measure`, the re-measurement of an episode's start and end through
:func:`mean_eval_score`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from envs.actions import MeshConfig
from envs.backends.base import Backend, BackendError, LoadSpec
from envs.backends.report import LoadReport
from envs.istio import rules_for
from envs.reward import N_ENDPOINTS, evaluation_score

#: Objective of a run the backend could not complete (searches maximise): below any score of
#: a completed run, under either objective's evaluation (the SLO's worst is -100, the classic
#: failure term of every request failing -1800).
FAILED_RUN_SCORE = -100.0 * N_ENDPOINTS
#: A score of one run (higher is better): :func:`envs.reward.evaluation_score` by default.
Evaluation = Callable[[LoadReport], float]


def max_p99_ms(report: LoadReport) -> float:
    """The largest endpoint p99 (ms) over endpoints that saw requests."""
    return max(e.p99_ms for e in report.endpoints.values()
               if e.num_requests > 0 and e.p99_ms is not None)


def apply_config(backend: Backend, config: MeshConfig) -> bool:
    """Apply ``config`` (services absent: Istio's defaults) and run the backend's health check.

    Returns whether the front-end answered. On a failed apply the backend keeps its previous
    configuration and raises.
    """
    backend.apply(rules_for(config))
    return bool(backend.healthy())


def run_checked(backend: Backend, load: LoadSpec, seed: int) -> LoadReport:
    """Run ``load`` with load seed ``seed``; a run that completed no request is a
    :class:`~envs.backends.base.BackendError` (no made-up score for it)."""
    report = backend.run_load(load, seed=seed)
    if report.num_requests == 0:
        raise BackendError(f"{report.backend or backend.name} load run (load seed {seed}) "
                           "completed no request")
    return report


@dataclass(frozen=True)
class Measurement:
    """One load run of one configuration.

    Attributes:
        eval_score: the evaluation score of the run (:func:`envs.reward.evaluation_score`
            unless another was asked for); None if the backend could not complete the run
            (``error`` says why).
        failure_pct: failed / all requests, %.
        p99_ms: the largest endpoint p99 of the run, ms (``MeshEnv``'s ``info["p99_ms"]``).
        healthy: the backend's health check passed before the run.
        error: the backend's error message when the run failed, else "".
        good_pct: offered requests served within their SLO, % (None: not measured).
        goodput_rps: requests served within their SLO per second.
        latency_mean_ms, latency_p99_ms: over all requests of the run, ms.
    """

    eval_score: float | None
    failure_pct: float | None
    p99_ms: float | None
    healthy: bool
    error: str = ""
    good_pct: float | None = None
    goodput_rps: float | None = None
    latency_mean_ms: float | None = None
    latency_p99_ms: float | None = None

    @property
    def objective(self) -> float:
        """What searches maximise: the evaluation score, or :data:`FAILED_RUN_SCORE`."""
        return FAILED_RUN_SCORE if self.eval_score is None else self.eval_score


def measurement_of(report: LoadReport, healthy: bool,
                   evaluation: Evaluation = evaluation_score) -> Measurement:
    """The :class:`Measurement` of a completed run: its score and what users felt."""
    counted = all(e.num_good is not None for e in report.endpoints.values() if e.num_requests)
    return Measurement(evaluation(report), report.failure_pct, max_p99_ms(report), healthy,
                       good_pct=report.good_pct if counted else None,
                       goodput_rps=report.goodput_rps if counted else None,
                       latency_mean_ms=report.latency_mean_ms,
                       latency_p99_ms=report.latency_p99_ms)


def measure(backend: Backend, config: MeshConfig, load: LoadSpec, seed: int,
            evaluation: Evaluation = evaluation_score) -> Measurement:
    """Apply ``config``, check health, run ``load`` with load seed ``seed`` and score it.

    The load runs even when the health check fails (the run then shows what users would see);
    a run the backend cannot complete is a Measurement with ``error`` set, not an exception.
    """
    healthy = apply_config(backend, config)
    try:
        report = run_checked(backend, load, seed)
    except BackendError as exc:
        return Measurement(None, None, None, healthy, error=str(exc))
    return measurement_of(report, healthy, evaluation)


def mean_eval_score(backend: Backend, load: LoadSpec, config: MeshConfig,
                    seeds: Sequence[int], evaluation: Evaluation = evaluation_score
                    ) -> float | None:
    """Mean evaluation score of ``config`` over one run of ``load`` per load seed.

    Returns None if the mesh fails its health check with ``config`` (no load ran, no score
    exists); a run that completes no request raises :class:`BackendError`. Leaves ``config``
    applied; closing the backend restores the mesh.
    """
    if not apply_config(backend, config):
        return None
    scores = [evaluation(run_checked(backend, load, s)) for s in seeds]
    return float(np.mean(scores))
