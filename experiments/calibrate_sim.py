"""Calibrate the simulator against the notebook's measured Locust table.

The original notebook ran the reference load test once on the original system (SockShop under
Istio on GKE, no DestinationRules): ``generate_load(50, 1000)`` — 50 users, 1 000 requests.
This script runs the same load through ``SimMesh`` with Istio's defaults on the simulator's
default platform (``profile.CLUSTER``: a Kubernetes cluster's per-hop costs, the notebook's setting;
the ``loopback`` platform models the ``local`` backend instead and is not calibrated to this
table), prints the simulator's table beside the notebook's and checks the calibration targets:

* total req/s within 20 % of the notebook's;
* every endpoint's average latency within a factor 1.5 of the notebook's;
* the failure percentages of POST /orders (8.18 %) and POST /cart (4.63 %) within 3 points.

One run of 1 000 requests holds ~110 orders, so a failure percentage has a sampling standard
deviation of ~2.6 points; the script therefore compares the notebook's single run with the
simulator's mean over ``--seeds`` runs (default 10) and also prints the spread.

Usage: ``python experiments/calibrate_sim.py [--seeds N] [--users 50] [--requests 1000]``.
Exit status 0 when every target passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from envs.backends.base import LoadSpec
from envs.backends.sim import SimMesh, profile


@dataclass(frozen=True)
class NotebookRow:
    """One row of the notebook's Locust table: requests, failures, avg/min/max/median ms, req/s."""

    num_requests: int
    num_failures: int
    avg_ms: float
    min_ms: float
    max_ms: float
    median_ms: float
    rps: float


#: The original notebook's table (its section "2. The Load Generator", example output: 50 users,
#: 1 000 requests on GKE), copied verbatim; the notebook is not published, this is its record.
NOTEBOOK_TABLE: dict[str, NotebookRow] = {
    "GET /": NotebookRow(110, 0, 232, 38, 441, 220, 11.86),
    "GET /basket.html": NotebookRow(113, 0, 248, 119, 425, 240, 13.00),
    "DELETE /cart": NotebookRow(107, 0, 400, 223, 584, 390, 12.00),
    "POST /cart": NotebookRow(103, 5, 648, 312, 909, 630, 11.57),
    "GET /catalogue": NotebookRow(113, 0, 417, 202, 607, 420, 12.00),
    "GET /category.html": NotebookRow(111, 0, 230, 79, 443, 220, 12.29),
    "GET /detail.html?id=03fef6ac-1896-4ce8-bd69-b798f85c6e0b": NotebookRow(12, 0, 215, 116, 300,
                                                                        200, 1.29),
    "GET /detail.html?id=3395a43e-2d88-40de-b95f-e00e1502085b": NotebookRow(10, 0, 205, 111, 313,
                                                                        200, 1.29),
    "GET /detail.html?id=510a0d7e-8e83-4193-b483-e27e09ddc34d": NotebookRow(17, 0, 235, 146, 396,
                                                                        220, 1.57),
    "GET /detail.html?id=808a2de1-1aaa-4c25-a9b9-6612e8f29a38": NotebookRow(15, 0, 206, 120, 303,
                                                                        210, 1.71),
    "GET /detail.html?id=819e1fbf-8b7e-4f6d-811f-693534916a8b": NotebookRow(9, 0, 215, 126, 331,
                                                                        200, 1.14),
    "GET /detail.html?id=837ab141-399e-4c1f-9abc-bace40296bac": NotebookRow(11, 0, 217, 114, 351,
                                                                        180, 1.00),
    "GET /detail.html?id=a0a4f044-b040-410d-8ead-4de0446aec7e": NotebookRow(10, 0, 223, 174, 335,
                                                                        200, 1.43),
    "GET /detail.html?id=d3588630-ad8e-49df-bbd7-3167f7efb246": NotebookRow(11, 0, 227, 144, 407,
                                                                        200, 0.71),
    "GET /detail.html?id=zzz4f044-b040-410d-8ead-4de0446aec7e": NotebookRow(17, 0, 211, 115, 365,
                                                                        210, 1.86),
    "GET /login": NotebookRow(116, 0, 654, 450, 898, 620, 12.14),
    "POST /orders": NotebookRow(101, 9, 829, 572, 1153, 820, 10.71),
}
#: The notebook's failure percentages as printed (Locust 0.x: failures / (successes + failures)).
NOTEBOOK_FAILURE_PCT = {"POST /cart": 4.63, "POST /orders": 8.18}

