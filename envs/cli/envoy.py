"""``meshtune envoy FILE``: the Envoy clusters Istio would program for a DestinationRule file.

Prints the CDS document as JSON; problems go to stderr with exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from envs.cli.rules import read_rules_or_report
from envs.istio import cds_document, envoy_clusters


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
