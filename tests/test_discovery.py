"""Address rules: which address of which node becomes a backend."""

from __future__ import annotations

import ipaddress
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.adapters.netif import local_addresses
from monitor.discovery import (
    backends_from_endpointslices,
    backends_from_nodes,
    frontend_addr,
    machine_network,
    own_address,
)
from monitor.model import Backend
from tests import reference_rule as reference
from tests.netns import Topology, available, run

VIP4, VIP6 = "192.0.2.5", "2001:db8::5"
# This host holds both VIPs: keepalived put each beside the host's own address (IPv6 lists newest first).
HOLDER = [
    ipaddress.ip_interface(a)
    for a in ("127.0.0.1/8", "192.0.2.11/24", f"{VIP4}/32", "::1/128", f"{VIP6}/128", "2001:db8::11/64")
]
HOST_CIDRS, HOST_ADDRESSES = "k8s.ovn.org/host-cidrs", "k8s.ovn.org/host-addresses"


def node(name, *addresses, annotations=None):
    return {
        "metadata": {"name": name, "annotations": annotations or {}},
        "status": {"addresses": [{"type": t, "address": a} for t, a in addresses]},
    }


def test_backends_are_internal_ips_of_the_vip_family_sorted_by_address_with_the_api_port():
    nodes = [
        node("m2", ("InternalIP", "192.0.2.12"), ("Hostname", "m2")),
        node("m0", ("InternalIP", "192.0.2.30"), ("InternalIP", "2001:db8::30")),
        node("m1", ("ExternalIP", "198.51.100.1"), ("InternalIP", "192.0.2.4")),
    ]
    found = backends_from_nodes(nodes, vips=[VIP4], api_port=6443, local_addresses=HOLDER)
    assert found.backends == (
        Backend("m2", "192.0.2.12", 6443),
        Backend("m0", "192.0.2.30", 6443),
        Backend("m1", "192.0.2.4", 6443),
    ), "sorted by address as a string, like the reference"
    assert found.warnings == ()


def test_an_ipv6_vip_selects_ipv6_addresses_and_the_v6_frontend():
    nodes = [node("m0", ("InternalIP", "192.0.2.30"), ("InternalIP", "2001:db8::30"))]
    found = backends_from_nodes(nodes, vips=[VIP6, VIP4], api_port=6443, local_addresses=HOLDER)
    assert found.backends == (Backend("m0", "2001:db8::30", 6443),)
    assert frontend_addr([VIP6]) == "::"
    assert frontend_addr([VIP4]) == ""


def test_a_node_with_no_addresses_is_skipped_with_a_warning_naming_it():
    found = backends_from_nodes(
        [node("empty"), node("m0", ("InternalIP", "192.0.2.21"))],
        vips=[VIP4],
        api_port=6443,
        local_addresses=HOLDER,
    )
    assert [b.host for b in found.backends] == ["m0"]
    assert [w for w in found.warnings if "node empty" in w and "skipped" in w] == list(found.warnings)


def test_the_older_host_addresses_annotation_is_understood_and_garbage_is_reported():
    good = {HOST_ADDRESSES: json.dumps(["192.0.2.45"])}
    bad = {HOST_CIDRS: "{not json"}
    found = backends_from_nodes(
        [node("old", annotations=good), node("bad", annotations=bad)],
        vips=[VIP4],
        api_port=6443,
        local_addresses=HOLDER,
    )
    assert found.backends == (Backend("old", "192.0.2.45", 6443),)
    assert len(found.warnings) == 1
    assert "node bad" in found.warnings[0] and "k8s.ovn.org/host-cidrs (not a JSON list" in found.warnings[0]


def test_without_a_local_subnet_holding_the_vip_an_internal_ip_of_the_family_is_used_and_said_once():
    nodes = [node("far", ("InternalIP", "203.0.113.5")), node("near", ("InternalIP", "203.0.113.6"))]
    found = backends_from_nodes(nodes, vips=[VIP4], api_port=6443, local_addresses=[])
    assert found.backends == (Backend("far", "203.0.113.5", 6443), Backend("near", "203.0.113.6", 6443))
    assert len(found.warnings) == 1 and "no local interface address has VIP 192.0.2.5" in found.warnings[0]


