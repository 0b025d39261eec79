"""``meshtune validate FILE...``: check DestinationRule files against Istio's validation rules.

Prints a summary line per valid file on stdout, every problem with its file, document, field and
value on stderr, and returns exit status 1 instead of raising.
"""

from __future__ import annotations

import argparse
import sys

from envs.cli.rules import read_rules_or_report


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
