"""Our steering rules: where they live (SteeringSpec), what they say (Rule), and which must exist per VIP."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

Family = Literal["ip", "ip6"]
FAMILIES: tuple[Family, ...] = ("ip", "ip6")
# Where earlier monitors left rules that would keep steering after an upgrade (see plan(sweep=True)):
# our own first releases used one table of family inet; the reference used iptables (iptables-nft
# keeps those in table nat of family ip/ip6) before it moved to nftables.
OLD_TABLE_FAMILY = "inet"
IPTABLES_TABLE = "nat"
IPTABLES_CHAINS = ("PREROUTING", "OUTPUT")


@dataclass(frozen=True)
class SteeringSpec:
    """Where our rules live and what they match; the defaults are the reference monitor's names.

    The table exists once per VIP family (``ip TABLE`` for IPv4 VIPs, ``ip6 TABLE`` for IPv6): that is
    where OpenShift's keepalived monitor looks for both rules of the first VIP.
    """

    table: str = "ocp_nat"
    prerouting_chain: str = "ocp_prerouting"
    output_chain: str = "ocp_output"
    comment: str = "OCP_API_LB_REDIRECT"
    vips: tuple[str, ...] = ()
    api_port: int = 6443
    lb_port: int = 9445


@dataclass(frozen=True)
class Rule:
    """One of our rules: chain, the VIP's family (= its table's family), and its text as nft lists it.

    ``handle`` and ``spelling`` (how we write the rule; nft lists the same bytecode back as
    ``expression``) are ignored when comparing.
    """

    chain: str
    family: Family
    vip: str
    expression: str
    handle: int | None = field(default=None, compare=False)
    spelling: str = field(default="", compare=False)


def vip_family(vip: str) -> tuple[str, Family]:
    """Canonical text of a VIP (nft prints IPv6 compressed) and its nft family keyword."""
    try:
        addr = ipaddress.ip_address(vip.strip())
    except ValueError as exc:
        raise ValueError(f"steering: VIP {vip!r} is not an IP address; fix --api-vips") from exc
    return str(addr), ("ip6" if addr.version == 6 else "ip")


def vip_families(spec: SteeringSpec) -> tuple[Family, ...]:
    """The families that hold our rules, in the order the VIPs name them (the first VIP's first)."""
    seen: list[Family] = []
    for raw in spec.vips:
        family = vip_family(raw)[1]
        if family not in seen:
            seen.append(family)
    return tuple(seen)


def desired_rules(spec: SteeringSpec) -> list[Rule]:
    """The rules that must exist while HAProxy is healthy, one prerouting and one output rule per VIP.

    Prerouting uses DNAT to the VIP itself at the LB port, i.e. only the port is rewritten. REDIRECT
    would rewrite the destination to the primary address of the *incoming* interface, which breaks
    when pod traffic arrives on an interface without an address of that family (some CNIs); keeping
    the VIP as destination works on every ingress interface and HAProxy listens on all addresses.
    Locally generated traffic to a local VIP is routed through ``lo``; REDIRECT is exact there.

    Each rule is written as the reference writes it (``meta l4proto tcp th dport``, ``oifname "lo"``
    after the port); nft lists that bytecode back as ``tcp dport``, which is what ``expression`` holds.
    """
    rules: list[Rule] = []
    seen: set[str] = set()
    for raw in spec.vips:
        vip, family = vip_family(raw)
        if vip in seen:
            continue
        seen.add(vip)
        target = f"[{vip}]" if family == "ip6" else vip
        listed = f"{family} daddr {vip} tcp dport {spec.api_port}"
        written = f"{family} daddr {vip} meta l4proto tcp th dport {spec.api_port}"
        dnat = f"dnat to {target}:{spec.lb_port}"
        redirect = f'oifname "lo" redirect to :{spec.lb_port}'
        rules.append(
            Rule(spec.prerouting_chain, family, vip, f"{listed} {dnat}", spelling=f"{written} {dnat}")
        )
        rules.append(
            Rule(spec.output_chain, family, vip, f"{listed} {redirect}", spelling=f"{written} {redirect}")
        )
    return rules
