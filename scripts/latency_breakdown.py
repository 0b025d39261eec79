"""Where the local mesh's latency differs from the simulator's: Istio's defaults at a few
open-loop rates, endpoint by endpoint and destination by destination, on both backends.

The fidelity run (``experiments/fidelity.py``) says *that* the two backends score a load
differently; this says *where*. For each rate (requests/s, the reference session's Poisson
arrivals, ``step_s`` seconds of offered load, as the env runs a step) it drives Istio's
defaults ``--local-runs`` times through a fresh local replica (real Envoy, seeds 0, 1, ...)
and ``--sim-seeds`` times through the simulator on the ``loopback`` platform with the
replica's Envoy workers (seeds 0, 1, ...), then prints, median over runs:

* per endpoint (Locust's view on local, the simulator's clients on sim): mean and p99 latency,
  ms — the front-end's own pages (``GET /``, ``/category.html``, ``/basket.html``: no callee)
  apart from the endpoints that wait on callees;
* per destination (the calling sidecars' view: the gateway's for the front-end): mean and p99
  attempt duration, ms, and the demand (largest time-averaged requests in flight in one pool);
* how busy the machine was during the local runs: cores in use (of ``os.cpu_count()``), from
  ``/proc/stat`` over each run's window.

A destination whose mean matches while its callers' does not puts the difference in the
callers; the front-end's own pages isolate the front-end. Appends the tables, with the date and
the command, to the ``## Fidelity`` section of BENCHMARKS.md (``--no-write``: print only).

    python scripts/latency_breakdown.py --rates 60 90 120 --local-runs 4 --sim-seeds 16

(~3 min on 2 cores.) Bad flags are one line on stderr, exit 2; nothing starts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from envs.backends.report import LoadReport
from rl.evaluation.benchmarks_md import append_or_report, recorded_command

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Fidelity"
INTRO = "The simulator against the local mesh (real Envoy)."
#: The front-end's own pages: answered by the front-end without calling another service.
OWN_PAGES = ("GET /", "GET /category.html", "GET /basket.html")
#: The endpoints that wait on callees (the product pages are left out: ten ids, few requests).
CALLEE_ENDPOINTS = ("GET /catalogue", "GET /login", "POST /cart", "DELETE /cart",
                    "POST /orders")
#: The HTTP destinations (the TCP ones have no request durations).
DESTINATIONS = ("front-end", "catalogue", "carts", "user", "orders", "payment", "shipping")


@dataclass(frozen=True)
class Args:
    """The command line (flags of the same names)."""

    rates: tuple[float, ...] = (60.0, 90.0, 120.0)
    step_s: float = 10.0
    local_runs: int = 4
    sim_seeds: int = 16
    replica: int = 6
    no_write: bool = False


@dataclass
class RateRuns:
    """Every report of one rate, per backend, and the machine's busy cores per local run."""

    rate_rps: float
    local: list[LoadReport] = field(default_factory=list)
    sim: list[LoadReport] = field(default_factory=list)
    busy_cores: list[float] = field(default_factory=list)


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """The flags, checked: positive rates and step, at least one run on each backend."""
    p = argparse.ArgumentParser(prog="latency_breakdown", description=__doc__.splitlines()[0])
    p.add_argument("--rates", type=float, nargs="+", default=list(Args.rates),
                   help="open-loop rates, requests/s (default 60 90 120)")
    p.add_argument("--step-s", type=float, default=Args.step_s,
                   help="seconds of offered load per run (default 10, the env's step)")
    p.add_argument("--local-runs", type=int, default=Args.local_runs)
    p.add_argument("--sim-seeds", type=int, default=Args.sim_seeds)
    p.add_argument("--replica", type=int, default=Args.replica,
                   help="the local replica's port block (default 6)")
    p.add_argument("--no-write", action="store_true", help="print only")
    ns = p.parse_args(argv)
    if not all(r > 0 for r in ns.rates) or not ns.step_s > 0:
        p.error("--rates and --step-s must be positive")
    if ns.local_runs < 1 or ns.sim_seeds < 1:
        p.error("--local-runs and --sim-seeds must be >= 1")
    return Args(rates=tuple(ns.rates), step_s=ns.step_s, local_runs=ns.local_runs,
                sim_seeds=ns.sim_seeds, replica=ns.replica, no_write=ns.no_write)


def cpu_seconds() -> tuple[float, float]:
    """``(all, idle)`` CPU seconds of the machine so far, summed over its cores
    (``/proc/stat``; idle includes iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    return sum(fields) / hz, (fields[3] + fields[4]) / hz


def busy_cores(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Cores in use on average between two :func:`cpu_seconds` readings."""
    total, idle = after[0] - before[0], after[1] - before[1]
    return (total - idle) / total * (os.cpu_count() or 1) if total > 0 else 0.0