def test_duplicate_addresses_keep_one_backend_and_warn():
    nodes = [node("b", ("InternalIP", "192.0.2.21")), node("a", ("InternalIP", "192.0.2.21"))]
    found = backends_from_nodes(nodes, vips=[VIP4], api_port=6443, local_addresses=HOLDER)
    assert found.backends == (Backend("a", "192.0.2.21", 6443),)
    assert any("duplicate" in w for w in found.warnings)


def test_a_two_node_topology_with_one_master_gets_the_placeholder_backend():
    nodes = [node("m0", ("InternalIP", "192.0.2.21"))]
    found = backends_from_nodes(
        nodes, vips=[VIP4], api_port=6443, local_addresses=HOLDER, topology="DualReplica"
    )
    assert found.backends[-1] == Backend("dummy", "0.0.0.0", 6443)
    found6 = backends_from_nodes(
        [node("m0", ("InternalIP", "2001:db8::21"))],
        vips=[VIP6],
        api_port=6443,
        local_addresses=HOLDER,
        topology="HighlyAvailableArbiter",
    )
    assert found6.backends[-1] == Backend("dummy", "::", 6443)


# -- the reference's per-node rule, case by case -----------------------------------------------------------

NO_VIP_SUBNET = [ipaddress.ip_interface("127.0.0.1/8"), ipaddress.ip_interface("::1/128")]


def cidrs(*entries):
    return {HOST_CIDRS: json.dumps(list(entries))}


