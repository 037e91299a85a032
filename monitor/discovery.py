"""Pure address rules: raw Node / EndpointSlice objects + VIPs + local addresses → the sorted backend list."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from monitor.model import Backend, LBConfig

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

HOST_CIDRS_ANNOTATION = "k8s.ovn.org/host-cidrs"
HOST_ADDRESSES_ANNOTATION = "k8s.ovn.org/host-addresses"
# Two-node topologies run a single master at times; a placeholder keeps `backend masters` non-empty.
TWO_NODE_TOPOLOGIES = frozenset({"HighlyAvailableArbiter", "DualReplica"})
_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
# What the API server accepts as a node name (IsDNS1123Subdomain: this pattern, at most 253 characters; it
# sets no per-label limit, so neither do we). A name becomes `server NAME` in haproxy.cfg: anything else
# could carry a newline and new sections into HAProxy's configuration.
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
DNS1123_SUBDOMAIN_MAX = 253
# Hostile names are shown quoted and cut short, so that a warning stays one readable line.
_SHOWN_MAX = 80


@dataclass(frozen=True)
class Discovered:
    """The outcome of one pass: backends to serve, and one warning line per object that was skipped or odd."""

    backends: tuple[Backend, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)


def valid_host(name: object) -> TypeGuard[str]:
    """Whether ``name`` may be a template's ``Host``: a DNS-1123 subdomain, as the API server requires of nodes."""
    return (
        isinstance(name, str)
        and len(name) <= DNS1123_SUBDOMAIN_MAX
        and _DNS1123_SUBDOMAIN.fullmatch(name) is not None
    )


