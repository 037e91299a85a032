"""Pure steering logic: desired rules, parsing nft JSON, and the add/delete plan."""

from __future__ import annotations

import json
from typing import Any

import pytest

from monitor.steering import (
    Rule,
    SteeringSpec,
    desired_rules,
    parse_ruleset,
    parse_table,
    plan,
    plan_removal,
)

SPEC = SteeringSpec(vips=("192.0.2.10", "2001:DB8:0::10"))


def _rule_json(
    chain: str, handle: int, expr: list[dict[str, Any]], comment: str | None = SPEC.comment
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "family": "inet",
        "table": "ocp_nat",
        "chain": chain,
        "handle": handle,
        "expr": expr,
    }
    if comment is not None:
        body["comment"] = comment
    return {"rule": body}


def _match(proto: str, fld: str, right: Any) -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": fld}}, "right": right}}


def _doc(*items: dict[str, Any]) -> str:
    head: list[dict[str, Any]] = [
        {"metainfo": {"json_schema_version": 1}},
        {"table": {"family": "inet", "name": "ocp_nat", "handle": 1}},
        {"chain": {"family": "inet", "table": "ocp_nat", "name": "ocp_prerouting", "handle": 1}},
        {"chain": {"family": "inet", "table": "ocp_nat", "name": "ocp_output", "handle": 2}},
    ]
    return json.dumps({"nftables": head + list(items)})


def _installed_v4(handle: int) -> dict[str, Any]:
    return _rule_json(
        "ocp_prerouting",
        handle,
        [
            _match("ip", "daddr", "192.0.2.10"),
            _match("tcp", "dport", 6443),
            {"counter": {"packets": 3, "bytes": 180}},
            {"dnat": {"family": "ip", "addr": "192.0.2.10", "port": 9445}},
        ],
    )


def test_each_vip_gets_a_prerouting_dnat_and_a_loopback_output_redirect() -> None:
    rules = desired_rules(SPEC)
    assert [(r.chain, r.family, r.vip) for r in rules] == [
        ("ocp_prerouting", "ip", "192.0.2.10"),
        ("ocp_output", "ip", "192.0.2.10"),
        ("ocp_prerouting", "ip6", "2001:db8::10"),
        ("ocp_output", "ip6", "2001:db8::10"),
    ]
    assert rules[0].expression == "ip daddr 192.0.2.10 tcp dport 6443 dnat ip to 192.0.2.10:9445"
    assert rules[2].expression == "ip6 daddr 2001:db8::10 tcp dport 6443 dnat ip6 to [2001:db8::10]:9445"
    assert rules[3].expression == 'oif "lo" ip6 daddr 2001:db8::10 tcp dport 6443 redirect to :9445'


def test_a_vip_listed_twice_gives_one_pair_of_rules() -> None:
    assert len(desired_rules(SteeringSpec(vips=("192.0.2.10", "192.0.2.10")))) == 2


def test_a_vip_that_is_not_an_address_is_rejected_with_the_option_name() -> None:
    with pytest.raises(ValueError, match="api-vips"):
        desired_rules(SteeringSpec(vips=("api.example",)))


def test_an_installed_rule_parses_equal_to_the_desired_one_ignoring_counters_and_handles() -> None:
    parsed = parse_ruleset(_doc(_installed_v4(7)), SPEC)
    assert parsed == [desired_rules(SPEC)[0]]
    assert parsed[0].handle == 7


def test_rules_without_our_comment_are_not_ours() -> None:
    foreign = _rule_json("ocp_prerouting", 9, [_match("ip", "daddr", "192.0.2.10")], comment=None)
    assert parse_ruleset(_doc(foreign), SPEC) == []


def test_plan_is_none_when_everything_is_already_installed() -> None:
    desired = desired_rules(SPEC)
    current = [Rule(r.chain, r.family, r.vip, r.expression, handle=i) for i, r in enumerate(desired)]
    assert plan(current, desired, SPEC) is None


def test_plan_on_an_empty_table_declares_table_chains_and_adds_every_rule_in_one_script() -> None:
    script = plan([], desired_rules(SPEC), SPEC)
    assert script is not None
    lines = script.splitlines()
    assert lines[0] == "add table inet ocp_nat"
    assert "add chain inet ocp_nat ocp_prerouting { type nat hook prerouting priority dstnat; }" in lines
    assert "add chain inet ocp_nat ocp_output { type nat hook output priority -100; }" in lines
    assert sum(line.startswith("add rule") for line in lines) == 4
    assert all('comment "OCP_API_LB_REDIRECT"' in line for line in lines if line.startswith("add rule"))


def test_duplicates_are_deleted_by_handle_and_the_first_copy_kept() -> None:
    desired = desired_rules(SPEC)
    current = [Rule(r.chain, r.family, r.vip, r.expression, handle=10 + i) for i, r in enumerate(desired)]
    dup = Rule(desired[0].chain, desired[0].family, desired[0].vip, desired[0].expression, handle=99)
    script = plan([*current, dup], desired, SPEC)
    assert script == "delete rule inet ocp_nat ocp_prerouting handle 99\n"


def test_a_rule_with_another_target_is_replaced_not_kept_beside_ours() -> None:
    desired = desired_rules(SPEC)
    stale = Rule(
        "ocp_prerouting", "ip", "192.0.2.10", "ip daddr 192.0.2.10 tcp dport 6443 redirect to :9445", 5
    )
    current = [
        stale,
        *(Rule(r.chain, r.family, r.vip, r.expression, 20 + i) for i, r in enumerate(desired[1:])),
    ]
    script = plan(current, desired, SPEC, existing_chains=frozenset({"ocp_prerouting", "ocp_output"}))
    assert script is not None
    assert "delete rule inet ocp_nat ocp_prerouting handle 5" in script
    assert f"add rule inet ocp_nat ocp_prerouting {desired[0].expression}" in script
    assert "add chain" not in script  # existing chains keep their own priority


def test_rules_for_a_vip_no_longer_configured_are_deleted() -> None:
    doc = _doc(_installed_v4(7))
    script = plan(parse_ruleset(doc, SPEC), desired_rules(SteeringSpec(vips=("198.51.100.7",))), SPEC)
    assert script is not None
    assert "delete rule inet ocp_nat ocp_prerouting handle 7" in script


def test_removal_keeps_chains_and_table_that_hold_foreign_rules() -> None:
    foreign = _rule_json("ocp_output", 30, [_match("tcp", "dport", 22)], comment="someone else")
    script = plan_removal(_doc(_installed_v4(7), foreign), SPEC)
    assert script is not None
    assert script.splitlines() == [
        "delete rule inet ocp_nat ocp_prerouting handle 7",
        "delete chain inet ocp_nat ocp_prerouting",
    ]
    assert parse_table(_doc(foreign), SPEC).other_rules_per_chain == {"ocp_output": 1}


def test_removal_deletes_our_table_when_nothing_else_is_in_it() -> None:
    script = plan_removal(_doc(_installed_v4(7)), SPEC)
    assert script is not None
    assert script.splitlines()[-1] == "delete table inet ocp_nat"


def test_removal_of_a_missing_table_is_nothing_to_do() -> None:
    assert plan_removal("", SPEC) is None
