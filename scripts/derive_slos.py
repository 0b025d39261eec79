"""Print the per-route p99 of Istio's defaults at the nominal open load on the simulator: the
measurement :data:`envs.sockshop.slo.ROUTE_SLO_MS` was set from (about 1.5 × these, rounded up).

    python scripts/derive_slos.py [--seeds 20] [--requests 1600]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from envs.backends.base import LoadSpec
from envs.backends.sim import SimMesh
from envs.sockshop.slo import NOMINAL_RATE_RPS, ROUTE_SLO_MS, route_of


def main() -> None:
    """Run the nominal load ``--seeds`` times and print each route's median p99 beside its SLO."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="load seeds (1000, 1001, ...)")
    parser.add_argument("--requests", type=int, default=1600, help="requests per run")
    args = parser.parse_args()
    mesh = SimMesh()
    p99: dict[str, list[float]] = defaultdict(list)
    for seed in range(args.seeds):
        load = LoadSpec(users=0, requests=args.requests, mode="open",
                        arrival_rate_rps=NOMINAL_RATE_RPS)
        report = mesh.run_load(load, seed=1000 + seed)
        for name, e in report.endpoints.items():
            if e.num_requests and e.p99_ms is not None:
                p99[route_of(name)].append(e.p99_ms)
    print("| route | p99 at nominal load, ms (median over seeds) | SLO, ms |")
    print("|---|---|---|")
    for route, slo in ROUTE_SLO_MS.items():
        print(f"| {route} | {np.median(p99[route]):.0f} | {slo:.0f} |")


if __name__ == "__main__":
    main()
