"""Pure steering logic: desired rules, reading nft's JSON listing, and the one-transaction plan."""

from __future__ import annotations

import json
from typing import Any

import pytest

from monitor.steering.listing import (
    Listing,
    iptables_era_rules,
    needs_iptables_comments,
    our_rules,
    parse_iptables_save,
    parse_listing,
)
from monitor.steering.plan import plan
from monitor.steering.rules import SteeringSpec, desired_rules, vip_families

VIP4, VIP4B, VIP6 = "192.0.2.10", "192.0.2.11", "2001:db8::10"
SPEC = SteeringSpec(vips=(VIP4, "2001:DB8:0::10"))
COMMENT = SPEC.comment


# ---- builders for nft -j listings ----------------------------------------------------------------------
def _match(proto: str, fld: str, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": {"payload": {"protocol": proto, "field": fld}}, "right": right}}


def _meta(key: str, right: Any) -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"meta": {"key": key}}, "right": right}}


def _rule(
    family: str, table: str, chain: str, handle: int, expr: list[dict[str, Any]], comment: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"family": family, "table": table, "chain": chain, "handle": handle, "expr": expr}
    if comment is not None:
        body["comment"] = comment
    return {"rule": body}


def _doc(family: str, table: str, chains: list[str], *rules: dict[str, Any], extra: int = 0) -> str:
    items: list[dict[str, Any]] = [
        {"metainfo": {"json_schema_version": 1}},
        {"table": {"family": family, "name": table, "handle": 1}},
        *(
            {"chain": {"family": family, "table": table, "name": c, "handle": i}}
            for i, c in enumerate(chains)
        ),
        *({"set": {"family": family, "table": table, "name": f"s{i}"}} for i in range(extra)),
        *rules,
    ]
    return json.dumps({"nftables": items})


def _prerouting(family: str, vip: str, handle: int, comment: str | None = COMMENT) -> dict[str, Any]:
    """What nft lists for the reference's prerouting rule (it folds meta l4proto + th into tcp dport)."""
    return _rule(
        family,
        "ocp_nat",
        "ocp_prerouting",
        handle,
        [
            _match(family, "daddr", vip),
            _match("tcp", "dport", 6443),
            {"counter": {"packets": 3, "bytes": 180}},
            {"dnat": {"addr": vip, "port": 9445}},
        ],
        comment,
    )


def _output(family: str, vip: str, handle: int, comment: str | None = COMMENT) -> dict[str, Any]:
    return _rule(
        family,
        "ocp_nat",
        "ocp_output",
        handle,
        [
            _match(family, "daddr", vip),
            _match("tcp", "dport", 6443),
            _meta("oifname", "lo"),
            {"redirect": {"port": 9445}},
        ],
        comment,
    )


CHAINS = ["ocp_prerouting", "ocp_output"]


def _installed(spec: SteeringSpec = SPEC) -> Listing:
    """Exactly the desired rules, as nft would list them."""
    docs: dict[str, list[dict[str, Any]]] = {}
    for handle, r in enumerate(desired_rules(spec), start=10):
        build = _prerouting if r.chain == "ocp_prerouting" else _output
        docs.setdefault(r.family, []).append(build(r.family, r.vip, handle))
    return parse_listing(*(_doc(f, "ocp_nat", CHAINS, *rules) for f, rules in docs.items()))


def _lines(listing: Listing, spec: SteeringSpec = SPEC, **kw: Any) -> list[str]:
    script = plan(listing, spec, **kw).script
    assert script is not None
    return script.splitlines()


