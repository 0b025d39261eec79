"""The ``meshtune`` command line.

Subcommands (each implemented next to the code it exposes):

* ``meshtune validate FILE...`` — check DestinationRule files against Istio's rules
  (``envs.istio_cli``);
* ``meshtune envoy FILE`` — print the Envoy clusters Istio would program, as JSON
  (``envs.istio_cli``);
* ``meshtune simulate`` — run the reference load through the simulator and print Locust's table
  (``envs.backends.sim.cli``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence


def _run(target: str, args: argparse.Namespace) -> int:
    """Import ``module:function`` lazily (so ``validate`` never loads the simulator) and call it."""
    module_name, _, func = target.partition(":")
    return int(getattr(importlib.import_module(module_name), func)(args))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="meshtune", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="validate DestinationRule YAML files")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(target="envs.istio_cli:cmd_validate")

    p = sub.add_parser("envoy", help="print the Envoy clusters Istio would program, as JSON")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--namespace", default="sock-shop",
                   help="namespace of the SockShop services (default: sock-shop)")
    p.set_defaults(target="envs.istio_cli:cmd_envoy")

    p = sub.add_parser("simulate", help="run the reference load through the simulator")
    p.add_argument("--rules", metavar="FILE",
                   help="DestinationRule YAML (default: none, Istio's defaults)")
    p.add_argument("--users", type=int, default=20, help="concurrent users (default 20)")
    p.add_argument("--requests", type=int, default=1600,
                   help="total requests (default 1600)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(target="envs.backends.sim.cli:cmd_simulate")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meshtune`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return _run(args.target, args)


if __name__ == "__main__":
    sys.exit(main())
