"""NftSteering against real nftables in throw-away network namespaces, checked with real TCP traffic."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.adapters.nftables import NftSteering
from monitor.steering.listing import parse_listing
from monitor.steering.plan import plan
from monitor.steering.rules import SteeringSpec
from tests.keepalived_check import reference_check_passes
from tests.netns import Topology, available, python_unshared, run

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(available() is not None, reason=f"netns tests: {available()}"),
]

VIP4, VIP6, VIP4B = "192.0.2.10", "2001:db8::10", "192.0.2.11"
# Ports inside a private namespace cannot collide with anything else on the machine.
API_PORT, LB_PORT = 6443, 9445
# Dual-stack, and a second IPv4 VIP: the reference finds rules by comment alone, so it gives that one none.
SPEC = SteeringSpec(vips=(VIP4, VIP6, VIP4B), api_port=API_PORT, lb_port=LB_PORT)
COMMENT = SPEC.comment
ALL_RULES = 6


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    with Topology.create(
        host_addrs=["192.0.2.1/24", f"{VIP4}/24", f"{VIP4B}/24", "2001:db8::1/64", f"{VIP6}/64"],
        client_addrs=["192.0.2.2/24", "2001:db8::2/64"],
    ) as topology:
        topology.serve_banners(topology.host, {LB_PORT: "LB", API_PORT: "API"})
        for addr in (VIP4, VIP6, VIP4B):
            assert topology.wait_for_banner(topology.client, addr, API_PORT) == "API"
        yield topology


@pytest.fixture(scope="module")
def pod(topo: Topology) -> str:
    """A pod-like namespace whose host-side veth has no IPv4 address (routed /32, as many CNIs do)."""
    name = topo.add_peer(
        "pod",
        host_if="vpod",
        peer_addrs=["10.128.0.5/32"],
        host_routes=[["10.128.0.5/32", "dev", "vpod"]],
        peer_routes=[["default", "dev", "eth0"]],
    )
    assert topo.wait_for_banner(name, VIP4, API_PORT) == "API"
    return name


@pytest.fixture
def clean(topo: Topology) -> Iterator[None]:
    run(topo.host, "nft", "flush", "ruleset")
    yield
    run(topo.host, "nft", "flush", "ruleset")


@pytest.fixture
def steering(topo: Topology, clean: None) -> NftSteering:
    return NftSteering(spec=SPEC, netns=topo.host)


def _ruleset(topo: Topology) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(run(topo.host, "nft", "-j", "list", "ruleset"))["nftables"]
    return items


def _our_rules(topo: Topology) -> list[dict[str, Any]]:
    return [i["rule"] for i in _ruleset(topo) if "rule" in i and i["rule"].get("comment") == COMMENT]


def _tables(topo: Topology) -> set[tuple[str, str]]:
    return {(i["table"]["family"], i["table"]["name"]) for i in _ruleset(topo) if "table" in i}


def _in_sync(topo: Topology) -> bool:
    """The installed rules are exactly the desired set: the planner finds nothing to do."""
    return (
        plan(parse_listing(run(topo.host, "nft", "-j", "list", "ruleset")), SPEC, steer=True).script is None
    )


def _nft_script(topo: Topology, script: str) -> None:
    done = subprocess.run(
        ["ip", "netns", "exec", topo.host, "nft", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _daddr(rule: dict[str, Any]) -> str:
    return next(
        str(s["match"]["right"])
        for s in rule["expr"]
        if "match" in s and s["match"]["left"].get("payload", {}).get("field") == "daddr"
    )


# ---- where the rules live and what they do -------------------------------------------------------------
@pytest.mark.parametrize("vip", [VIP4, VIP6, VIP4B])
def test_vip_traffic_reaches_haproxy_while_steered_and_the_api_after_removal(
    topo: Topology, steering: NftSteering, vip: str
) -> None:
    result = steering.ensure()
    assert result.error is None and result.changed and result.rules == ALL_RULES
    # Prerouting (from another machine) and output through lo (from the host itself).
    assert topo.fetch_banner(topo.client, vip, API_PORT) == "LB"
    assert topo.fetch_banner(topo.host, vip, API_PORT) == "LB"

    removed = steering.remove()
    assert removed.error is None and removed.changed
    assert topo.fetch_banner(topo.client, vip, API_PORT) == "API"
    assert topo.fetch_banner(topo.host, vip, API_PORT) == "API"
    assert "ocp_nat" not in run(topo.host, "nft", "list", "tables")


def test_each_vip_has_both_rules_in_ocp_nat_of_its_own_family_and_nothing_lives_in_inet(
    topo: Topology, steering: NftSteering
) -> None:
    steering.ensure()
    assert _tables(topo) == {("ip", "ocp_nat"), ("ip6", "ocp_nat")}
    placed = sorted((r["family"], r["table"], r["chain"], _daddr(r)) for r in _our_rules(topo))
    assert placed == sorted(
        (family, "ocp_nat", chain, vip)
        for family, vip in (("ip", VIP4), ("ip", VIP4B), ("ip6", VIP6))
        for chain in ("ocp_prerouting", "ocp_output")
    )
    chains = [i["chain"] for i in _ruleset(topo) if "chain" in i]
    assert {(c["family"], c["name"], c["type"], c["hook"], c["prio"]) for c in chains} == {
        (f, name, "nat", hook, -100)
        for f in ("ip", "ip6")
        for name, hook in (("ocp_prerouting", "prerouting"), ("ocp_output", "output"))
    }
    listing = run(topo.host, "nft", "list", "table", "ip", "ocp_nat")
    assert f'ip daddr {VIP4} tcp dport 6443 oifname "lo" redirect to :9445 comment "{COMMENT}"' in listing
    assert f'ip daddr {VIP4} tcp dport 6443 dnat to {VIP4}:9445 comment "{COMMENT}"' in listing


def test_our_rules_go_to_the_head_of_a_chain_that_already_holds_other_rules(
    topo: Topology, steering: NftSteering
) -> None:
    _nft_script(
        topo,
        "add table ip ocp_nat\n"
        "add chain ip ocp_nat ocp_prerouting { type nat hook prerouting priority -100; }\n"
        f"add rule ip ocp_nat ocp_prerouting ip daddr {VIP4} tcp dport {API_PORT} accept\n",
    )
    steering.ensure()
    rules = [i["rule"] for i in _ruleset(topo) if "rule" in i and i["rule"]["chain"] == "ocp_prerouting"]
    assert [r["family"] for r in rules] == ["ip", "ip", "ip", "ip6"]
    assert [r.get("comment") for r in rules[:3]] == [COMMENT, COMMENT, None]
    assert topo.fetch_banner(topo.client, VIP4, API_PORT) == "LB"  # before the accept, ours wins


@pytest.mark.parametrize("vips", [(VIP4, VIP6), (VIP6, VIP4)], ids=["ipv4-first", "ipv6-first"])
def test_the_keepalived_check_passes_while_steered_and_fails_after_removal(
    topo: Topology, clean: None, vips: tuple[str, str]
) -> None:
    steering = NftSteering(spec=SteeringSpec(vips=vips), netns=topo.host)
    assert not reference_check_passes(vips[0], netns=topo.host)
    assert steering.ensure().error is None
    assert reference_check_passes(vips[0], netns=topo.host)
    assert steering.remove().error is None
    assert not reference_check_passes(vips[0], netns=topo.host)


def test_an_ipv6_only_vip_list_touches_only_ip6_ocp_nat(topo: Topology, clean: None) -> None:
    steering = NftSteering(spec=SteeringSpec(vips=(VIP6,)), netns=topo.host)
    assert steering.ensure().rules == 2
    assert _tables(topo) == {("ip6", "ocp_nat")}
    assert reference_check_passes(VIP6, netns=topo.host)
    assert topo.fetch_banner(topo.client, VIP6, API_PORT) == "LB"
    assert topo.fetch_banner(topo.client, VIP4, API_PORT) == "API"


def test_pod_traffic_arriving_on_an_interface_without_an_address_is_steered(
    topo: Topology, steering: NftSteering, pod: str
) -> None:
    assert steering.ensure().error is None
    assert topo.fetch_banner(pod, VIP4, API_PORT) == "LB"


def test_redirect_in_prerouting_would_drop_that_pod_traffic_which_is_why_dnat_is_used(
    topo: Topology, steering: NftSteering, pod: str
) -> None:
    # The control for the test above: REDIRECT rewrites to the ingress interface's primary
    # address, and the pod's host-side veth has none, so the kernel drops the packet.
    _nft_script(
        topo,
        "add table ip t\n"
        "add chain ip t pre { type nat hook prerouting priority dstnat; }\n"
        f"add rule ip t pre ip daddr {VIP4} tcp dport {API_PORT} redirect to :{LB_PORT}\n",
    )
    assert topo.fetch_banner(pod, VIP4, API_PORT, timeout=0.5).startswith("error")
    assert topo.fetch_banner(topo.client, VIP4, API_PORT) == "LB"  # fine where the interface has one


# ---- repair and idempotence ----------------------------------------------------------------------------
def _counting_nft(tmp_path: Path) -> tuple[str, Path]:
    """An nft wrapper that logs each invocation, to count the processes a cycle costs."""
    log = tmp_path / "nft-calls"
    wrapper = tmp_path / "nft"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec nft "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper), log


def test_a_no_op_cycle_changes_nothing_and_costs_one_nft_listing_per_vip_family(
    topo: Topology, clean: None, tmp_path: Path
) -> None:
    nft, log = _counting_nft(tmp_path)
    steering = NftSteering(spec=SPEC, netns=topo.host, nft_bin=nft)
    assert steering.ensure().changed
    before = run(topo.host, "nft", "-a", "list", "ruleset")
    log.write_text("")
    second = steering.ensure()
    assert (second.changed, second.error, second.rules) == (False, None, ALL_RULES)
    assert run(topo.host, "nft", "-a", "list", "ruleset") == before  # same handles: nothing re-added
    assert log.read_text().splitlines() == ["-j list table ip ocp_nat", "-j list table ip6 ocp_nat"]
    assert _in_sync(topo)


def test_on_a_clean_system_the_start_up_sweep_costs_one_listing_once(
    topo: Topology, clean: None, tmp_path: Path
) -> None:
    nft, log = _counting_nft(tmp_path)
    steering = NftSteering(spec=SteeringSpec(vips=(VIP4,)), netns=topo.host, nft_bin=nft)
    assert steering.remove().changed is False
    assert log.read_text().splitlines() == ["-j list tables"]
    log.write_text("")
    assert steering.remove().changed is False
    assert log.read_text().splitlines() == ["-j list table ip ocp_nat"]


def test_a_rule_deleted_externally_is_restored_by_the_next_ensure(
    topo: Topology, steering: NftSteering
) -> None:
    steering.ensure()
    victim = next(r for r in _our_rules(topo) if r["chain"] == SPEC.prerouting_chain and r["family"] == "ip6")
    run(
        topo.host,
        "nft",
        "delete",
        "rule",
        "ip6",
        "ocp_nat",
        SPEC.prerouting_chain,
        "handle",
        str(victim["handle"]),
    )
    assert not _in_sync(topo)
    assert not reference_check_passes(VIP6, netns=topo.host)

    again = steering.ensure()
    assert again.changed and again.error is None
    assert len(_our_rules(topo)) == ALL_RULES
    assert topo.fetch_banner(topo.client, VIP6, API_PORT) == "LB"


def test_a_deleted_table_is_recreated(topo: Topology, steering: NftSteering) -> None:
    steering.ensure()
    run(topo.host, "nft", "delete", "table", "ip", "ocp_nat")
    assert not reference_check_passes(VIP4, netns=topo.host)
    assert steering.ensure().changed
    assert len(_our_rules(topo)) == ALL_RULES
    assert reference_check_passes(VIP4, netns=topo.host)


def test_rules_left_by_the_reference_monitor_are_adopted_not_duplicated(
    topo: Topology, steering: NftSteering
) -> None:
    # What the reference leaves: per family its chains and, found by comment alone, rules for the
    # first VIP of that family only, written with its match (meta l4proto tcp th dport).
    c = f'comment "{COMMENT}"'
    m = f"meta l4proto tcp th dport {API_PORT}"
    script = "".join(
        f"add table {f} ocp_nat\n"
        f"add chain {f} ocp_nat ocp_prerouting {{ type nat hook prerouting priority -100; }}\n"
        f"add chain {f} ocp_nat ocp_output {{ type nat hook output priority -100; }}\n"
        f"insert rule {f} ocp_nat ocp_prerouting {f} daddr {vip} {m} counter dnat to {target}:{LB_PORT} {c}\n"
        f'insert rule {f} ocp_nat ocp_output {f} daddr {vip} {m} oifname "lo" redirect to :{LB_PORT} {c}\n'
        for f, vip, target in (("ip", VIP4, VIP4), ("ip6", VIP6, f"[{VIP6}]"))
    )
    _nft_script(topo, script)
    planted = {r["handle"] for r in _our_rules(topo)}
    result = steering.ensure()
    assert (result.changed, result.error, result.rules) == (True, None, ALL_RULES)
    after = _our_rules(topo)
    assert len(after) == ALL_RULES
    assert planted <= {r["handle"] for r in after}, "the reference's rules are kept, not replaced"
    assert sorted(_daddr(r) for r in after if r["handle"] not in planted) == [VIP4B, VIP4B]
    assert steering.ensure().changed is False


def test_an_old_style_rule_is_replaced_in_a_chain_with_another_priority(
    topo: Topology, steering: NftSteering
) -> None:
    c = f'comment "{COMMENT}"'
    _nft_script(
        topo,
        f"""