# ---- desired rules -------------------------------------------------------------------------------------
def test_each_vip_gets_a_prerouting_dnat_and_a_loopback_output_redirect_in_its_own_family() -> None:
    rules = desired_rules(SPEC)
    assert [(r.chain, r.family, r.vip) for r in rules] == [
        ("ocp_prerouting", "ip", VIP4),
        ("ocp_output", "ip", VIP4),
        ("ocp_prerouting", "ip6", VIP6),
        ("ocp_output", "ip6", VIP6),
    ]
    # As nft lists them back ...
    assert rules[0].expression == f"ip daddr {VIP4} tcp dport 6443 dnat to {VIP4}:9445"
    assert rules[2].expression == f"ip6 daddr {VIP6} tcp dport 6443 dnat to [{VIP6}]:9445"
    assert rules[3].expression == f'ip6 daddr {VIP6} tcp dport 6443 oifname "lo" redirect to :9445'
    # ... and as the reference writes them.
    assert rules[0].spelling == f"ip daddr {VIP4} meta l4proto tcp th dport 6443 dnat to {VIP4}:9445"
    assert (
        rules[1].spelling == f'ip daddr {VIP4} meta l4proto tcp th dport 6443 oifname "lo" redirect to :9445'
    )


def test_a_vip_listed_twice_gives_one_pair_of_rules() -> None:
    assert len(desired_rules(SteeringSpec(vips=(VIP4, VIP4)))) == 2


def test_a_vip_that_is_not_an_address_is_rejected_with_the_option_name() -> None:
    with pytest.raises(ValueError, match="api-vips"):
        desired_rules(SteeringSpec(vips=("api.example",)))


def test_the_first_vips_family_comes_first() -> None:
    assert vip_families(SteeringSpec(vips=(VIP6, VIP4, VIP4B))) == ("ip6", "ip")
    assert vip_families(SteeringSpec(vips=(VIP4, VIP4B))) == ("ip",)


# ---- reading listings ----------------------------------------------------------------------------------
def test_the_references_rules_parse_equal_to_ours_ignoring_counters_and_handles() -> None:
    listing = parse_listing(_doc("ip", "ocp_nat", CHAINS, _prerouting("ip", VIP4, 7), _output("ip", VIP4, 8)))
    parsed = our_rules(listing, SPEC, "ip")
    assert parsed == desired_rules(SPEC)[:2]
    assert [r.handle for r in parsed] == [7, 8]


def test_an_unfolded_meta_l4proto_and_th_dport_listing_is_the_same_rule() -> None:
    rule = _rule(
        "ip",
        "ocp_nat",
        "ocp_prerouting",
        4,
        [
            _match("ip", "daddr", VIP4),
            _meta("l4proto", "tcp"),
            _match("th", "dport", 6443),
            {"dnat": {"addr": VIP4, "port": 9445}},
        ],
        COMMENT,
    )
    assert (
        our_rules(parse_listing(_doc("ip", "ocp_nat", CHAINS, rule)), SPEC, "ip") == desired_rules(SPEC)[:1]
    )


def test_an_output_rule_matching_oif_instead_of_oifname_is_not_ours_as_it_stands() -> None:
    old = _rule(
        "ip",
        "ocp_nat",
        "ocp_output",
        5,
        [
            _meta("oif", "lo"),
            _match("ip", "daddr", VIP4),
            _match("tcp", "dport", 6443),
            {"redirect": {"port": 9445}},
        ],
        COMMENT,
    )
    parsed = our_rules(parse_listing(_doc("ip", "ocp_nat", CHAINS, old)), SPEC, "ip")
    assert parsed and parsed[0] != desired_rules(SPEC)[1]


def test_rules_without_our_comment_or_in_another_familys_table_are_not_ours() -> None:
    listing = parse_listing(
        _doc("ip", "ocp_nat", CHAINS, _prerouting("ip", VIP4, 9, comment=None)),
        _doc("inet", "ocp_nat", CHAINS, _prerouting("inet", VIP4, 3)),
    )
    assert our_rules(listing, SPEC, "ip") == []


# ---- ensure --------------------------------------------------------------------------------------------
def test_nothing_to_do_when_every_rule_is_installed() -> None:
    assert plan(_installed(), SPEC, steer=True).script is None


