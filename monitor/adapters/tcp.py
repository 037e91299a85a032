"""TCP connections to the local HAProxy endpoints polled every cycle (health URL, stats page).

The address that answered last for a (host, port) is tried first: a name such as "localhost" needs no lookup
each cycle, and when it resolves to ::1 first while HAProxy is bound to 127.0.0.1 only, the refused attempt
is not paid every cycle either. A failure forgets the address and resolves the name again.
"""

from __future__ import annotations

import socket

_answered: dict[tuple[str, int], tuple[int, tuple[object, ...]]] = {}
_ANSWERED_MAX = 64  # names come from the command line and the rendered config: a handful


def connect(host: str, port: int, timeout: float) -> socket.socket:
    """A connected TCP socket with ``timeout`` set; raises OSError (TimeoutError included) like create_connection."""
    key = (host, port)
    known = _answered.get(key)
    if known is not None:
        family, address = known
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError:
            sock.close()
            _answered.pop(key, None)
    sock = socket.create_connection((host, port), timeout=timeout)
    if len(_answered) >= _ANSWERED_MAX:
        _answered.clear()
    _answered[key] = (sock.family, sock.getpeername())
    return sock
