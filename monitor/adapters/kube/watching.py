"""List, then watch from the list's resourceVersion: one generator per layer, no threads inside."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from monitor.adapters.kube.client import Api, Client
from monitor.adapters.kube.errors import Gone, Interrupted, Malformed, RequestFailed, StreamCut, Unreachable
from monitor.adapters.kube.shapes import check_bookmark, check_list, check_object, check_status

_READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class Resource:
    """A collection to list and watch: its path and the label selector that filters it."""

    path: str
    selector: str


@dataclass(frozen=True)
class Listing:
    """What a list returned: the items and the resourceVersion to watch from."""

    items: list[dict[str, Any]]
    resource_version: str


@dataclass(frozen=True)
class Change:
    """One watch event (ADDED, MODIFIED, DELETED or BOOKMARK) and the stream's resourceVersion after it."""

    type: str
    object: dict[str, Any]
    resource_version: str


@dataclass(frozen=True)
class WatchRequest:
    """How the next watch request is made: with which credentials, and how long the server may keep it open."""

    client: Client
    timeout: int


def list_objects(api: Api, client: Client, *, server: str, resource: Resource) -> Listing:
    """List *resource* on *server*; raises a KubeError when the server cannot serve, Malformed for garbage."""
    body = api.get_json(client, server, resource.path, {"labelSelector": resource.selector})
    items = check_list(body, path=resource.path, where=f"{server}: {resource.path}")
    version = str((body.get("metadata") or {}).get("resourceVersion") or "")
    return Listing(items=items, resource_version=version)


def continuous_watch(
    api: Api,
    *,
    server: str,
    resource: Resource,
    since: str,
    stopped: Callable[[], bool],
    next_request: Callable[[], WatchRequest | None],
    pause: Callable[[int], None],
) -> Generator[Change, None, None]:
    """Watch *resource* from *since*, opening a new watch each time one ends, and yield every change.

    Ends, so that the caller lists again, when the server no longer knows the version (410 Gone), when it
    cannot be reached (after a pause), when next_request() returns None, or once stopped() is true.
    A cut stream is watched again from the version at its start, after pause(n) for the nth cut in a row.
    Refusals (401, 403, a watch ERROR event), malformed events and credential errors are raised.
    """
    version = since
    cuts = 0
    while not stopped():
        request = next_request()
        if request is None:
            return
        latest = version
        try:
            with contextlib.closing(
                watch_events(
                    api,
                    request.client,
                    server=server,
                    resource=resource,
                    since=version,
                    timeout=request.timeout,
                    stopped=stopped,
                )
            ) as changes:
                for change in changes:
                    latest = change.resource_version
                    yield change
            version = latest
            cuts = 0
        except StreamCut:
            pause(cuts)
            cuts += 1
        except Unreachable:
            # The server went away between list and watch: the caller lists again, there or elsewhere.
            pause(cuts)
            return
        except Interrupted:
            if stopped():
                return
        except Gone:
            return


def watch_events(
    api: Api,
    client: Client,
    *,
    server: str,
    resource: Resource,
    since: str,
    timeout: int,
    stopped: Callable[[], bool],
) -> Generator[Change, None, None]:
    """One watch request from *since*: yields its changes until the server ends it after *timeout* seconds.

    Raises Gone for an expired version, RequestFailed for an ERROR event, Malformed for an event that is
    not one (or over limits.line_bytes), StreamCut when the stream breaks, and Interrupted when it was cut
    on purpose or stopped() turned true. A server that keeps the stream open past its timeout is left.
    """
    query = {
        "watch": "1",
        "resourceVersion": since,
        "allowWatchBookmarks": "true",
        "timeoutSeconds": str(timeout),
        "labelSelector": resource.selector,
    }
    resp = api.request(client, server, resource.path, query, read_timeout=api.request_timeout)
    # Headers came within request_timeout; the body may then stay quiet until the server's own timeout.
    conn = getattr(resp, "connection", None)
    if conn is not None and conn.sock is not None:
        conn.sock.settimeout(timeout + api.request_timeout)
    deadline = time.monotonic() + timeout + api.request_timeout
    where = f"{server}: watch {resource.path}"
    version = since
    complete = False
    try:
        for line in _lines(resp, limit=api.limits.line_bytes, deadline=deadline, where=where):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                raise Malformed(f"{where}: an event that is not JSON") from None
            change = _change(event, version, path=resource.path, where=where)
            version = change.resource_version
            if stopped():
                raise Interrupted()
            yield change
        # Past the deadline the stream was left unfinished: its connection must not be reused.
        complete = time.monotonic() <= deadline
    except (Interrupted, Gone, RequestFailed, Malformed):
        raise
    except Exception:
        if api.interrupted():
            raise Interrupted() from None
        raise StreamCut() from None
    finally:
        if not complete:
            # A stream abandoned midway must not go back to the pool with unread bytes on it.
            resp.close()
        resp.release_conn()


def _change(event: Any, version: str, *, path: str, where: str) -> Change:
    if not isinstance(event, dict):
        raise Malformed(f"{where}: an event that is not a JSON object")
    etype = event.get("type")
    what = f"{where}: {etype} event object"
    if etype == "ERROR":
        status = check_status(event.get("object"), where=what)
        if status.get("code") == 410:
            raise Gone(f"watch: {status.get('message') or 'resourceVersion expired'}")
        raise RequestFailed(f"watch error {status.get('code')}: {status.get('message')}")
    if etype == "BOOKMARK":
        obj = check_bookmark(event.get("object"), where=what)
    elif etype in ("ADDED", "MODIFIED", "DELETED"):
        obj = check_object(event.get("object"), path=path, where=what)
    else:
        raise Malformed(f"{where}: an event of unknown type {str(etype)[:40]!r}")
    meta = obj.get("metadata") or {}
    return Change(type=str(etype), object=obj, resource_version=str(meta.get("resourceVersion") or version))


def _lines(resp: Any, *, limit: int, deadline: float, where: str) -> Iterator[bytes]:
    """The stream's lines, each at most *limit* bytes; ends (as the server should have) at *deadline*."""
    too_long = Malformed(f"{where}: an event over {limit // (1024 * 1024)} MiB")
    buf = bytearray()
    scanned = 0  # bytes of buf known to hold no newline
    while chunk := resp.read1(_READ_BYTES):
        buf += chunk
        while (end := buf.find(b"\n", scanned)) >= 0:
            if end > limit:
                raise too_long
            yield bytes(buf[:end])
            del buf[: end + 1]
            scanned = 0
        scanned = len(buf)
        if len(buf) > limit:
            raise too_long
        if time.monotonic() > deadline:
            return
    if buf.strip():
        yield bytes(buf)
