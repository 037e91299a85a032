"""Pure nftables steering logic: the NAT rules that send VIP:api-port to HAProxy, reading nft's listing, the plan."""

from __future__ import annotations

import ipaddress
import json
import shlex
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

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


class RulesetError(ValueError):
    """The output of ``nft -j list`` could not be understood."""


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


# ---- reading nft -j listings ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ListedRule:
    """Any rule of a listed table, reduced to what the plan needs."""

    family: str
    table: str
    chain: str
    handle: int | None
    comment: str | None
    expression: str
    vip: str
    # iptables-nft keeps ``-m comment`` inside an xtables match whose text nft cannot show.
    xt_comment: bool = False


@dataclass(frozen=True)
class Listing:
    """What ``nft -j list table`` printed for the tables we read (any number of them, merged)."""

    tables: frozenset[tuple[str, str]] = frozenset()
    chains: frozenset[tuple[str, str, str]] = frozenset()
    rules: tuple[ListedRule, ...] = ()
    # Sets, maps, flowtables, ... per (family, table): a table holding any of them is not ours to delete.
    objects: Mapping[tuple[str, str], int] = field(default_factory=dict)

    def has_table(self, family: str, table: str) -> bool:
        return (family, table) in self.tables

    def chains_of(self, family: str, table: str) -> frozenset[str]:
        return frozenset(c for f, t, c in self.chains if (f, t) == (family, table))

    def rules_of(self, family: str, table: str, chain: str | None = None) -> list[ListedRule]:
        return [
            r
            for r in self.rules
            if (r.family, r.table) == (family, table) and (chain is None or r.chain == chain)
        ]


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


def _match_parts(stmt: Mapping[str, Any]) -> tuple[str, str, str, str] | None:
    """(protocol-or-"meta", field, op prefix, value) of a plain match statement, else None."""
    m = stmt.get("match")
    if not isinstance(m, dict):
        return None
    left = m.get("left")
    op = m.get("op", "==")
    prefix = "" if op in ("==", "in") else f"{op} "
    right = _render_value(m.get("right"))
    if isinstance(left, dict) and isinstance(left.get("payload"), dict):
        p = left["payload"]
        return str(p.get("protocol")), str(p.get("field")), prefix, right
    if isinstance(left, dict) and isinstance(left.get("meta"), dict):
        return "meta", str(left["meta"].get("key")), prefix, right
    return None


def _render_statement(stmt: Mapping[str, Any]) -> str | None:
    """nft's text for the statements our rules use; None for statements that do not change the match.

    Anything unknown is rendered as its JSON, so it can never compare equal to a desired rule and
    is replaced rather than trusted.
    """
    if "counter" in stmt:
        return None
    parts = _match_parts(stmt)
    if parts is not None:
        proto, fld, prefix, right = parts
        if proto == "meta":
            return f'{fld} {prefix}"{right}"' if fld.endswith("name") else f"meta {fld} {prefix}{right}"
        return f"{proto} {fld} {prefix}{right}"
    if "dnat" in stmt:
        d = stmt["dnat"]
        family = d.get("family")
        addr = str(d.get("addr", ""))
        if ":" in addr:
            addr = f"[{addr}]"
        port = f":{d['port']}" if "port" in d else ""
        fam = f" {family}" if family else ""
        return f"dnat{fam} to {addr}{port}"
    if "redirect" in stmt:
        r = stmt["redirect"] or {}
        return f"redirect to :{r['port']}" if "port" in r else "redirect"
    if "xt" in stmt and isinstance(stmt["xt"], dict):
        x = stmt["xt"]
        return f'xt {x.get("type")} "{x.get("name")}"'
    return json.dumps(stmt, sort_keys=True)


def _canonical(expr: Sequence[Any]) -> str:
    """The rule's text in one spelling: ``meta l4proto tcp`` followed by ``th dport`` reads ``tcp dport``.

    nft folds the two itself when it lists a rule it recognises; folding here too keeps the
    comparison right whichever way a rule was written or listed.
    """
    stmts = [s for s in expr if isinstance(s, dict)]
    texts: list[str] = []
    index = 0
    while index < len(stmts):
        parts = _match_parts(stmts[index])
        after = _match_parts(stmts[index + 1]) if index + 1 < len(stmts) else None
        if (
            parts is not None
            and parts[:3] == ("meta", "l4proto", "")
            and after is not None
            and after[0] in ("th", parts[3])
        ):
            texts.append(f"{parts[3]} {after[1]} {after[2]}{after[3]}")
            index += 2
            continue
        text = _render_statement(stmts[index])
        if text:
            texts.append(text)
        index += 1
    return " ".join(texts)


