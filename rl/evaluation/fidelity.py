"""Fidelity of the simulator: the same configurations and loads through ``sim`` and ``local``,
judged against each side's own noise.

Random DestinationRule configurations run under each load through the simulator (``SimMesh``
on the ``loopback`` platform: the per-hop costs measured on the local Envoys) and the
real-Envoy local mesh (``LocalMesh``), which share the service profile and the call graph.

**Loads and score.** By default the project's v1 objective: open-loop Poisson sessions at a
rate for ``step_s`` seconds (:func:`open_load`; the command runs the nominal rate,
``envs.sockshop.slo.NOMINAL_RATE_RPS``, and twice it, past what the shop serves), scored by
:func:`envs.reward.evaluation_score` (``good % - 100``). ``classic=True`` (``--classic``) runs
the notebook's closed loop (:func:`closed_load`) scored by
:func:`envs.reward.classic_evaluation_score`.

**Configurations** (declared here, seeded): Istio's defaults, then the notebook's draw
(``actions.classic_initial_config``) with ``upper`` cycling through :data:`UPPERS`, tight to
loose.

**Runs.** Each (configuration, load) runs ``repeats`` times on the local mesh and ``sim_seeds``
times in the simulator; local run ``k`` and simulator run ``k`` share a seed (a *pair*).

**Targets, per load** (every figure with a 95 % percentile-bootstrap CI over configurations,
:data:`BOOTSTRAP_RESAMPLES` seeded resamples, every figure recomputed on each resample):

* **corrected ρ ≥ 0.95**: ρ = Spearman rank correlation of the per-configuration mean scores,
  sim against local; each side's **reliability** from split halves of its runs (the rank
  correlation between the half means, averaged over up to :data:`MAX_SPLITS` splits) corrected
  with Spearman–Brown for the full length (:func:`spearman_brown`, ``k = 2``); corrected
  ρ = ρ / √(rel_sim · rel_local) (:func:`corrected_rho`): 1 means the simulator ranks the
  configurations as well as the two sides' own noise allows (it exceeds 1 when the split
  halves underestimate a reliability, as few configurations or runs can; it is not clipped);
* **pick test ≤ 10 %**: the configuration the simulator scores best, measured locally, is within
  10 % of the local score range of the local best (:func:`pick_gap`);
* **crash probability, Brier ≤ 0.1**: per configuration the share of simulator runs in which
  the front-end crashed (``extra["frontend_crashes"] > 0``, which both backends report) is the
  forecast of each local run's crash (:func:`brier_score`); the part no forecast can remove,
  the local runs' own spread ``p(1 - p)``, is reported beside it;
* **per destination and cause ≤ 3 points**: for ``UO``, ``UF``, ``URX`` and ``UT``
  (:data:`CAUSES`: the shares the observation's cause channels carry, pooled over the runs of a
  side), the median |sim - local| in percentage points over the (configuration, destination)
  cells in which either side saw the cause;
* secondary: per pair and endpoint (:data:`COMPARED`) the median failure-rate error (≤ 5
  points) and the median p99 ratio sim/local (0.7–1.3).

Where a target is missed, :func:`load_rows` says which side is off: the local mesh when its own
repeats do not agree (reliability below :data:`RELIABILITY_FLOOR`, or a crash that is a coin
flip locally), else the simulator, naming the configurations or cells that differ most. The
command is ``experiments/fidelity.py``; this module holds what it measures and how.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

from envs.actions import classic_initial_config
from envs.backends.base import Backend, BackendError, LoadSpec
from envs.backends.report import LoadReport
from envs.backends.sim import SimMesh, profile
from envs.istio import DestinationRule, rules_for
from envs.reward import classic_evaluation_score, evaluation_score

#: Upper bounds of the notebook's draw, cycled over the configurations (tight → loose).
UPPERS = (4, 6, 8, 11, 16, 22, 32, 45, 64, 128, 256, 1000)
#: Endpoints compared one by one (each detail page sees too few requests for a stable p99).
COMPARED = ("GET /catalogue", "GET /", "GET /login", "GET /category.html", "DELETE /cart",
            "POST /cart", "GET /basket.html", "POST /orders")
#: The causes compared per destination: (``ServiceStats`` count field, its denominator), as
#: the observation's ``uo_frac``/``uf_frac``/``ut_frac`` (per attempt) and ``urx_frac`` (per
#: request) channels.
CAUSES: dict[str, tuple[str, str]] = {"UO": ("uo_count", "num_attempts"),
                                      "UF": ("uf_count", "num_attempts"),
                                      "URX": ("urx_count", "num_requests"),
                                      "UT": ("ut_count", "num_attempts")}
#: Run seeds: ``seed * 1e6 + load * 1e4 + config * 100 + k``, k < MAX_SEEDS_PER_SIDE.
MAX_SEEDS_PER_SIDE = 100
#: Split halves averaged per reliability (all of them when there are fewer).
MAX_SPLITS = 64
#: Bootstrap resamples of configurations behind every CI.
BOOTSTRAP_RESAMPLES = 2000
CORRECTED_RHO_TARGET = 0.95
PICK_GAP_TARGET = 0.10
BRIER_TARGET = 0.1
CAUSE_ERROR_TARGET_PTS = 3.0
FAILURE_ERROR_TARGET_PTS = 5.0
P99_RATIO_RANGE = (0.7, 1.3)
#: A side whose reliability is below this cannot tell its configurations apart: a missed ρ
#: target is then that side's noise, not the simulator's model.
RELIABILITY_FLOOR = 0.5

ScoreFn = Callable[[LoadReport], float]
#: The score of each objective family: v1 (``slo``) and the notebook's (``classic``).
SCORE_FNS: dict[str, ScoreFn] = {"slo": evaluation_score, "classic": classic_evaluation_score}


# ----- loads and configurations ----------------------------------------------------------------

@dataclass(frozen=True)
class Load:
    """One load of the comparison: what runs (``spec``) and its name in the tables."""

    label: str
    spec: LoadSpec


def open_load(rate_rps: float, step_s: float) -> Load:
    """v1: Poisson sessions at ``rate_rps`` requests/s for about ``step_s`` seconds (as
    ``Scenario.load`` builds a run)."""
    if not (math.isfinite(rate_rps) and rate_rps > 0 and math.isfinite(step_s) and step_s > 0):
        raise ValueError(f"rate and step must be positive, got {rate_rps!r} req/s, {step_s!r} s")
    spec = LoadSpec(users=0, requests=max(1, round(rate_rps * step_s)), mode="open",
                    arrival_rate_rps=rate_rps)
    return Load(f"{rate_rps:g} req/s × {step_s:g} s (open)", spec)


def closed_load(users: int, requests: int) -> Load:
    """The notebook's closed loop: ``users`` users without think time, ``requests`` in all."""
    return Load(f"{users} users × {requests} requests (closed)",
                LoadSpec(users=users, requests=requests))


