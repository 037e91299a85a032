"""NftSteering against real nftables in throw-away network namespaces, checked with real TCP traffic."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from monitor.adapters.nftables import NftSteering
from monitor.steering import SteeringSpec
from tests.netns import Topology, available, run

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(available() is not None, reason=f"netns tests: {available()}"),
]

VIP4, VIP6 = "192.0.2.10", "2001:db8::10"
# Ports inside a private namespace cannot collide with anything else on the machine.
API_PORT, LB_PORT = 6443, 9445
SPEC = SteeringSpec(vips=(VIP4, VIP6), api_port=API_PORT, lb_port=LB_PORT)


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    with Topology.create(
        host_addrs=["192.0.2.1/24", f"{VIP4}/24", "2001:db8::1/64", f"{VIP6}/64"],
        client_addrs=["192.0.2.2/24", "2001:db8::2/64"],
    ) as topology:
        topology.serve_banners(topology.host, {LB_PORT: "LB", API_PORT: "API"})
        for addr in (VIP4, VIP6):
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
def steering(topo: Topology) -> Iterator[NftSteering]:
    run(topo.host, "nft", "flush", "ruleset")
    yield NftSteering(spec=SPEC, netns=topo.host)
    run(topo.host, "nft", "flush", "ruleset")


def _our_rules(topo: Topology) -> list[dict[str, object]]:
    out = run(topo.host, "nft", "-j", "list", "ruleset")
    items = json.loads(out)["nftables"]
    return [i["rule"] for i in items if "rule" in i and i["rule"].get("comment") == SPEC.comment]


@pytest.mark.parametrize("vip", [VIP4, VIP6])
def test_vip_traffic_reaches_haproxy_while_steered_and_the_api_after_removal(
    topo: Topology, steering: NftSteering, vip: str
) -> None:
    result = steering.ensure()
    assert result.error is None and result.changed and result.rules == 4
    # Prerouting (from another machine) and output through lo (from the host itself).
    assert topo.fetch_banner(topo.client, vip, API_PORT) == "LB"
    assert topo.fetch_banner(topo.host, vip, API_PORT) == "LB"

    removed = steering.remove()
    assert removed.error is None and removed.changed
    assert topo.fetch_banner(topo.client, vip, API_PORT) == "API"
    assert topo.fetch_banner(topo.host, vip, API_PORT) == "API"
    assert "ocp_nat" not in run(topo.host, "nft", "list", "tables")


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
        "add table inet t\n"
        "add chain inet t pre { type nat hook prerouting priority dstnat; }\n"
        f"add rule inet t pre ip daddr {VIP4} tcp dport {API_PORT} redirect to :{LB_PORT}\n",
    )
    assert topo.fetch_banner(pod, VIP4, API_PORT, timeout=0.5).startswith("error")
    assert topo.fetch_banner(topo.client, VIP4, API_PORT) == "LB"  # fine where the interface has one


def test_ensuring_twice_changes_nothing_the_second_time_and_never_duplicates(
    topo: Topology, steering: NftSteering
) -> None:
    assert steering.ensure().changed
    second = steering.ensure()
    assert (second.changed, second.error, second.rules) == (False, None, 4)
    assert len(_our_rules(topo)) == 4
    assert steering.state().in_sync


def test_a_rule_deleted_externally_is_restored_by_the_next_ensure(
    topo: Topology, steering: NftSteering
) -> None:
    steering.ensure()
    victim = next(r for r in _our_rules(topo) if r["chain"] == SPEC.prerouting_chain)
    run(
        topo.host,
        "nft",
        "delete",
        "rule",
        "inet",
        "ocp_nat",
        SPEC.prerouting_chain,
        "handle",
        str(victim["handle"]),
    )
    assert not steering.state().in_sync

    again = steering.ensure()
    assert again.changed and again.error is None
    assert len(_our_rules(topo)) == 4
    assert topo.fetch_banner(topo.client, VIP4, API_PORT) == "LB"
    assert topo.fetch_banner(topo.client, VIP6, API_PORT) == "LB"


def test_a_deleted_table_is_recreated(topo: Topology, steering: NftSteering) -> None:
    steering.ensure()
    run(topo.host, "nft", "delete", "table", "inet", "ocp_nat")
    assert steering.ensure().changed
    assert len(_our_rules(topo)) == 4


def test_rules_left_by_the_reference_monitor_are_adopted_not_duplicated(
    topo: Topology, steering: NftSteering
) -> None:
    # What the reference leaves behind: its chains (here with a counter on one rule) and our comment.
    c = f'comment "{SPEC.comment}"'
    pre, out = "add rule inet ocp_nat ocp_prerouting", "add rule inet ocp_nat ocp_output oif lo"
    script = f"""
