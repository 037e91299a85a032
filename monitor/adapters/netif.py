"""This host's interface addresses, in interface and address order, read with ``ip -j address``."""

from __future__ import annotations

import ipaddress
import json
import subprocess

from monitor.discovery import IPInterface


class NetifError(Exception):
    """Local addresses could not be read."""


def parse_ip_json(text: str) -> list[IPInterface]:
    """Addresses with their prefixes from ``ip -j address`` output, in the order it lists them.

    The order matters: the machine network is the first address whose prefix holds the VIP, as in the
    reference, which walks interfaces and their addresses the same way.
    """
    try:
        links = json.loads(text)
    except ValueError as exc:
        raise NetifError(f"'ip -j address' printed invalid JSON: {exc}") from None
    addresses: list[IPInterface] = []
    for link in links if isinstance(links, list) else []:
        for info in link.get("addr_info") or []:
            local, prefix = info.get("local"), info.get("prefixlen")
            if not isinstance(local, str) or not isinstance(prefix, int):
                continue
            try:
                addresses.append(ipaddress.ip_interface(f"{local}/{prefix}"))
            except ValueError:
                continue
    return addresses


def local_addresses(*, ip_bin: str = "ip", netns: str | None = None) -> list[IPInterface]:
    """This host's interface addresses (or a test network namespace's), in ``ip address`` order."""
    argv = [ip_bin, "-j", "address", "show"]
    if netns:
        argv = [ip_bin, "-n", netns, "-j", "address", "show"]
    try:
        # Interface names and labels are bytes to the kernel: never let one that is not UTF-8 crash the read.
        proc = subprocess.run(
            argv, capture_output=True, encoding="utf-8", errors="replace", timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetifError(f"cannot run {ip_bin!r} to read local addresses: {exc}") from None
    if proc.returncode != 0:
        raise NetifError(f"'{' '.join(argv)}' failed: {proc.stderr.strip() or proc.returncode}")
    return parse_ip_json(proc.stdout)