# (why, VIPs, local addresses, the node's addresses, its annotations, chosen address or None, warning words)
RULE_CASES = [
    # Chosen as the reference chooses.
    ("several InternalIPs of the family: the last one", [VIP4], HOLDER,
     [("InternalIP", "192.0.2.21"), ("InternalIP", "192.0.2.22"), ("ExternalIP", "192.0.2.23")], {},
     "192.0.2.22", None),
    ("an InternalIP outside the machine network is still chosen when it is the last", [VIP4], HOLDER,
     [("InternalIP", "192.0.2.21"), ("InternalIP", "203.0.113.9")], cidrs("192.0.2.31/24"),
     "203.0.113.9", None),
    ("InternalIPs of the other family are passed over", [VIP4], HOLDER,
     [("InternalIP", "192.0.2.21"), ("InternalIP", "2001:db8::21")], {}, "192.0.2.21", None),
    ("without an InternalIP, host-cidrs holding this host's own address gives that address", [VIP4], HOLDER,
     [("Hostname", "m")], cidrs("192.0.2.30/24", "192.0.2.11/24"), "192.0.2.11", None),
    ("without an InternalIP, host-cidrs gives its first non-VIP address of the family in the machine network",
     [VIP4], HOLDER, [],
     cidrs("2001:db8::30/64", "198.51.100.9/24", "192.0.2.5/24", "192.0.2.31/24", "192.0.2.32/24"),
     "192.0.2.31", None),
    ("an InternalIP of the other family alone does not count: the annotation decides", [VIP4], HOLDER,
     [("InternalIP", "2001:db8::21")], cidrs("192.0.2.31/24"), "192.0.2.31", None),
    ("a second VIP in host-cidrs is passed over as well", [VIP4, "192.0.2.6"], HOLDER,
     [], cidrs("192.0.2.6/24", "192.0.2.31/24"), "192.0.2.31", None),
    ("host-addresses is read when host-cidrs is absent", [VIP4], HOLDER,
     [], {HOST_ADDRESSES: json.dumps(["198.51.100.9", "192.0.2.33"])}, "192.0.2.33", None),
    ("host-addresses is read when host-cidrs is not JSON", [VIP4], HOLDER,
     [], {HOST_CIDRS: "{not json", HOST_ADDRESSES: json.dumps(["192.0.2.33"])}, "192.0.2.33", None),
    ("host-addresses holding this host's own address gives that address", [VIP4], HOLDER,
     [], {HOST_ADDRESSES: json.dumps(["192.0.2.33", "192.0.2.11"])}, "192.0.2.11", None),
    ("an empty host-cidrs list hides host-addresses, as in the reference", [VIP4], HOLDER,
     [], {HOST_CIDRS: "[]", HOST_ADDRESSES: json.dumps(["192.0.2.33"])}, None, "no IPv4 InternalIP"),
    ("no annotated address in the machine network: skipped", [VIP4], HOLDER,
     [], cidrs("198.51.100.9/24"), None, "machine network 192.0.2.0/24"),
    ("without a machine network, the first InternalIP of the family, not the last", [VIP4], NO_VIP_SUBNET,
     [("InternalIP", "2001:db8::21"), ("InternalIP", "203.0.113.9"), ("InternalIP", "203.0.113.10")], {},
     "203.0.113.9", None),
    ("without a machine network, the OVN annotations are not read", [VIP4], NO_VIP_SUBNET,
     [], cidrs("192.0.2.31/24"), None, "no IPv4 InternalIP"),
    ("an IPv6 VIP: the last IPv6 InternalIP", [VIP6], HOLDER,
     [("InternalIP", "2001:db8::21"), ("InternalIP", "192.0.2.21"), ("InternalIP", "2001:db8::22")], {},
     "2001:db8::22", None),
    ("an IPv6 VIP: host-cidrs holding this host's own address gives that address", [VIP6], HOLDER,
     [("InternalIP", "192.0.2.21")], cidrs("2001:db8::30/64", "2001:db8::11/64"), "2001:db8::11", None),
    ("an IPv6 VIP: the first annotated IPv6 address in the machine network", [VIP6], HOLDER,
     [], cidrs("192.0.2.31/24", "2001:db8:1::30/64", "2001:db8::30/64"), "2001:db8::30", None),
    ("a dual-stack node under IPv6-first VIPs gets its IPv6 address", [VIP6, VIP4], HOLDER,
     [("InternalIP", "192.0.2.21"), ("InternalIP", "2001:db8::21")], {}, "2001:db8::21", None),
    ("a dual-stack node under IPv4-first VIPs gets its IPv4 address", [VIP4, VIP6], HOLDER,
     [("InternalIP", "192.0.2.21"), ("InternalIP", "2001:db8::21")], {}, "192.0.2.21", None),
    ("an IPv4-mapped IPv6 InternalIP counts as IPv4, as Go reads it", [VIP4], HOLDER,
     [("InternalIP", "::ffff:192.0.2.21")], {}, "192.0.2.21", None),
    # Refused: the reference would render an address HAProxy cannot use; the node is skipped instead.
    ("the last InternalIP is a VIP: skipped, not replaced by an earlier one", [VIP4], HOLDER,
     [("InternalIP", "192.0.2.21"), ("InternalIP", VIP4)], {}, None, "'192.0.2.5' is an API VIP"),
    ("a loopback InternalIP is refused", [VIP4], HOLDER,
     [("InternalIP", "127.0.0.1")], {}, None, "loopback"),
    ("a loopback InternalIP is kept under a loopback VIP (a single-host lab)", ["127.0.0.10"], HOLDER,
     [("InternalIP", "127.0.0.11")], {}, "127.0.0.11", None),
    ("a link-local InternalIP is refused", [VIP4], HOLDER,
     [("InternalIP", "169.254.0.7")], {}, None, "link-local"),
    ("an IPv6 link-local InternalIP is refused", [VIP6], HOLDER,
     [("InternalIP", "fe80::7")], {}, None, "link-local"),
    ("an unspecified InternalIP is refused", [VIP4], HOLDER,
     [("InternalIP", "0.0.0.0")], {}, None, "unspecified"),
    ("a multicast InternalIP is refused", [VIP6], HOLDER,
     [("InternalIP", "ff02::1")], {}, None, "multicast"),
    ("the network address of a host-cidrs entry is refused", [VIP4], HOLDER,
     [], cidrs("192.0.2.0/24", "192.0.2.31/24"), None, "network or broadcast address of 192.0.2.0/24"),
    ("the broadcast address of a host-cidrs entry is refused", [VIP4], HOLDER,
     [], cidrs("192.0.2.255/24"), None, "network or broadcast address of 192.0.2.255/24"),
    ("without a machine network, a first InternalIP that is no address is refused", [VIP4], NO_VIP_SUBNET,
     [("InternalIP", "bogus"), ("InternalIP", "203.0.113.9")], {}, None, "'bogus' is not an IP address"),
    ("without a machine network, an empty first InternalIP skips the node", [VIP4], NO_VIP_SUBNET,
     [("InternalIP", ""), ("InternalIP", "203.0.113.9")], {}, None, "'' is empty"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("vips", "local", "addresses", "annotations", "chosen", "warning"),
    [pytest.param(*case[1:], id=case[0]) for case in RULE_CASES],
)
def test_each_node_gets_the_address_the_reference_picks_or_is_skipped_with_one_warning(
    vips, local, addresses, annotations, chosen, warning
):
    found = backends_from_nodes(
        [node("m", *addresses, annotations=annotations)], vips=vips, api_port=6443, local_addresses=local
    )
    assert found.backends == ((Backend("m", chosen, 6443),) if chosen else ())
    about_node = [w for w in found.warnings if w.startswith("node m:")]
    if chosen:
        assert about_node == []
    else:
        assert len(about_node) == 1 and warning in about_node[0] and about_node[0].endswith("skipped")
    # Only the no-machine-network notice may come on top.
    assert len(found.warnings) - len(about_node) == (0 if local is HOLDER else 1)


# -- the machine network -----------------------------------------------------------------------------------


def ifaces(*texts):
    return [ipaddress.ip_interface(t) for t in texts]


@pytest.mark.parametrize(
    ("vip", "local", "network", "own"),
    [
        pytest.param(VIP4, ifaces("127.0.0.1/8", "192.0.2.11/24", "192.0.2.5/32"), "192.0.2.0/24", "192.0.2.11",
                     id="on the VIP holder the VIP's /32 beside the host address is not the machine network"),
        pytest.param(VIP4, ifaces("192.0.2.5/32", "192.0.2.11/24"), "192.0.2.0/24", "192.0.2.11",
                     id="a VIP /32 listed first (on an earlier interface) is passed over"),
        pytest.param(VIP4, ifaces("127.0.0.1/8", "192.0.2.5/32"), None, None,
                     id="the VIP's host route alone gives no machine network"),
        pytest.param(VIP4, ifaces("192.0.0.1/16", "192.0.2.11/24"), "192.0.0.0/16", "192.0.0.1",
                     id="the first address holding the VIP wins, not the narrowest"),
        pytest.param(VIP4, ifaces("192.0.2.5/24", "192.0.2.11/24"), "192.0.2.0/24", "192.0.2.11",
                     id="a VIP with a subnet prefix names the network but is never this host's own address"),
        pytest.param(VIP4, ifaces("2001:db8::11/64", "198.51.100.2/24"), None, None,
                     id="an address of the other family never holds the VIP"),
        pytest.param(VIP6, ifaces("::1/128", "2001:db8::5/128", "2001:db8::11/64"), "2001:db8::/64",
                     "2001:db8::11", id="on an IPv6 VIP holder the VIP's /128 listed first is passed over"),
        pytest.param(VIP6, ifaces("::1/128", "2001:db8::11/128"), "2001:db8::/64", "2001:db8::11",
                     id="a /128 host address (DHCPv6) counts as its /64"),
    ],
)  # fmt: skip
def test_the_machine_network_is_the_first_local_address_holding_the_vip_but_never_the_vips_own_route(
    vip, local, network, own
):
    assert machine_network([vip], local) == (ipaddress.ip_network(network) if network else None)
    assert own_address([vip], local) == (ipaddress.ip_address(own) if own else None)


NETNS = pytest.mark.skipif(available() is not None, reason=f"netns tests: {available()}")


@pytest.mark.netns
@NETNS
def test_on_the_vip_holder_ip_address_shows_the_vip_route_and_nodes_still_get_machine_network_addresses():
    """keepalived's layout, read through the real ``ip -j address``: VIP beside the host address on one veth."""
    with Topology.create(
        host_addrs=["192.0.2.11/24", f"{VIP4}/32", "2001:db8::11/64", f"{VIP6}/128"],
        client_addrs=["192.0.2.12/24", "2001:db8::12/64"],
    ) as topo:
        local = local_addresses(netns=topo.host)
        assert {ipaddress.ip_interface(f"{VIP4}/32"), ipaddress.ip_interface(f"{VIP6}/128")} <= set(local)
        for vip, network, own, outside, inside in (
            (VIP4, "192.0.2.0/24", "192.0.2.11", "198.51.100.9/24", "192.0.2.31/24"),
            (VIP6, "2001:db8::/64", "2001:db8::11", "2001:db8:1::9/64", "2001:db8::31/64"),
        ):
            assert machine_network([vip], local) == ipaddress.ip_network(network)
            nodes = [
                node("this", annotations=cidrs(outside, f"{own}/64")),
                node("that", annotations=cidrs(outside, f"{vip}/64", inside)),
            ]
            found = backends_from_nodes(nodes, vips=[vip], api_port=6443, local_addresses=local)
            assert {(b.host, b.address) for b in found.backends} == {("this", own), ("that", inside[:-3])}
            assert found.warnings == ()


@pytest.mark.netns
@NETNS
def test_a_vip_route_on_an_earlier_interface_than_the_host_address_is_passed_over():
    with Topology.create(host_addrs=[f"{VIP4}/32"], client_addrs=["198.51.100.2/24"]) as topo:
        topo.add_peer("mn", host_if="eth1", host_addrs=["192.0.2.11/24"], peer_addrs=["192.0.2.12/24"])
        local = local_addresses(netns=topo.host)
        assert local.index(ipaddress.ip_interface(f"{VIP4}/32")) < local.index(
            ipaddress.ip_interface("192.0.2.11/24")
        )
        assert machine_network([VIP4], local) == ipaddress.ip_network("192.0.2.0/24")
        found = backends_from_nodes(
            [node("m", annotations=cidrs("192.0.2.31/24"))], vips=[VIP4], api_port=6443, local_addresses=local
        )
        assert found.backends == (Backend("m", "192.0.2.31", 6443),)


@pytest.mark.netns
@NETNS
def test_an_interface_whose_name_is_not_utf8_does_not_hide_the_machine_network():
    """Interface names are bytes to the kernel; `ip -j` prints them as they are."""
    with Topology.create(host_addrs=["192.0.2.11/24"], client_addrs=["192.0.2.12/24"]) as topo:
        run(topo.host, "ip", "link", "set", topo.host_if, "down")
        run(topo.host, "ip", "link", "set", topo.host_if, "name", os.fsdecode(b"veth-\xff"))
        local = local_addresses(netns=topo.host)
        assert machine_network([VIP4], local) == ipaddress.ip_network("192.0.2.0/24")


# -- agreement with the reference over random node sets ----------------------------------------------------

# Usable addresses three times as often as odd ones, so that most picks are comparable.
USABLE = ["192.0.2.11", "192.0.2.12", "192.0.2.21", "192.0.2.22", "198.51.100.7",
          "2001:db8::11", "2001:db8::21", "2001:db8::22", "2001:db8:1::7"]  # fmt: skip
ODD = [VIP4, VIP6, "192.0.2.6", "192.0.2.0", "192.0.2.255", "127.0.0.1", "169.254.3.4", "0.0.0.0", "224.0.0.5",
       "::ffff:192.0.2.23", "fe80::1", "::1", "::", "ff02::1", "", "bogus"]  # fmt: skip
POOL = USABLE * 3 + ODD
LOCAL_POOL = ["192.0.2.11/24", "192.0.2.12/24", "192.0.0.1/16", f"{VIP4}/32", "198.51.100.2/24",
              "2001:db8::11/64", "2001:db8::12/128", f"{VIP6}/128", "2001:db8:1::2/64"]  # fmt: skip
VIP_CHOICES = [[VIP4], [VIP6], [VIP4, VIP6], [VIP6, VIP4], [VIP4, "192.0.2.6"]]


def _cidr_entry(address: str, prefix: int) -> str:
    return f"{address}/{prefix}"


_annotation = st.one_of(
    st.none(),
    st.sampled_from(["{not json", "[]", "null", '"192.0.2.21"']),
    st.lists(
        st.one_of(st.builds(_cidr_entry, st.sampled_from(POOL), st.sampled_from([24, 30, 32, 64, 128])),
                  st.sampled_from(POOL)),
        max_size=4,
    ).map(json.dumps),
)  # fmt: skip


@st.composite
def node_sets(draw):
    """VIPs, this host's addresses (in order) and 1-5 control-plane Nodes with random addresses and annotations."""
    vips = draw(st.sampled_from(VIP_CHOICES))
    local = [
        "127.0.0.1/8",
        "::1/128",
        *draw(st.lists(st.sampled_from(LOCAL_POOL), unique=True, min_size=2, max_size=6)),
    ]
    nodes = []
    for i in range(draw(st.integers(1, 5))):
        entries = draw(st.lists(st.tuples(st.sampled_from(["InternalIP", "InternalIP", "ExternalIP"]),
                                          st.sampled_from(POOL)), max_size=4))  # fmt: skip
        annotations = {}
        for key in (HOST_CIDRS, HOST_ADDRESSES):
            value = draw(_annotation)
            if value is not None:
                annotations[key] = value
        nodes.append(node(f"m{i}", *entries, annotations=annotations))
    return vips, local, nodes


def reference_view(vips, local):
    """The reference's machine network and own address on a host with these addresses minus the VIP routes."""
    vip_routes = {f"{v}/32" for v in vips} | {f"{v}/128" for v in vips}
    without = [entry for entry in local if entry not in vip_routes]
    return reference.local_cidr(vips[0], without), reference.own_address(vips, without)


def compare_with_reference(vips, local, nodes):
    """(ours, the reference's usable picks deduplicated, names of nodes whose pick is unusable, our warnings)."""
    network, own = reference_view(vips, local)
    expected, refused = {}, []
    for item in nodes:
        name = item["metadata"]["name"]
        picked = reference.pick(item, vips, network, own)
        if picked is not None and reference.usable(picked[0], picked[1], vips):
            expected.setdefault(reference.go_string(picked[0]), name)  # one backend per address: first name
        else:
            refused.append(name)
    found = backends_from_nodes(
        nodes, vips=vips, api_port=6443, local_addresses=[ipaddress.ip_interface(e) for e in local]
    )
    wanted = tuple(Backend(name, address, 6443) for address, name in sorted(expected.items()))
    return found, wanted, refused


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(node_sets())
def test_every_usable_address_the_reference_picks_is_ours_and_every_other_node_is_skipped_with_a_warning(
    drawn,
):
    vips, local, nodes = drawn
    found, wanted, refused = compare_with_reference(vips, local, nodes)
    assert found.backends == wanted
    for name in refused:
        assert any(w.startswith(f"node {name}:") and w.endswith("skipped") for w in found.warnings), name


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.sampled_from(VIP_CHOICES), st.lists(st.sampled_from(LOCAL_POOL), unique=True, max_size=6))
def test_the_machine_network_is_the_references_on_a_host_that_does_not_hold_the_vip(vips, entries):
    local = ["127.0.0.1/8", "::1/128", *entries]
    network, own = reference_view(vips, local)
    ours = [ipaddress.ip_interface(e) for e in local]
    assert machine_network(vips, ours) == (ipaddress.ip_network(network, strict=False) if network else None)
    assert own_address(vips, ours) == (ipaddress.ip_address(own) if own else None)