def parse_closed_load(text: str) -> tuple[int, int]:
    """``"10:300"`` → (10 users, 300 requests)."""
    users, _, requests = text.partition(":")
    try:
        return int(users), int(requests)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"load must be USERS:REQUESTS, got {text!r}") from exc


def configurations(n: int, seed: int) -> list[tuple[int | None, list[DestinationRule]]]:
    """``n`` configurations: Istio's defaults, then seeded draws with bounds from UPPERS."""
    out: list[tuple[int | None, list[DestinationRule]]] = [(None, [])]
    for i in range(1, n):
        upper = UPPERS[(i - 1) % len(UPPERS)]
        config = classic_initial_config(np.random.default_rng([seed, i]), upper=upper)
        out.append((upper, rules_for(config)))
    return out


def run_seed(seed: int, load_index: int, config: int, k: int) -> int:
    """The seed of run ``k`` of one (configuration, load)."""
    return seed * 1_000_000 + load_index * 10_000 + config * 100 + k


# ----- what one run measured ---------------------------------------------------------------------

@dataclass(frozen=True)
class RunFigures:
    """What the comparison keeps of one run: its score, crash count, per-endpoint failure % and
    p99 (ms), and per destination and cause ``(count, denominator)`` (None: not measured)."""

    seed: int
    score: float
    failure_pct: float
    frontend_crashes: int
    endpoint_failure_pct: dict[str, float]
    endpoint_p99_ms: dict[str, float]
    causes: dict[str, dict[str, tuple[int, int] | None]]

    @property
    def crashed(self) -> bool:
        """Did the front-end crash at least once in the run?"""
        return self.frontend_crashes > 0

    @classmethod
    def of(cls, report: LoadReport, score: ScoreFn, seed: int) -> RunFigures:
        """The figures of ``report`` (BackendError if it lacks the crash count)."""
        if "frontend_crashes" not in report.extra:
            raise BackendError(f"{report.backend or 'backend'} report has no frontend_crashes")
        causes: dict[str, dict[str, tuple[int, int] | None]] = {}
        for name, s in report.services.items():
            row: dict[str, tuple[int, int] | None] = {}
            for cause, (count_field, total_field) in CAUSES.items():
                count, total = getattr(s, count_field), getattr(s, total_field)
                row[cause] = None if count is None or total is None else (int(count), int(total))
            causes[name] = row
        return cls(seed=seed, score=float(score(report)), failure_pct=report.failure_pct,
                   frontend_crashes=int(report.extra["frontend_crashes"]),
                   endpoint_failure_pct={n: report.endpoints[n].failure_pct for n in COMPARED
                                         if report.endpoints[n].num_requests},
                   endpoint_p99_ms={n: float(report.endpoints[n].p99_ms) for n in COMPARED
                                    if report.endpoints[n].p99_ms},
                   causes=causes)