def _daddr(expr: Sequence[Any]) -> str:
    for stmt in expr:
        parts = _match_parts(stmt) if isinstance(stmt, dict) else None
        if parts and parts[0] in ("ip", "ip6") and parts[1] == "daddr" and parts[2] == "":
            try:
                return vip_family(parts[3])[0]
            except ValueError:
                return ""
    return ""


def parse_listing(*docs: str) -> Listing:
    """Merge ``nft -j list table`` outputs (an empty string stands for a table that does not exist)."""
    tables: set[tuple[str, str]] = set()
    chains: set[tuple[str, str, str]] = set()
    rules: list[ListedRule] = []
    objects: Counter[tuple[str, str]] = Counter()
    for doc in docs:
        for item in _json_objects(doc):
            for kind, body in item.items():
                if kind == "metainfo" or not isinstance(body, dict):
                    continue
                family = str(body.get("family"))
                if kind == "table":
                    tables.add((family, str(body.get("name"))))
                elif kind == "chain":
                    chains.add((family, str(body.get("table")), str(body.get("name"))))
                elif kind == "rule":
                    expr = body.get("expr") or []
                    handle = body.get("handle")
                    comment = body.get("comment")
                    rules.append(
                        ListedRule(
                            family=family,
                            table=str(body.get("table")),
                            chain=str(body.get("chain")),
                            handle=handle if isinstance(handle, int) else None,
                            comment=comment if isinstance(comment, str) else None,
                            expression=_canonical(expr),
                            vip=_daddr(expr),
                            xt_comment=any(
                                isinstance(s, dict)
                                and isinstance(s.get("xt"), dict)
                                and s["xt"].get("type") == "match"
                                and s["xt"].get("name") == "comment"
                                for s in expr
                            ),
                        )
                    )
                else:
                    objects[(family, str(body.get("table")))] += 1
    return Listing(frozenset(tables), frozenset(chains), tuple(rules), dict(objects))


def listed_tables(nft_json: str) -> frozenset[tuple[str, str]]:
    """(family, name) of every table in ``nft -j list tables``."""
    return parse_listing(nft_json).tables


def our_rules(listing: Listing, spec: SteeringSpec, family: Family) -> list[Rule]:
    """Rules carrying our comment in any chain of ``family``'s table (other rules are never ours)."""
    return [
        Rule(r.chain, family, r.vip, r.expression, handle=r.handle)
        for r in listing.rules_of(family, spec.table)
        if r.comment == spec.comment
    ]


# ---- iptables-era rules --------------------------------------------------------------------------------
def parse_iptables_save(text: str) -> dict[str, list[str | None]]:
    """Per chain of ``*nat`` in ``iptables-save -t nat`` output: each rule's ``--comment``, in order."""
    chains: dict[str, list[str | None]] = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            continue
        if table != IPTABLES_TABLE or not line.startswith("-A "):
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        comment = None
        for i, word in enumerate(words[:-1]):
            if word == "--comment":
                comment = words[i + 1]
        chains.setdefault(words[1], []).append(comment)
    return chains


def needs_iptables_comments(listing: Listing, family: Family) -> bool:
    """Whether ``family``'s nat table holds commented iptables rules whose text only iptables-save shows."""
    return any(
        r.xt_comment and r.comment is None
        for chain in IPTABLES_CHAINS
        for r in listing.rules_of(family, IPTABLES_TABLE, chain)
    )


def iptables_era_rules(
    listing: Listing,
    spec: SteeringSpec,
    family: Family,
    comments: Mapping[str, Sequence[str | None]] | None,
) -> list[ListedRule]:
    """The reference's iptables-era rules in ``family``'s nat PREROUTING/OUTPUT: those with our comment.

    ``comments`` is ``parse_iptables_save`` of the same table. Both list a chain's rules in kernel
    order, so the n-th rule of one is the n-th of the other; a chain whose rule counts differ (it
    changed between the two reads) is left for the next start rather than guessed at.
    """
    found: list[ListedRule] = []
    for chain in IPTABLES_CHAINS:
        rules = listing.rules_of(family, IPTABLES_TABLE, chain)
        texts = list((comments or {}).get(chain, []))
        aligned = comments is not None and len(texts) == len(rules)
        for index, rule in enumerate(rules):
            if rule.comment == spec.comment or (aligned and rule.xt_comment and texts[index] == spec.comment):
                found.append(rule)
    return found


# ---- the plan ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """One ``nft -f -`` script (None: nothing to do) and the leftovers of earlier monitors it removes."""

    script: str | None
    leftovers: tuple[str, ...] = ()


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _delete_rule_lines(rules: Iterable[ListedRule | Rule], family: str, table: str) -> list[str]:
    return [
        f"delete rule {family} {table} {r.chain} handle {r.handle}"
        for r in sorted(rules, key=lambda r: (r.chain, r.handle or 0))
        if r.handle is not None
    ]


