"""Fingerprint the simulator's reports on a fixed set of (configuration, load, seed) cases.

What it is for: proving that a change which must not alter the simulator's behaviour (a
refactor, a move, a speed-up) leaves every report byte-identical. Each case's report is
serialised in its *legacy view* (:func:`legacy_view`: the report fields that existed before
issue 12, in the JSON layout ``LoadReport.to_json()`` had then) and hashed (SHA-256); the file
written by ``--write`` holds one digest per case, ``--check`` recomputes them and lists every case
that differs (by mode and fault kind). So a baseline written by the code before issue 12
(``runs/sim_digest_before.json``, commit 182287f) stays comparable with today's reports.

``--dump FILE`` writes the legacy views themselves and ``--diff FILE`` compares the current ones
with such a dump field by field (run the dump with the old code on ``PYTHONPATH``), to say *which*
fields of a differing case changed.

The cases (default 240) cross random ``connectionPool`` settings of every field the simulator
reads (drawn from this script's own seeded generator, so the cases do not depend on the action
catalogues), closed and open loads at several sizes, both platforms, the two fault kinds and
several seeds.

Usage::

    python scripts/sim_digest.py --write runs/sim_digest_before.json   # before the change
    python scripts/sim_digest.py --check runs/sim_digest_before.json   # after: exit 1 on a diff
    PYTHONPATH=<old checkout> python scripts/sim_digest.py --dump /tmp/old.json
    python scripts/sim_digest.py --diff /tmp/old.json                   # which fields differ
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
from envs.backends.report import LoadReport
from envs.backends.sim import SimMesh
from envs.istio import ConnectionPool, HttpSettings, TcpKeepalive, TcpSettings, rules_for
from envs.sockshop import SERVICE_BY_NAME, SERVICE_NAMES, Protocol

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


#: ``LoadReport.to_dict()``'s keys before issue 12, per level, in their order then.
LEGACY_TOP = ("backend", "users", "duration_s", "total_rps", "num_requests", "num_failures",
              "endpoints", "services", "extra")
LEGACY_ENDPOINT = ("name", "num_requests", "num_failures", "avg_ms", "min_ms", "max_ms",
                   "median_ms", "p95_ms", "p99_ms", "rps")
LEGACY_SERVICE = ("name", "num_requests", "p99_ms", "error_ratio", "uo_count", "uf_count",
                  "retry_count")
LEGACY_EXTRA = ("task_errors", "cart_race_failures", "payment_declines", "order_wait_timeouts",
                "frontend_crashes", "frontend_down_ms", "retry_overflows", "connect_failures",
                "connections_opened", "db_operations", "peak_inbound_requests", "events",
                "simulated_ms")


def legacy_view(report: LoadReport) -> dict[str, Any]:
    """The report's fields that existed before issue 12, with their meaning then.

    Issue 12 (contract §3) redefined two of them; a report that has the new fields
    (``ServiceStats.num_attempts`` set) is mapped back, exactly, from figures it still carries:

    * a TCP destination's ``num_requests`` / ``error_ratio`` were connections opened and
      (connect failures + UO refusals) / connections opened (a ratio that could exceed 1); now
      they count database operations. The old figures are ``extra["connections_opened"]``,
      ``extra["connect_failures"]`` and ``uo_count``.
    * ``uf_count`` counted the attempts a down destination refused or reset (HTTP) and the
      operations a refused connection failed (TCP) as UF; now those are ``reset_count``. Old
      ``uf_count`` = ``uf_count + reset_count`` for an HTTP destination, minus the front-end's
      requests lost in its crashes (``extra["frontend_crash_resets"]``, never UF); for a TCP one
      ``uf_count + extra["resets_refused"]`` (an operation reset in flight was never UF).

    A report of the code before issue 12 (no ``num_attempts``) is taken as it is.
    """
    d = report.to_dict()
    extra = d["extra"]
    services = {}
    for name, row in d["services"].items():
        old = {k: row[k] for k in LEGACY_SERVICE}
        if row.get("num_attempts") is not None:
            if SERVICE_BY_NAME[name].protocol == Protocol.TCP:
                opened = extra["connections_opened"].get(name, 0)
                failed = extra["connect_failures"].get(name, 0) + row["uo_count"]
                old["num_requests"] = opened
                old["error_ratio"] = float(failed / opened if opened else 0.0)
                old["uf_count"] = row["uf_count"] + extra["resets_refused"].get(name, 0)
            else:
                crash = extra["frontend_crash_resets"] if name == "front-end" else 0
                old["uf_count"] = row["uf_count"] + row["reset_count"] - crash
        services[name] = old
    view = {k: d[k] for k in LEGACY_TOP}
    view["endpoints"] = {n: {k: e[k] for k in LEGACY_ENDPOINT} for n, e in d["endpoints"].items()}
    view["services"] = services
    view["extra"] = {k: extra[k] for k in LEGACY_EXTRA}
    return view


def run_case(case: dict[str, Any]) -> LoadReport:
    """The simulator's report for ``case``."""
    if case["mode"] == "closed":
        load = LoadSpec(users=case["size"], requests=case["requests"], faults=case["faults"])
    else:
        load = LoadSpec(users=0, requests=case["requests"], mode="open",
                        arrival_rate_rps=case["size"], faults=case["faults"])
    mesh = SimMesh(rules_for(case["pools"]), warm=False, platform=case["platform"])
    return mesh.run_load(load, seed=case["seed"])


