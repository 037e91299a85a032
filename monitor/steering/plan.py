"""The plan: one ``nft -f -`` transaction that installs or removes our rules and sweeps earlier leftovers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from monitor.steering.listing import ListedRule, Listing, iptables_era_rules, our_rules
from monitor.steering.rules import (
    FAMILIES,
    IPTABLES_TABLE,
    OLD_TABLE_FAMILY,
    Family,
    Rule,
    SteeringSpec,
    desired_rules,
    vip_families,
)


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