def _quoted(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_MAX else f"{text[:_SHOWN_MAX]}..."


def shown(name: object) -> str:
    """``name`` fit for a one-line warning: as it is when it is a valid name, else quoted and cut short."""
    return str(name) if valid_host(name) else _quoted(name)


def _ip(text: object) -> IPAddress | None:
    """An address read as Go's ``net.ParseIP`` reads it: no spaces, no zone, IPv4-mapped IPv6 is IPv4."""
    if not isinstance(text, str) or "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _link_network(local: IPInterface) -> IPNetwork:
    # DHCPv6 leases show as /128 although the link is a /64; the reference widens them the same way.
    if local.version == 6 and local.network.prefixlen == 128:
        return ipaddress.IPv6Interface((local.ip, 64)).network
    return local.network


def machine_network(vips: Sequence[str], local_addresses: Iterable[IPInterface]) -> IPNetwork | None:
    """The subnet of the first local address (interface, then address order) whose prefix holds the first VIP.

    A VIP's own host route (/32 or /128, which keepalived adds on the host holding the VIP) is passed
    over, so every host finds the same network whether or not it holds the VIP right now.
    """
    vip = ipaddress.ip_address(vips[0])
    vip_set = {ipaddress.ip_address(v) for v in vips}
    for local in local_addresses:
        if local.ip in vip_set and local.network.prefixlen == local.max_prefixlen:
            continue
        network = _link_network(local)
        if network.version == vip.version and vip in network:
            return network
    return None


def own_address(vips: Sequence[str], local_addresses: Iterable[IPInterface]) -> IPAddress | None:
    """This host's address next to the first VIP: the first local non-VIP address whose prefix holds it."""
    vip = ipaddress.ip_address(vips[0])
    vip_set = {ipaddress.ip_address(v) for v in vips}
    for local in local_addresses:
        network = _link_network(local)
        if local.ip not in vip_set and network.version == vip.version and vip in network:
            return local.ip
    return None


def frontend_addr(vips: Sequence[str]) -> str:
    """``"::"`` when the first VIP is IPv6 (HAProxy must bind the v6 wildcard), else empty, as the reference."""
    return "::" if vips and ipaddress.ip_address(vips[0]).version == 6 else ""


def _unusable(
    text: str,
    address: IPAddress | None,
    *,
    family: int,
    vips: frozenset[IPAddress],
    cidr: str | None = None,
) -> str | None:
    """Why HAProxy cannot use ``text`` (read as ``address``) as a backend address, or None when it can.

    A loopback address reaches this host, not the node, unless the VIP is loopback too: a single-host lab
    where every API server listens on this host.
    """
    if text == "":
        return "empty"
    if address is None:
        return "not an IP address"
    if address.version != family:
        return f"not an IPv{family} address"
    if address in vips:
        return "an API VIP (traffic would loop back into the load balancer)"
    for flag, what in (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback and not any(vip.is_loopback for vip in vips), "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address == _LIMITED_BROADCAST, "the broadcast address"),
    ):
        if flag:
            return what
    if cidr is not None and address.version == 4:
        try:
            subnet = ipaddress.IPv4Interface(cidr).network
        except ValueError:
            return None
        # /31 and /32 have no network or broadcast address (RFC 3021).
        if subnet.prefixlen <= 30 and address in (subnet.network_address, subnet.broadcast_address):
            return f"the network or broadcast address of {cidr}"
    return None


def _json_strings(raw: object) -> list[str] | None:
    """A JSON list of strings (``null`` reads as an empty list, as Go decodes it), or None when it is not one."""
    if not isinstance(raw, str):
        return None
    try:
        values = json.loads(raw)
    except ValueError:
        return None
    if values is None:
        return []
    if isinstance(values, list) and all(isinstance(v, str) for v in values):
        return values
    return None


def _ovn_entries(annotations: Mapping[str, Any]) -> tuple[list[tuple[str, str | None]], str]:
    """(address, its CIDR entry or None) from host-cidrs, else from host-addresses, and a word on the source.

    As the reference: host-cidrs wins whenever it decodes (even to an empty list); host-addresses is read
    only when host-cidrs is absent or not a JSON list of strings.
    """
    cidrs = _json_strings(annotations.get(HOST_CIDRS_ANNOTATION))
    if cidrs is not None:
        return [(entry.split("/")[0], entry) for entry in cidrs], f"annotation {HOST_CIDRS_ANNOTATION}"
    plain = _json_strings(annotations.get(HOST_ADDRESSES_ANNOTATION))
    if plain is not None:
        return [(entry, None) for entry in plain], f"annotation {HOST_ADDRESSES_ANNOTATION}"
    present = [k for k in (HOST_CIDRS_ANNOTATION, HOST_ADDRESSES_ANNOTATION) if k in annotations]
    if present:
        return [], f"annotation {' / '.join(present)} (not a JSON list of strings)"
    return [], "the OVN annotations (neither is set)"


def node_address(
    node: Mapping[str, Any],
    *,
    family: int,
    network: IPNetwork | None,
    own: IPAddress | None,
    vips: frozenset[IPAddress],
    warnings: list[str],
) -> str | None:
    """The address the reference picks for ``node``, or None (with one warning) when it is not usable.

    With a machine network: the last InternalIP of the VIP's family, wherever it lies; only when the node
    has none, this host's own address when the OVN annotation lists it, else the first listed address of
    the family in the machine network that is not a VIP. Without a machine network: the first InternalIP
    whose family matches (the reference counts anything that is not IPv6 as IPv4 there). A pick HAProxy
    cannot use skips the node rather than falling back to another address the reference would not choose.
    """
    metadata = node.get("metadata") or {}
    name = shown(metadata.get("name") or "<unnamed>")
    internal: list[tuple[str, IPAddress | None]] = []
    for entry in (node.get("status") or {}).get("addresses") or []:
        if isinstance(entry, Mapping) and entry.get("type") == "InternalIP":
            text = entry.get("address")
            text = text if isinstance(text, str) else ""
            internal.append((text, _ip(text)))

    def checked(text: str, address: IPAddress | None, source: str, cidr: str | None = None) -> str | None:
        reason = _unusable(text, address, family=family, vips=vips, cidr=cidr)
        if reason is None:
            return str(address)
        warnings.append(f"node {name}: {source} {text!r} is {reason}; skipped")
        return None

    if network is None:
        for text, parsed in internal:
            if (parsed is not None and parsed.version == 6) == (family == 6):
                return checked(text, parsed, "InternalIP")
        warnings.append(f"node {name}: no IPv{family} InternalIP; skipped")
        return None
    of_family = [
        (text, parsed) for text, parsed in internal if parsed is not None and parsed.version == family
    ]
    if of_family:
        return checked(*of_family[-1], "InternalIP")
    entries, source = _ovn_entries(metadata.get("annotations") or {})
    parsed_entries = [(text, _ip(text), cidr) for text, cidr in entries]
    if own is not None and any(address == own for _, address, _ in parsed_entries):
        return checked(str(own), own, f"this host's own address in {source}")
    for text, address, cidr in parsed_entries:
        if address is not None and address.version == family and address not in vips and address in network:
            return checked(text, address, source, cidr)
    warnings.append(
        f"node {name}: no IPv{family} InternalIP, and no non-VIP address in machine network {network} "
        f"in {source}; skipped"
    )
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
    local_addresses: Sequence[IPInterface],
    topology: str = "",
) -> Discovered:
    """The reference's address rules applied to control-plane Nodes; sorted by address, port = api port.

    ``local_addresses`` are this host's interface addresses in interface and address order (``ip address``).
    """
    if not vips:
        raise ValueError("at least one API VIP is needed to choose the address family")
    family = ipaddress.ip_address(vips[0]).version
    network = machine_network(vips, local_addresses)
    own = own_address(vips, local_addresses)
    vip_set = frozenset(ipaddress.ip_address(v) for v in vips)
    warnings: list[str] = []
    if network is None:
        warnings.append(
            f"no local interface address has VIP {vips[0]} in its subnet; "
            f"using each node's first IPv{family} InternalIP"
        )
    candidates: list[Backend] = []
    for node in nodes:
        name = (node.get("metadata") or {}).get("name")
        if not valid_host(name):
            warnings.append(f"node {shown(name)}: name is not a DNS-1123 subdomain; skipped")
            continue
        address = node_address(node, family=family, network=network, own=own, vips=vip_set, warnings=warnings)
        if address is not None:
            candidates.append(Backend(host=name, address=address, port=api_port))
    return _finish(candidates, warnings=warnings, family=family, topology=topology, api_port=api_port)