def test_endpoint_slices_give_ready_endpoints_of_the_vip_family():
    slices = [
        {
            "metadata": {"name": "kubernetes"},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["192.0.2.21"], "conditions": {"ready": True}, "nodeName": "m1"},
                {"addresses": ["192.0.2.22"], "conditions": {"ready": False}},
                {"addresses": ["192.0.2.20"]},
            ],
        },
        {"metadata": {"name": "v6"}, "addressType": "IPv6", "endpoints": [{"addresses": ["2001:db8::1"]}]},
    ]
    found = backends_from_endpointslices(slices, vips=[VIP4], api_port=6443)
    assert found.backends == (Backend("192.0.2.20", "192.0.2.20", 6443), Backend("m1", "192.0.2.21", 6443))


# -- untrusted names and addresses never reach a template ---------------------------------------------------

INJECTION = "evil\nprogram x\n  command /bin/touch /tmp/pwned"
BAD_NAMES = [
    INJECTION, "has space", "Upper", "-lead", "trail-", "a..b", ".dot", "under_score", "tab\there", "",
    "x" * 254, "caf\u00e9", "lone\udcff", "semi;colon", "quote'd", "a/b", "#comment",
]  # fmt: skip
GOOD_NAMES = ["m0", "master-0.example.com", "a", "0", "x" * 253, "x" * 64 + ".example"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=range(len(BAD_NAMES)))
def test_a_node_whose_name_is_not_a_dns_subdomain_is_skipped_with_one_one_line_warning(name):
    nodes = [node(name, ("InternalIP", "192.0.2.21")), node("m1", ("InternalIP", "192.0.2.22"))]
    found = backends_from_nodes(nodes, vips=[VIP4], api_port=6443, local_addresses=HOLDER)
    assert found.backends == (Backend("m1", "192.0.2.22", 6443),), "the other backends are served"
    assert len(found.warnings) == 1, found.warnings
    warning = found.warnings[0]
    assert warning.startswith("node ") and warning.endswith("not a DNS-1123 subdomain; skipped")
    assert warning.isprintable() and len(warning) < 200, "one readable line, whatever the name holds"
    assert repr(name)[:40] in warning, "the warning names the object"