def measure(args: Args, log: Callable[[str], None] = print) -> list[RateRuns]:
    """Istio's defaults at every rate: the local runs on one fresh replica (closed at the end,
    whatever happens), then the simulator's."""
    from envs.backends.local import LocalMesh
    from envs.backends.sim import SimMesh
    from rl.evaluation.fidelity import open_load

    results = [RateRuns(rate) for rate in args.rates]
    local = LocalMesh(replica=args.replica, start=True)
    workers = local.envoy_workers
    try:
        local.apply([])
        for runs in results:
            spec = open_load(runs.rate_rps, args.step_s).spec
            for seed in range(args.local_runs):
                before = cpu_seconds()
                runs.local.append(local.run_load(spec, seed=seed))
                runs.busy_cores.append(busy_cores(before, cpu_seconds()))
                log(f"[local] {runs.rate_rps:g} req/s seed {seed}: mean "
                    f"{runs.local[-1].latency_mean_ms:.0f} ms, machine "
                    f"{runs.busy_cores[-1]:.2f} cores busy")
    finally:
        local.close()
    sim = SimMesh(platform="loopback", envoy_workers=workers)
    for runs in results:
        spec = open_load(runs.rate_rps, args.step_s).spec
        runs.sim = [sim.run_load(spec, seed=seed) for seed in range(args.sim_seeds)]
    return results


def _median(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def _cell(local: float | None, sim: float | None, fmt: str = ".0f") -> str:
    if local is None or sim is None:
        return "–"
    ratio = f" (×{local / sim:.2f})" if sim > 0 else ""
    return f"{local:{fmt}} / {sim:{fmt}}{ratio}"


def endpoint_rows(runs: RateRuns) -> list[str]:
    """Markdown rows: per endpoint, mean and p99 latency, local / sim (ms)."""
    rows = []
    for group, names in (("own page", OWN_PAGES), ("waits on callees", CALLEE_ENDPOINTS)):
        for name in names:
            def stat(reports: list[LoadReport], attr: str, name: str = name) -> float | None:
                return _median([getattr(r.endpoints[name], attr) for r in reports
                                if name in r.endpoints])
            rows.append(f"| {name} | {group} | "
                        f"{_cell(stat(runs.local, 'avg_ms'), stat(runs.sim, 'avg_ms'))} | "
                        f"{_cell(stat(runs.local, 'p99_ms'), stat(runs.sim, 'p99_ms'))} |")
    return rows


def destination_rows(runs: RateRuns) -> list[str]:
    """Markdown rows: per destination, the callers' mean and p99 attempt duration (ms) and the
    demand, local / sim."""
    rows = []
    for name in DESTINATIONS:
        def stat(reports: list[LoadReport], attr: str, name: str = name) -> float | None:
            return _median([getattr(r.services[name], attr) for r in reports
                            if name in r.services])
        cells = [_cell(stat(runs.local, attr), stat(runs.sim, attr), fmt)
                 for attr, fmt in (("mean_ms", ".1f"), ("p99_ms", ".0f"),
                                   ("in_flight_per_pool", ".2f"))]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def markdown(results: Sequence[RateRuns]) -> str:
    """One pair of tables per rate (local / sim, medians over runs; × = local over sim)."""
    out = []
    for runs in results:
        busy = runs.busy_cores
        overall = _cell(_median([r.latency_mean_ms for r in runs.local]),
                        _median([r.latency_mean_ms for r in runs.sim]))
        out += [f"**{runs.rate_rps:g} req/s** ({len(runs.local)} local runs, {len(runs.sim)} "
                f"simulator seeds; machine busy during the local runs: "
                f"{statistics.mean(busy):.2f} of {os.cpu_count()} cores on average, at most "
                f"{max(busy):.2f}; overall mean latency local / sim {overall} ms)",
                "",
                "| endpoint | kind | mean ms, local / sim | p99 ms, local / sim |",
                "|---|---|---:|---:|", *endpoint_rows(runs), "",
                "| destination (callers' view) | mean ms, local / sim | p99 ms, local / sim | "
                "in flight per pool, local / sim |",
                "|---|---:|---:|---:|", *destination_rows(runs), ""]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the tables, append them to BENCHMARKS.md."""
    from envs.backends.base import BackendError

    args = parse_args(argv)
    t0 = time.monotonic()
    try:
        results = measure(args)
    except BackendError as exc:
        print(f"latency_breakdown: {exc}", file=sys.stderr)
        return 2
    text = markdown(results)
    print(text)
    if not args.no_write:
        command = recorded_command("scripts/latency_breakdown.py",
                                   sys.argv[1:] if argv is None else argv)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        entry = (f"### {stamp} — where the latency differs: `{command.strip()}` "
                 f"({time.monotonic() - t0:.0f} s; Istio's defaults; simulator on the "
                 f"`loopback` platform)\n\n{text}\n")
        if not append_or_report(BENCHMARKS_MD, SECTION, INTRO, entry, "latency_breakdown"):
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
