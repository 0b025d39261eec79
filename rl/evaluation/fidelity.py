"""Fidelity of the simulator: the same configurations and loads through ``sim`` and ``local``.

Random DestinationRule configurations run under each load through the simulator (``SimMesh``)
and the real-Envoy local mesh (``LocalMesh``), which share the service profile
(``envs.backends.sim.profile``) and the call graph (``envs.sockshop``). The simulator runs on
the platform the local mesh is (``--sim-platform loopback``: the per-hop costs measured on the
local Envoys, ``envs.backends.local.platform_probe``); the calibrated cluster platform is run
beside it for comparison.

**Configurations** (declared here, seeded, none left out): Istio's defaults, then the notebook's
draw (``actions.classic_initial_config``: every knob uniform in ``1..upper``) with ``upper``
cycling through :data:`UPPERS` — steps of ~√2 from 4 to 64, where these loads start to meet
the limits, then 128, 256 and 1000 (loose) — so the set spans tight to loose with configurations
in between, not only broken and healthy ones.

**Repeats.** One short run's ``evaluation_score`` is noisy (a front-end crash turns a few
failures into many; few requests per endpoint). Each configuration runs ``--repeats`` times on
the local mesh (score: their mean; their spread is reported) and ``--sim-seeds`` times in the
simulator (its expected score: the mean; the first ``--repeats`` seeds are the local runs'
seeds). ρ is the Spearman rank correlation of the two means over the configurations of one
load. Its **noise ceiling** is the same ρ computed simulator against simulator: the
``--sim-seeds`` mean against a mean of ``--repeats`` runs with other seeds (over
:data:`CEILING_DRAWS` such draws: mean, min–max). It is how far ρ can go when the only
difference is run-to-run noise of the size the local side has.

Per (configuration, load, repeat), for the 8 endpoints of the loop other than the detail pages
(each of the 10 detail pages sees too few requests for a stable p99), between the local run
and the simulator's run with the same seed:

* the failure-rate error: |failure % (sim) - failure % (local)|, in percentage points;
* the p99 ratio: p99 (sim) / p99 (local).

Targets: ρ >= 0.9, median failure-rate error <= 5 points, median p99 ratio in 0.7–1.3.

The command is ``experiments/fidelity.py``; this module holds what it measures and how.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from envs.actions import classic_initial_config
from envs.backends.base import Backend, BackendError, LoadSpec
from envs.backends.report import LoadReport
from envs.backends.sim import SimMesh, profile
from envs.istio import DestinationRule, rules_for
from envs.reward import evaluation_score
from rl.evaluation.benchmarks_md import append_to_section

#: Upper bounds of the notebook's draw, cycled over the configurations (tight → loose).
UPPERS = (4, 6, 8, 11, 16, 22, 32, 45, 64, 128, 256, 1000)
#: Endpoints compared one by one (the detail pages are left out, see the module docstring).
COMPARED = ("GET /catalogue", "GET /", "GET /login", "GET /category.html", "DELETE /cart",
            "POST /cart", "GET /basket.html", "POST /orders")
#: Independent simulator draws of ``--repeats`` runs behind the noise ceiling.
CEILING_DRAWS = 5
#: Run seeds: ``seed * 1e6 + load * 1e4 + config * 100 + k``; k < MAX_SEEDS_PER_SIDE are the
#: simulator's (the first ``--repeats`` also the local runs'), the ceiling's draws follow.
MAX_SEEDS_PER_SIDE = 50
RHO_TARGET = 0.9
FAILURE_ERROR_TARGET_PTS = 5.0
P99_RATIO_RANGE = (0.7, 1.3)


@dataclass(frozen=True)
class Pair:
    """One configuration under one load, one repeat: the local run and the simulator's run
    with the same seed."""

    config: int
    users: int
    requests: int
    repeat: int
    run_seed: int
    sim_score: float
    local_score: float
    sim_failure_pct: float
    local_failure_pct: float
    failure_errors_pts: dict[str, float]
    p99_ratios: dict[str, float]
    local_healthy: bool
    local_frontend_crashes: int
    sim_frontend_crashes: int


@dataclass(frozen=True)
class ConfigScores:
    """One configuration under one load: every score of it (``evaluation_score``)."""

    config: int
    upper: int | None
    users: int
    requests: int
    local: list[float]
    sim: list[float]
    sim_cluster: list[float]
    sim_ceiling_draws: list[list[float]]
    local_failure_pct: list[float]
    sim_failure_pct: list[float]


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


def compare(config: int, load: LoadSpec, repeat: int, seed: int, sim: LoadReport,
            local: LoadReport, local_healthy: bool) -> Pair:
    """The per-endpoint errors and the scores of one pair of reports."""
    errors: dict[str, float] = {}
    ratios: dict[str, float] = {}
    for name in COMPARED:
        s, r = sim.endpoints[name], local.endpoints[name]
        if s.num_requests == 0 or r.num_requests == 0:
            continue
        errors[name] = abs(s.failure_pct - r.failure_pct)
        if s.p99_ms is not None and r.p99_ms:
            ratios[name] = s.p99_ms / r.p99_ms
    return Pair(config=config, users=load.users, requests=load.requests, repeat=repeat,
                run_seed=seed, sim_score=evaluation_score(sim),
                local_score=evaluation_score(local), sim_failure_pct=sim.failure_pct,
                local_failure_pct=local.failure_pct, failure_errors_pts=errors,
                p99_ratios=ratios, local_healthy=local_healthy,
                local_frontend_crashes=int(local.extra.get("frontend_crashes", 0)),
                sim_frontend_crashes=int(sim.extra.get("frontend_crashes", 0)))


def _rho(a: Sequence[float], b: Sequence[float]) -> float:
    return float(spearmanr(a, b)[0])


def summarise(scores: list[ConfigScores], pairs: list[Pair]) -> dict[str, float]:
    """One load's figures: ρ (simulator on the platform under test and on the cluster one,
    against the local mesh), the noise ceiling, the local repeats' spread, median failure-rate
    error and median p99 ratio."""
    local = [statistics.fmean(c.local) for c in scores]
    ceilings = [_rho([statistics.fmean(c.sim) for c in scores],
                     [statistics.fmean(c.sim_ceiling_draws[d]) for c in scores])
                for d in range(len(scores[0].sim_ceiling_draws))]
    errors = [e for p in pairs for e in p.failure_errors_pts.values()]
    ratios = [r for p in pairs for r in p.p99_ratios.values()]
    return {"configs": len(scores), "repeats": len(scores[0].local),
            "rho": _rho([statistics.fmean(c.sim) for c in scores], local),
            "rho_cluster": _rho([statistics.fmean(c.sim_cluster) for c in scores], local),
            "ceiling_mean": statistics.fmean(ceilings), "ceiling_min": min(ceilings),
            "ceiling_max": max(ceilings),
            "local_spread_median": statistics.median(max(c.local) - min(c.local)
                                                     for c in scores),
            "median_failure_error_pts": statistics.median(errors),
            "median_p99_ratio": statistics.median(ratios)}


def meets_targets(s: dict[str, float]) -> bool:
    """Do one load's figures meet every target?"""
    return (s["rho"] >= RHO_TARGET and s["median_failure_error_pts"] <= FAILURE_ERROR_TARGET_PTS
            and P99_RATIO_RANGE[0] <= s["median_p99_ratio"] <= P99_RATIO_RANGE[1])


