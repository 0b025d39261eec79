"""The ``meshtune`` command line.

Subcommands, one module each in this package (the parser lives here and imports a command's
module only when it runs, so ``validate`` never loads the simulator):

* ``meshtune validate FILE...`` — check DestinationRule files against Istio's rules
  (``envs.cli.validate``);
* ``meshtune envoy FILE`` — print the Envoy clusters Istio would program, as JSON
  (``envs.cli.envoy``);
* ``meshtune simulate`` — run the reference load through the simulator and print Locust's table
  (``envs.cli.simulate``).
* ``meshtune cluster render --namespaces N --out DIR`` — the Kubernetes manifests of N SockShop
  namespaces, Prometheus, RBAC and the KubeRay sweep (``envs.cli.cluster``).
* ``meshtune mesh up --replica K`` / ``meshtune mesh down [--replica K]`` — start / stop a
  local replica of the mesh: real Envoy sidecars, Prometheus, on 127.0.0.1 (``envs.cli.mesh``).
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
    p.set_defaults(target="envs.cli.validate:cmd_validate")

    p = sub.add_parser("envoy", help="print the Envoy clusters Istio would program, as JSON")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--namespace", default="sock-shop",
                   help="namespace of the SockShop services (default: sock-shop)")
    p.set_defaults(target="envs.cli.envoy:cmd_envoy")

    p = sub.add_parser("simulate", help="run the reference load through the simulator")
    p.add_argument("--rules", metavar="FILE",
                   help="DestinationRule YAML (default: none, Istio's defaults)")
    p.add_argument("--users", type=int, default=20, help="concurrent users (default 20)")
    p.add_argument("--requests", type=int, default=1600,
                   help="total requests (default 1600)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--platform", choices=("cluster", "loopback"), default="cluster",
                   help="per-hop network and sidecar costs: the calibrated cluster (default) or "
                        "the local mesh's loopback Envoys (envs.backends.sim.profile)")
    p.set_defaults(target="envs.cli.simulate:cmd_simulate")

    p = sub.add_parser("cluster", help="Kubernetes manifests (see docs/cluster.md)")
    cluster = p.add_subparsers(dest="cluster_command", required=True)
    p = cluster.add_parser("render", help="write the manifests of N SockShop namespaces")
    p.add_argument("--namespaces", type=int, required=True, metavar="N",
                   help="number of SockShop replicas (namespaces sockshop-0..N-1)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (created; files in it are replaced)")
    p.add_argument("--namespace-prefix", default=None,
                   help="namespace prefix (default sockshop-)")
    p.add_argument("--ray-image", default=None,
                   help="image with meshtune installed (cluster/image/Dockerfile)")
    p.add_argument("--rules", metavar="FILE",
                   help="DestinationRule YAML every namespace starts from (default: one rule "
                        "per service without a traffic policy)")
    p.add_argument("--locustfile", metavar="FILE", default=None,
                   help="load test for the ConfigMap (default cluster/load/locustfile.py)")
    p.set_defaults(target="envs.cli.cluster:cmd_cluster_render")

    p = sub.add_parser("mesh", help="start / stop a local mesh replica (real Envoy, loopback)")
    mesh = p.add_subparsers(dest="mesh_command", required=True)
    p = mesh.add_parser("up", help="start replica K in the background; returns when ready")
    p.add_argument("--replica", type=int, required=True, metavar="K",
                   help="replica index (ports 21000+200K ... +199 on 127.0.0.1)")
    p.add_argument("--rules", metavar="FILE",
                   help="DestinationRule YAML to start with (default: Istio's defaults)")
    p.add_argument("--seed", type=int, default=0, help="seed of the services' work draws")
    p.add_argument("--envoy-workers", type=int, default=None, metavar="N",
                   help="worker threads per Envoy (default 2, as Istio's sidecars)")
    p.add_argument("--adaptive-concurrency", metavar="JSON", nargs="?", const="{}",
                   default=None,
                   help="Envoy's adaptive concurrency filter on every HTTP service's inbound "
                        "listener; optional JSON of its parameters (envs.backends.local."
                        "envoy_config.AdaptiveConcurrency), e.g. '{\"max_concurrency_limit\": 50}'")
    p.set_defaults(target="envs.cli.mesh:cmd_mesh_up")
    p = mesh.add_parser("down", help="stop replica K (default: every replica that is up)")
    p.add_argument("--replica", type=int, default=None, metavar="K")
    p.set_defaults(target="envs.cli.mesh:cmd_mesh_down")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meshtune`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return _run(args.target, args)


if __name__ == "__main__":
    sys.exit(main())
