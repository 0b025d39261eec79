"""``meshtune cluster render``: write the Kubernetes manifests of N SockShop replicas and the
sweep to a directory.

The manifests themselves are built by :mod:`envs.backends.k8s.manifests` (its docstring lists
the files); this module reads the command's inputs, renders and writes. See docs/cluster.md for
the step-by-step guide.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from envs import istio
from envs.backends.k8s.manifests import (
    DEFAULT_LOCUSTFILE,
    DEFAULT_RAY_IMAGE,
    render,
    write_files,
)
from envs.backends.k8s.mesh import DEFAULT_NAMESPACE_PREFIX


def cmd_cluster_render(args: argparse.Namespace) -> int:
    """``meshtune cluster render --namespaces N --out DIR [--namespace-prefix P] [--ray-image I]
    [--rules FILE] [--locustfile FILE]``; returns the exit status (2 on bad input).

    ``args`` attributes: ``namespaces`` (int), ``out`` (path), ``namespace_prefix``,
    ``ray_image``, ``rules``, ``locustfile`` (None for the defaults).
    """
    locustfile = Path(args.locustfile or DEFAULT_LOCUSTFILE)
    try:
        locustfile_text = locustfile.read_text()
    except OSError as exc:
        print(f"meshtune cluster render: cannot read the locustfile {locustfile}: {exc}",
              file=sys.stderr)
        return 2
    try:
        base = istio.read_rules(args.rules) if args.rules is not None else []
        files = render(args.namespaces,
                       namespace_prefix=args.namespace_prefix or DEFAULT_NAMESPACE_PREFIX,
                       ray_image=args.ray_image or DEFAULT_RAY_IMAGE,
                       locustfile_text=locustfile_text, base_rules=base)
    except (ValueError, OSError) as exc:
        print(f"meshtune cluster render: {exc}", file=sys.stderr)
        return 2
    write_files(files, Path(args.out))
    print(f"wrote {len(files)} files for {args.namespaces} namespace(s) to {args.out}")
    return 0