add table ip ocp_nat
add chain ip ocp_nat ocp_prerouting {{ type nat hook prerouting priority -90; }}
add chain ip ocp_nat ocp_output {{ type nat hook output priority -100; }}
add rule ip ocp_nat ocp_prerouting ip daddr {VIP4} tcp dport 6443 redirect to :9445 {c}
add rule ip ocp_nat ocp_prerouting ip daddr {VIP4} tcp dport 6443 redirect to :9445 {c}
add rule ip ocp_nat ocp_output oif "lo" ip daddr {VIP4} tcp dport 6443 redirect to :9445 {c}
""",
    )
    result = steering.ensure()
    assert result.changed and result.error is None, result.error
    rules = [r for r in _our_rules(topo) if r["family"] == "ip"]
    assert len(rules) == 4
    assert all('"dnat"' in json.dumps(r) for r in rules if r["chain"] == SPEC.prerouting_chain)
    assert all('"oifname"' in json.dumps(r) for r in rules if r["chain"] == SPEC.output_chain)
    assert topo.fetch_banner(topo.client, VIP4, API_PORT) == "LB"


# ---- removal -------------------------------------------------------------------------------------------
def test_removal_leaves_other_peoples_rules_chains_and_table_in_place(
    topo: Topology, steering: NftSteering
) -> None:
    steering.ensure()
    _nft_script(topo, 'add rule ip ocp_nat ocp_output tcp dport 22 accept comment "not ours"\n')
    assert steering.remove().changed
    listing = run(topo.host, "nft", "list", "table", "ip", "ocp_nat")
    assert "not ours" in listing and "ocp_output" in listing
    assert COMMENT not in listing and "ocp_prerouting" not in listing
    assert ("ip6", "ocp_nat") not in _tables(topo)
    assert steering.remove().changed is False


def test_removing_when_nothing_is_installed_is_a_quiet_no_op(steering: NftSteering) -> None:
    result = steering.remove()
    assert (result.changed, result.error, result.leftovers) == (False, None, ())


# ---- leftovers of earlier monitors, swept at start -----------------------------------------------------
def test_our_old_inet_table_is_removed_at_start_and_a_foreign_chain_and_set_in_it_are_kept(
    topo: Topology, clean: None
) -> None:
    c = f'comment "{COMMENT}"'
    _nft_script(
        topo,
        f"""