def _of_load(items: list, load: LoadSpec) -> list:  # type: ignore[type-arg]
    return [x for x in items if x.users == load.users and x.requests == load.requests]


def markdown(scores: list[ConfigScores], pairs: list[Pair], loads: Sequence[LoadSpec],
             repeats: int, sim_seeds: int, command: str, platform: profile.Platform,
             elapsed_s: float) -> str:
    """The run's section: a summary per load and the per-configuration scores."""
    lines = [f"### Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
             f"(`{command}`, {elapsed_s / 60:.1f} min)", "",
             f"Simulator on the `{platform.name}` platform (sidecar pass median "
             f"{platform.sidecar_pass_median_ms:.3f} ms, σ {platform.sidecar_pass_sigma:.2f}; "
             f"connect median {platform.connect_median_ms:.2f} ms, p99 "
             f"{platform.connect_quantile_ms(0.99):.2f} ms); score = mean of "
             f"{sim_seeds} simulator seeds against the mean of {repeats} local "
             f"runs per configuration.", "",
             "| load (users / requests) | configs × repeats | Spearman ρ of scores (≥ 0.9) | "
             "noise ceiling: ρ sim vs sim, mean [min–max] | ρ with the cluster platform | "
             "local repeats' spread, median (score points) | "
             "median failure-rate error, pts (≤ 5) | median p99 ratio sim/local (0.7–1.3) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for load in loads:
        s = summarise(_of_load(scores, load), _of_load(pairs, load))
        lines.append(f"| {load.users} / {load.requests} | {s['configs']} × {s['repeats']} | "
                     f"{s['rho']:.2f} | {s['ceiling_mean']:.2f} [{s['ceiling_min']:.2f}–"
                     f"{s['ceiling_max']:.2f}] | {s['rho_cluster']:.2f} | "
                     f"{s['local_spread_median']:.0f} | {s['median_failure_error_pts']:.1f} | "
                     f"{s['median_p99_ratio']:.2f} |")
    lines += ["", "Per configuration (score = `evaluation_score`, higher is better: mean, and "
              "[min–max] of the local repeats; upper = bound of the notebook's draw, – = Istio's "
              "defaults; fail % = mean over the runs):", "",
              "| load | config | upper | sim score | local score [min–max] | "
              "sim score, cluster platform | sim fail % | local fail % | "
              "worst endpoint error, pts |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for c in scores:
        mine = [p for p in _of_load(pairs, LoadSpec(users=c.users, requests=c.requests))
                if p.config == c.config]
        worst = max(((n, e) for p in mine for n, e in p.failure_errors_pts.items()),
                    key=lambda kv: kv[1], default=("-", 0.0))
        lines.append(
            f"| {c.users}/{c.requests} | {c.config} | {c.upper or '–'} | "
            f"{statistics.fmean(c.sim):.0f} | {statistics.fmean(c.local):.0f} "
            f"[{min(c.local):.0f}–{max(c.local):.0f}] | {statistics.fmean(c.sim_cluster):.0f} | "
            f"{statistics.fmean(c.sim_failure_pct):.1f} | "
            f"{statistics.fmean(c.local_failure_pct):.1f} | {worst[0]} {worst[1]:.1f} |")
    return "\n".join(lines) + "\n"


#: The BENCHMARKS.md section a fidelity run is appended to, and its intro when created.
SECTION = "## Fidelity"
SECTION_INTRO = ("The simulator against the real-Envoy local mesh (`experiments/fidelity.py`): the "
                 "same configurations and loads through both, same service profile.")


def append_section(path: Path, section: str) -> None:
    """Append ``section`` under ``## Fidelity`` of ``path`` (created at the end if missing)."""
    append_to_section(path, SECTION, SECTION_INTRO, section)


def parse_load(text: str) -> LoadSpec:
    """``"10:300"`` → 10 users, 300 requests."""
    users, _, requests = text.partition(":")
    try:
        return LoadSpec(users=int(users), requests=int(requests))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"load must be USERS:REQUESTS, got {text!r}") from exc


@dataclass
class FidelityRun:
    """Everything one comparison measured: per-configuration scores, per-run pairs, the local
    runs that could not be measured (their configurations are left out, never made up)."""

    scores: list[ConfigScores]
    pairs: list[Pair]
    failures: list[str]


def run_comparison(local: Backend, configs: list[tuple[int | None, list[DestinationRule]]],
                   loads: Sequence[LoadSpec], repeats: int, sim_seeds: int, seed: int,
                   platform: profile.Platform) -> FidelityRun:
    """Run every configuration under every load ``repeats`` times on ``local`` and
    ``sim_seeds`` times in the simulator on ``platform`` (plus the cluster platform and the
    noise-ceiling draws); prints one line per local run. ``local`` is left open."""
    sim, sim_cluster = SimMesh(platform=platform), SimMesh(platform=profile.CLUSTER)
    scores: list[ConfigScores] = []
    pairs: list[Pair] = []
    failures: list[str] = []
    try:
        for li, load in enumerate(loads):
            sim_reports: dict[int, list[LoadReport]] = {}
            local_reports: dict[int, list[LoadReport]] = {ci: [] for ci in range(len(configs))}
            # repeats outermost: a drift of the shared machine spreads over every configuration
            for k in range(repeats):
                for ci, (upper, rules) in enumerate(configs):
                    local.apply(rules)
                    healthy = local.healthy()
                    run = run_seed(seed, li, ci, k)
                    try:
                        report = local.run_load(load, run)
                    except BackendError as exc:  # reported, never replaced by a made-up figure
                        failures.append(f"load {load.users}/{load.requests} config {ci} "
                                        f"repeat {k}: {exc}")
                        print(failures[-1], flush=True)
                        continue
                    local_reports[ci].append(report)
                    if ci not in sim_reports:
                        sim.apply(rules)
                        sim_reports[ci] = [sim.run_load(load, run_seed(seed, li, ci, j))
                                           for j in range(sim_seeds)]
                    pair = compare(ci, load, k, run, sim_reports[ci][k], report, healthy)
                    pairs.append(pair)
                    print(f"load {load.users}/{load.requests} repeat {k} config {ci:2d} "
                          f"(upper {upper}): score sim {pair.sim_score:7.0f} local "
                          f"{pair.local_score:7.0f}  fail% sim {pair.sim_failure_pct:5.1f} "
                          f"local {pair.local_failure_pct:5.1f}", flush=True)
            for ci, (upper, rules) in enumerate(configs):
                if len(local_reports[ci]) < repeats:
                    continue  # a local run failed: the configuration is left out (listed)
                sim.apply(rules)
                sim_cluster.apply(rules)
                seeds = [run_seed(seed, li, ci, j) for j in range(sim_seeds)]
                draws = [[evaluation_score(sim.run_load(load, run_seed(
                    seed, li, ci, MAX_SEEDS_PER_SIDE + d * repeats + j)))
                    for j in range(repeats)] for d in range(CEILING_DRAWS)]
                scores.append(ConfigScores(
                    config=ci, upper=upper, users=load.users, requests=load.requests,
                    local=[evaluation_score(r) for r in local_reports[ci]],
                    sim=[evaluation_score(r) for r in sim_reports[ci]],
                    sim_cluster=[evaluation_score(sim_cluster.run_load(load, s))
                                 for s in seeds],
                    sim_ceiling_draws=draws,
                    local_failure_pct=[r.failure_pct for r in local_reports[ci]],
                    sim_failure_pct=[r.failure_pct for r in sim_reports[ci]]))
    finally:
        sim.close()
    return FidelityRun(scores, pairs, failures)


def all_targets_met(run: FidelityRun, loads: Sequence[LoadSpec]) -> bool:
    """Does every load's summary meet every target?"""
    return all(meets_targets(summarise(_of_load(run.scores, ld), _of_load(run.pairs, ld)))
               for ld in loads)
