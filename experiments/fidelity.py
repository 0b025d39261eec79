"""Fidelity of the simulator: the same configurations and loads through ``sim`` and ``local``.

Random DestinationRule configurations (the seed's draw, ``actions.seed_initial_config``, with
its upper bound cycling through :data:`UPPERS` so that the set spans tight to loose; the first
configuration is Istio's defaults) run under each load through the simulator (``SimMesh``) and
the real-Envoy local mesh (``LocalMesh``), which share the service profile
(``envs.backends.sim.profile``) and the call graph (``envs.sockshop``). Per (configuration,
load) the script compares, for the 8 endpoints of the loop other than the detail pages (each
of the 10 detail pages sees too few requests for a stable p99; they are static pages like
``GET /``):

* the failure-rate error: |failure % (sim) - failure % (local)|, in percentage points;
* the p99 ratio: p99 (sim) / p99 (local);

and over the configurations of one load, the Spearman rank correlation ρ of the two backends'
``evaluation_score`` (the fixed-weight score every ranking in meshtune uses). Beside it, the
simulator's ρ against itself with other seeds: how far run-to-run noise alone lets ρ go.

Targets: ρ >= 0.9, median failure-rate error <= 5 points, median p99 ratio in 0.7–1.3.

Usage: ``python experiments/fidelity.py [--configs 21] [--loads 5:150 10:300] [--replica 5]
[--seed 0] [--benchmarks BENCHMARKS.md] [--json FILE]``. Appends a ``## Fidelity`` section (or
a new run under it) to the benchmarks file; exits 0 when every target holds, else 1.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from envs.actions import seed_initial_config
from envs.backends.base import BackendError, LoadSpec
from envs.backends.local import LocalMesh
from envs.backends.report import LoadReport
from envs.backends.sim import SimMesh, profile
from envs.istio import DestinationRule, rules_for
from envs.reward import evaluation_score

#: Upper bounds of the seed's draw, cycled over the configurations (tight → loose).
UPPERS = (10, 30, 100, 300, 1000)
#: Endpoints compared one by one (the detail pages are left out, see the module docstring).
COMPARED = ("GET /catalogue", "GET /", "GET /login", "GET /category.html", "DELETE /cart",
            "POST /cart", "GET /basket.html", "POST /orders")
#: Seed offset of the simulator's second run of each pair (the noise ceiling of ρ).
REPEAT_SEED_OFFSET = 500_000
RHO_TARGET = 0.9
FAILURE_ERROR_TARGET_PTS = 5.0
P99_RATIO_RANGE = (0.7, 1.3)


@dataclass(frozen=True)
class Pair:
    """One configuration under one load, through both backends."""

    config: int
    upper: int | None
    users: int
    requests: int
    sim_score: float
    sim_score_repeat: float
    local_score: float
    sim_failure_pct: float
    local_failure_pct: float
    failure_errors_pts: dict[str, float]
    p99_ratios: dict[str, float]
    local_healthy: bool
    local_connect_ms: dict[str, float | None]


def configurations(n: int, seed: int) -> list[tuple[int | None, list[DestinationRule]]]:
    """``n`` configurations: Istio's defaults, then seeded draws with bounds from UPPERS."""
    out: list[tuple[int | None, list[DestinationRule]]] = [(None, [])]
    for i in range(1, n):
        upper = UPPERS[(i - 1) % len(UPPERS)]
        config = seed_initial_config(np.random.default_rng([seed, i]), upper=upper)
        out.append((upper, rules_for(config)))
    return out


def compare(config: int, upper: int | None, load: LoadSpec, sim: LoadReport,
            sim_repeat: LoadReport, local: LoadReport, local_healthy: bool) -> Pair:
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
    return Pair(config=config, upper=upper, users=load.users, requests=load.requests,
                sim_score=evaluation_score(sim), sim_score_repeat=evaluation_score(sim_repeat),
                local_score=evaluation_score(local),
                sim_failure_pct=sim.failure_pct, local_failure_pct=local.failure_pct,
                failure_errors_pts=errors, p99_ratios=ratios, local_healthy=local_healthy,
                local_connect_ms=dict(local.extra.get("connect_ms", {})))


