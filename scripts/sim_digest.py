"""Fingerprint the simulator's reports on a fixed set of (configuration, load, seed) cases.

What it is for: proving that a change which must not alter the simulator's behaviour (a
refactor, a move, a speed-up) leaves every report byte-identical. Each case's report is
serialised with ``LoadReport.to_json()`` and hashed (SHA-256); the file written by ``--write``
holds one digest per case, ``--check`` recomputes them and lists every case that differs.

The cases (default 240) cross random ``connectionPool`` settings of every field the simulator
reads (drawn from this script's own seeded generator, so the cases do not depend on the action
catalogues), closed and open loads at several sizes, both platforms, the two fault kinds and
several seeds.

Usage::

    python scripts/sim_digest.py --write runs/sim_digest_before.json   # before the change
    python scripts/sim_digest.py --check runs/sim_digest_before.json   # after: exit 1 on a diff
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from envs.backends.base import LatencySpike, LoadSpec, ServiceDown
from envs.backends.sim import SimMesh
from envs.istio import ConnectionPool, HttpSettings, TcpKeepalive, TcpSettings, rules_for
from envs.sockshop import SERVICE_NAMES

#: (users, requests) of the closed loads, and (arrival rate rps, requests) of the open ones.
CLOSED_LOADS = ((1, 50), (5, 300), (15, 800), (40, 1600))
OPEN_LOADS = ((60.0, 600), (150.0, 1200))


def random_pool(rng: np.random.Generator) -> ConnectionPool | None:
    """A random connection pool touching every field the simulator reads (None: no rule)."""
    if rng.random() < 0.2:
        return None

    def maybe(values: tuple[Any, ...]) -> Any:
        return None if rng.random() < 0.4 else values[int(rng.integers(len(values)))]

    keepalive = None
    if rng.random() < 0.3:
        keepalive = TcpKeepalive(probes=maybe((1, 3, 9)), time_ms=maybe((1000, 7_200_000)),
                                 interval_ms=maybe((1000, 75_000)))
    tcp = TcpSettings(max_connections=maybe((1, 2, 4, 16, 100, 1024)),
                      connect_timeout_ms=maybe((1, 2, 5, 50, 1000, 10_000)),
                      tcp_keepalive=keepalive)
    http = HttpSettings(http1_max_pending_requests=maybe((1, 2, 8, 64, 1024)),
                        http2_max_requests=maybe((1, 4, 32, 1024)),
                        max_requests_per_connection=maybe((1, 2, 10, 0)),
                        max_retries=maybe((0, 1, 2, 5)),
                        idle_timeout_ms=maybe((1, 100, 1000, 3_600_000)))
    return ConnectionPool(tcp=tcp, http=http)


def cases(n: int, seed: int = 20261203) -> list[dict[str, Any]]:
    """``n`` reproducible cases: pools per service, a load, a platform, a run seed."""
    rng = np.random.default_rng(seed)
    loads = ([("closed", u, r) for u, r in CLOSED_LOADS]
             + [("open", rate, r) for rate, r in OPEN_LOADS])
    out = []
    for i in range(n):
        mode, size, requests = loads[i % len(loads)]
        faults: list[Any] = []
        kind = (i // len(loads)) % 3
        victim = SERVICE_NAMES[int(rng.integers(len(SERVICE_NAMES)))]
        if kind == 1:
            faults.append(ServiceDown(victim, 0.5, 3.0))
        elif kind == 2:
            faults.append(LatencySpike(victim, 0.0, 5.0, float(rng.choice((2.0, 5.0)))))
        out.append({
            "pools": {s: random_pool(rng) for s in SERVICE_NAMES},
            "mode": mode, "size": size, "requests": requests, "faults": tuple(faults),
            "platform": ("cluster", "loopback")[(i // 7) % 2],
            "seed": int(rng.integers(0, 2**31 - 1)),
        })
    return out


def digest(case: dict[str, Any]) -> str:
    """SHA-256 of the JSON report the simulator gives for ``case``."""
    if case["mode"] == "closed":
        load = LoadSpec(users=case["size"], requests=case["requests"], faults=case["faults"])
    else:
        load = LoadSpec(users=0, requests=case["requests"], mode="open",
                        arrival_rate_rps=case["size"], faults=case["faults"])
    mesh = SimMesh(rules_for(case["pools"]), warm=False, platform=case["platform"])
    report = mesh.run_load(load, seed=case["seed"])
    return hashlib.sha256(report.to_json().encode()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    """Write or check the digests; returns 1 when ``--check`` finds a difference."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, metavar="FILE", help="write the digests to FILE")
    group.add_argument("--check", type=Path, metavar="FILE", help="compare with FILE")
    parser.add_argument("--cases", type=int, default=240, help="number of cases (default 240)")
    args = parser.parse_args(argv)
    digests = [digest(c) for c in cases(args.cases)]
    overall = hashlib.sha256("".join(digests).encode()).hexdigest()
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps({"overall": overall, "cases": digests}, indent=1))
        print(f"{len(digests)} cases, overall {overall} -> {args.write}")
        return 0
    try:
        want = json.loads(args.check.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"sim_digest: cannot read {args.check}: {e}", file=sys.stderr)
        return 2
    differ = [i for i, (a, b) in enumerate(zip(digests, want["cases"], strict=False)) if a != b]
    if len(want["cases"]) != len(digests):
        print(f"sim_digest: {args.check} holds {len(want['cases'])} cases, computed "
              f"{len(digests)}", file=sys.stderr)
        return 1
    if differ:
        print(f"{len(differ)} of {len(digests)} reports differ: cases {differ[:20]}")
        return 1
    print(f"{len(digests)} of {len(digests)} reports byte-identical (overall {overall})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
