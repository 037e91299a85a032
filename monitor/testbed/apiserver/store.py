"""The object store: collections, resourceVersions, the event history and its compaction; lists, gets, watch reads."""

from __future__ import annotations

import base64
import bisect
import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from monitor.testbed.apiserver.objects import ENDPOINTSLICES, KIND, NODES, Obj, status
from monitor.testbed.apiserver.selectors import Query

Change = tuple[str, Obj]  # (watch event type, object) as a watch sends it


@dataclass
class _Event:
    rv: int
    type: str
    obj: Obj
    prev: Obj | None


@dataclass
class _Collection:
    objects: dict[tuple[str, str], Obj] = field(default_factory=dict)
    events: list[_Event] = field(default_factory=list)
    event_rvs: list[int] = field(default_factory=list)


class Store:
    """Objects by (namespace, name) per resource, with one resourceVersion counter and the events since compaction.

    *cond* is the simulator's one condition: every change notifies it, so that a waiting watch wakes up.
    """

    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond
        self._rv = 1
        self._horizon = 1
        self._collections: dict[str, _Collection] = {NODES: _Collection(), ENDPOINTSLICES: _Collection()}

    # -- changes ---------------------------------------------------------------------------------------

    def put(self, resource: str, key: tuple[str, str], build: Callable[[Obj | None], Obj]) -> int:
        """Store ``build(current object or None)``, called under the lock; returns the new resourceVersion."""
        with self._cond:
            coll = self._collections[resource]
            prev = coll.objects.get(key)
            obj = build(prev)
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
            coll.objects[key] = obj
            self._record(coll, _Event(self._rv, "MODIFIED" if prev else "ADDED", obj, prev))
            return self._rv

    def delete(self, resource: str, key: tuple[str, str]) -> int:
        with self._cond:
            coll = self._collections[resource]
            prev = coll.objects.pop(key, None)
            if prev is None:
                raise KeyError(f"{resource} {key[1]!r} does not exist")
            self._rv += 1
            gone = copy.deepcopy(prev)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            self._record(coll, _Event(self._rv, "DELETED", gone, prev))
            return self._rv

    def compact(self) -> int:
        """Forget history: every resourceVersion handed out so far becomes too old (410 Gone)."""
        with self._cond:
            self._rv += 1
            self._horizon = self._rv
            for coll in self._collections.values():
                coll.events.clear()
                coll.event_rvs.clear()
            self._cond.notify_all()
            return self._rv

    def _record(self, coll: _Collection, event: _Event) -> None:
        coll.events.append(event)
        coll.event_rvs.append(event.rv)
        self._cond.notify_all()

    # -- reads -----------------------------------------------------------------------------------------

    def objects(self, resource: str) -> list[Obj]:
        """A deep copy of the current objects of *resource*."""
        with self._cond:
            return copy.deepcopy(list(self._collections[resource].objects.values()))

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    @property
    def horizon(self) -> int:
        """The oldest resourceVersion a list or a watch may still start from."""
        with self._cond:
            return self._horizon

    def list_page(self, query: Query, rv_param: str | None, limit: int, cont: str | None) -> tuple[int, Obj]:
        """(HTTP status, body) of a list: one page of *limit* items (0 = all) after the continue token."""
        with self._cond:
            start_after = ""
            if cont:
                try:
                    token = json.loads(base64.urlsafe_b64decode(cont.encode()))
                    token_rv, start_after = int(token["rv"]), str(token["start"])
                except (ValueError, KeyError, TypeError):
                    return 400, status(400, "BadRequest", "invalid continue token")
                if token_rv < self._horizon:
                    return 410, status(410, "Expired", "The provided continue parameter is too old")
            if rv_param not in (None, "", "0") and int(rv_param or 0) < self._horizon:
                return 410, status(410, "Expired", f"too old resource version: {rv_param} ({self._horizon})")
            coll = self._collections[query.resource]
            matching = sorted(
                (o for o in coll.objects.values() if query.matches(o)),
                key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]),
            )
            if start_after:
                matching = [o for o in matching if _sort_key(o) > start_after]
            meta: Obj = {"resourceVersion": str(self._rv)}
            if limit > 0 and len(matching) > limit:
                rest = len(matching) - limit
                matching = matching[:limit]
                token_text = json.dumps({"rv": self._rv, "start": _sort_key(matching[-1])})
                meta["continue"] = base64.urlsafe_b64encode(token_text.encode()).decode()
                meta["remainingItemCount"] = rest
            items = []
            for o in matching:
                item = copy.deepcopy(o)
                item.pop("kind", None)
                item.pop("apiVersion", None)
                items.append(item)
        api_version, kind = KIND[query.resource]
        return 200, {"kind": f"{kind}List", "apiVersion": api_version, "metadata": meta, "items": items}

    def get(self, query: Query) -> tuple[int, Obj]:
        with self._cond:
            key = (query.namespace or "", query.name or "")
            obj = self._collections[query.resource].objects.get(key)
            if obj is None:
                return 404, status(404, "NotFound", f'{query.resource} "{query.name}" not found')
            return 200, copy.deepcopy(obj)

    # -- watch reads (the caller holds the condition, so that a read and its wait are one step) -------------

    def current(self, query: Query) -> tuple[list[Change], int]:
        """The matching objects as ADDED events and the resourceVersion they stand at: a watch without one."""
        with self._cond:
            coll = self._collections[query.resource]
            added = [("ADDED", copy.deepcopy(o)) for o in coll.objects.values() if query.matches(o)]
            return added, self._rv

    def changes_after(self, query: Query, cursor: int) -> tuple[list[Change], int]:
        """What a watch at *cursor* sees next, and its new cursor (the last event's, matching or not)."""
        with self._cond:
            coll = self._collections[query.resource]
            start = bisect.bisect_right(coll.event_rvs, cursor)
            if start >= len(coll.events):
                return [], cursor
            seen = (_as_seen(ev, query) for ev in coll.events[start:])
            return [change for change in seen if change is not None], coll.events[-1].rv


def _sort_key(obj: Obj) -> str:
    return f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"


def _as_seen(ev: _Event, query: Query) -> Change | None:
    """The event as a watch filtered by *query* reports it, or None when the watch does not see it."""
    now_matches = query.matches(ev.obj) if ev.type != "DELETED" else False
    was_matching = query.matches(ev.prev)
    if ev.type == "DELETED":
        return ("DELETED", copy.deepcopy(ev.obj)) if was_matching else None
    if now_matches:
        return ("MODIFIED" if was_matching else "ADDED", copy.deepcopy(ev.obj))
    if was_matching:
        # The object left the selection: a filtered watch reports it as gone, at this event's version.
        gone = copy.deepcopy(ev.prev)
        assert gone is not None
        gone["metadata"]["resourceVersion"] = str(ev.rv)
        return ("DELETED", gone)
    return None