def view_json(view: dict[str, Any]) -> str:
    """A legacy view as ``LoadReport.to_json()`` serialised reports before issue 12."""
    return json.dumps(view, indent=2, allow_nan=False)


def digest(case: dict[str, Any]) -> str:
    """SHA-256 of the legacy view (:func:`legacy_view`) of the report for ``case``."""
    return hashlib.sha256(view_json(legacy_view(run_case(case))).encode()).hexdigest()


def label(case: dict[str, Any]) -> str:
    """The case's load mode and fault kind, e.g. ``closed/ServiceDown``."""
    fault = type(case["faults"][0]).__name__ if case["faults"] else "no fault"
    return f"{case['mode']}/{fault}"


def field_diffs(old: Any, new: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The paths (``("services", "carts", "uf_count")``) where two JSON-like values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            if k not in old or k not in new:
                out.append((*path, k))
            else:
                out.extend(field_diffs(old[k], new[k], (*path, k)))
        return out
    return [] if old == new else [path]


def field_kind(path: tuple[str, ...]) -> str:
    """A difference's path with the endpoint / service / per-service key as ``*``."""
    parts = list(path)
    if len(parts) > 1 and parts[0] in ("services", "endpoints"):
        parts[1] = "*"
    elif len(parts) > 2 and parts[0] == "extra":
        parts[2] = "*"
    return ".".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Write, check, dump or diff; returns 1 when ``--check`` / ``--diff`` finds a difference."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, metavar="FILE", help="write the digests to FILE")
    group.add_argument("--check", type=Path, metavar="FILE", help="compare with FILE")
    group.add_argument("--dump", type=Path, metavar="FILE",
                       help="write the legacy views themselves to FILE")
    group.add_argument("--diff", type=Path, metavar="FILE",
                       help="compare the legacy views with a --dump FILE, field by field")
    parser.add_argument("--cases", type=int, default=240, help="number of cases (default 240)")
    args = parser.parse_args(argv)
    all_cases = cases(args.cases)
    if args.dump or args.diff:
        views = [legacy_view(run_case(c)) for c in all_cases]
        # the views went through JSON in a dump: compare like with like
        views = json.loads(json.dumps(views, allow_nan=False))
        if args.dump:
            args.dump.parent.mkdir(parents=True, exist_ok=True)
            args.dump.write_text(json.dumps(views, allow_nan=False))
            print(f"{len(views)} legacy views -> {args.dump}")
            return 0
        old_views = json.loads(args.diff.read_text())
        if len(old_views) != len(views):
            print(f"sim_digest: {args.diff} holds {len(old_views)} cases, computed "
                  f"{len(views)}", file=sys.stderr)
            return 1
        by_label: dict[str, list[int]] = {}
        fields: dict[str, int] = {}
        for i, (old, new) in enumerate(zip(old_views, views, strict=True)):
            diffs = field_diffs(old, new)
            by_label.setdefault(label(all_cases[i]), []).append(int(bool(diffs)))
            for f in diffs:
                fields[field_kind(f)] = fields.get(field_kind(f), 0) + 1
        for lab, flags in sorted(by_label.items()):
            print(f"{lab:<28} {sum(flags):>4} of {len(flags):>4} cases differ")
        for f, n in sorted(fields.items(), key=lambda kv: -kv[1]):
            print(f"  {f:<40} differs in {n} (case, row) pairs")
        return int(any(any(v) for v in by_label.values()))
    digests = [digest(c) for c in all_cases]
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
    if len(want["cases"]) != len(digests):
        print(f"sim_digest: {args.check} holds {len(want['cases'])} cases, computed "
              f"{len(digests)}", file=sys.stderr)
        return 1
    differ = [i for i, (a, b) in enumerate(zip(digests, want["cases"], strict=True)) if a != b]
    if differ:
        counts: dict[str, list[int]] = {}
        for i, c in enumerate(all_cases):
            counts.setdefault(label(c), [0, 0])[0] += i in differ
            counts[label(c)][1] += 1
        print(f"{len(differ)} of {len(digests)} reports differ: cases {differ[:20]}")
        for lab, (n_diff, n) in sorted(counts.items()):
            print(f"  {lab:<28} {n_diff:>4} of {n:>4} differ")
        return 1
    print(f"{len(digests)} of {len(digests)} reports byte-identical (overall {overall})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
