"""One watch on one connection: the opening state or a 410, then events and bookmarks as chunks until the timeout."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from monitor.testbed.apiserver.connections import abort
from monitor.testbed.apiserver.faults import END_WATCH, EXPIRE, REFUSE
from monitor.testbed.apiserver.objects import KIND, Obj, status
from monitor.testbed.apiserver.selectors import Query
from monitor.testbed.apiserver.server import Shared
from monitor.testbed.apiserver.store import Change

_FROM_NOW = -1  # no resourceVersion: the current state first, as ADDED events
_ENDED = -2  # the opening already ends the stream (an error event, or the end-watches fault)


class Watch:
    """A chunked watch response written through *handler*, from *cursor* (a resourceVersion, or -1 for none)."""

    def __init__(
        self,
        handler: BaseHTTPRequestHandler,
        shared: Shared,
        query: Query,
        *,
        cursor: int,
        timeout: float,
        bookmarks: bool,
    ) -> None:
        self._handler = handler
        self._shared = shared
        self._query = query
        self._cursor = cursor
        self._timeout = timeout
        self._bookmarks = bookmarks
        self._generation = self._end_generation = 0
        self._deadline = self._next_bookmark = 0.0

    def serve(self) -> None:
        shared, handler = self._shared, self._handler
        # A cut between here and the registration below is seen through the generation: no stream escapes.
        self._generation = shared.connections.generation
        self._end_generation = shared.connections.end_generation
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        with shared.cond:
            shared.connections.stream_started(handler.connection)
            opening = self._opening()
        now = time.monotonic()
        self._deadline = now + self._timeout
        self._next_bookmark = now + shared.settings.bookmark_interval
        try:
            for etype, obj in opening:
                self._event(etype, obj)
            if self._cursor == _ENDED:
                self._chunk(b"")
                return
            while True:
                ready = self._wait()
                if ready is None:
                    return
                changes, bookmark_due = ready
                for etype, obj in changes:
                    self._event(etype, obj)
                if bookmark_due:
                    self._next_bookmark = time.monotonic() + shared.settings.bookmark_interval
                    self._bookmark()
                if time.monotonic() >= self._deadline:
                    self._chunk(b"")
                    return
        finally:
            shared.connections.stream_ended(handler.connection)

    def _opening(self) -> list[Change]:
        """What the stream starts with; moves the cursor to where the events take over (or to the end)."""
        shared = self._shared
        fault = shared.faults.mode
        if fault == END_WATCH:
            self._cursor = _ENDED
            return []
        horizon = shared.store.horizon
        if fault == EXPIRE or 0 <= self._cursor < horizon:
            expired = status(410, "Expired", f"too old resource version: {self._cursor} ({horizon})")
            self._cursor = _ENDED
            return [("ERROR", expired)]
        if self._cursor == _FROM_NOW:
            # Like the real server, a watch without a resourceVersion starts with the current state.
            added, self._cursor = shared.store.current(self._query)
            return added
        return []

    def _wait(self) -> tuple[list[Change], bool] | None:
        """Block until there are events to send, a bookmark is due or the time is up: (events, bookmark due).

        None when the stream was reset instead (a cut, the refuse fault, or the server stopping).
        """
        shared = self._shared
        with shared.cond:
            while True:
                connections = shared.connections
                if (
                    connections.stopping
                    or connections.generation != self._generation
                    or shared.faults.mode == REFUSE
                ):
                    self._handler.close_connection = True
                    abort(self._handler.connection)
                    return None
                changes, self._cursor = shared.store.changes_after(self._query, self._cursor)
                if changes:
                    return changes, False
                now = time.monotonic()
                if now >= self._deadline or connections.end_generation != self._end_generation:
                    self._deadline = min(self._deadline, now)  # ended as if the timeout were up
                    return [], False
                if self._bookmarks and now >= self._next_bookmark:
                    self._cursor = max(self._cursor, shared.store.resource_version)
                    return [], True
                wake = min(self._deadline, self._next_bookmark) if self._bookmarks else self._deadline
                shared.cond.wait(max(0.0, wake - now))

    def _bookmark(self) -> None:
        api_version, kind = KIND[self._query.resource]
        mark = {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": str(self._cursor)}}
        self._event("BOOKMARK", mark)

    def _event(self, etype: str, obj: Obj) -> None:
        event: Any = {"type": etype, "object": obj}
        if etype not in ("BOOKMARK", "ERROR"):
            event = self._shared.faults.garbled(event, event=True)
        self._chunk(json.dumps(event).encode() + b"\n")

    def _chunk(self, data: bytes) -> None:
        self._handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
