"""Pure nftables steering logic: the NAT rules that send VIP:api-port to HAProxy, parsing and diffing them."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Family = Literal["ip", "ip6"]


@dataclass(frozen=True)
class SteeringSpec:
    """Where our rules live and what they match; the defaults are the reference monitor's names."""

    table: str = "ocp_nat"
    prerouting_chain: str = "ocp_prerouting"
    output_chain: str = "ocp_output"
    comment: str = "OCP_API_LB_REDIRECT"
    vips: tuple[str, ...] = ()
    api_port: int = 6443
    lb_port: int = 9445


@dataclass(frozen=True)
class Rule:
    """One steering rule as nft prints it (without the comment); ``handle`` is ignored when comparing."""

    chain: str
    family: Family
    vip: str
    expression: str
    handle: int | None = field(default=None, compare=False)


class RulesetError(ValueError):
    """The output of ``nft -j list table`` could not be understood."""


def _vip_family(vip: str) -> tuple[str, Family]:
    """Canonical text of a VIP (nft prints IPv6 compressed) and its nft family keyword."""
    try:
        addr = ipaddress.ip_address(vip.strip())
    except ValueError as exc:
        raise ValueError(f"steering: VIP {vip!r} is not an IP address; fix --api-vips") from exc
    return str(addr), ("ip6" if addr.version == 6 else "ip")


def desired_rules(spec: SteeringSpec) -> list[Rule]:
    """The rules that must exist while HAProxy is healthy, one prerouting and one output rule per VIP.

    Prerouting uses DNAT to the VIP itself at the LB port, i.e. only the port is rewritten. REDIRECT
    would rewrite the destination to the primary address of the *incoming* interface, which breaks
    when pod traffic arrives on an interface without an address of that family (some CNIs); keeping
    the VIP as destination works on every ingress interface and HAProxy listens on all addresses.
    Locally generated traffic to a local VIP is routed through ``lo``; REDIRECT is exact there.
    """
    rules: list[Rule] = []
    seen: set[str] = set()
    for raw in spec.vips:
        vip, family = _vip_family(raw)
        if vip in seen:
            continue
        seen.add(vip)
        target = f"[{vip}]" if family == "ip6" else vip
        match = f"{family} daddr {vip} tcp dport {spec.api_port}"
        rules.append(
            Rule(
                chain=spec.prerouting_chain,
                family=family,
                vip=vip,
                expression=f"{match} dnat {family} to {target}:{spec.lb_port}",
            )
        )
        rules.append(
            Rule(
                chain=spec.output_chain,
                family=family,
                vip=vip,
                expression=f'oif "lo" {match} redirect to :{spec.lb_port}',
            )
        )
    return rules


def _json_objects(nft_json: str) -> list[Mapping[str, Any]]:
    if not nft_json.strip():
        return []
    try:
        doc = json.loads(nft_json)
    except json.JSONDecodeError as exc:
        raise RulesetError(f"nft -j output is not JSON: {exc}") from exc
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise RulesetError("nft -j output has no 'nftables' list")
    return [item for item in items if isinstance(item, dict)]


def _render_value(value: Any) -> str:
    if isinstance(value, str | int):
        return str(value)
    return json.dumps(value, sort_keys=True)


def _render_statement(stmt: Mapping[str, Any]) -> str | None:
    """nft's text for the statements our rules use; None for statements that do not change the match.

    Anything unknown is rendered as its JSON, so it can never compare equal to a desired rule and
    is replaced rather than trusted.
    """
    if "counter" in stmt:
        return None
    if "match" in stmt:
        m = stmt["match"]
        left = m.get("left", {})
        right = _render_value(m.get("right"))
        op = m.get("op", "==")
        prefix = "" if op in ("==", "in") else f"{op} "
        if isinstance(left, dict) and "payload" in left:
            p = left["payload"]
            return f"{p.get('protocol')} {p.get('field')} {prefix}{right}"
        if isinstance(left, dict) and "meta" in left:
            return f'{left["meta"].get("key")} {prefix}"{right}"'
    if "dnat" in stmt:
        d = stmt["dnat"]
        family = d.get("family")
        addr = str(d.get("addr", ""))
        if family == "ip6":
            addr = f"[{addr}]"
        port = f":{d['port']}" if "port" in d else ""
        fam = f" {family}" if family else ""
        return f"dnat{fam} to {addr}{port}"
    if "redirect" in stmt:
        r = stmt["redirect"] or {}
        return f"redirect to :{r['port']}" if "port" in r else "redirect"
    return json.dumps(stmt, sort_keys=True)


def _daddr(expr: Sequence[Any]) -> tuple[Family, str] | None:
    for stmt in expr:
        m = stmt.get("match") if isinstance(stmt, dict) else None
        if not isinstance(m, dict) or m.get("op", "==") != "==":
            continue
        left = m.get("left")
        if isinstance(left, dict) and isinstance(left.get("payload"), dict):
            p = left["payload"]
            if p.get("field") == "daddr" and p.get("protocol") in ("ip", "ip6"):
                try:
                    vip, family = _vip_family(str(m.get("right")))
                except ValueError:
                    return None
                return family, vip
    return None


