"""Snapshot / restore for backends: service → pool maps, and a rule file tuned in place.

:func:`pools_of` and :func:`rules_for` convert between rules and the service → connection pool
map backends work with; :class:`RuleFile` is a DestinationRule file being tuned, whose
:meth:`~RuleFile.restore` puts back the exact bytes of a :meth:`~RuleFile.snapshot`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from envs.istio.model import ConnectionPool, DestinationRule
from envs.istio.validation import validate_pool
from envs.istio.yaml_io import atomic_write, read_rules, write_rules


def pools_of(rules: Iterable[DestinationRule]) -> dict[str, ConnectionPool]:
    """Service name → connection pool of the rules that have one.

    Raises:
        ValueError: two rules give a pool to the same service (Istio would pick one silently).
    """
    pools: dict[str, ConnectionPool] = {}
    owner: dict[str, str] = {}
    for rule in rules:
        if rule.connection_pool is None:
            continue
        if rule.service in pools:
            raise ValueError(f"DestinationRules {owner[rule.service]!r} and {rule.name!r} both "
                             f"set a connection pool for service {rule.service!r}")
        pools[rule.service] = rule.connection_pool
        owner[rule.service] = rule.name
    return pools


def rules_for(pools: Mapping[str, ConnectionPool | None], namespace: str | None = None,
              base: Iterable[DestinationRule] = ()) -> list[DestinationRule]:
    """Rules that give each service in ``pools`` its pool, built on ``base``.

    Base rules keep their name, host, API version and unknown fields; those whose service is in
    ``pools`` get that pool (``None``: no connection pool, Istio's defaults); the others are kept
    as they are. A service in ``pools`` without a base rule gets a new rule named and hosted
    after the service (not created for a ``None`` pool). With ``namespace`` every rule is put in
    that namespace.

    Raises:
        ValueError: a pool is invalid (see :func:`validate_pool`).
    """
    for service, pool in pools.items():
        problems = validate_pool(pool) if pool is not None else []
        if problems:
            raise ValueError(f"invalid connection pool for {service}: " + "; ".join(problems))
    out: list[DestinationRule] = []
    covered: set[str] = set()
    for rule in base:
        if rule.service in pools:
            rule = replace(rule, connection_pool=pools[rule.service])
            covered.add(rule.service)
        if namespace is not None:
            rule = replace(rule, namespace=namespace)
        out.append(rule)
    for service, pool in pools.items():
        if service not in covered and pool is not None:
            out.append(DestinationRule(name=service, host=service, connection_pool=pool,
                                       namespace=namespace))
    return out


@dataclass(frozen=True)
class RuleFileSnapshot:
    """The exact bytes of a rule file at one moment (``None``: the file did not exist)."""

    path: Path
    content: bytes | None


class RuleFile:
    """A DestinationRule YAML file being tuned: the notebook's ``IstioConfig``, done right.

    Open a file (a missing file is an empty rule list), change pools in memory, :meth:`save`
    (validated, atomic), and :meth:`snapshot` / :meth:`restore` to put back exactly the bytes
    that were on disk.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._rules: list[DestinationRule] = (read_rules(self.path) if self.path.exists()
                                              else [])

    @property
    def rules(self) -> tuple[DestinationRule, ...]:
        """The rules as currently held in memory."""
        return tuple(self._rules)

    def pools(self) -> dict[str, ConnectionPool]:
        """Service → connection pool of the rules in memory."""
        return pools_of(self._rules)

    def set_pools(self, pools: Mapping[str, ConnectionPool | None],
                  namespace: str | None = None) -> None:
        """Give services new pools in memory (see :func:`rules_for`); call :meth:`save`."""
        self._rules = rules_for(pools, namespace=namespace, base=self._rules)

    def set_pool(self, service: str, pool: ConnectionPool | None,
                 namespace: str | None = None) -> None:
        """Give one service a new pool in memory (``None``: Istio's defaults)."""
        self.set_pools({service: pool}, namespace=namespace)

    def save(self) -> None:
        """Validate and write the rules atomically."""
        write_rules(self.path, self._rules)

    def snapshot(self) -> RuleFileSnapshot:
        """The file's current bytes on disk."""
        try:
            return RuleFileSnapshot(self.path, self.path.read_bytes())
        except FileNotFoundError:
            return RuleFileSnapshot(self.path, None)

    def restore(self, snapshot: RuleFileSnapshot) -> None:
        """Put back exactly the snapshot's bytes (or remove the file if it did not exist), then
        reload the rules from them."""
        if snapshot.path != self.path:
            raise ValueError(f"snapshot of {snapshot.path} cannot restore {self.path}")
        if snapshot.content is None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._rules = []
            return
        atomic_write(self.path, snapshot.content)
        self._rules = read_rules(self.path)
