"""How far ``maxConnections: 1`` is exceeded when the sidecars run 2 Envoy worker threads.

Envoy keeps one connection pool per worker thread. The circuit breaker's connection count is
shared by the workers, but a worker whose pool to a host holds no connection may always open
one (so that its queued requests are never stuck behind another worker's connections), so a
limit of 1 lets up to one connection per worker through. Istio's sidecars run 2 workers; the
local mesh ran 1 until the ``envoy_workers`` option.

For each worker count (1, then 2) the script starts a local replica with carts limited to
``maxConnections: 1`` (every other knob at Istio's defaults), drives a closed Locust load of
``--users`` users through it, and samples, every ``--sample-ms`` ms from each Envoy's admin
``/stats``, the ``upstream_cx_active`` gauge (open connections) of the callers' outbound carts
clusters (front-end's and orders' sidecars) and of carts' own inbound cluster. It prints, per
worker count and cluster, the peak and the time average of the open connections while the load
ran, with the load's carts overflows (``UO``), good % and carts p99, and appends the table,
with the date and the command, to the ``## Envoy worker threads`` section of BENCHMARKS.md.

Usage: ``python benchmarks/bench_envoy_workers.py [--replica 13] [--users 16]
[--requests 1200] [--no-write]`` (~1.5 min on 2 cores).

``--backend sim [--seeds 20] [--platform loopback]`` runs the same configuration and load on
the simulator (``SimMesh(envoy_workers=1 | 2)``, issue 13) over ``--seeds`` load seeds instead:
the most connections one calling pool and carts' inbound pool held (the simulator's
``extra["peak_connections"]`` / ``["peak_inbound_connections"]``; it has no time-sampled
gauge) and the mean carts p99, good % and throughput, appended to the same section (a few s).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from envs.backends.base import LoadSpec
from envs.backends.local import LocalMesh
from envs.backends.local import envoy_config as ec
from envs.backends.local.ports import HOST
from envs.istio import ConnectionPool, DestinationRule, TcpSettings, cluster_name
from rl.evaluation.benchmarks_md import append_or_report, recorded_command

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Envoy worker threads"
INTRO = ("Measured by `benchmarks/bench_envoy_workers.py`: open connections to carts "
         "(`upstream_cx_active`, sampled from each Envoy's admin) under `maxConnections: 1` "
         "with 1 and 2 Envoy worker threads per sidecar (Istio's sidecars run 2). Newest run "
         "last.")
NAMESPACE = "sock-shop"
#: (sidecar, cluster direction) pairs whose connections to carts are sampled.
SAMPLED = (("front-end", "outbound"), ("orders", "outbound"), ("carts", "inbound"))


@dataclass(frozen=True)
class Row:
    """One worker count and one sampled cluster: open connections during the load."""

    workers: int
    proxy: str
    direction: str
    peak: int
    mean: float
    samples: int


class Sampler(threading.Thread):
    """Polls the ``upstream_cx_active`` gauge of :data:`SAMPLED` every ``period_s`` seconds."""

    def __init__(self, mesh: LocalMesh, period_s: float) -> None:
        super().__init__(daemon=True)
        self.mesh = mesh
        self.period_s = period_s
        self.values: dict[tuple[str, str], list[int]] = {key: [] for key in SAMPLED}
        self._done = threading.Event()
        self.error: BaseException | None = None

    def read(self, proxy: str, direction: str) -> int:
        """The proxy's open connections to carts (its ``direction`` cluster), now."""
        name = cluster_name("carts", NAMESPACE, direction)
        stat = f"cluster.{name}.upstream_cx_active"
        url = (f"http://{HOST}:{ec.admin_port(self.mesh.ports, proxy)}/stats?format=json"
               "&filter=upstream_cx_active")
        with urllib.request.urlopen(url, timeout=2) as resp:
            found = [s["value"] for s in json.loads(resp.read())["stats"] if s["name"] == stat]
        if len(found) != 1:
            raise RuntimeError(f"{proxy}: no single {stat} in its admin /stats")
        return int(found[0])

    def run(self) -> None:
        """Sample until :meth:`stop`."""
        try:
            while not self._done.is_set():
                for proxy, direction in SAMPLED:
                    self.values[(proxy, direction)].append(self.read(proxy, direction))
                self._done.wait(self.period_s)
        except Exception as exc:  # re-raised by stop(): a sampling failure fails the run
            self.error = exc

    def stop(self) -> None:
        """End sampling and wait for the thread; re-raise its error, if any."""
        self._done.set()
        self.join()
        if self.error is not None:
            raise RuntimeError(f"sampling the admin stats failed: {self.error}")


def measure(workers: int, replica: int, load: LoadSpec, seed: int, period_s: float
            ) -> tuple[list[Row], dict[str, float | int | None]]:
    """Start a replica with ``workers`` Envoy workers and carts at ``maxConnections: 1``, run
    ``load`` while sampling; the rows and the load's carts / overall figures."""
    rule = DestinationRule(name="carts", host="carts",
                           connection_pool=ConnectionPool(tcp=TcpSettings(max_connections=1)))
    mesh = LocalMesh(replica=replica, start=True, envoy_workers=workers, rules=[rule])
    try:
        sampler = Sampler(mesh, period_s)
        sampler.start()
        try:
            report = mesh.run_load(load, seed)
        finally:
            sampler.stop()
    finally:
        mesh.close()
    rows = [Row(workers, proxy, direction, max(v), statistics.fmean(v), len(v))
            for (proxy, direction), v in sampler.values.items()]
    carts = report.services["carts"]
    figures = {"uo": carts.uo_count, "carts_p99_ms": carts.p99_ms, "good_pct": report.good_pct,
               "rps": report.num_requests / report.duration_s}
    return rows, figures


