"""DestinationRule documents as the k8s backend sends them to the Kubernetes API.

The API coordinates of a DestinationRule and of a server-side apply, the apply bodies of
:class:`istio.DestinationRule` values in a SockShop namespace (validated as istiod's webhook
would, hosts moved to the namespace), a rule read from the API reduced to what an apply may send
back (:func:`clean_document`), and rules without a connection pool (Istio's defaults), which is
how the backend takes away a rule it may not delete.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from envs import istio
from envs.sockshop import SERVICE_BY_NAME, SERVICE_NAMES

DR_GROUP = "networking.istio.io"
DR_VERSION = "v1"
DR_PLURAL = "destinationrules"
#: The field manager of every server-side apply meshtune makes.
FIELD_MANAGER = "meshtune"
APPLY_PATCH_CONTENT_TYPE = "application/apply-patch+yaml"

#: Server-managed metadata that must not go back into an apply body.
_SERVER_METADATA = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields",
                    "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds")
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_FQDN = re.compile(r"^(?P<svc>[a-z0-9-]+)\.(?P<ns>[a-z0-9-]+)\.svc\.cluster\.local$")


def clean_document(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A DestinationRule as read from the API, reduced to what an apply may send back: no
    status, no server-managed metadata, no kubectl last-applied annotation."""
    out = {k: copy.deepcopy(v) for k, v in doc.items() if k in ("apiVersion", "kind", "spec")}
    meta = {k: copy.deepcopy(v) for k, v in (doc.get("metadata") or {}).items()
            if k not in _SERVER_METADATA}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != _LAST_APPLIED}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    out["metadata"] = meta
    out["apiVersion"] = f"{DR_GROUP}/{DR_VERSION}"
    out["kind"] = istio.KIND
    return out


def without_connection_pool(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with ``spec.trafficPolicy.connectionPool`` removed: Istio's default pools."""
    out = copy.deepcopy(dict(doc))
    spec = out.setdefault("spec", {})
    policy = spec.get("trafficPolicy")
    if isinstance(policy, dict):
        policy.pop("connectionPool", None)
        if not policy:
            spec.pop("trafficPolicy", None)
    return out


def connection_pool_of(doc: Mapping[str, Any]) -> Any:
    """``spec.trafficPolicy.connectionPool`` of a document (None when absent)."""
    policy = (doc.get("spec") or {}).get("trafficPolicy") or {}
    return policy.get("connectionPool") if isinstance(policy, dict) else None


def rule_documents(rules: Sequence[istio.DestinationRule], namespace: str) -> list[dict[str, Any]]:
    """The apply bodies of ``rules`` in ``namespace``, validated as istiod's webhook would.

    A host naming a SockShop service in another namespace (``carts.sock-shop.svc.cluster
    .local``) is moved to ``namespace``; short hosts resolve in the rule's namespace already.

    Raises:
        istio.ValidationError: a rule istiod would reject.
        ValueError: a host that is not a SockShop service, or two rules with the same name.
    """
    docs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for rule in rules:
        if rule.service not in SERVICE_BY_NAME:
            raise ValueError(f"DestinationRule {rule.name!r}: host {rule.host!r} is not a "
                             f"SockShop service (one of {', '.join(SERVICE_NAMES)})")
        if rule.name in seen:
            raise ValueError(f"two DestinationRules are named {rule.name!r}")
        seen.add(rule.name)
        doc = clean_document(istio.to_document(rule))
        doc["metadata"]["namespace"] = namespace
        fqdn = _FQDN.match(rule.host)
        if fqdn and fqdn["ns"] != namespace:
            doc["spec"]["host"] = f"{fqdn['svc']}.{namespace}.svc.cluster.local"
        elif "." in rule.host and not fqdn:
            raise ValueError(f"DestinationRule {rule.name!r}: host {rule.host!r} is neither a "
                             "short service name nor <service>.<namespace>.svc.cluster.local")
        docs.append(doc)
    if docs:  # the webhook's rules, on exactly what will be sent
        istio.parse_rules(yaml.safe_dump_all(docs, sort_keys=False), source="apply")
    return docs


def neutral_document(name: str, host: str, namespace: str) -> dict[str, Any]:
    """A DestinationRule with no traffic policy: Istio's default connection pools."""
    return {"apiVersion": f"{DR_GROUP}/{DR_VERSION}", "kind": istio.KIND,
            "metadata": {"name": name, "namespace": namespace}, "spec": {"host": host}}