def summarise(pairs: list[Pair]) -> dict[str, float]:
    """ρ of the scores, median failure-rate error and median p99 ratio of one load's pairs, and
    the noise ceiling: ρ of the simulator against itself with other seeds."""
    rho = float(spearmanr([p.sim_score for p in pairs], [p.local_score for p in pairs])[0])
    ceiling = float(spearmanr([p.sim_score for p in pairs],
                              [p.sim_score_repeat for p in pairs])[0])
    errors = [e for p in pairs for e in p.failure_errors_pts.values()]
    ratios = [r for p in pairs for r in p.p99_ratios.values()]
    return {"rho": rho, "rho_sim_vs_sim": ceiling,
            "median_failure_error_pts": statistics.median(errors),
            "median_p99_ratio": statistics.median(ratios), "configs": len(pairs)}


def markdown(pairs: list[Pair], loads: list[LoadSpec], seed: int, elapsed_s: float) -> str:
    """The ``## Fidelity`` run section: a summary per load and the per-configuration scores."""
    load_args = " ".join(f"{ld.users}:{ld.requests}" for ld in loads)
    lines = [f"### Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
             f"(`python experiments/fidelity.py --configs {len(pairs) // len(loads)} "
             f"--loads {load_args} --seed {seed}`, {elapsed_s / 60:.1f} min)", "",
             "| load (users / requests) | configs | Spearman ρ of scores (≥ 0.9) | "
             "ρ sim vs sim, other seeds (noise ceiling) | "
             "median failure-rate error, pts (≤ 5) | median p99 ratio sim/local (0.7–1.3) |",
             "|---|---:|---:|---:|---:|---:|"]
    for load in loads:
        mine = [p for p in pairs if p.users == load.users and p.requests == load.requests]
        s = summarise(mine)
        lines.append(f"| {load.users} / {load.requests} | {s['configs']} | {s['rho']:.2f} | "
                     f"{s['rho_sim_vs_sim']:.2f} | {s['median_failure_error_pts']:.1f} | "
                     f"{s['median_p99_ratio']:.2f} |")
    connects = [p.local_connect_ms for p in pairs if p.local_connect_ms.get("p50") is not None]
    if connects:
        p50 = statistics.median(c["p50"] for c in connects)
        p99 = statistics.median(c["p99"] for c in connects if c.get("p99") is not None)
        sim_p99 = profile.CONNECT_MEDIAN_MS * math.exp(2.3263 * profile.CONNECT_SIGMA)
        lines += ["", f"Connection set-up (TCP + mTLS) measured by the local mesh's Envoys "
                  f"(`upstream_cx_connect_ms`, median over runs): p50 {p50:.2f} ms, p99 "
                  f"{p99:.2f} ms; the simulator's profile assumes p50 "
                  f"{profile.CONNECT_MEDIAN_MS:.2f} ms, p99 {sim_p99:.2f} ms."]
    lines += ["", "Per configuration (score = `evaluation_score`, higher is better; upper = "
              "bound of the seed's draw, – = Istio's defaults):", "",
              "| load | config | upper | sim score | local score | sim fail % | local fail % | "
              "worst endpoint error, pts | local healthy |",
              "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for p in pairs:
        worst = max(p.failure_errors_pts.items(), key=lambda kv: kv[1], default=("-", 0.0))
        lines.append(f"| {p.users}/{p.requests} | {p.config} | {p.upper or '–'} | "
                     f"{p.sim_score:.0f} | {p.local_score:.0f} | {p.sim_failure_pct:.1f} | "
                     f"{p.local_failure_pct:.1f} | {worst[0]} {worst[1]:.1f} | "
                     f"{'yes' if p.local_healthy else 'no'} |")
    return "\n".join(lines) + "\n"


def append_section(path: Path, section: str) -> None:
    """Append ``section`` under ``## Fidelity`` (created at the end if missing)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if "\n## Fidelity\n" not in "\n" + text:
        text = text.rstrip("\n") + "\n\n## Fidelity\n\n" + (
            "The simulator against the real-Envoy local mesh (`experiments/fidelity.py`): the "
            "same configurations and loads through both, same service profile.\n\n")
        path.write_text(text + section)
        return
    # insert at the end of the Fidelity section (before the next "## " heading, if any)
    head, _, tail = text.partition("\n## Fidelity\n")
    nxt = tail.find("\n## ")
    body, rest = (tail, "") if nxt < 0 else (tail[:nxt + 1], tail[nxt + 1:])
    path.write_text(head + "\n## Fidelity\n" + body.rstrip("\n") + "\n\n" + section
                    + ("\n" + rest if rest else ""))


def parse_load(text: str) -> LoadSpec:
    """``"10:300"`` → 10 users, 300 requests."""
    users, _, requests = text.partition(":")
    return LoadSpec(users=int(users), requests=int(requests))


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; 0 when every target holds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=21,
                        help="configurations: Istio's defaults + N-1 random (default 21)")
    parser.add_argument("--loads", nargs="+", default=["5:150", "10:300"], type=parse_load)
    parser.add_argument("--replica", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--benchmarks", default="BENCHMARKS.md")
    parser.add_argument("--json", default=None, help="also write every pair as JSON here")
    args = parser.parse_args(argv)
    if args.configs < 3:
        parser.error("--configs must be at least 3 for a rank correlation")
    t0 = time.time()
    sim = SimMesh()
    local = LocalMesh(replica=args.replica, seed=args.seed)
    pairs: list[Pair] = []
    failures: list[str] = []
    try:
        for li, load in enumerate(args.loads):
            for ci, (upper, rules) in enumerate(configurations(args.configs, args.seed)):
                run_seed = args.seed * 1000 + li * 100 + ci
                sim.apply(rules)
                local.apply(rules)
                healthy = local.healthy()
                try:
                    local_report = local.run_load(load, run_seed)
                except BackendError as exc:  # reported, never replaced by a made-up figure
                    failures.append(f"load {load.users}/{load.requests} config {ci}: {exc}")
                    print(failures[-1], flush=True)
                    continue
                pair = compare(ci, upper, load, sim.run_load(load, run_seed),
                               sim.run_load(load, run_seed + REPEAT_SEED_OFFSET), local_report,
                               healthy)
                pairs.append(pair)
                print(f"load {load.users}/{load.requests} config {ci:2d} (upper {upper}): "
                      f"score sim {pair.sim_score:8.0f} local {pair.local_score:8.0f}  "
                      f"fail% sim {pair.sim_failure_pct:5.1f} local "
                      f"{pair.local_failure_pct:5.1f}", flush=True)
    finally:
        local.close()
        sim.close()
    elapsed = time.time() - t0
    section = markdown(pairs, args.loads, args.seed, elapsed)
    if failures:
        section += ("\nRuns the local mesh could not measure (left out above):\n\n"
                    + "".join(f"- {f}\n" for f in failures))
    print(section)
    append_section(Path(args.benchmarks), section)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps([asdict(p) for p in pairs], indent=1))
    ok = True
    for load in args.loads:
        s = summarise([p for p in pairs if p.users == load.users
                       and p.requests == load.requests])
        ok &= (s["rho"] >= RHO_TARGET and s["median_failure_error_pts"]
               <= FAILURE_ERROR_TARGET_PTS
               and P99_RATIO_RANGE[0] <= s["median_p99_ratio"] <= P99_RATIO_RANGE[1])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
