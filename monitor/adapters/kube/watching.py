"""List, then watch from the list's resourceVersion: one generator per layer, no threads inside."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from monitor.adapters.kube.client import Api, Client
from monitor.adapters.kube.errors import Gone, Interrupted, RequestFailed, StreamCut, Unreachable


@dataclass(frozen=True)
class Resource:
    """A collection to list and watch: its path and the label selector that filters it."""

    path: str
    selector: str


@dataclass(frozen=True)
class Listing:
    """What a list returned: the items and the resourceVersion to watch from."""

    items: list[Any]
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
    """List *resource* on *server*; raises a KubeError when the server cannot serve."""
    body = api.get_json(client, server, resource.path, {"labelSelector": resource.selector})
    items = body.get("items") or []
    version = str((body.get("metadata") or {}).get("resourceVersion") or "")
    return Listing(items=list(items), resource_version=version)


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
    Refusals (401, 403, a watch ERROR event) and credential errors are raised.
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

    Raises Gone for an expired version, RequestFailed for an ERROR event, StreamCut when the stream breaks,
    and Interrupted when it was cut on purpose or stopped() turned true.
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
    version = since
    complete = False
    try:
        for line in _lines(resp):
            if not line.strip():
                continue
            change = _change(json.loads(line), version)
            version = change.resource_version
            if stopped():
                raise Interrupted()
            yield change
        complete = True
    except (Interrupted, Gone, RequestFailed):
        raise
    except ValueError:
        raise StreamCut() from None
    except Exception:
        if api.interrupted():
            raise Interrupted() from None
        raise StreamCut() from None
    finally:
        if not complete:
            # A stream abandoned midway must not go back to the pool with unread bytes on it.
            resp.close()
        resp.release_conn()


def _change(event: Any, version: str) -> Change:
    if not isinstance(event, dict):
        raise RequestFailed("watch event is not a JSON object")
    etype = event.get("type")
    obj = event.get("object") or {}
    if etype == "ERROR":
        if obj.get("code") == 410:
            raise Gone(f"watch: {obj.get('message', 'resourceVersion expired')}")
        raise RequestFailed(f"watch error {obj.get('code')}: {obj.get('message')}")
    meta = obj.get("metadata") or {}
    return Change(type=str(etype), object=obj, resource_version=str(meta.get("resourceVersion") or version))


def _lines(resp: Any) -> Iterator[bytes]:
    buf = b""
    for chunk in resp.stream(amt=None, decode_content=True):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line
    if buf.strip():
        yield buf
