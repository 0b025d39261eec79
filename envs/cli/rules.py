"""The DestinationRule file reader every ``meshtune`` command shares.

A missing file or malformed YAML is reported on stderr with its file, document, field and value,
never as a traceback.
"""

from __future__ import annotations

import sys

from envs.istio import DestinationRule, ValidationError, read_rules


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

