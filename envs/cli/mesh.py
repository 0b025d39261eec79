"""``meshtune mesh up`` / ``meshtune mesh down``: start and stop a local mesh replica.

``up`` starts replica K's supervisor in the background (services, 15 Envoys, Prometheus on
the replica's 127.0.0.1 port block; see ``envs.backends.local``) and returns once everything
is ready; ``down`` stops it (or every replica that is up) and checks that no port of its block
is still bound.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from envs.backends.base import BackendError
from envs.backends.local import envoy_config as ec
from envs.backends.local.mesh import start_replica, stop_replica
from envs.backends.local.ports import HOST, ReplicaPorts
from envs.backends.local.supervisor import STATE_ROOT, busy_ports, read_state


def cmd_mesh_up(args: argparse.Namespace) -> int:
    """Start replica ``args.replica`` (rules from ``args.rules``, Envoy workers from
    ``args.envoy_workers`` and the adaptive concurrency filter from ``args.adaptive_concurrency``
    (a JSON object of its parameters), if given); 0 when ready."""
    try:
        ReplicaPorts(args.replica)
        workers = getattr(args, "envoy_workers", None)
        adaptive = _adaptive(getattr(args, "adaptive_concurrency", None))
        _, state = start_replica(args.replica, getattr(args, "rules", None),
                                 seed=getattr(args, "seed", 0),
                                 envoy_workers=(ec.DEFAULT_ENVOY_WORKERS if workers is None
                                                else workers),
                                 adaptive_concurrency=adaptive)
    except (BackendError, ValueError) as exc:
        print(f"meshtune mesh up: {exc}", file=sys.stderr)
        return 1
    ports = state.ports
    print(f"replica {state.replica} up (supervisor pid {state.pid})")
    print(f"  ingress     http://{HOST}:{ports.ingress}/")
    print(f"  prometheus  http://{HOST}:{ports.prometheus}/")
    print(f"  run dir     {state.run_dir}  (logs/ has one log per process)")
    print(f"stop it with: meshtune mesh down --replica {state.replica}")
    return 0


def _adaptive(text: str | None) -> ec.AdaptiveConcurrency | None:
    """The filter's parameters from ``--adaptive-concurrency``'s JSON (None: off); ValueError
    in one line for text that is not a JSON object of its fields."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--adaptive-concurrency: not JSON ({exc.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--adaptive-concurrency takes a JSON object of the filter's "
                         f"parameters, got {text!r}")
    return ec.AdaptiveConcurrency.from_value(value)


def _replicas_up() -> list[int]:
    found = []
    for path in STATE_ROOT.glob("replica-*"):
        match = re.fullmatch(r"replica-(\d+)", path.name)
        if match and read_state(int(match.group(1))) is not None:
            found.append(int(match.group(1)))
    return sorted(found)


def cmd_mesh_down(args: argparse.Namespace) -> int:
    """Stop replica ``args.replica`` (None: every replica that is up); 1 if a port of a
    stopped replica's block is still bound afterwards."""
    replica = getattr(args, "replica", None)
    targets = _replicas_up() if replica is None else [replica]
    status = 0
    for k in targets:
        try:
            stopped = stop_replica(k)
        except (BackendError, ValueError) as exc:
            print(f"meshtune mesh down: {exc}", file=sys.stderr)
            status = 1
            continue
        left = busy_ports(list(ReplicaPorts(k).all_ports()))
        if left:
            print(f"replica {k}: ports still bound after stopping: {left}", file=sys.stderr)
            status = 1
        print(f"replica {k} {'stopped' if stopped else 'was not up'}")
    if not targets:
        print("no local replica is up")
    return status
