"""Test oracle: the reference monitor's per-node address rule, restated from its Go source in a few lines.

Written from baremetal-runtimecfg's ``getSortedBackends``, ``getNodeIpForRequestedIpStack``,
``GetLocalCIDRByIP`` and ``getInterfaceAndNonVIPAddr`` (pkg/config/node.go, net.go; pkg/utils), on purpose
in their shape (strings, Go's parse-then-print family test) and not in ours, so that a shared mistake is
unlikely. Not product code: the tests compare ``monitor.discovery`` against it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from typing import Any

HOST_CIDRS = "k8s.ovn.org/host-cidrs"
HOST_ADDRESSES = "k8s.ovn.org/host-addresses"


def go_string(text: str) -> str:
    """``net.ParseIP(text).String()``: "<nil>" when Go cannot parse it; IPv4-mapped IPv6 prints as IPv4."""
    if "%" in text:
        return "<nil>"
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return "<nil>"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def is_ipv4(text: str) -> bool:
    return "." in go_string(text)  # utils.IsIPv4


def is_ipv6(text: str) -> bool:
    return ":" in go_string(text)  # utils.IsIPv6


def ip_in_cidr(ip_text: str, cidr: str) -> bool | None:
    """``utils.IpInCidr``; None stands for its error return."""
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None
    printed = go_string(ip_text)
    if printed == "<nil>":
        return None
    ip = ipaddress.ip_address(printed)
    return ip.version == network.version and ip in network


def go_unmarshal_strings(raw: str) -> list[str] | None:
    """``json.Unmarshal`` into ``[]string``; None stands for an error (mixed lists are never generated)."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def local_cidr(vip: str, local: Sequence[str]) -> str | None:
    """``GetLocalCIDRByIP``: the first ``addr/prefix`` (a /128 read as /64) that is the VIP or holds it."""
    for entry in local:
        widened = entry.replace("/128", "/64", 1)
        if go_string(entry.split("/")[0]) == go_string(vip) or ip_in_cidr(vip, widened):
            return widened
    return None


def own_address(vips: Sequence[str], local: Sequence[str]) -> str | None:
    """``getInterfaceAndNonVIPAddr`` without the nodeip file and the routing check: first non-VIP holding vips[0]."""
    for entry in local:
        ip = entry.split("/")[0]
        if go_string(ip) in {go_string(v) for v in vips}:
            continue
        if ip_in_cidr(vips[0], entry.replace("/128", "/64", 1)):
            return go_string(ip)
    return None


def pick(
    node: Mapping[str, Any], vips: Sequence[str], machine_network: str | None, own: str | None
) -> tuple[str, str | None] | None:
    """(address, the host-cidrs entry it came from) as the reference picks it; None when it skips the node."""
    addresses = (node.get("status") or {}).get("addresses") or []
    if machine_network is None:
        # getSortedBackends' branch for "no local subnet holds the VIP".
        for entry in addresses:
            if entry["type"] == "InternalIP" and is_ipv6(entry["address"]) == is_ipv6(vips[0]):
                return (entry["address"], None) if entry["address"] != "" else None
        return None
    want_v4, want_v6 = is_ipv4(vips[0]), is_ipv6(vips[0])
    addr = ""
    for entry in addresses:
        family_ok = (is_ipv4(entry["address"]) and want_v4) or (is_ipv6(entry["address"]) and want_v6)
        if entry["type"] == "InternalIP" and family_ok:
            addr = entry["address"]
    if addr != "":
        return addr, None
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    hosts: list[tuple[str, str | None]]
    cidrs = go_unmarshal_strings(annotations.get(HOST_CIDRS, ""))
    if cidrs is not None:
        hosts = [(cidr.split("/")[0], cidr) for cidr in cidrs]
    else:
        hosts = [(h, None) for h in go_unmarshal_strings(annotations.get(HOST_ADDRESSES, "")) or []]
    if own is None:
        return None  # GetVRRPConfig failed: the node is skipped with an error
    for host, _cidr in hosts:
        if host == own:
            return host, None  # configured on this host: the annotation's prefix cannot make it unusable
    for host, cidr in hosts:
        if host in vips:
            continue
        if (is_ipv4(host) and not want_v4) or (is_ipv6(host) and not want_v6):
            continue
        if ip_in_cidr(host, machine_network):
            return host, cidr
    return "", None  # the reference then renders a backend with an empty address


def usable(address: str, cidr: str | None, vips: Sequence[str]) -> bool:
    """Whether HAProxy can send API traffic to ``address`` (our stated exceptions to following the reference)."""
    printed = go_string(address)
    if printed == "<nil>":
        return False
    ip = ipaddress.ip_address(printed)
    if ip.version != ipaddress.ip_address(vips[0]).version or printed in {go_string(v) for v in vips}:
        return False
    if ip.is_loopback and not any(ipaddress.ip_address(v).is_loopback for v in vips):
        return (
            False  # it would reach this host, not the node (a lab with a loopback VIP runs all on one host)
        )
    if ip.is_unspecified or ip.is_link_local or ip.is_multicast:
        return False
    if printed == "255.255.255.255":
        return False
    if cidr is not None and ip.version == 4:
        try:
            subnet = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return True
        if subnet.prefixlen <= 30 and ip in (subnet.network_address, subnet.broadcast_address):
            return False
    return True