def test_an_empty_system_gets_both_tables_chains_and_rules_inserted_at_the_head_in_one_script() -> None:
    lines = _lines(Listing(), steer=True)
    match, c = "meta l4proto tcp th dport 6443", f'comment "{COMMENT}"'
    assert lines == [
        "add table ip ocp_nat",
        "add chain ip ocp_nat ocp_prerouting { type nat hook prerouting priority -100; }",
        "add chain ip ocp_nat ocp_output { type nat hook output priority -100; }",
        f"insert rule ip ocp_nat ocp_prerouting ip daddr {VIP4} {match} dnat to {VIP4}:9445 {c}",
        f'insert rule ip ocp_nat ocp_output ip daddr {VIP4} {match} oifname "lo" redirect to :9445 {c}',
        "add table ip6 ocp_nat",
        "add chain ip6 ocp_nat ocp_prerouting { type nat hook prerouting priority -100; }",
        "add chain ip6 ocp_nat ocp_output { type nat hook output priority -100; }",
        f"insert rule ip6 ocp_nat ocp_prerouting ip6 daddr {VIP6} {match} dnat to [{VIP6}]:9445 {c}",
        f'insert rule ip6 ocp_nat ocp_output ip6 daddr {VIP6} {match} oifname "lo" redirect to :9445 {c}',
    ]


def test_a_second_vip_of_one_family_gets_its_own_pair_beside_the_first() -> None:
    spec = SteeringSpec(vips=(VIP4, VIP4B))
    # What the reference leaves: rules for the first VIP only (it finds rules by comment alone).
    listing = parse_listing(_doc("ip", "ocp_nat", CHAINS, _prerouting("ip", VIP4, 2), _output("ip", VIP4, 3)))
    lines = _lines(listing, spec, steer=True)
    assert [line.split(" daddr ")[1].split()[0] for line in lines if line.startswith("insert")] == [
        VIP4B,
        VIP4B,
    ]
    assert not any(line.startswith(("delete", "add chain")) for line in lines)


def test_duplicates_are_deleted_by_handle_and_the_first_copy_kept() -> None:
    base = json.loads(_doc("ip", "ocp_nat", CHAINS, _prerouting("ip", VIP4, 7), _output("ip", VIP4, 8)))
    base["nftables"].append(_prerouting("ip", VIP4, 99))
    spec = SteeringSpec(vips=(VIP4,))
    assert _lines(parse_listing(json.dumps(base)), spec, steer=True) == [
        "delete rule ip ocp_nat ocp_prerouting handle 99"
    ]


def test_a_rule_with_another_target_is_replaced_and_existing_chains_keep_their_declaration() -> None:
    stale = _rule(
        "ip",
        "ocp_nat",
        "ocp_prerouting",
        5,
        [_match("ip", "daddr", VIP4), _match("tcp", "dport", 6443), {"redirect": {"port": 9445}}],
        COMMENT,
    )
    listing = parse_listing(_doc("ip", "ocp_nat", CHAINS, stale, _output("ip", VIP4, 6)))
    lines = _lines(listing, SteeringSpec(vips=(VIP4,)), steer=True)
    assert lines[0] == "delete rule ip ocp_nat ocp_prerouting handle 5"
    assert lines[-1].startswith(f"insert rule ip ocp_nat ocp_prerouting ip daddr {VIP4} ")
    assert not any(line.startswith("add chain") for line in lines)


def test_rules_for_a_vip_no_longer_configured_are_deleted() -> None:
    listing = parse_listing(_doc("ip", "ocp_nat", CHAINS, _prerouting("ip", "198.51.100.7", 7)))
    assert "delete rule ip ocp_nat ocp_prerouting handle 7" in _lines(listing, steer=True)