add table inet ocp_nat
add chain inet ocp_nat ocp_prerouting {{ type nat hook prerouting priority dstnat; }}
add chain inet ocp_nat ocp_output {{ type nat hook output priority -100; }}
{pre} ip daddr {VIP4} tcp dport 6443 counter dnat ip to {VIP4}:9445 {c}
{pre} ip6 daddr {VIP6} tcp dport 6443 dnat ip6 to [{VIP6}]:9445 {c}
{out} ip daddr {VIP4} tcp dport 6443 redirect to :9445 {c}
{out} ip6 daddr {VIP6} tcp dport 6443 redirect to :9445 {c}
"""
    _nft_script(topo, script)
    result = steering.ensure()
    assert (result.changed, result.error, result.rules) == (False, None, 4)
    assert len(_our_rules(topo)) == 4


def test_an_old_style_redirect_rule_is_replaced_in_a_chain_with_another_priority(
    topo: Topology, steering: NftSteering
) -> None:
    _nft_script(
        topo,
        f"""
add table inet ocp_nat
add chain inet ocp_nat ocp_prerouting {{ type nat hook prerouting priority -90; }}
add rule inet ocp_nat ocp_prerouting ip daddr {VIP4} tcp dport 6443 redirect to :9445 comment "{SPEC.comment}"
add rule inet ocp_nat ocp_prerouting ip daddr {VIP4} tcp dport 6443 redirect to :9445 comment "{SPEC.comment}"
""",
    )
    result = steering.ensure()
    assert result.changed and result.error is None, result.error
    rules = _our_rules(topo)
    assert len(rules) == 4
    prerouting = [json.dumps(r) for r in rules if r["chain"] == SPEC.prerouting_chain]
    assert len(prerouting) == 2 and all('"dnat"' in r for r in prerouting)
    assert topo.fetch_banner(topo.client, VIP4, API_PORT) == "LB"


def test_removal_leaves_other_peoples_rules_chains_and_table_in_place(
    topo: Topology, steering: NftSteering
) -> None:
    steering.ensure()
    _nft_script(topo, 'add rule inet ocp_nat ocp_output tcp dport 22 accept comment "not ours"\n')
    assert steering.remove().changed
    listing = run(topo.host, "nft", "list", "table", "inet", "ocp_nat")
    assert "not ours" in listing and "ocp_output" in listing
    assert SPEC.comment not in listing and "ocp_prerouting" not in listing
    assert steering.remove().changed is False


def test_removing_when_nothing_is_installed_is_a_quiet_no_op(steering: NftSteering) -> None:
    result = steering.remove()
    assert (result.changed, result.error) == (False, None)


def test_a_missing_nft_binary_is_reported_as_one_line_not_raised() -> None:
    result = NftSteering(spec=SPEC, nft_bin="/nonexistent/nft").ensure()
    assert result.changed is False
    assert result.error == (
        "nftables: '/nonexistent/nft' not found on PATH (install nftables or pass --no-steering)"
    )
    assert NftSteering(spec=SPEC, nft_bin="/nonexistent/nft").remove().error is not None


def test_an_nft_failure_is_reported_with_nfts_own_first_line(topo: Topology) -> None:
    bad = NftSteering(spec=SteeringSpec(vips=(VIP4,), table="bad name!"), netns=topo.host)
    result = bad.ensure()
    assert result.error is not None and result.error.startswith("nftables: ")
    assert "\n" not in result.error


def _nft_script(topo: Topology, script: str) -> None:
    done = subprocess.run(
        ["ip", "netns", "exec", topo.host, "nft", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
