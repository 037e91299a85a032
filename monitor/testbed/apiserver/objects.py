"""The simulated kinds: resource names, the Node and EndpointSlice bodies, and the Status body of an error."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Obj = dict[str, Any]

NODES = "nodes"
ENDPOINTSLICES = "endpointslices"
KIND = {NODES: ("v1", "Node"), ENDPOINTSLICES: ("discovery.k8s.io/v1", "EndpointSlice")}


def status(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _addresses(addresses: Iterable[tuple[str, str]]) -> list[Obj]:
    return [{"type": t, "address": a} for t, a in addresses]


def node(
    name: str,
    *,
    labels: Mapping[str, str] | None,
    addresses: Iterable[tuple[str, str]],
    annotations: Mapping[str, str] | None,
) -> Obj:
    """A fresh Ready Node (a new uid, even when it replaces one of the same name)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": str(uuid.uuid4()),
            "creationTimestamp": now(),
            "labels": dict(labels or {}),
            "annotations": dict(annotations or {}),
        },
        "spec": {},
        "status": {
            "addresses": _addresses(addresses),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "lastHeartbeatTime": now(),
                    "lastTransitionTime": now(),
                }
            ],
        },
    }


def changed_node(name: str, change: Callable[[Obj], None]) -> Callable[[Obj | None], Obj]:
    """How the store replaces an existing Node: a changed copy of it; a missing Node is a KeyError."""

    def build(old: Obj | None) -> Obj:
        if old is None:
            raise KeyError(f"node {name!r} does not exist")
        obj = copy.deepcopy(old)
        change(obj)
        return obj

    return build


def replace_node_parts(
    *,
    labels: Mapping[str, str] | None,
    addresses: Iterable[tuple[str, str]] | None,
    annotations: Mapping[str, str] | None,
) -> Callable[[Obj], None]:
    """A change that replaces the given parts of a Node (None = keep)."""

    def change(obj: Obj) -> None:
        if labels is not None:
            obj["metadata"]["labels"] = dict(labels)
        if annotations is not None:
            obj["metadata"]["annotations"] = dict(annotations)
        if addresses is not None:
            obj["status"]["addresses"] = _addresses(addresses)

    return change


def heartbeat(obj: Obj) -> None:
    """Bump the conditions' heartbeat (to the nanosecond, so that two bumps in one second still differ)."""
    for cond in obj["status"].get("conditions", []):
        cond["lastHeartbeatTime"] = f"{now()[:-1]}.{time.monotonic_ns() % 10**9:09d}Z"


def kubernetes_slice(addresses: Sequence[str], *, port: int) -> Callable[[Obj | None], Obj]:
    """How the store replaces ``default/kubernetes``: a new body that keeps the old slice's identity."""
    family = "IPv6" if any(":" in a for a in addresses) else "IPv4"
    obj: Obj = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes"},
        },
        "addressType": family,
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }

    def build(old: Obj | None) -> Obj:
        if old is not None:
            obj["metadata"]["uid"] = old["metadata"]["uid"]
            obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"]
        else:
            obj["metadata"]["uid"] = str(uuid.uuid4())
            obj["metadata"]["creationTimestamp"] = now()
        return obj

    return build