RPS_TOLERANCE = 0.20
LATENCY_FACTOR = 1.5
FAILURE_POINTS = 3.0


def main(argv: list[str] | None = None) -> int:
    """Run the calibration; returns 0 when every target passes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="simulator runs to average")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args(argv)

    mesh = SimMesh(platform=profile.CLUSTER)
    load = LoadSpec(users=args.users, requests=args.requests)
    reports = [mesh.run_load(load, seed) for seed in range(args.seeds)]

    def mean_of(name: str, attr: str) -> float:
        values = [getattr(r.endpoints[name], attr) for r in reports
                  if r.endpoints[name].num_requests]
        return float(np.mean(values)) if values else float("nan")

    checks: list[tuple[str, bool]] = []
    print(f"simulator: {args.users} users, {args.requests} requests, mean of {args.seeds} "
          "seeds (the notebook's table in brackets)\n")
    head = (f"{'Name':<58} {'# reqs':>12} {'fail %':>14} {'avg ms':>14} {'median':>12} "
            f"{'req/s':>14}  avg ratio")
    print(head)
    print("-" * len(head))
    for name, notebook_row in NOTEBOOK_TABLE.items():
        avg = mean_of(name, "avg_ms")
        ratio = avg / notebook_row.avg_ms
        ok = 1 / LATENCY_FACTOR <= ratio <= LATENCY_FACTOR
        checks.append((f"avg latency of {name} within x{LATENCY_FACTOR} "
                       f"({avg:.0f} vs {notebook_row.avg_ms:.0f} ms)", ok))
        # Locust 0.x counts successes in "# reqs" and prints failures / (reqs + failures)
        notebook_fail = 100.0 * notebook_row.num_failures / (notebook_row.num_requests
                                                     + notebook_row.num_failures)
        print(f"{name:<58} {mean_of(name, 'num_requests'):>5.0f} [{notebook_row.num_requests:>4}] "
              f"{mean_of(name, 'failure_pct'):>5.2f} [{notebook_fail:>5.2f}] "
              f"{avg:>5.0f} [{notebook_row.avg_ms:>5.0f}] "
              f"{mean_of(name, 'median_ms'):>4.0f} [{notebook_row.median_ms:>4.0f}] "
              f"{mean_of(name, 'rps'):>5.2f} [{notebook_row.rps:>5.2f}]  {ratio:5.2f}")

    notebook_rps = sum(r.rps for r in NOTEBOOK_TABLE.values())
    sim_rps = float(np.mean([r.total_rps for r in reports]))
    checks.append((f"total req/s within {RPS_TOLERANCE:.0%} ({sim_rps:.1f} vs {notebook_rps:.1f})",
                   abs(sim_rps - notebook_rps) <= RPS_TOLERANCE * notebook_rps))
    for name, notebook_pct in NOTEBOOK_FAILURE_PCT.items():
        pcts = [r.endpoints[name].failure_pct for r in reports]
        sim_pct = float(np.mean(pcts))
        checks.append((f"{name} failures within {FAILURE_POINTS:.0f} points ({sim_pct:.2f} % vs "
                       f"{notebook_pct:.2f} %; per seed {min(pcts):.1f}..{max(pcts):.1f} %)",
                       abs(sim_pct - notebook_pct) <= FAILURE_POINTS))
    extra = {k: float(np.mean([r.extra[k] for r in reports]))
             for k in ("cart_race_failures", "payment_declines", "order_wait_timeouts",
                       "task_errors")}
    print(f"\nmean causes per run: {extra}")
    print("\ntargets:")
    for text, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}")
    failed = sum(not ok for _, ok in checks)
    print(f"\n{len(checks) - failed} of {len(checks)} targets pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
