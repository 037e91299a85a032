"""Pure address rules: raw Node / EndpointSlice objects + VIPs + local subnets → the sorted backend list."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.model import Backend, LBConfig

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HOST_CIDRS_ANNOTATION = "k8s.ovn.org/host-cidrs"
HOST_ADDRESSES_ANNOTATION = "k8s.ovn.org/host-addresses"
# Two-node topologies run a single master at times; a placeholder keeps `backend masters` non-empty.
TWO_NODE_TOPOLOGIES = frozenset({"HighlyAvailableArbiter", "DualReplica"})


@dataclass(frozen=True)
class Discovered:
    """The outcome of one pass: backends to serve, and one warning line per object that was skipped or odd."""

    backends: tuple[Backend, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _ip(text: object) -> IPAddress | None:
    if not isinstance(text, str):
        return None
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def machine_network(vip: str, local_networks: Iterable[IPNetwork]) -> IPNetwork | None:
    """The subnet of a local interface that contains ``vip`` (the narrowest one), or None."""
    address = ipaddress.ip_address(vip)
    matches = [n for n in local_networks if n.version == address.version and address in n]
    return max(matches, key=lambda n: n.prefixlen) if matches else None


def frontend_addr(vips: Sequence[str]) -> str:
    """``"::"`` when the first VIP is IPv6 (HAProxy must bind the v6 wildcard), else empty, as the reference."""
    return "::" if vips and ipaddress.ip_address(vips[0]).version == 6 else ""


def _ovn_addresses(annotations: Mapping[str, Any], name: str, warnings: list[str]) -> list[IPAddress]:
    found: list[IPAddress] = []
    for key, is_cidr in ((HOST_CIDRS_ANNOTATION, True), (HOST_ADDRESSES_ANNOTATION, False)):
        raw = annotations.get(key)
        if raw is None:
            continue
        try:
            values = json.loads(raw)
            if not isinstance(values, list):
                raise ValueError("not a JSON list")
        except (ValueError, TypeError) as exc:
            warnings.append(f"node {name}: annotation {key} is not a JSON list of addresses ({exc}); ignored")
            continue
        for value in values:
            if not isinstance(value, str):
                continue
            try:
                address = ipaddress.ip_interface(value).ip if is_cidr else ipaddress.ip_address(value)
            except ValueError:
                warnings.append(f"node {name}: annotation {key} holds {value!r}, not an address; ignored")
                continue
            found.append(address)
        if found:
            break  # host-cidrs supersedes the older host-addresses
    return found


def node_address(
    node: Mapping[str, Any],
    *,
    family: int,
    network: IPNetwork | None,
    vips: frozenset[IPAddress],
    warnings: list[str],
) -> str | None:
    """Pick the one address HAProxy should use for ``node``, or None (with a warning) when it has none usable."""
    metadata = node.get("metadata") or {}
    name = str(metadata.get("name") or "<unnamed>")
    status = node.get("status") or {}
    internal: list[IPAddress] = []
    for entry in status.get("addresses") or []:
        if isinstance(entry, Mapping) and entry.get("type") == "InternalIP":
            address = _ip(entry.get("address"))
            if address is not None and address.version == family:
                internal.append(address)
    if network is None:
        # No local interface holds the VIP's subnet: any InternalIP of the VIP's family will do.
        if internal:
            return str(internal[0])
        warnings.append(f"node {name}: no InternalIP of family IPv{family}; skipped")
        return None
    for address in internal:
        if address in network and address not in vips:
            return str(address)
    annotations = metadata.get("annotations") or {}
    for address in _ovn_addresses(annotations, name, warnings):
        if address.version == family and address in network and address not in vips:
            return str(address)
    if internal:
        # An InternalIP outside the machine network still reaches the API server; better than dropping a master.
        warnings.append(
            f"node {name}: no address in machine network {network}; using InternalIP {internal[0]}"
        )
        return str(internal[0])
    warnings.append(f"node {name}: no usable IPv{family} address (InternalIP or OVN host-cidrs); skipped")
    return None


def _finish(
    candidates: list[Backend], *, warnings: list[str], family: int, topology: str, api_port: int
) -> Discovered:
    by_address: dict[str, Backend] = {}
    for backend in sorted(candidates, key=lambda b: b.host):
        kept = by_address.get(backend.address)
        if kept is not None:
            warnings.append(
                f"{backend.host}: address {backend.address} already used by {kept.host}; duplicate skipped"
            )
            continue
        by_address[backend.address] = backend
    backends = sorted(by_address.values(), key=lambda b: (b.address, b.host))
    if topology in TWO_NODE_TOPOLOGIES and len(backends) == 1:
        backends.append(Backend(host="dummy", address="::" if family == 6 else "0.0.0.0", port=api_port))
    return Discovered(backends=tuple(backends), warnings=tuple(warnings))


def backends_from_nodes(
    nodes: Iterable[Mapping[str, Any]],
    *,
    vips: Sequence[str],
    api_port: int,
    local_networks: Iterable[IPNetwork],
    topology: str = "",
) -> Discovered:
    """The reference's address rules applied to control-plane Nodes; sorted by address, port = api port."""
    if not vips:
        raise ValueError("at least one API VIP is needed to choose the address family")
    family = ipaddress.ip_address(vips[0]).version
    network = machine_network(vips[0], local_networks)
    vip_set = frozenset(ipaddress.ip_address(v) for v in vips)
    warnings: list[str] = []
    if network is None:
        warnings.append(
            f"no local interface holds a subnet containing VIP {vips[0]}; using any IPv{family} InternalIP"
        )
    candidates: list[Backend] = []
    for node in nodes:
        address = node_address(node, family=family, network=network, vips=vip_set, warnings=warnings)
        if address is not None:
            name = str((node.get("metadata") or {}).get("name") or address)
            candidates.append(Backend(host=name, address=address, port=api_port))
    return _finish(candidates, warnings=warnings, family=family, topology=topology, api_port=api_port)


def backends_from_endpointslices(
    slices: Iterable[Mapping[str, Any]], *, vips: Sequence[str], api_port: int, topology: str = ""
) -> Discovered:
    """API servers from the ``default/kubernetes`` EndpointSlice(s): ready endpoints of the VIP's family."""
    if not vips:
        raise ValueError("at least one API VIP is needed to choose the address family")
    family = ipaddress.ip_address(vips[0]).version
    warnings: list[str] = []
    candidates: list[Backend] = []
    for slice_ in slices:
        slice_name = str((slice_.get("metadata") or {}).get("name") or "<unnamed>")
        address_type = slice_.get("addressType")
        if address_type not in (f"IPv{family}", None):
            continue
        for endpoint in slice_.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready") is False:
                continue
            for raw in endpoint.get("addresses") or []:
                address = _ip(raw)
                if address is None or address.version != family:
                    warnings.append(
                        f"endpointslice {slice_name}: {raw!r} is not an IPv{family} address; skipped"
                    )
                    continue
                host = str(endpoint.get("nodeName") or endpoint.get("hostname") or address)
                candidates.append(Backend(host=host, address=str(address), port=api_port))
    return _finish(candidates, warnings=warnings, family=family, topology=topology, api_port=api_port)


def lbconfig(
    backends: Sequence[Backend], *, vips: Sequence[str], api_port: int, lb_port: int, stat_port: int
) -> LBConfig:
    """Assemble the template's view."""
    return LBConfig(
        api_port=api_port,
        lb_port=lb_port,
        stat_port=stat_port,
        frontend_addr=frontend_addr(vips),
        backends=tuple(backends),
    )
