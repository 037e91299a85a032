"""The kernel's nftables change notifications: whether a table of ours may have changed since we last looked.

A netlink socket subscribed to NFNLGRP_NFTABLES receives one message per table, chain, rule, set … added or
deleted in this network namespace, by anyone (nft, iptables-nft, other controllers); listings send none.
The socket is never waited on: the steering cycle drains it without blocking, so an unchanged ruleset costs
a recv() that finds nothing instead of running ``nft -j list`` every check interval.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterable

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFNLGRP_NFTABLES = 7
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWGEN = 15  # the end of every transaction: carries no table
# nfgenmsg.nfgen_family
FAMILY_NUMBERS = {"inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}
# NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE, … are all attribute 1.
_TABLE_ATTRIBUTE = 1
_NLA_TYPE_MASK = 0x3FFF
_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NLA = struct.Struct("=HH")  # len, type
_NFGENMSG_SIZE = 4


def _align(n: int) -> int:
    return (n + 3) & ~3


def tables_named(data: bytes) -> set[tuple[int, bytes]]:
    """(family number, table name) of each nftables object message in one netlink datagram."""
    found: set[tuple[int, bytes]] = set()
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size:
            break
        end = min(offset + length, len(data))
        if mtype >> 8 == NFNL_SUBSYS_NFTABLES and mtype & 0xFF != NFT_MSG_NEWGEN:
            family = data[offset + _NLMSG.size] if offset + _NLMSG.size < end else -1
            attr = offset + _NLMSG.size + _NFGENMSG_SIZE
            while attr + _NLA.size <= end:
                alen, atype = _NLA.unpack_from(data, attr)
                if alen < _NLA.size:
                    break
                if atype & _NLA_TYPE_MASK == _TABLE_ATTRIBUTE:
                    found.add((family, data[attr + _NLA.size : attr + alen].rstrip(b"\0")))
                    break
                attr += _align(alen)
        offset += _align(length)
    return found


class RulesetWatch:
    """Subscribed from construction on: changed() says whether any of *tables* may have changed since its last call."""

    def __init__(self, *, tables: Iterable[tuple[str, str]]) -> None:
        """Raises OSError when netlink cannot be used here (then the caller must list every time)."""
        self._tables = {(FAMILY_NUMBERS[family], name.encode()) for family, name in tables}
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
        )
        try:
            self._sock.bind((0, 0))
            self._sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
        except OSError:
            self._sock.close()
            raise

    def changed(self) -> bool:
        """Drain what the kernel sent since the last call; True when one of our tables was named in it."""
        hit = False
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return hit
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    return True  # the socket is unusable: nothing can be known without looking
                # The socket overflowed and messages were lost: anything may have changed.
                hit = True
                continue
            if not hit and not self._tables.isdisjoint(tables_named(data)):
                hit = True

    def close(self) -> None:
        self._sock.close()