@dataclass
class ConfigRuns:
    """One configuration under one load: every run of each side (``local[k]`` and ``sim[k]``
    share a seed)."""

    load: int
    config: int
    upper: int | None
    local: list[RunFigures] = field(default_factory=list)
    sim: list[RunFigures] = field(default_factory=list)


# ----- the arithmetic ----------------------------------------------------------------------------

def spearman_brown(r_half: float | np.ndarray, k: float = 2.0) -> float | np.ndarray:
    """Reliability of a measure ``k`` times as long as one whose reliability is ``r_half``:
    ``k·r / (1 + (k−1)·r)`` (nan where the denominator is not positive)."""
    r = np.asarray(r_half, dtype=np.float64)
    den = 1.0 + (k - 1.0) * r
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, k * r / den, np.nan)
    return float(out) if out.ndim == 0 else out


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Spearman's ρ between ``a`` and ``b`` along the last axis (ties: average ranks; nan
    where either side is constant)."""
    ra = rankdata(np.asarray(a, dtype=np.float64), axis=-1)
    rb = rankdata(np.asarray(b, dtype=np.float64), axis=-1)
    ra -= ra.mean(axis=-1, keepdims=True)
    rb -= rb.mean(axis=-1, keepdims=True)
    den = np.sqrt((ra * ra).sum(-1) * (rb * rb).sum(-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, (ra * rb).sum(-1) / den, np.nan)
    return float(out) if out.ndim == 0 else out


def halves(n_runs: int, max_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Splits of ``n_runs`` (even, ≥ 2) runs into two equal halves: all of them (each once) when
    there are at most ``max_splits``, else ``max_splits`` seeded random ones."""
    if n_runs < 2 or n_runs % 2:
        raise ValueError(f"split halves need an even number of runs >= 2, got {n_runs}")
    half = n_runs // 2
    if math.comb(n_runs - 1, half - 1) <= max_splits:
        firsts = [(0, *rest) for rest in itertools.combinations(range(1, n_runs), half - 1)]
    else:
        rng = np.random.default_rng(seed)
        firsts = [tuple(sorted(rng.permutation(n_runs)[:half])) for _ in range(max_splits)]
    out = []
    for a in firsts:
        idx = np.array(a)
        out.append((idx, np.setdiff1d(np.arange(n_runs), idx)))
    return out


def split_half_reliability(scores: np.ndarray,
                           splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """Reliability of the per-configuration mean of ``scores`` (configurations × runs): the rank
    correlation between the two halves' means, averaged over ``splits``, corrected for the full
    length with :func:`spearman_brown` (k = 2)."""
    a = np.stack([scores[:, s[0]].mean(1) for s in splits])
    b = np.stack([scores[:, s[1]].mean(1) for s in splits])
    r = np.asarray(rank_correlation(a, b))
    r_half = float(np.nanmean(r)) if np.isfinite(r).any() else math.nan
    return float(spearman_brown(r_half, 2.0))


def corrected_rho(rho: float, rel_sim: float, rel_local: float) -> float:
    """ρ / √(rel_sim · rel_local); nan when either reliability is not positive (the ceiling is
    undefined)."""
    if not (rel_sim > 0 and rel_local > 0):
        return math.nan
    return rho / math.sqrt(rel_sim * rel_local)


def pick_gap(sim_means: np.ndarray, local_means: np.ndarray) -> float:
    """How far below the local best the simulator's pick scores locally, as a share of the local
    score range (0: it is the local best). Ties for the simulator's best count against it (its
    worst-scoring tie locally); a flat local range gives 0."""
    sim_means, local_means = np.asarray(sim_means), np.asarray(local_means)
    picks = np.flatnonzero(sim_means == sim_means.max())
    low, high = float(local_means.min()), float(local_means.max())
    if high == low:
        return 0.0
    return (high - float(local_means[picks].min())) / (high - low)


def brier_score(forecast: Sequence[float], outcomes: Sequence[Sequence[bool]]) -> float:
    """Mean over configurations of the mean over their local runs of (forecast − outcome)²:
    the simulator's crash probability against each local run's crash (0/1)."""
    if len(forecast) != len(outcomes) or not outcomes:
        raise ValueError("one forecast per configuration, and at least one configuration")
    return statistics.fmean(statistics.fmean((p - float(o)) ** 2 for o in runs)
                            for p, runs in zip(forecast, outcomes, strict=True))


def bootstrap_cis(stat: Callable[[np.ndarray], dict[str, float]], n: int, resamples: int,
                  seed: int) -> dict[str, tuple[float, float]]:
    """95 % percentile-bootstrap intervals of every figure ``stat(indices)`` returns, over
    ``resamples`` seeded draws of ``n`` configurations with replacement (one set of draws for
    all figures). Resamples where a figure is nan are left out of its interval; (nan, nan)
    when none is finite."""
    rng = np.random.default_rng(seed)
    draws = [stat(rng.integers(0, n, n)) for _ in range(resamples)]
    out: dict[str, tuple[float, float]] = {}
    for key in draws[0]:
        values = np.array([d[key] for d in draws], dtype=np.float64)
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [2.5, 97.5]) if len(values) else (math.nan, math.nan)
        out[key] = (float(low), float(high))
    return out