add table inet ocp_nat
add chain inet ocp_nat ocp_prerouting {{ type nat hook prerouting priority dstnat; }}
add chain inet ocp_nat ocp_output {{ type nat hook output priority -100; }}
add rule inet ocp_nat ocp_prerouting ip daddr {VIP4} tcp dport 6443 dnat ip to {VIP4}:9445 {c}
add rule inet ocp_nat ocp_output oif "lo" ip daddr {VIP4} tcp dport 6443 redirect to :9445 {c}
add chain inet ocp_nat theirs
add rule inet ocp_nat theirs tcp dport 22 accept comment "not ours"
add set inet ocp_nat blocked {{ type ipv4_addr; }}
""",
    )
    assert topo.fetch_banner(topo.client, VIP4, API_PORT) == "LB"  # the leftover steers
    first = NftSteering(spec=SPEC, netns=topo.host).remove()
    assert first.error is None and first.changed
    assert first.leftovers == ("2 rule(s) of table inet ocp_nat",)
    assert topo.fetch_banner(topo.client, VIP4, API_PORT) == "API"
    listing = run(topo.host, "nft", "list", "table", "inet", "ocp_nat")
    assert "not ours" in listing and "set blocked" in listing
    assert "ocp_prerouting" not in listing and "ocp_output" not in listing


def test_an_old_inet_table_holding_only_our_rules_disappears_as_the_new_rules_go_in(
    topo: Topology, clean: None
) -> None:
    _nft_script(
        topo,
        "add table inet ocp_nat\n"
        "add chain inet ocp_nat ocp_output { type nat hook output priority -100; }\n"
        f'add rule inet ocp_nat ocp_output oif "lo" ip daddr {VIP4} tcp dport 6443 redirect to :9445'
        f' comment "{COMMENT}"\n',
    )
    result = NftSteering(spec=SPEC, netns=topo.host).ensure()
    assert result.error is None and result.leftovers == ("1 rule(s) of table inet ocp_nat",)
    assert _tables(topo) == {("ip", "ocp_nat"), ("ip6", "ocp_nat")}
    assert reference_check_passes(VIP4, netns=topo.host)


def _iptables(topo: Topology, binary: str, *args: str) -> None:
    run(topo.host, binary, "-t", "nat", *args)


def _save(topo: Topology, binary: str) -> list[str]:
    return [line for line in run(topo.host, binary, "-t", "nat").splitlines() if line.startswith("-A")]


def test_iptables_era_rules_in_ip_nat_are_removed_at_start_and_look_alikes_with_another_comment_kept(
    topo: Topology, clean: None, iptables_nft: str
) -> None:
    # Exactly how the reference inserted them before it moved to nftables (go-iptables, iptables-nft).
    ours = ["-d", VIP4, "-p", "tcp", "--dport", "6443", "-m", "comment", "--comment", COMMENT]
    redirect = ["-j", "REDIRECT", "--to-ports", "9445"]
    _iptables(topo, iptables_nft, "-I", "PREROUTING", *ours, *redirect)
    _iptables(topo, iptables_nft, "-I", "OUTPUT", *ours, *redirect, "-o", "lo")
    # Foreign: a look-alike with another comment (same match and target) and a rule without comment.
    look_alike = ["-d", VIP4, "-p", "tcp", "--dport", "6443", "-m", "comment", "--comment", "not OCP"]
    _iptables(topo, iptables_nft, "-A", "OUTPUT", *look_alike, *redirect, "-o", "lo")
    _iptables(
        topo,
        iptables_nft,
        "-A",
        "PREROUTING",
        "-p",
        "tcp",
        "--dport",
        "2222",
        "-j",
        "REDIRECT",
        "--to-ports",
        "22",
    )
    before = _save(topo, "iptables-nft-save")
    assert len(before) == 4 and topo.fetch_banner(topo.client, VIP4, API_PORT) == "LB"

    result = NftSteering(spec=SPEC, netns=topo.host).remove()
    assert result.error is None and result.warning is None
    assert result.leftovers == ("2 iptables-era rule(s) of table ip nat",)
    after = _save(topo, "iptables-nft-save")
    assert after == [line for line in before if f"--comment {COMMENT} " not in line]
    assert any("not OCP" in line for line in after) and any("--dport 2222" in line for line in after)
    assert topo.fetch_banner(topo.client, VIP4, API_PORT) == "API"
    assert ("ip", "nat") in _tables(topo), "iptables' own table and chains stay"


def test_an_iptables_era_rule_in_ip6_nat_is_removed_at_start_and_a_foreign_one_kept(
    topo: Topology, clean: None, iptables_nft: str
) -> None:
    ip6tables = iptables_nft.replace("iptables-nft", "ip6tables-nft")
    rule = ["-d", VIP6, "-p", "tcp", "--dport", "6443", "-m", "comment", "--comment", COMMENT]
    _iptables(topo, ip6tables, "-I", "PREROUTING", *rule, "-j", "REDIRECT", "--to-ports", "9445")
    _iptables(
        topo,
        ip6tables,
        "-A",
        "PREROUTING",
        "-p",
        "tcp",
        "--dport",
        "2222",
        "-j",
        "REDIRECT",
        "--to-ports",
        "22",
    )
    assert topo.fetch_banner(topo.client, VIP6, API_PORT) == "LB"

    steering = NftSteering(spec=SPEC, netns=topo.host)
    result = steering.ensure()
    assert result.error is None and result.leftovers == ("1 iptables-era rule(s) of table ip6 nat",)
    after = _save(topo, "ip6tables-nft-save")
    assert len(after) == 1 and "--dport 2222" in after[0]
    assert topo.fetch_banner(topo.client, VIP6, API_PORT) == "LB"  # now through our ip6 ocp_nat rules
    assert steering.remove().error is None
    assert topo.fetch_banner(topo.client, VIP6, API_PORT) == "API"


def test_without_iptables_save_the_iptables_era_rules_stay_with_a_warning_and_steering_works(
    topo: Topology, clean: None, iptables_nft: str
) -> None:
    rule = ["-d", VIP4, "-p", "tcp", "--dport", "6443", "-m", "comment", "--comment", COMMENT]
    _iptables(topo, iptables_nft, "-I", "PREROUTING", *rule, "-j", "REDIRECT", "--to-ports", "9445")
    missing = {"ip": ("/nonexistent/iptables-save",), "ip6": ("/nonexistent/ip6tables-save",)}
    result = NftSteering(spec=SPEC, netns=topo.host, iptables_save=missing).ensure()
    assert result.error is None and result.changed and result.rules == ALL_RULES
    assert result.warning is not None and "/nonexistent/iptables-save not found" in result.warning
    assert "\n" not in result.warning
    assert len(_save(topo, "iptables-nft-save")) == 1, "a rule whose comment cannot be read is never touched"


def test_the_table_of_a_family_without_a_vip_is_cleared_at_start(topo: Topology, clean: None) -> None:
    NftSteering(spec=SteeringSpec(vips=(VIP6,)), netns=topo.host).ensure()
    result = NftSteering(spec=SteeringSpec(vips=(VIP4,)), netns=topo.host).ensure()
    assert result.leftovers == ("2 rule(s) of table ip6 ocp_nat (no VIP of that family)",)
    assert _tables(topo) == {("ip", "ocp_nat")}


def test_the_sweep_runs_once_so_later_cycles_read_only_our_tables(topo: Topology, clean: None) -> None:
    steering = NftSteering(spec=SPEC, netns=topo.host)
    steering.ensure()
    _nft_script(topo, "add table inet ocp_nat\n")
    assert steering.ensure().changed is False
    assert ("inet", "ocp_nat") in _tables(topo)


# ---- errors --------------------------------------------------------------------------------------------
def test_a_missing_nft_binary_is_reported_as_one_line_not_raised() -> None:
    result = NftSteering(spec=SPEC, nft_bin="/nonexistent/nft").ensure()
    assert result.changed is False
    assert result.error == (
        "nftables: '/nonexistent/nft' not found on PATH (install nftables or pass --no-steering)"
    )
    assert NftSteering(spec=SPEC, nft_bin="/nonexistent/nft").remove().error is not None


def test_an_nft_failure_is_reported_with_nfts_own_first_line(topo: Topology, clean: None) -> None:
    bad = NftSteering(spec=SteeringSpec(vips=(VIP4,), table="bad name!"), netns=topo.host)
    result = bad.ensure()
    assert result.error is not None and result.error.startswith("nftables: ")
    assert "\n" not in result.error


# ---- idle cost ---------------------------------------------------------------------------------------------
def _quiet_cycles(tmp: Path) -> dict[str, dict[str, Any]]:
    """Run inside a private namespace (the kernel's notifications come from the caller's own): the nft
    invocations and the result of each step."""
    nft, log = _counting_nft(tmp)
    steering = NftSteering(spec=SteeringSpec(vips=(VIP4,), api_port=API_PORT, lb_port=LB_PORT), nft_bin=nft)
    steps: dict[str, dict[str, Any]] = {}

    def step(name: str, call: Any) -> None:
        log.write_text("")
        result = call()
        steps[name] = {"nft": log.read_text().splitlines(), "changed": result.changed, "rules": result.rules}
        assert result.error is None, result.error

    step("first ensure", steering.ensure)
    step("ensure after our own change", steering.ensure)
    step("quiet ensure", steering.ensure)
    step("another quiet ensure", steering.ensure)
    run(None, "nft", "add table ip other; add chain ip other c; add rule ip other c counter")
    step("ensure after another table changed", steering.ensure)
    listing = json.loads(run(None, "nft", "-j", "-a", "list", "table", "ip", "ocp_nat"))["nftables"]
    handle = next(i["rule"]["handle"] for i in listing if "rule" in i)
    run(None, "nft", "delete", "rule", "ip", "ocp_nat", SPEC.prerouting_chain, "handle", str(handle))
    step("ensure after our rule was deleted", steering.ensure)
    step("ensure after the repair", steering.ensure)
    step("quiet ensure after the repair", steering.ensure)
    step("remove", steering.remove)
    step("remove after our own change", steering.remove)
    step("quiet remove", steering.remove)
    return steps


def test_once_settled_a_cycle_runs_no_nft_until_the_kernel_reports_a_change_to_our_tables(
    tmp_path: Path,
) -> None:
    script = (
        "import json, sys; from pathlib import Path; from tests.test_steering_nft import _quiet_cycles; "
        "print(json.dumps(_quiet_cycles(Path(sys.argv[1]))))"
    )
    steps = python_unshared(["-n"], script, str(tmp_path))
    listing, apply = "-j list table ip ocp_nat", "-f -"
    assert steps["first ensure"]["nft"] == ["-j list tables", apply]
    # Our own transaction is a change too: it is looked at once.
    assert steps["ensure after our own change"] == {"nft": [listing], "changed": False, "rules": 2}
    assert steps["quiet ensure"] == {"nft": [], "changed": False, "rules": 2}
    assert steps["another quiet ensure"]["nft"] == []
    assert steps["ensure after another table changed"]["nft"] == []
    assert steps["ensure after our rule was deleted"] == {
        "nft": [listing, apply],
        "changed": True,
        "rules": 2,
    }
    assert steps["ensure after the repair"]["nft"] == [listing]
    assert steps["quiet ensure after the repair"]["nft"] == []
    assert steps["remove"] == {"nft": [listing, apply], "changed": True, "rules": 0}
    assert steps["remove after our own change"]["nft"] == [listing]
    assert steps["quiet remove"] == {"nft": [], "changed": False, "rules": 0}
