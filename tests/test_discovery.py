"""Address rules: which address of which node becomes a backend."""

from __future__ import annotations

import ipaddress
import json

import pytest

from monitor.discovery import (
    backends_from_endpointslices,
    backends_from_nodes,
    frontend_addr,
    machine_network,
)
from monitor.model import Backend

NETS = [ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/64")]


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
    found = backends_from_nodes(nodes, vips=["192.0.2.10"], api_port=6443, local_networks=NETS)
    assert found.backends == (
        Backend("m2", "192.0.2.12", 6443),
        Backend("m0", "192.0.2.30", 6443),
        Backend("m1", "192.0.2.4", 6443),
    ), "sorted by address as a string, like the reference"


def test_an_ipv6_vip_selects_ipv6_addresses_and_the_v6_frontend():
    nodes = [node("m0", ("InternalIP", "192.0.2.30"), ("InternalIP", "2001:db8::30"))]
    found = backends_from_nodes(
        nodes, vips=["2001:db8::10", "192.0.2.10"], api_port=6443, local_networks=NETS
    )
    assert found.backends == (Backend("m0", "2001:db8::30", 6443),)
    assert frontend_addr(["2001:db8::10"]) == "::"
    assert frontend_addr(["192.0.2.10"]) == ""


def test_a_node_with_no_addresses_is_skipped_with_a_warning_naming_it():
    found = backends_from_nodes(
        [node("empty"), node("m0", ("InternalIP", "192.0.2.5"))],
        vips=["192.0.2.10"],
        api_port=6443,
        local_networks=NETS,
    )
    assert [b.host for b in found.backends] == ["m0"]
    assert any("node empty" in w and "skipped" in w for w in found.warnings)


def test_a_node_with_only_the_other_family_is_skipped_and_never_gets_an_empty_address():
    found = backends_from_nodes(
        [node("v6only", ("InternalIP", "2001:db8::7"))],
        vips=["192.0.2.10"],
        api_port=6443,
        local_networks=NETS,
    )
    assert found.backends == ()
    assert any("v6only" in w for w in found.warnings)


def test_the_ovn_host_cidrs_annotation_is_used_when_there_is_no_internal_ip():
    ann = {"k8s.ovn.org/host-cidrs": json.dumps(["198.51.100.9/24", "192.0.2.10/24", "192.0.2.44/24"])}
    found = backends_from_nodes(
        [node("ovn", annotations=ann)], vips=["192.0.2.10"], api_port=6443, local_networks=NETS
    )
    assert found.backends == (Backend("ovn", "192.0.2.44", 6443),), "in the machine network and not the VIP"


def test_the_older_host_addresses_annotation_is_understood_and_garbage_is_reported():
    good = {"k8s.ovn.org/host-addresses": json.dumps(["192.0.2.45"])}
    bad = {"k8s.ovn.org/host-cidrs": "{not json"}
    found = backends_from_nodes(
        [node("old", annotations=good), node("bad", annotations=bad)],
        vips=["192.0.2.10"],
        api_port=6443,
        local_networks=NETS,
    )
    assert found.backends == (Backend("old", "192.0.2.45", 6443),)
    assert any("bad" in w and "k8s.ovn.org/host-cidrs" in w for w in found.warnings)


def test_without_a_local_subnet_holding_the_vip_any_internal_ip_of_the_family_is_used():
    nodes = [node("far", ("InternalIP", "203.0.113.5"))]
    found = backends_from_nodes(nodes, vips=["192.0.2.10"], api_port=6443, local_networks=[])
    assert found.backends == (Backend("far", "203.0.113.5", 6443),)
    assert any("no local interface" in w for w in found.warnings)


def test_an_internal_ip_in_the_machine_network_is_preferred_over_one_outside_it():
    nodes = [node("m", ("InternalIP", "203.0.113.5"), ("InternalIP", "192.0.2.77"))]
    found = backends_from_nodes(nodes, vips=["192.0.2.10"], api_port=6443, local_networks=NETS)
    assert found.backends == (Backend("m", "192.0.2.77", 6443),)


def test_duplicate_addresses_keep_one_backend_and_warn():
    nodes = [node("b", ("InternalIP", "192.0.2.5")), node("a", ("InternalIP", "192.0.2.5"))]
    found = backends_from_nodes(nodes, vips=["192.0.2.10"], api_port=6443, local_networks=NETS)
    assert found.backends == (Backend("a", "192.0.2.5", 6443),)
    assert any("duplicate" in w for w in found.warnings)


def test_a_two_node_topology_with_one_master_gets_the_placeholder_backend():
    nodes = [node("m0", ("InternalIP", "192.0.2.5"))]
    found = backends_from_nodes(
        nodes, vips=["192.0.2.10"], api_port=6443, local_networks=NETS, topology="DualReplica"
    )
    assert found.backends[-1] == Backend("dummy", "0.0.0.0", 6443)
    found6 = backends_from_nodes(
        [node("m0", ("InternalIP", "2001:db8::5"))],
        vips=["2001:db8::10"],
        api_port=6443,
        local_networks=NETS,
        topology="HighlyAvailableArbiter",
    )
    assert found6.backends[-1] == Backend("dummy", "::", 6443)


def test_the_machine_network_is_the_narrowest_local_subnet_holding_the_vip():
    nets = [ipaddress.ip_network("192.0.0.0/16"), ipaddress.ip_network("192.0.2.0/24")]
    assert str(machine_network("192.0.2.10", nets)) == "192.0.2.0/24"
    assert machine_network("198.51.100.1", nets) is None


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
    found = backends_from_endpointslices(slices, vips=["192.0.2.10"], api_port=6443)
    assert found.backends == (Backend("192.0.2.20", "192.0.2.20", 6443), Backend("m1", "192.0.2.21", 6443))


@pytest.mark.parametrize("vips", [[], ()])
def test_discovery_refuses_to_guess_a_family_without_vips(vips):
    with pytest.raises(ValueError):
        backends_from_nodes([], vips=vips, api_port=6443, local_networks=[])