# ----- one load's figures ------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One (configuration, destination, cause) in which either side saw the cause: each
    side's share in percent (count / denominator, pooled over its runs)."""

    config: int
    destination: str
    cause: str
    sim_pct: float
    local_pct: float


def _pooled_pct(runs: Sequence[RunFigures], destination: str, cause: str) -> float | None:
    counts = [r.causes.get(destination, {}).get(cause) for r in runs]
    if any(c is None for c in counts):
        return None
    total = sum(c[1] for c in counts if c is not None)
    return 100.0 * sum(c[0] for c in counts if c is not None) / total if total else None


def cause_cells(runs: ConfigRuns) -> list[Cell]:
    """The cells of one configuration where both sides measured the cause on a destination
    that saw traffic and either side counted it."""
    out = []
    names = sorted(set().union(*(r.causes for r in runs.local + runs.sim)))
    for destination, cause in itertools.product(names, CAUSES):
        s = _pooled_pct(runs.sim, destination, cause)
        loc = _pooled_pct(runs.local, destination, cause)
        if s is not None and loc is not None and (s > 0 or loc > 0):
            out.append(Cell(runs.config, destination, cause, s, loc))
    return out


class LoadData:
    """One load's runs as arrays, so that every figure can be recomputed on a resample of the
    configurations (:meth:`figures`)."""

    def __init__(self, runs: Sequence[ConfigRuns], seed: int) -> None:
        if len(runs) < 3:
            raise ValueError(f"need at least 3 configurations, got {len(runs)}")
        repeats, seeds = {len(r.local) for r in runs}, {len(r.sim) for r in runs}
        if len(repeats) != 1 or len(seeds) != 1:
            raise ValueError("every configuration needs the same number of runs per side")
        self.runs = list(runs)
        self.local = np.array([[f.score for f in r.local] for r in runs])
        self.sim = np.array([[f.score for f in r.sim] for r in runs])
        self.local_crash = np.array([[f.crashed for f in r.local] for r in runs])
        self.sim_crash = np.array([[f.crashed for f in r.sim] for r in runs])
        self.local_splits = halves(self.local.shape[1], MAX_SPLITS, seed)
        self.sim_splits = halves(self.sim.shape[1], MAX_SPLITS, seed + 1)
        self.cells = [cause_cells(r) for r in runs]
        #: per configuration, per pair and endpoint: failure % sim − local (points)
        self.failure_errors: list[np.ndarray] = []
        self.p99_ratios: list[np.ndarray] = []
        for r in runs:
            errors, ratios = [], []
            for loc, s in zip(r.local, r.sim, strict=False):  # pairs: same seed
                errors += [s.endpoint_failure_pct[n] - loc.endpoint_failure_pct[n]
                           for n in COMPARED
                           if n in s.endpoint_failure_pct and n in loc.endpoint_failure_pct]
                ratios += [s.endpoint_p99_ms[n] / loc.endpoint_p99_ms[n] for n in COMPARED
                           if n in s.endpoint_p99_ms and n in loc.endpoint_p99_ms]
            self.failure_errors.append(np.array(errors))
            self.p99_ratios.append(np.array(ratios))

    @property
    def n(self) -> int:
        """Configurations."""
        return len(self.runs)

    def figures(self, idx: np.ndarray | None = None) -> dict[str, float]:
        """Every figure on the configurations ``idx`` (with repeats; None: all once)."""
        idx = np.arange(self.n) if idx is None else np.asarray(idx)
        local, sim = self.local[idx], self.sim[idx]
        local_means, sim_means = local.mean(1), sim.mean(1)
        rho = float(rank_correlation(sim_means, local_means))
        rel_sim = split_half_reliability(sim, self.sim_splits)
        rel_local = split_half_reliability(local, self.local_splits)
        p_sim = self.sim_crash[idx].mean(1)
        p_local = self.local_crash[idx].mean(1)
        out = {"rho": rho, "rel_sim": rel_sim, "rel_local": rel_local,
               "corrected_rho": corrected_rho(rho, rel_sim, rel_local),
               "pick_gap": pick_gap(sim_means, local_means),
               "brier": brier_score(list(p_sim), [list(o) for o in self.local_crash[idx]]),
               "brier_floor": float(np.mean(p_local * (1 - p_local))),
               "crash_sim": float(p_sim.mean()), "crash_local": float(p_local.mean())}
        for cause in CAUSES:
            errors = [abs(c.sim_pct - c.local_pct) for i in idx for c in self.cells[i]
                      if c.cause == cause]
            out[f"cause_{cause}"] = float(np.median(errors)) if errors else math.nan
            out[f"cells_{cause}"] = float(len(errors))
        failure = np.abs(np.concatenate([self.failure_errors[i] for i in idx]))
        ratios = np.concatenate([self.p99_ratios[i] for i in idx])
        out["failure_error"] = float(np.median(failure)) if len(failure) else math.nan
        out["p99_ratio"] = float(np.median(ratios)) if len(ratios) else math.nan
        return out

    def cis(self, seed: int, resamples: int = BOOTSTRAP_RESAMPLES
            ) -> dict[str, tuple[float, float]]:
        """A 95 % bootstrap interval over configurations of every figure (:func:`bootstrap_cis`)."""
        return bootstrap_cis(self.figures, self.n, resamples, seed)