# ---- remove --------------------------------------------------------------------------------------------
def test_removal_keeps_chains_and_table_that_hold_foreign_rules() -> None:
    foreign = _rule("ip", "ocp_nat", "ocp_output", 30, [_match("tcp", "dport", 22)], comment="someone else")
    listing = parse_listing(_doc("ip", "ocp_nat", CHAINS, _prerouting("ip", VIP4, 7), foreign))
    assert _lines(listing, steer=False) == [
        "delete rule ip ocp_nat ocp_prerouting handle 7",
        "delete chain ip ocp_nat ocp_prerouting",
    ]


def test_removal_deletes_both_families_tables_when_nothing_else_is_in_them() -> None:
    lines = _lines(_installed(), steer=False)
    assert lines[-1] == "delete table ip6 ocp_nat" and "delete table ip ocp_nat" in lines
    assert sum(line.startswith("delete rule") for line in lines) == 4


def test_removal_keeps_a_table_holding_a_set_or_another_chain() -> None:
    listing = parse_listing(
        _doc("ip", "ocp_nat", CHAINS, _prerouting("ip", VIP4, 7), extra=1),
        _doc("ip6", "ocp_nat", [*CHAINS, "theirs"], _prerouting("ip6", VIP6, 7)),
    )
    lines = _lines(listing, steer=False)
    assert not any(line.startswith("delete table") for line in lines)
    assert "delete chain ip6 ocp_nat ocp_output" in lines and "delete chain ip6 ocp_nat theirs" not in lines


def test_removal_with_no_tables_is_nothing_to_do() -> None:
    assert plan(Listing(), SPEC, steer=False).script is None


# ---- the start-up sweep --------------------------------------------------------------------------------
def _old_inet_table(*extra_chains: str) -> str:
    expr = [_meta("oif", "lo"), _match("ip", "daddr", VIP4), _match("tcp", "dport", 6443)]
    dnat = {"family": "ip", "addr": VIP4, "port": 9445}
    return _doc(
        "inet",
        "ocp_nat",
        [*CHAINS, *extra_chains],
        _rule("inet", "ocp_nat", "ocp_prerouting", 4, [*expr[1:], {"dnat": dnat}], COMMENT),
        _rule("inet", "ocp_nat", "ocp_output", 5, [*expr, {"redirect": {"port": 9445}}], COMMENT),
    )


def test_the_sweep_removes_our_old_inet_table_in_the_same_transaction_as_the_new_rules() -> None:
    result = plan(parse_listing(_old_inet_table()), SPEC, steer=True, sweep=True)
    assert result.script is not None
    lines = result.script.splitlines()
    assert lines[:5] == [
        "delete rule inet ocp_nat ocp_output handle 5",
        "delete rule inet ocp_nat ocp_prerouting handle 4",
        "delete chain inet ocp_nat ocp_output",
        "delete chain inet ocp_nat ocp_prerouting",
        "delete table inet ocp_nat",
    ]
    assert sum(line.startswith("insert rule") for line in lines) == 4
    assert result.leftovers == ("2 rule(s) of table inet ocp_nat",)


def test_the_sweep_keeps_an_old_inet_table_that_holds_someone_elses_chain() -> None:
    lines = _lines(parse_listing(_old_inet_table("theirs")), steer=False, sweep=True)
    assert lines == [
        "delete rule inet ocp_nat ocp_output handle 5",
        "delete rule inet ocp_nat ocp_prerouting handle 4",
        "delete chain inet ocp_nat ocp_output",
        "delete chain inet ocp_nat ocp_prerouting",
    ]


def test_without_the_sweep_old_tables_are_not_looked_at() -> None:
    assert plan(parse_listing(_old_inet_table()), SPEC, steer=False).script is None


def test_the_sweep_clears_the_table_of_a_family_no_vip_has() -> None:
    listing = parse_listing(_doc("ip6", "ocp_nat", CHAINS, _prerouting("ip6", VIP6, 3)))
    result = plan(listing, SteeringSpec(vips=(VIP4,)), steer=False, sweep=True)
    assert result.script is not None and "delete table ip6 ocp_nat" in result.script
    assert result.leftovers == ("1 rule(s) of table ip6 ocp_nat (no VIP of that family)",)


