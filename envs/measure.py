"""Measure a mesh configuration: apply it, check the front-end answers, run a load, score the run.

The one "apply → healthy → run → score" path of the project: ``MeshEnv`` steps through
:func:`apply_config` and :func:`run_checked`, the search baselines and the held-out evaluation
through :func:`measure`, the re-measurement of an episode's start and end through
:func:`mean_eval_score`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from envs.actions import MeshConfig
from envs.backends.base import Backend, BackendError, LoadSpec
from envs.backends.report import LoadReport
from envs.istio import rules_for
from envs.reward import N_ENDPOINTS, evaluation_score

#: Objective of a run the backend could not complete (searches maximise; as bad as every
#: endpoint at 100 % failures).
FAILED_RUN_SCORE = -100.0 * N_ENDPOINTS


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
        eval_score: :func:`envs.reward.evaluation_score` of the run; None if the backend could
            not complete the run (``error`` says why).
        failure_pct: failed / all requests, %.
        p99_ms: the largest endpoint p99 of the run, ms (``MeshEnv``'s ``info["p99_ms"]``).
        healthy: the backend's health check passed before the run.
        error: the backend's error message when the run failed, else "".
    """

    eval_score: float | None
    failure_pct: float | None
    p99_ms: float | None
    healthy: bool
    error: str = ""

    @property
    def objective(self) -> float:
        """What searches maximise: the evaluation score, or :data:`FAILED_RUN_SCORE`."""
        return FAILED_RUN_SCORE if self.eval_score is None else self.eval_score


def measure(backend: Backend, config: MeshConfig, load: LoadSpec, seed: int) -> Measurement:
    """Apply ``config``, check health, run ``load`` with load seed ``seed`` and score it.

    The load runs even when the health check fails (the run then shows what users would see);
    a run the backend cannot complete is a Measurement with ``error`` set, not an exception.
    """
    healthy = apply_config(backend, config)
    try:
        report = run_checked(backend, load, seed)
    except BackendError as exc:
        return Measurement(None, None, None, healthy, error=str(exc))
    return Measurement(evaluation_score(report), report.failure_pct, max_p99_ms(report),
                       healthy)


def mean_eval_score(backend: Backend, load: LoadSpec, config: MeshConfig,
                    seeds: Sequence[int]) -> float | None:
    """Mean evaluation score of ``config`` over one run of ``load`` per load seed.

    Returns None if the mesh fails its health check with ``config`` (no load ran, no score
    exists); a run that completes no request raises :class:`BackendError`. Leaves ``config``
    applied; closing the backend restores the mesh.
    """
    if not apply_config(backend, config):
        return None
    scores = [evaluation_score(run_checked(backend, load, s)) for s in seeds]
    return float(np.mean(scores))
