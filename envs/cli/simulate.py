"""``meshtune simulate``: run the reference load through the simulator and print the report.

Without ``--rules`` every service has Istio's defaults. Bad input (a missing or invalid rules
file, a rule for an unknown service, a non-positive user or request count) prints one clear
message on stderr and returns 2 (usage) or 1 (invalid rules) — never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from envs.backends.base import LoadSpec


def cmd_simulate(args: argparse.Namespace) -> int:
    """Simulate ``args.requests`` requests of ``args.users`` closed-loop users under the rules
    of ``args.rules`` (optional) with seed ``args.seed`` on platform ``args.platform``; print
    Locust's table, or the JSON report with ``args.json``. Returns 0, 1 for invalid rules, 2
    for invalid arguments."""
    if args.users <= 0:
        print(f"meshtune simulate: --users must be positive, got {args.users}", file=sys.stderr)
        return 2
    if args.requests <= 0:
        print(f"meshtune simulate: --requests must be positive, got {args.requests}",
              file=sys.stderr)
        return 2
    rules = []
    if args.rules:
        from envs.cli.rules import read_rules_or_report

        rules = read_rules_or_report(args.rules)
        if rules is None:
            return 1
    from envs.backends.sim import SimMesh

    try:
        mesh = SimMesh(rules, platform=getattr(args, "platform", "cluster"))
    except ValueError as e:
        print(f"{args.rules}: {e}", file=sys.stderr)
        return 1
    try:
        report = mesh.run_load(LoadSpec(users=args.users, requests=args.requests), args.seed)
    finally:
        mesh.close()
    print(report.to_json() if args.json else report.to_locust_table())
    return 0
