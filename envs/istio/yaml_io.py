"""YAML I/O of multi-document Kubernetes files of DestinationRules.

Reading validates as istiod does (:func:`parse_rules`, :func:`read_rules`); writing
(:func:`to_document`, :func:`dump_rules`, :func:`write_rules`) puts the typed pool over the
document as read, so every field meshtune does not model is kept, key order included. Writes
are validated first and atomic (:func:`atomic_write`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import stat
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from envs.istio.fields import HTTP_FIELDS, KEEPALIVE_FIELDS, TCP_FIELDS, PoolField, value_to_yaml
from envs.istio.model import KIND, ConnectionPool, DestinationRule
from envs.istio.validation import DocumentErrors, RuleError, ValidationError, parse_document

# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def parse_rules(text: str, source: str = "<string>") -> list[DestinationRule]:
    """Parse and validate multi-document YAML; every document must be a DestinationRule.

    Empty documents are skipped (but counted in document numbers).

    Raises:
        ValidationError: with every problem of every document (malformed YAML included); the
            file is rejected whole.
    """
    errors: list[RuleError] = []
    rules: list[DestinationRule] = []
    index = 0
    try:
        for index, doc in enumerate(yaml.safe_load_all(text), start=1):
            if doc is None:
                continue
            err = DocumentErrors(source, index)
            rule = parse_document(doc, err)
            errors += err.items
            if rule is not None:
                rules.append(rule)
    except yaml.YAMLError as e:
        errors.append(RuleError(source, index + 1, None, "", None,
                                "malformed YAML: " + _yaml_problem(e)))
    if errors:
        raise ValidationError(errors)
    return rules


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A one-line description of a YAML syntax error with its line numbers."""
    def at(mark: Any) -> str:
        return f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""

    problem = getattr(e, "problem", None)
    if problem is None:
        return " ".join(str(e).split())
    context = getattr(e, "context", None)
    prefix = f"{context}{at(getattr(e, 'context_mark', None))}: " if context else ""
    return f"{prefix}{problem}{at(getattr(e, 'problem_mark', None))}"


def read_rules(path: str | os.PathLike[str]) -> list[DestinationRule]:
    """Read and validate a DestinationRule YAML file.

    Raises:
        OSError: the file cannot be read.
        ValidationError: the file is not valid UTF-8 YAML of valid DestinationRules.
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValidationError([RuleError(str(path), 1, None, "", None,
                                         f"not UTF-8 text: {e.reason} at byte {e.start}")]
                              ) from e
    return parse_rules(text, source=str(path))


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _merge_section(raw: Any, settings: Any, fields: Sequence[PoolField]) -> dict[str, Any]:
    """A raw section with its modelled keys replaced by ``settings`` (unknown keys kept)."""
    out = dict(raw) if isinstance(raw, dict) else {}
    for f in fields:
        value = getattr(settings, f.attr)
        if value is None:
            out.pop(f.key, None)
        else:
            out[f.key] = value_to_yaml(f, value)
    return out


def _merge_pool(raw: Any, pool: ConnectionPool) -> dict[str, Any]:
    """A raw ``connectionPool`` with the typed pool written over its modelled keys."""
    out = dict(raw) if isinstance(raw, dict) else {}
    if pool.tcp is None:
        out.pop("tcp", None)
    else:
        tcp = _merge_section(out.get("tcp"), pool.tcp, TCP_FIELDS)
        if pool.tcp.tcp_keepalive is None:
            tcp.pop("tcpKeepalive", None)
        else:
            tcp["tcpKeepalive"] = _merge_section(tcp.get("tcpKeepalive"),
                                                 pool.tcp.tcp_keepalive, KEEPALIVE_FIELDS)
        out["tcp"] = tcp
    if pool.http is None:
        out.pop("http", None)
    else:
        out["http"] = _merge_section(out.get("http"), pool.http, HTTP_FIELDS)
    return out


def to_document(rule: DestinationRule) -> dict[str, Any]:
    """The Kubernetes document of ``rule``: its raw document with the modelled fields
    (apiVersion, kind, name, namespace, host, connectionPool) written over it."""
    doc = copy.deepcopy(rule.raw) if rule.raw else {}
    doc["apiVersion"] = rule.api_version
    doc["kind"] = KIND
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    meta["name"] = rule.name
    if rule.namespace is None:
        meta.pop("namespace", None)
    else:
        meta["namespace"] = rule.namespace
    doc["metadata"] = meta
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    spec["host"] = rule.host
    policy = spec.get("trafficPolicy") if isinstance(spec.get("trafficPolicy"), dict) else {}
    if rule.connection_pool is None:
        policy.pop("connectionPool", None)
    else:
        policy["connectionPool"] = _merge_pool(policy.get("connectionPool"),
                                               rule.connection_pool)
    if policy:
        spec["trafficPolicy"] = policy
    else:
        spec.pop("trafficPolicy", None)
    doc["spec"] = spec
    return doc


def dump_rules(rules: Iterable[DestinationRule]) -> str:
    """Multi-document YAML of ``rules`` (not validated; :func:`write_rules` validates)."""
    docs = [to_document(r) for r in rules]
    if not docs:
        return ""
    return yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True,
                              default_flow_style=False, allow_unicode=True)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and ``os.replace``;
    keeps the old file's permission bits (a new file gets 0644). On any error the old file is
    untouched."""
    path = Path(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_rules(path: str | os.PathLike[str], rules: Iterable[DestinationRule]) -> None:
    """Validate ``rules`` and write them to ``path`` atomically.

    Raises:
        ValidationError: a rule is invalid; nothing is written.
        OSError: the file cannot be written; the old file is untouched.
    """
    text = dump_rules(rules)
    parse_rules(text, source=str(path))  # the exact bytes to be written must pass validation
    atomic_write(Path(path), text.encode("utf-8"))