@pytest.mark.parametrize("name", GOOD_NAMES, ids=range(len(GOOD_NAMES)))
def test_every_name_the_api_server_accepts_for_a_node_is_a_backend(name):
    found = backends_from_nodes(
        [node(name, ("InternalIP", "192.0.2.21"))], vips=[VIP4], api_port=6443, local_addresses=HOLDER
    )
    assert found.backends == (Backend(name, "192.0.2.21", 6443),)
    assert found.warnings == ()


def test_a_node_without_a_name_or_with_a_name_that_is_not_text_is_skipped():
    nodes = [
        {"metadata": {}, "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.21"}]}},
        node(7, ("InternalIP", "192.0.2.22")),
        node(["m"], ("InternalIP", "192.0.2.23")),
    ]
    found = backends_from_nodes(nodes, vips=[VIP4], api_port=6443, local_addresses=HOLDER)
    assert found.backends == ()
    assert len(found.warnings) == 3 and all(w.endswith("skipped") for w in found.warnings)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.text(alphabet=st.sampled_from("ab9-.Z _\n\t:/\"'#{}%\x00\u00e9\udcff"), max_size=20))
def test_a_backend_host_only_ever_holds_lowercase_letters_digits_dashes_and_dots(name):
    found = backends_from_nodes(
        [node(name, ("InternalIP", "192.0.2.21"))], vips=[VIP4], api_port=6443, local_addresses=HOLDER
    )
    for backend in found.backends:
        assert set(backend.host) <= set("abcdefghijklmnopqrstuvwxyz0123456789-.")
        assert backend.host == name
    assert len(found.backends) + len(found.warnings) == 1, "served, or skipped with exactly one warning"


