"""Run a controller through a scenario: the one closed-loop runner of the held-out evaluation.

:func:`run_scenario` plays an :class:`envs.scenarios.Scenario` with a controller
(:class:`rl.controllers.Controller`: ``reset`` gives the configuration of run 0, ``act`` the
next one from the observation of the last run) through :mod:`envs.measure`'s apply → healthy →
run → score path, with ``MeshEnv``'s run semantics:

* run 0 (the reset run) plays the controller's initial configuration; step ``t = 1..T``
  applies the controller's new configuration, checks the front-end answers and runs
  ``scenario.load(t, step_s)``; the observation is :class:`envs.observation.ObservationEncoder`'s
  of that run, exactly as ``MeshEnv`` builds it (load level ``r/(1+r)`` of the rate over the
  nominal rate, progress ``t / T``);
* a step whose health check fails ends the scenario: that step and every remaining one count
  the SLO objective's worst score, -100 (``MeshEnv``'s unhealthy penalty and episode metric);
  an initial configuration failing the check ends it at run 0 (every step -100);
* the load seeds are ``MeshEnv``'s for ``reset(seed=seed)``: a generator
  ``numpy.random.default_rng(seed)`` first draws the scenario's start when it is
  ``classic_random`` (the notebook's draw, redrawn until healthy), then one load seed per run.
  They depend on ``seed``, the scenario and ``t`` only — the same for every controller of a case
  (common random numbers) — and a :class:`~rl.controllers.PolicyController` sees exactly the
  observations and scores ``MeshEnv.reset(seed=seed, options={"scenario": s})`` and its steps
  give it (``tests/rl/evaluation/test_closed_loop.py``).

Per step (:class:`StepRecord`): the evaluation score (:func:`envs.reward.evaluation_score`,
good % − 100), good %, goodput (req/s), failure %, abandoned requests, mean latency and p99
(all requests, ms), and the configuration change made.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from envs.actions import MeshConfig, classic_initial_config, istio_default_config, make_catalogue
from envs.backends.base import Backend, BackendError
from envs.backends.report import LoadReport
from envs.knobs import Knob, knob_value
from envs.measure import apply_config, run_checked
from envs.observation import ObservationEncoder, ratio_scale
from envs.reward import SloObjective, evaluation_score
from envs.scenarios import Scenario
from envs.settings import DEFAULT_ENV_CONFIG, TUNED_STATIC_PATH, tuned_config_from
from envs.sockshop.slo import NOMINAL_RATE_RPS

if TYPE_CHECKING:
    from envs.actions import ActionCatalogue
    from rl.controllers import Controller

#: The score of an unhealthy step and of every step after it: the SLO objective's worst.
UNHEALTHY_SCORE = SloObjective().worst
#: How many random initial configurations a ``classic_random`` start draws before giving up
#: (``MeshEnv``'s ``MAX_INIT_DRAWS``).
MAX_INIT_DRAWS = 20


@dataclass(frozen=True)
class StepRecord:
    """One run of a scenario (``t`` 0 = the reset run).

    Attributes:
        t: run index.
        rate_rps: offered rate of the run, req/s.
        faults: the faults active in the run (``describe()`` of each).
        healthy: the health check passed and the load ran (False: no run; metrics None).
        score: evaluation score (good % − 100), or :data:`UNHEALTHY_SCORE`.
        good_pct, goodput_rps, failure_pct: % of offered within SLO, good req/s, % failed.
        abandoned: requests never sent (their session gave up).
        latency_mean_ms, latency_p99_ms: over all recorded requests, ms.
        change: the configuration change applied before the run ("" if none).
        action: the controller's catalogue action, if it took one (policies).
        load_seed: the run's load seed (None: no run).
    """

    t: int
    rate_rps: float
    faults: tuple[str, ...]
    healthy: bool
    score: float
    good_pct: float | None = None
    goodput_rps: float | None = None
    failure_pct: float | None = None
    abandoned: int | None = None
    latency_mean_ms: float | None = None
    latency_p99_ms: float | None = None
    change: str = ""
    action: int | None = None
    load_seed: int | None = None


@dataclass
class ScenarioRun:
    """A controller's run through one scenario.

    Attributes:
        scenario: the scenario's name.
        controller: the controller's name.
        seed: the case seed (load seeds and a ``classic_random`` start).
        steps: run 0 and steps 1..T (after an unhealthy step: records of score -100, no run).
        observations: the observation of each run that happened (run 0 first).
        final_config: the configuration in force at the end (service → pool).
    """

    scenario: str
    controller: str
    seed: int
    steps: list[StepRecord] = field(default_factory=list)
    observations: list[np.ndarray] = field(default_factory=list)
    fault_free_steady: tuple[int, ...] = ()
    final_config: MeshConfig = field(default_factory=dict)

    @property
    def episode_len(self) -> int:
        """Steps after the reset run."""
        return len(self.steps) - 1

    @property
    def healthy_end(self) -> bool:
        """Every step passed the health check."""
        return all(s.healthy for s in self.steps)

    @property
    def summed_score(self) -> float:
        """The episode's score: the sum over steps 1..T (the reset run is the start, not a
        controller's step)."""
        return float(sum(s.score for s in self.steps[1:]))

    @property
    def mean_score(self) -> float:
        """The per-step mean of :attr:`summed_score`."""
        return self.summed_score / max(self.episode_len, 1)

    def metric_mean(self, key: str) -> float:
        """Mean of a :class:`StepRecord` metric over the healthy steps 1..T (NaN if none)."""
        values = [getattr(s, key) for s in self.steps[1:] if s.healthy
                  and getattr(s, key) is not None]
        return float(np.mean(values)) if values else math.nan

    def steady_steps(self) -> list[int]:
        """The steady steps: healthy, no fault active in this run or the one before, the same
        rate as the run before (the load did not move)."""
        return [t for t in self.fault_free_steady if self.steps[t].healthy]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (results.json)."""
        return {"scenario": self.scenario, "controller": self.controller, "seed": self.seed,
                "summed_score": self.summed_score, "mean_score": self.mean_score,
                "healthy_end": self.healthy_end,
                "steps": [s.__dict__ | {"faults": list(s.faults)} for s in self.steps]}


def config_change(old: MeshConfig, new: MeshConfig) -> str:
    """The knobs whose effective value differs between ``old`` and ``new``:
    ``carts tcp.maxConnections 5->10; ...`` ("" if none)."""
    parts = []
    for service in sorted(set(old) | set(new)):
        for knob in Knob:
            a, b = knob_value(old.get(service), knob), knob_value(new.get(service), knob)
            if a != b:
                parts.append(f"{service} {knob.value} {_num(a)}->{_num(b)}")
    return "; ".join(parts)


def _num(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:g}"


def _record(t: int, scenario: Scenario, report: LoadReport | None, change: str,
            action: int | None, load_seed: int | None) -> StepRecord:
    faults = tuple(f.describe() for f in scenario.faults_at(t))
    if report is None:
        return StepRecord(t, scenario.rates[t], faults, False, UNHEALTHY_SCORE, change=change,
                          action=action)
    return StepRecord(t, scenario.rates[t], faults, True, evaluation_score(report),
                      good_pct=report.good_pct, goodput_rps=report.goodput_rps,
                      failure_pct=report.failure_pct, abandoned=report.num_abandoned,
                      latency_mean_ms=report.latency_mean_ms,
                      latency_p99_ms=report.latency_p99_ms, change=change, action=action,
                      load_seed=load_seed)


def scenario_start(backend: Backend, scenario: Scenario, rng: np.random.Generator,
                   services: tuple[str, ...], init_upper: int = 100,
                   tuned_config: Mapping[str, Any] | None = None) -> MeshConfig:
    """The scenario's starting configuration as ``MeshEnv`` builds it: Istio's defaults, the
    tuned configuration (``tuned_config``, else :data:`envs.settings.TUNED_STATIC_PATH`), or the
    notebook's random draw from ``rng`` (each draw applied; redrawn until the front-end answers,
    at most :data:`MAX_INIT_DRAWS` times, else :class:`BackendError`)."""
    if scenario.start == "istio_default":
        return istio_default_config()
    if scenario.start == "tuned":
        return dict(tuned_config) if tuned_config is not None else tuned_config_from(
            TUNED_STATIC_PATH)
    for _ in range(MAX_INIT_DRAWS):
        config = classic_initial_config(rng, services, init_upper)
        if apply_config(backend, config):
            return config
    raise BackendError(f"{MAX_INIT_DRAWS} random initial configurations (knobs in "
                       f"1..{init_upper}) all failed the health check")


def steady_runs(scenario: Scenario, episode_len: int) -> tuple[int, ...]:
    """The steps 1..T with no fault in this run or the one before and the rate of the run
    before (see :meth:`ScenarioRun.steady_steps`)."""
    return tuple(t for t in range(1, episode_len + 1)
                 if not scenario.faults_at(t) and not scenario.faults_at(t - 1)
                 and math.isclose(scenario.rates[t], scenario.rates[t - 1]))


def run_scenario(backend: Backend, scenario: Scenario, controller: Controller, seed: int,
                 step_s: float = 10.0, episode_len: int | None = None,
                 catalogue: ActionCatalogue | None = None, init_upper: int = 100,
                 tuned_config: Mapping[str, Any] | None = None) -> ScenarioRun:
    """Play ``scenario`` with ``controller`` on ``backend`` (module docstring).

    Args:
        backend: the mesh replica (restored by its owner, not here).
        scenario: what to play.
        controller: ``reset(scenario, start)`` → run 0's configuration, then ``act(obs,
            config, info)`` → each step's.
        seed: the case seed (``MeshEnv.reset(seed=seed)``'s).
        step_s: seconds of offered load per run (``MeshEnv``'s ``step_s``).
        episode_len: steps to play (default: the scenario's).
        catalogue: the observation's services and knobs (default: MeshEnv's default catalogue).
        init_upper: upper bound of a ``classic_random`` start's knobs.
        tuned_config: the ``tuned`` start (default: the shipped TPE-201 configuration).

    Raises:
        ValueError: ``episode_len`` longer than the scenario, or a controller whose
            ``check_backend(backend)`` refuses the backend.
        BackendError: a run completed no request, or no healthy random start was drawn.
    """
    n_steps = scenario.episode_len if episode_len is None else int(episode_len)
    if not 1 <= n_steps <= scenario.episode_len:
        raise ValueError(f"episode_len must be in 1..{scenario.episode_len} for scenario "
                         f"{scenario.name!r}, got {episode_len!r}")
    check_backend = getattr(controller, "check_backend", None)
    if check_backend is not None:  # a method that needs a mesh-level option (adaptive concurrency)
        check_backend(backend)
    catalogue = catalogue or make_catalogue(DEFAULT_ENV_CONFIG["catalogue"])
    encoder = ObservationEncoder(catalogue, n_steps)
    rng = np.random.default_rng(seed)
    start = scenario_start(backend, scenario, rng, catalogue.services, init_upper, tuned_config)
    load_seeds = [int(rng.integers(0, 2**31 - 1)) for _ in range(n_steps + 1)]
    out = ScenarioRun(scenario.name, getattr(controller, "name", type(controller).__name__),
                      seed, fault_free_steady=steady_runs(scenario, n_steps))

    def observe(report: LoadReport | None, config: MeshConfig, t: int) -> np.ndarray:
        return encoder.encode(report, config, ratio_scale(scenario.rates[t] / NOMINAL_RATE_RPS), t)

    config = dict(controller.reset(scenario, dict(start)))
    healthy = apply_config(backend, config)
    report = run_checked(backend, scenario.load(0, step_s), load_seeds[0]) if healthy else None
    out.steps.append(_record(0, scenario, report, config_change(start, config), None,
                             load_seeds[0] if healthy else None))
    obs = observe(report, config, 0)
    out.observations.append(obs)
    for t in range(1, n_steps + 1):
        if report is None:  # the scenario ended: every remaining step counts the worst score
            out.steps.append(_record(t, scenario, None, "", None, None))
            continue
        # what has happened, nothing about the runs to come (no scenario object: its rates)
        info = {"t": t - 1, "report": report, "episode_len": n_steps,
                "rate_rps": scenario.rates[t - 1]}
        new = dict(controller.act(obs, dict(config), info))
        action = getattr(controller, "last_action", None)
        change = config_change(config, new)
        config = new
        if not apply_config(backend, config):
            report = None
            out.steps.append(_record(t, scenario, None, change, action, None))
            out.observations.append(observe(None, config, t))
            continue
        report = run_checked(backend, scenario.load(t, step_s), load_seeds[t])
        out.steps.append(_record(t, scenario, report, change, action, load_seeds[t]))
        obs = observe(report, config, t)
        out.observations.append(obs)
    out.final_config = config
    return out


__all__ = ["MAX_INIT_DRAWS", "UNHEALTHY_SCORE", "ScenarioRun", "StepRecord", "config_change",
           "run_scenario", "scenario_start", "steady_runs"]
