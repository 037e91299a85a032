"""Reading what exists: ``nft -j list`` output and ``iptables-save`` comments, reduced to our rules and leftovers."""

from __future__ import annotations

import json
import shlex
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.steering.rules import IPTABLES_CHAINS, IPTABLES_TABLE, Family, Rule, SteeringSpec, vip_family


class RulesetError(ValueError):
    """The output of ``nft -j list`` could not be understood."""


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