def backends_from_endpointslices(
    slices: Iterable[Mapping[str, Any]], *, vips: Sequence[str], api_port: int, topology: str = ""
) -> Discovered:
    """API servers from the ``default/kubernetes`` EndpointSlice(s): ready endpoints of the VIP's family."""
    if not vips:
        raise ValueError("at least one API VIP is needed to choose the address family")
    family = ipaddress.ip_address(vips[0]).version
    vip_set = frozenset(ipaddress.ip_address(v) for v in vips)
    warnings: list[str] = []
    candidates: list[Backend] = []
    for slice_ in slices:
        slice_name = shown((slice_.get("metadata") or {}).get("name") or "<unnamed>")
        address_type = slice_.get("addressType")
        if address_type not in (f"IPv{family}", None):
            continue
        for endpoint in slice_.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready") is False:
                continue
            addresses = endpoint.get("addresses") or []
            named = endpoint.get("nodeName") or endpoint.get("hostname")
            if named is not None and not valid_host(named):
                warnings.append(
                    f"endpointslice {slice_name}: endpoint {shown(named)} (addresses {_quoted(addresses)}): "
                    "name is not a DNS-1123 subdomain; skipped"
                )
                continue
            for raw in addresses:
                text = raw if isinstance(raw, str) else repr(raw)
                address = _ip(raw)
                reason = _unusable(text, address, family=family, vips=vip_set)
                if reason is not None or address is None:
                    warnings.append(
                        f"endpointslice {slice_name}: address {_quoted(raw)} is {reason}; skipped"
                    )
                    continue
                host = named if named is not None else str(address)
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