# ----- rows of the table -------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """One figure of one load: its value and CI, its target (None: reported only), whether it
    is met, and where it is missed which side is off and where."""

    name: str
    target: str
    value: float
    ci: tuple[float, float]
    met: bool | None
    note: str = ""


#: The names of the rows with a target, in table order.
TARGET_ROWS = ("corrected ρ", "pick test: local gap of the simulator's pick",
               "crash probability: Brier score", *(f"cause {c}: median |error|, pts"
                                                    for c in CAUSES),
               "failure-rate error per endpoint, median pts (secondary)",
               "p99 ratio sim/local per endpoint, median (secondary)")


def _fmt(v: float, digits: int = 2) -> str:
    return "–" if not math.isfinite(v) else f"{v:.{digits}f}"


def _rank_note(data: LoadData) -> str:
    local_rank = rankdata(-data.local.mean(1))
    sim_rank = rankdata(-data.sim.mean(1))
    worst = np.argsort(-np.abs(local_rank - sim_rank))[:3]
    return "; ".join(f"config {data.runs[i].config} ranks {sim_rank[i]:.0f} in sim, "
                     f"{local_rank[i]:.0f} locally (score {data.sim[i].mean():.1f} vs "
                     f"{data.local[i].mean():.1f})" for i in worst)


def load_rows(data: LoadData, seed: int, resamples: int = BOOTSTRAP_RESAMPLES) -> list[Row]:
    """Every figure of one load, with its CI, target and, where missed, the side that is off."""
    f, ci = data.figures(), data.cis(seed, resamples)
    rows = [Row("Spearman ρ of mean scores, sim vs local", "", f["rho"], ci["rho"], None),
            Row("reliability of the simulator's mean (split halves, Spearman–Brown)", "",
                f["rel_sim"], ci["rel_sim"], None),
            Row("reliability of the local mean (split halves, Spearman–Brown)", "",
                f["rel_local"], ci["rel_local"], None)]
    # corrected ρ
    met = math.isfinite(f["corrected_rho"]) and f["corrected_rho"] >= CORRECTED_RHO_TARGET
    note = ""
    if not met:
        noisy = [side for side, rel in (("local", f["rel_local"]), ("simulator", f["rel_sim"]))
                 if not rel >= RELIABILITY_FLOOR]
        note = (f"{' and '.join(noisy)}: its repeats do not rank the configurations alike "
                f"(reliability below {RELIABILITY_FLOOR}); more repeats needed before the model "
                "can be judged" if noisy
                else f"simulator: it ranks differently beyond the noise; {_rank_note(data)}")
    rows.append(Row(TARGET_ROWS[0], f"≥ {CORRECTED_RHO_TARGET}", f["corrected_rho"],
                    ci["corrected_rho"], met, note))
    # pick test
    sim_means, local_means = data.sim.mean(1), data.local.mean(1)
    pick, best = int(np.argmax(sim_means)), int(np.argmax(local_means))
    met = f["pick_gap"] <= PICK_GAP_TARGET
    note = "" if met else (
        f"simulator: its pick, config {data.runs[pick].config} (sim {sim_means[pick]:.1f}), "
        f"scores {local_means[pick]:.1f} locally (runs {data.local[pick].min():.1f} to "
        f"{data.local[pick].max():.1f}) against the local best, config "
        f"{data.runs[best].config} ({local_means[best]:.1f}, runs {data.local[best].min():.1f} "
        f"to {data.local[best].max():.1f}; sim {sim_means[best]:.1f})")
    rows.append(Row(TARGET_ROWS[1], f"≤ {PICK_GAP_TARGET:.0%} of the local range",
                    f["pick_gap"], ci["pick_gap"], met, note))
    # crash probability
    met = f["brier"] <= BRIER_TARGET
    note = (f"crash share of runs: sim {f['crash_sim']:.2f}, local {f['crash_local']:.2f}; "
            f"local runs' own spread (floor of any forecast) {f['brier_floor']:.3f}")
    if not met:
        if f["brier_floor"] > BRIER_TARGET:
            note = "local: the crash is a coin flip between its own runs; " + note
        else:
            p_sim, p_loc = data.sim_crash.mean(1), data.local_crash.mean(1)
            worst = [i for i in np.argsort(-np.abs(p_sim - p_loc))[:3] if p_sim[i] != p_loc[i]]
            note = ("simulator: " + ", ".join(
                f"config {data.runs[i].config} p {p_sim[i]:.2f} vs {p_loc[i]:.2f} locally"
                for i in worst) + "; " + note)
    rows.append(Row(TARGET_ROWS[2], f"≤ {BRIER_TARGET}", f["brier"], ci["brier"], met, note))
    # causes
    for cause, name in zip(CAUSES, TARGET_ROWS[3:7], strict=True):
        value, cells = f[f"cause_{cause}"], [c for cs in data.cells for c in cs
                                             if c.cause == cause]
        if not cells:
            rows.append(Row(name, f"≤ {CAUSE_ERROR_TARGET_PTS:g}", value, ci[f"cause_{cause}"],
                            None, "not exercised: neither side counted it"))
            continue
        met = value <= CAUSE_ERROR_TARGET_PTS
        bias = float(np.median([c.sim_pct - c.local_pct for c in cells]))
        worst = sorted(cells, key=lambda c: -abs(c.sim_pct - c.local_pct))[:3]
        note = f"{len(cells)} cells; median sim − local {bias:+.1f} pts"
        if not met:
            note = (f"simulator: it counts {'more' if bias > 0 else 'fewer'} {cause} than the "
                    "local Envoys; worst cells, sim vs local: " + ", ".join(
                        f"{c.destination} in config {c.config} {c.sim_pct:.1f} vs "
                        f"{c.local_pct:.1f} %" for c in worst) + "; " + note)
        rows.append(Row(name, f"≤ {CAUSE_ERROR_TARGET_PTS:g}", value, ci[f"cause_{cause}"],
                        met, note))
    met = f["failure_error"] <= FAILURE_ERROR_TARGET_PTS
    signed = np.concatenate(data.failure_errors)
    bias = float(np.median(signed)) if len(signed) else math.nan
    rows.append(Row(TARGET_ROWS[7], f"≤ {FAILURE_ERROR_TARGET_PTS:g}", f["failure_error"],
                    ci["failure_error"], met, "" if met else
                    f"simulator: it fails {'more' if bias > 0 else 'less'} than the local mesh "
                    f"(median sim − local {bias:+.1f} pts)"))
    low, high = P99_RATIO_RANGE
    met = low <= f["p99_ratio"] <= high
    rows.append(Row(TARGET_ROWS[8], f"{low}–{high}", f["p99_ratio"], ci["p99_ratio"], met,
                    "" if met else ("simulator: slower than the local mesh" if f["p99_ratio"]
                                    > high else "simulator: faster than the local mesh")))
    return [_undecided(row) for row in rows]


def _undecided(row: Row) -> Row:
    """A missed row whose CI still reaches its target says so: the miss is not decided at
    this number of configurations."""
    if row.met is not False or not all(math.isfinite(x) for x in row.ci):
        return row
    bound = row.target.split()[1] if row.target.startswith(("≥", "≤")) else ""
    low, high = row.ci
    if row.target.startswith("≥"):
        reaches = high >= float(bound)
    elif row.target.startswith("≤"):
        reaches = low <= float(bound.rstrip("%")) / (100 if bound.endswith("%") else 1)
    else:
        lo, hi = (float(x) for x in row.target.split("–"))
        reaches = high >= lo and low <= hi
    if not reaches:
        return row
    return Row(row.name, row.target, row.value, row.ci, row.met,
               (row.note + "; " if row.note else "") + "not decided: the CI reaches the target")


# ----- running it --------------------------------------------------------------------------------

@dataclass
class FidelityRun:
    """Everything one comparison measured: per (load, configuration) the runs of both sides,
    and the local runs that could not be measured (their configuration is left out of that
    load, listed, never made up)."""

    loads: list[Load]
    runs: list[ConfigRuns]
    failures: list[str]

    def of_load(self, load_index: int) -> list[ConfigRuns]:
        """The complete configurations of one load."""
        return [r for r in self.runs if r.load == load_index]


def run_comparison(local: Backend, configs: list[tuple[int | None, list[DestinationRule]]],
                   loads: Sequence[Load], repeats: int, sim_seeds: int, seed: int,
                   platform: profile.Platform, score: ScoreFn = evaluation_score,
                   envoy_workers: int = 2) -> FidelityRun:
    """Run every configuration under every load ``repeats`` times on ``local`` and
    ``sim_seeds`` times in the simulator on ``platform`` with the local mesh's
    ``envoy_workers`` (each calling pool may exceed ``maxConnections`` up to that many
    connections, as on real Envoy); one line per local run. The repeats are the outer loop (a
    drift of the shared machine spreads over every configuration). ``local`` is left open."""
    if not 1 <= repeats <= sim_seeds <= MAX_SEEDS_PER_SIDE:
        raise ValueError(f"need 1 <= repeats <= sim_seeds <= {MAX_SEEDS_PER_SIDE}")
    sim = SimMesh(platform=platform, envoy_workers=envoy_workers)
    out = FidelityRun(list(loads), [], [])
    try:
        for li, load in enumerate(loads):
            runs = [ConfigRuns(li, ci, upper) for ci, (upper, _) in enumerate(configs)]
            for ci, (_, rules) in enumerate(configs):
                sim.apply(rules)
                runs[ci].sim = [RunFigures.of(sim.run_load(load.spec, s), score, s) for s in
                                (run_seed(seed, li, ci, k) for k in range(sim_seeds))]
            failed: set[int] = set()
            for k in range(repeats):
                for ci, (upper, rules) in enumerate(configs):
                    if ci in failed:
                        continue
                    s = run_seed(seed, li, ci, k)
                    try:
                        local.apply(rules)
                        figures = RunFigures.of(local.run_load(load.spec, s), score, s)
                    except BackendError as exc:  # reported, never replaced by a made-up figure
                        failed.add(ci)
                        out.failures.append(f"{load.label}, config {ci}, repeat {k}: {exc}")
                        print(out.failures[-1], flush=True)
                        continue
                    runs[ci].local.append(figures)
                    print(f"{load.label} repeat {k} config {ci:2d} (upper {upper}): score sim "
                          f"{runs[ci].sim[k].score:8.1f} local {figures.score:8.1f}  crashes "
                          f"sim {runs[ci].sim[k].frontend_crashes} local "
                          f"{figures.frontend_crashes}", flush=True)
            out.runs += [r for r in runs if r.config not in failed]
    finally:
        sim.close()
    return out


def load_tables(run: FidelityRun, seed: int, resamples: int = BOOTSTRAP_RESAMPLES
                ) -> list[list[Row] | None]:
    """Per load, its rows (:func:`load_rows`); None for a load left with fewer than 3
    complete configurations."""
    return [load_rows(LoadData(run.of_load(li), seed), seed, resamples)
            if len(run.of_load(li)) >= 3 else None for li in range(len(run.loads))]


def all_targets_met(tables: Sequence[list[Row] | None]) -> bool:
    """Does every row with a target hold under every load (a load without figures does not)?"""
    return all(rows is not None and all(row.met is not False for row in rows)
               for rows in tables)


# ----- the markdown section ----------------------------------------------------------------------

#: The BENCHMARKS.md section a fidelity run is appended to, and its intro when created.
SECTION = "## Fidelity"
SECTION_INTRO = ("The simulator against the real-Envoy local mesh (`experiments/fidelity.py`): the "
                 "same configurations and loads through both, same service profile.")


def markdown(run: FidelityRun, tables: Sequence[list[Row] | None], header: str, seed: int,
             resamples: int = BOOTSTRAP_RESAMPLES) -> str:
    """The run's section body: ``header`` (the command, the machine), the targets, a table per
    load (``tables``: every figure with its CI, met or not, which side is off) and the
    per-configuration scores."""
    lines = [header, "",
             f"Targets (issue 13, judged against each side's own noise): corrected ρ ≥ "
             f"{CORRECTED_RHO_TARGET}; the simulator's pick within {PICK_GAP_TARGET:.0%} of the "
             f"local score range of the local best; crash-probability Brier score ≤ "
             f"{BRIER_TARGET}; per destination and cause (UO, UF, URX, UT) median |error| ≤ "
             f"{CAUSE_ERROR_TARGET_PTS:g} points; secondary: median failure-rate error ≤ "
             f"{FAILURE_ERROR_TARGET_PTS:g} points, median p99 ratio in "
             f"{P99_RATIO_RANGE[0]}–{P99_RATIO_RANGE[1]}. CIs: 95 % percentile bootstrap over "
             f"configurations ({resamples} resamples, seed {seed}).", ""]
    for li, (load, rows) in enumerate(zip(run.loads, tables, strict=True)):
        configs = run.of_load(li)
        if rows is None:
            lines += [f"**{load.label}**: only {len(configs)} configurations measured; no "
                      "figures (target missed: the local mesh).", ""]
            continue
        lines += [f"**{load.label}** — {len(configs)} configurations × "
                  f"{len(configs[0].local)} local runs, {len(configs[0].sim)} simulator runs "
                  "each", "",
                  "| figure | target | value [95 % CI] | met | which side is off, where |",
                  "|---|---|---|---|---|"]
        for row in rows:
            mark = {True: "yes", False: "**no**", None: "–"}[row.met]
            lines.append(f"| {row.name} | {row.target or '–'} | {_fmt(row.value)} "
                         f"[{_fmt(row.ci[0])}, {_fmt(row.ci[1])}] | {mark} | {row.note} |")
        lines.append("")
    lines += ["Per configuration (score: mean, and [min–max] of the local runs; upper = bound "
              "of the notebook's draw, – = Istio's defaults; crash = share of runs in which "
              "the front-end crashed; fail % = mean over the runs):", "",
              "| load | config | upper | sim score | local score [min–max] | crash sim | "
              "crash local | sim fail % | local fail % |", "|---|---:|---:|---:|---:|---:|---:|"
              "---:|---:|"]
    for r in run.runs:
        loc = [f.score for f in r.local]
        lines.append(
            f"| {run.loads[r.load].label} | {r.config} | {r.upper or '–'} | "
            f"{statistics.fmean(f.score for f in r.sim):.1f} | {statistics.fmean(loc):.1f} "
            f"[{min(loc):.1f}–{max(loc):.1f}] | "
            f"{statistics.fmean(f.crashed for f in r.sim):.2f} | "
            f"{statistics.fmean(f.crashed for f in r.local):.2f} | "
            f"{statistics.fmean(f.failure_pct for f in r.sim):.1f} | "
            f"{statistics.fmean(f.failure_pct for f in r.local):.1f} |")
    if run.failures:
        lines += ["", "Runs the local mesh could not measure (their configuration is left out "
                  "of that load):", "", *(f"- {f}" for f in run.failures)]
    return "\n".join(lines) + "\n"


def run_header(command: str, elapsed_s: float, platform: profile.Platform, classic: bool,
               envoy_workers: int, load_before: tuple[float, float, float],
               load_after: tuple[float, float, float]) -> str:
    """The run's heading and what it ran on (the shared machine's load averages included)."""
    objective = ("the notebook's closed loop, `classic_evaluation_score`" if classic else
                 "v1: open-loop Poisson sessions, `evaluation_score` (good % − 100)")
    la = "/".join(f"{x:.2f}" for x in load_before), "/".join(f"{x:.2f}" for x in load_after)
    return (f"### Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (`{command}`, "
            f"{elapsed_s / 60:.1f} min)\n\nLoad and score: {objective}. Simulator on the "
            f"`{platform.name}` platform; local mesh with {envoy_workers} Envoy worker(s) per "
            f"sidecar. Machine load average (1/5/15 min, `uptime`): {la[0]} at the start, "
            f"{la[1]} at the end ({len(os.sched_getaffinity(0))} cores).")