def table(results: list[tuple[list[Row], dict[str, float | int | None]]]) -> str:
    """The markdown table of every worker count's rows."""
    lines = ["| Envoy workers | sidecar → carts cluster | peak open connections | mean open "
             "connections | samples | carts UO | carts p99 ms | good % | req/s |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for rows, fig in results:
        for r in rows:
            p99 = fig["carts_p99_ms"]
            lines.append(f"| {r.workers} | {r.proxy} ({r.direction}) | {r.peak} | {r.mean:.2f} | "
                         f"{r.samples} | {fig['uo']} | "
                         f"{'-' if p99 is None else f'{p99:.0f}'} | {fig['good_pct']:.1f} | "
                         f"{fig['rps']:.1f} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class SimRow:
    """One worker count on the simulator, over seeds: connections held and the load's figures
    (means over the seeds; the peaks are the largest over them)."""

    workers: int
    peak_pool: int
    peak_inbound: int
    uo: float
    carts_p99_ms: float
    carts_p99_lo: float
    carts_p99_hi: float
    good_pct: float
    rps: float
    seeds: int


def measure_sim(workers: int, load: LoadSpec, seeds: int, platform: str) -> SimRow:
    """The bench's configuration (carts at ``maxConnections: 1``) and ``load`` on the
    simulator with ``workers`` Envoy workers per sidecar, seeds 0..``seeds``-1."""
    from envs.backends.sim import SimMesh

    rule = DestinationRule(name="carts", host="carts",
                           connection_pool=ConnectionPool(tcp=TcpSettings(max_connections=1)))
    mesh = SimMesh([rule], envoy_workers=workers, platform=platform)
    reports = [mesh.run_load(load, seed) for seed in range(seeds)]
    p99 = [r.services["carts"].p99_ms for r in reports]
    return SimRow(workers, max(r.extra["peak_connections"]["carts"] for r in reports),
                  max(r.extra["peak_inbound_connections"]["carts"] for r in reports),
                  statistics.fmean(r.services["carts"].uo_count for r in reports),
                  statistics.fmean(p99), min(p99), max(p99),
                  statistics.fmean(r.good_pct for r in reports),
                  statistics.fmean(r.num_requests / r.duration_s for r in reports), seeds)


def sim_table(rows: list[SimRow]) -> str:
    """The markdown table of the simulator's rows."""
    lines = ["| Envoy workers | peak connections, one calling pool → carts | peak connections, "
             "carts inbound | carts UO | carts p99 ms, mean [min, max] | good % | req/s | "
             "seeds |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.workers} | {r.peak_pool} | {r.peak_inbound} | {r.uo:.1f} | "
                     f"{r.carts_p99_ms:.0f} [{r.carts_p99_lo:.0f}, {r.carts_p99_hi:.0f}] | "
                     f"{r.good_pct:.1f} | {r.rps:.1f} | {r.seeds} |")
    return "\n".join(lines)



def main(argv: list[str] | None = None) -> int:
    """Measure 1 and 2 workers, print the table, append it to BENCHMARKS.md (with the command
    of ``argv``, the command line's flags when None)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replica", type=int, default=13)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-ms", type=float, default=50.0)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--backend", choices=("local", "sim"), default="local")
    parser.add_argument("--seeds", type=int, default=20, help="load seeds (sim only)")
    parser.add_argument("--platform", default="loopback",
                        help="the simulator's platform (sim only; default: the local mesh's)")
    args = parser.parse_args(argv)
    load = LoadSpec(users=args.users, requests=args.requests, hatch_rate_per_s=20.0)
    results = []
    t0 = time.monotonic()
    if args.backend == "sim":
        if args.seeds < 1:
            parser.error("--seeds must be at least 1")
        text = sim_table([measure_sim(w, load, args.seeds, args.platform) for w in (1, 2)])
        print(text)
        if not args.no_write:
            command = recorded_command("benchmarks/bench_envoy_workers.py", argv)
            entry = (f"### {dt.date.today().isoformat()} — the simulator\n\n"
                     f"`{command.strip()}` — the same configuration (carts `maxConnections: "
                     f"1`) and closed load ({args.users} users, {args.requests} requests) on "
                     f"the simulator, `{args.platform}` platform, `SimMesh(envoy_workers=1 | "
                     f"2)`, load seeds 0–{args.seeds - 1}; peaks are the largest over the "
                     f"seeds, the rest means; {time.monotonic() - t0:.0f} s.\n\n{text}\n")
            if not append_or_report(BENCHMARKS_MD, SECTION, INTRO, entry, "bench_envoy_workers"):
                return 2
        return 0
    for workers in (1, 2):
        results.append(measure(workers, args.replica, load, args.seed, args.sample_ms / 1000))
    text = table(results)
    print(text)
    if not args.no_write:
        command = recorded_command("benchmarks/bench_envoy_workers.py", argv)
        entry = (f"### {dt.date.today().isoformat()}\n\n`{command.strip()}` — closed load, "
                 f"{args.users} users, {args.requests} requests, seed {args.seed}; gauges "
                 f"sampled every {args.sample_ms:g} ms over the whole load (hatch, pause and "
                 f"counted window); {time.monotonic() - t0:.0f} s.\n\n{text}\n")
        if not append_or_report(BENCHMARKS_MD, SECTION, INTRO, entry, "bench_envoy_workers"):
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
