"""``meshtune validate`` and ``meshtune envoy``: DestinationRule files from the command line.

Both print every problem with its file, document, field and value on stderr and return exit
status 1 instead of raising; a missing file or malformed YAML is such a problem, never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from envs.istio import DestinationRule, ValidationError, cds_document, envoy_clusters, read_rules


def read_rules_or_report(path: str) -> list[DestinationRule] | None:
    """The rules of ``path``, or None after printing every problem (each validation error with
    its document, field and value; an unreadable file) on stderr. For the CLI commands."""
    try:
        return read_rules(path)
    except ValidationError as e:
        for error in e.errors:
            print(error, file=sys.stderr)
    except OSError as e:
        print(f"{path}: cannot read file: {e.strerror or e}", file=sys.stderr)
    return None


def _summary(path: str, names: list[str]) -> str:
    """``FILE: OK, 3 DestinationRules (carts, catalogue, user)``."""
    noun = "DestinationRule" if len(names) == 1 else "DestinationRules"
    listed = f" ({', '.join(names)})" if names else ""
    return f"{path}: OK, {len(names)} {noun}{listed}"


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate each of ``args.files``: a summary line per valid file on stdout, every error of
    every invalid file on stderr. Returns 0 if all files are valid, else 1."""
    failed = 0
    for path in args.files:
        rules = read_rules_or_report(path)
        if rules is None:
            failed += 1
        else:
            print(_summary(path, [r.name for r in rules]))
    if failed:
        print(f"{failed} of {len(args.files)} file{'s' if len(args.files) != 1 else ''} "
              "invalid", file=sys.stderr)
    return 1 if failed else 0


def cmd_envoy(args: argparse.Namespace) -> int:
    """Print, as JSON, the CDS document (``{"resources": [Cluster, ...]}``) of the outbound
    clusters Istio programs for the 14 SockShop services in ``args.namespace`` under the rules of
    ``args.file``. Returns 0, or 1 with the errors on stderr."""
    rules = read_rules_or_report(args.file)
    if rules is None:
        return 1
    try:
        clusters = envoy_clusters(rules, namespace=args.namespace)
    except ValueError as e:
        print(f"{args.file}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(cds_document(clusters), indent=2))
    return 0
