"""Test helper: the check OpenShift's keepalived monitor runs on the steering rules, done from nft's listing.

The keepalived monitor (a separate static pod) gives its host +20 VRRP priority only while this passes:
in table ``ocp_nat`` of the first VIP's family (``ip`` or ``ip6``), chain ``ocp_prerouting`` and chain
``ocp_output`` each hold a rule with the comment ``OCP_API_LB_REDIRECT``. Like the reference it looks
at nothing else: not the VIP, not the target, not other tables. Typical use::

    assert reference_check_passes("192.0.2.10")                      # in this network namespace
    assert not reference_check_passes("2001:db8::10", netns=topo.host)
"""

from __future__ import annotations

import ipaddress
import json
import subprocess

TABLE, COMMENT = "ocp_nat", "OCP_API_LB_REDIRECT"
CHAINS = ("ocp_prerouting", "ocp_output")


def reference_check_passes(first_vip: str, *, netns: str | None = None) -> bool:
    """True when both chains of the first VIP's family's ``ocp_nat`` table hold a rule with our comment."""
    family = "ip6" if ipaddress.ip_address(first_vip).version == 6 else "ip"
    prefix = ["ip", "netns", "exec", netns] if netns else []
    done = subprocess.run(
        [*prefix, "nft", "-j", "list", "table", family, TABLE],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if done.returncode != 0:
        if "No such file or directory" in done.stderr:
            return False  # no table: the reference's check fails the same way
        raise RuntimeError(f"nft -j list table {family} {TABLE} failed: {done.stderr.strip()}")
    chains_with_rule = {
        item["rule"].get("chain")
        for item in json.loads(done.stdout)["nftables"]
        if "rule" in item and item["rule"].get("comment") == COMMENT
    }
    return all(chain in chains_with_rule for chain in CHAINS)