def _iptables_rule(family: str, chain: str, handle: int, port: int, *, comment: bool) -> dict[str, Any]:
    """An iptables-nft rule as nft lists it: the -m comment text hides inside an xt match."""
    expr = [_match(family, "daddr", VIP4 if family == "ip" else VIP6), _match("tcp", "dport", port)]
    if comment:
        expr.append({"xt": {"type": "match", "name": "comment"}})
    expr += [{"counter": {"packets": 0, "bytes": 0}}, {"xt": {"type": "target", "name": "REDIRECT"}}]
    return _rule(family, "nat", chain, handle, expr, None)


_RULE = "-d 192.0.2.10/32 -p tcp -m tcp --dport"
_REDIRECT = "-j REDIRECT --to-ports"
SAVE = f"""# Generated by iptables-nft-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING {_RULE} 6443 -m comment --comment OCP_API_LB_REDIRECT {_REDIRECT} 9445
-A PREROUTING {_RULE} 6443 -m comment --comment "OCP_API_LB_REDIRECT too" {_REDIRECT} 9445
-A PREROUTING {_RULE} 2222 {_REDIRECT} 22
-A OUTPUT -o lo {_RULE} 6443 -m comment --comment OCP_API_LB_REDIRECT {_REDIRECT} 9445
COMMIT
"""


def _iptables_listing() -> Listing:
    return parse_listing(
        _doc(
            "ip",
            "nat",
            ["PREROUTING", "OUTPUT"],
            _iptables_rule("ip", "PREROUTING", 2, 6443, comment=True),
            _iptables_rule("ip", "PREROUTING", 3, 6443, comment=True),
            _iptables_rule("ip", "PREROUTING", 4, 2222, comment=False),
            _iptables_rule("ip", "OUTPUT", 6, 6443, comment=True),
        )
    )


def test_iptables_save_comments_are_read_per_chain_in_order_quotes_included() -> None:
    assert parse_iptables_save(SAVE) == {
        "PREROUTING": ["OCP_API_LB_REDIRECT", "OCP_API_LB_REDIRECT too", None],
        "OUTPUT": ["OCP_API_LB_REDIRECT"],
    }


def test_the_sweep_deletes_only_the_iptables_era_rules_carrying_our_comment_never_their_chains() -> None:
    listing = _iptables_listing()
    assert needs_iptables_comments(listing, "ip") and not needs_iptables_comments(listing, "ip6")
    result = plan(listing, SPEC, steer=False, sweep=True, iptables_comments={"ip": parse_iptables_save(SAVE)})
    assert result.script == "delete rule ip nat OUTPUT handle 6\ndelete rule ip nat PREROUTING handle 2\n"
    assert result.leftovers == ("2 iptables-era rule(s) of table ip nat",)


def test_iptables_era_rules_are_left_alone_when_the_two_reads_disagree_or_comments_are_unknown() -> None:
    listing = _iptables_listing()
    changed = parse_iptables_save(SAVE)
    changed["PREROUTING"].append(None)  # a rule added between nft's listing and iptables-save
    assert [r.handle for r in iptables_era_rules(listing, SPEC, "ip", changed)] == [6]
    assert iptables_era_rules(listing, SPEC, "ip", None) == []
    assert plan(listing, SPEC, steer=False, sweep=True).script is None


def test_an_iptables_era_rule_whose_comment_nft_shows_needs_no_iptables_save() -> None:
    rule = _rule("ip6", "nat", "PREROUTING", 2, [_match("ip6", "daddr", VIP6)], COMMENT)
    listing = parse_listing(_doc("ip6", "nat", ["PREROUTING"], rule))
    assert not needs_iptables_comments(listing, "ip6")
    assert _lines(listing, steer=False, sweep=True) == ["delete rule ip6 nat PREROUTING handle 2"]