def _chain_decl(spec: SteeringSpec, family: Family, chain: str) -> str:
    hook = "prerouting" if chain == spec.prerouting_chain else "output"
    return f"add chain {family} {spec.table} {chain} {{ type nat hook {hook} priority -100; }}"


def _removal_lines(listing: Listing, spec: SteeringSpec, family: str, table: str) -> tuple[list[str], int]:
    """Delete our rules in one table, then our chains and the table if nothing else is left in them."""
    if not listing.has_table(family, table):
        return [], 0
    rules = listing.rules_of(family, table)
    ours = [r for r in rules if r.comment == spec.comment]
    others = Counter(r.chain for r in rules if r.comment != spec.comment)
    chains = listing.chains_of(family, table)
    empty = sorted(c for c in chains if c in (spec.prerouting_chain, spec.output_chain) and others[c] == 0)
    lines = _delete_rule_lines(ours, family, table)
    lines.extend(f"delete chain {family} {table} {c}" for c in empty)
    if chains <= set(empty) and not listing.objects.get((family, table)):
        lines.append(f"delete table {family} {table}")
    return lines, len(ours)


def _ensure_lines(listing: Listing, spec: SteeringSpec, family: Family, desired: list[Rule]) -> list[str]:
    """Keep matching rules (first copy wins), delete duplicates and strays by handle, insert the missing."""
    wanted = Counter(desired)
    keep: Counter[Rule] = Counter()
    delete: list[Rule] = []
    for rule in our_rules(listing, spec, family):
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
    lines = _delete_rule_lines(delete, family, spec.table)
    if missing:
        lines.append(f"add table {family} {spec.table}")
        existing = listing.chains_of(family, spec.table)
        # A chain that exists keeps its own declaration: nft rejects redeclaring another priority.
        lines.extend(
            _chain_decl(spec, family, chain)
            for chain in (spec.prerouting_chain, spec.output_chain)
            if chain not in existing and any(r.chain == chain for r in missing)
        )
        lines.extend(
            f"insert rule {family} {spec.table} {r.chain} {r.spelling or r.expression} "
            f"comment {_quote(spec.comment)}"
            for r in missing
        )
    return lines


def sweep_tables(spec: SteeringSpec) -> list[tuple[str, str]]:
    """Every table the start-up sweep reads (when it exists)."""
    return [
        *((family, spec.table) for family in FAMILIES),
        (OLD_TABLE_FAMILY, spec.table),
        *((family, IPTABLES_TABLE) for family in FAMILIES),
    ]


def _sweep_lines(
    listing: Listing,
    spec: SteeringSpec,
    iptables_comments: Mapping[Family, Mapping[str, Sequence[str | None]]],
) -> tuple[list[str], list[str]]:
    lines: list[str] = []
    said: list[str] = []
    old, count = _removal_lines(listing, spec, OLD_TABLE_FAMILY, spec.table)
    if old:
        lines.extend(old)
        said.append(f"{count} rule(s) of table {OLD_TABLE_FAMILY} {spec.table}")
    families = vip_families(spec)
    for family in FAMILIES:
        if family not in families:
            stale, count = _removal_lines(listing, spec, family, spec.table)
            if stale:
                lines.extend(stale)
                said.append(f"{count} rule(s) of table {family} {spec.table} (no VIP of that family)")
        era = iptables_era_rules(listing, spec, family, iptables_comments.get(family))
        if era:
            lines.extend(_delete_rule_lines(era, family, IPTABLES_TABLE))
            said.append(f"{len(era)} iptables-era rule(s) of table {family} {IPTABLES_TABLE}")
    return lines, said


def plan(
    listing: Listing,
    spec: SteeringSpec,
    *,
    steer: bool,
    sweep: bool = False,
    iptables_comments: Mapping[Family, Mapping[str, Sequence[str | None]]] | None = None,
) -> Plan:
    """The script that makes the VIP families' tables hold our rules (steer) or none of them (not steer).

    With ``sweep`` (once, at start) it also removes what earlier monitors left that would keep
    steering: rules with our comment in our old ``inet`` table and in the table of a family no VIP
    has (then those chains and tables when empty), and the iptables-era rules with our comment in
    ``ip nat``/``ip6 nat`` (never their chains: iptables owns those). Rules without our comment, and
    chains or tables holding anything else, are never touched. Everything goes in one transaction.
    """
    lines: list[str] = []
    said: list[str] = []
    if sweep:
        lines, said = _sweep_lines(listing, spec, iptables_comments or {})
    desired = desired_rules(spec)
    for family in vip_families(spec):
        if steer:
            lines.extend(_ensure_lines(listing, spec, family, [r for r in desired if r.family == family]))
        else:
            lines.extend(_removal_lines(listing, spec, family, spec.table)[0])
    return Plan("\n".join(lines) + "\n" if lines else None, tuple(said))