def parse_ruleset(nft_json: str, spec: SteeringSpec) -> list[Rule]:
    """Our rules (any chain of our table carrying our comment) from ``nft -j list table inet TABLE``.

    A rule with our comment but no recognisable ``ip/ip6 daddr`` gets vip "" so the plan deletes it.
    """
    rules: list[Rule] = []
    for item in _json_objects(nft_json):
        rule = item.get("rule")
        if not isinstance(rule, dict):
            continue
        if rule.get("table") != spec.table or rule.get("comment") != spec.comment:
            continue
        expr = rule.get("expr") or []
        parts = [
            text for stmt in expr if isinstance(stmt, dict) for text in [_render_statement(stmt)] if text
        ]
        found = _daddr(expr)
        family, vip = found if found else ("ip", "")
        handle = rule.get("handle")
        rules.append(
            Rule(
                chain=str(rule.get("chain")),
                family=family,
                vip=vip,
                expression=" ".join(parts),
                handle=handle if isinstance(handle, int) else None,
            )
        )
    return rules


@dataclass(frozen=True)
class TableContents:
    """What else lives in our table, so removal never deletes somebody else's objects."""

    exists: bool = False
    chains: frozenset[str] = frozenset()
    other_rules_per_chain: Mapping[str, int] = field(default_factory=dict)
    other_objects: int = 0


def parse_table(nft_json: str, spec: SteeringSpec) -> TableContents:
    """Chains of our table, how many foreign rules each holds, and how many non-chain objects exist."""
    chains: set[str] = set()
    others: Counter[str] = Counter()
    objects = 0
    exists = False
    for item in _json_objects(nft_json):
        for kind, body in item.items():
            if kind == "metainfo" or not isinstance(body, dict):
                continue
            if kind == "table":
                exists = exists or body.get("name") == spec.table
                continue
            if body.get("table") != spec.table:
                continue
            if kind == "chain":
                chains.add(str(body.get("name")))
            elif kind == "rule":
                if body.get("comment") != spec.comment:
                    others[str(body.get("chain"))] += 1
            else:
                objects += 1
    return TableContents(
        exists=exists, chains=frozenset(chains), other_rules_per_chain=dict(others), other_objects=objects
    )


def _chain_decl(spec: SteeringSpec, chain: str) -> str:
    hook = (
        "type nat hook prerouting priority dstnat;"
        if chain == spec.prerouting_chain
        else "type nat hook output priority -100;"
    )
    return f"add chain inet {spec.table} {chain} {{ {hook} }}"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _delete_lines(rules: Iterable[Rule], spec: SteeringSpec) -> list[str]:
    return [
        f"delete rule inet {spec.table} {r.chain} handle {r.handle}"
        for r in sorted(rules, key=lambda r: (r.chain, r.handle or 0))
        if r.handle is not None
    ]


def plan(
    current: list[Rule],
    desired: list[Rule],
    spec: SteeringSpec,
    *,
    existing_chains: frozenset[str] | None = None,
) -> str | None:
    """An ``nft -f -`` script (one transaction) that makes current equal desired, or None if it already is.

    Matching rules are kept (first one wins), duplicates and strays are deleted by handle, missing
    ones are added. ``existing_chains`` (from ``parse_table``) avoids redeclaring a chain someone
    else created with another priority, which nft rejects; None means "declare both".
    """
    wanted = Counter(desired)
    keep: Counter[Rule] = Counter()
    delete: list[Rule] = []
    for rule in current:
        if keep[rule] < wanted[rule]:
            keep[rule] += 1
        else:
            delete.append(rule)
    still_needed = wanted - keep
    missing: list[Rule] = []
    for rule in desired:
        if still_needed[rule] > 0:
            still_needed[rule] -= 1
            missing.append(rule)
    if not delete and not missing:
        return None
    lines: list[str] = []
    if missing:
        lines.append(f"add table inet {spec.table}")
        chains = sorted({r.chain for r in missing})
        for chain in chains:
            if existing_chains is None or chain not in existing_chains:
                lines.append(_chain_decl(spec, chain))
    lines.extend(_delete_lines(delete, spec))
    lines.extend(
        f"add rule inet {spec.table} {r.chain} {r.expression} comment {_quote(spec.comment)}" for r in missing
    )
    return "\n".join(lines) + "\n"


def plan_removal(nft_json: str, spec: SteeringSpec) -> str | None:
    """Delete our rules, then our chains and table if nothing else is left in them; None if nothing to do."""
    ours = parse_ruleset(nft_json, spec)
    contents = parse_table(nft_json, spec)
    if not ours and not contents.exists:
        return None
    lines = _delete_lines(ours, spec)
    own_chains = {spec.prerouting_chain, spec.output_chain}
    empty = sorted(
        c for c in contents.chains if c in own_chains and contents.other_rules_per_chain.get(c, 0) == 0
    )
    lines.extend(f"delete chain inet {spec.table} {c}" for c in empty)
    if contents.chains <= set(empty) and not contents.other_objects:
        lines.append(f"delete table inet {spec.table}")
    return "\n".join(lines) + "\n" if lines else None
