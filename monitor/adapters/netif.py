"""Local interface subnets (to find the machine network that holds the API VIP), read with ``ip -j address``."""

from __future__ import annotations

import ipaddress
import json
import subprocess

from monitor.discovery import IPNetwork


class NetifError(Exception):
    """Local addresses could not be read."""


def parse_ip_json(text: str) -> list[IPNetwork]:
    """Subnets from ``ip -j address`` output; host-scope (loopback) entries included, link-local skipped."""
    try:
        links = json.loads(text)
    except ValueError as exc:
        raise NetifError(f"'ip -j address' printed invalid JSON: {exc}") from None
    networks: list[IPNetwork] = []
    for link in links if isinstance(links, list) else []:
        for info in link.get("addr_info") or []:
            local, prefix = info.get("local"), info.get("prefixlen")
            if not isinstance(local, str) or not isinstance(prefix, int) or info.get("scope") == "link":
                continue
            try:
                networks.append(ipaddress.ip_interface(f"{local}/{prefix}").network)
            except ValueError:
                continue
    return networks


def local_networks(*, ip_bin: str = "ip", netns: str | None = None) -> list[IPNetwork]:
    """The subnets of this host's addresses (or of a test network namespace's)."""
    argv = [ip_bin, "-j", "address", "show"]
    if netns:
        argv = [ip_bin, "-n", netns, "-j", "address", "show"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetifError(f"cannot run {ip_bin!r} to read local addresses: {exc}") from None
    if proc.returncode != 0:
        raise NetifError(f"'{' '.join(argv)}' failed: {proc.stderr.strip() or proc.returncode}")
    return parse_ip_json(proc.stdout)