def slice_of(*endpoints, name="kubernetes", address_type="IPv4"):
    return {"metadata": {"name": name}, "addressType": address_type, "endpoints": list(endpoints)}


@pytest.mark.parametrize("name", [n for n in BAD_NAMES if n], ids=range(len(BAD_NAMES) - 1))
def test_an_endpoint_whose_node_name_is_not_a_dns_subdomain_is_skipped_with_one_warning(name):
    slices = [
        slice_of(
            {"addresses": ["192.0.2.21"], "nodeName": name},
            {"addresses": ["192.0.2.22"], "nodeName": "m1"},
            {"addresses": ["192.0.2.23"], "hostname": name},
        )
    ]
    found = backends_from_endpointslices(slices, vips=[VIP4], api_port=6443)
    assert found.backends == (Backend("m1", "192.0.2.22", 6443),)
    assert len(found.warnings) == 2, found.warnings
    for warning in found.warnings:
        assert warning.startswith("endpointslice kubernetes: endpoint ") and warning.endswith("skipped")
        assert warning.isprintable()


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        (VIP4, "an API VIP"),
        ("0.0.0.0", "unspecified"),
        ("127.0.0.1", "a loopback address"),
        ("169.254.3.4", "a link-local address"),
        ("224.0.0.5", "a multicast address"),
        ("255.255.255.255", "the broadcast address"),
        ("2001:db8::7", "not an IPv4 address"),
        ("192.0.2.7\nserver x 1.2.3.4:1", "not an IP address"),
        ("", "empty"),
        (7, "not an IP address"),
    ],
)
def test_an_endpoint_address_that_cannot_be_a_backend_is_refused_like_a_node_address(address, reason):
    slices = [slice_of({"addresses": [address, "192.0.2.21"], "nodeName": "m0"})]
    found = backends_from_endpointslices(slices, vips=[VIP4], api_port=6443)
    assert found.backends == (Backend("m0", "192.0.2.21", 6443),)
    assert len(found.warnings) == 1 and reason in found.warnings[0], found.warnings
    assert found.warnings[0].isprintable()


@pytest.mark.parametrize("vips", [[], ()])
def test_discovery_refuses_to_guess_a_family_without_vips(vips):
    with pytest.raises(ValueError):
        backends_from_nodes([], vips=vips, api_port=6443, local_addresses=[])
