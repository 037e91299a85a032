"""The fault switches (refuse, 500, hang, throttle, expire or end watches, trickle) and how garbled answers look."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

from monitor.testbed.apiserver.objects import Obj

# The switches: at most one is on at a time.
REFUSE = "refuse"  # reset every connection and request, cut open watches
STATUS500 = "status500"  # answer 500 Internal Server Error
HANG = "hang"  # read requests, never answer
EXPIRE = "expire"  # answer every watch with a 410 Expired error event
END_WATCH = "endwatch"  # end every watch at once with an empty stream
THROTTLE = "throttle"  # answer 429 Too Many Requests with Retry-After
TRICKLE = "trickle"  # send list bodies one byte every 0.2 s

_MiB = 1024 * 1024


def _with_first_item(body: Obj, change: Callable[[Obj], None]) -> Obj:
    items = copy.deepcopy(body["items"])
    if items:
        change(items[0])
    return {**body, "items": items}


def _with_object(event: Obj, change: Callable[[Obj], None]) -> Obj:
    obj = copy.deepcopy(event["object"])
    change(obj)
    return {**event, "object": obj}


# How a broken (or hostile) API server garbles an answer: each case turns a well-formed body into a bad one.
GARBLED_LISTS: dict[str, Callable[[Obj], Any]] = {
    "no items": lambda body: {k: v for k, v in body.items() if k != "items"},
    "items not a list": lambda body: {**body, "items": {"name": "master-0"}},
    "an item not an object": lambda body: {**body, "items": [*body["items"], "master-9"]},
    "metadata not an object": lambda body: _with_first_item(body, lambda o: o.update(metadata="master-0")),
    "status not an object": lambda body: _with_first_item(body, lambda o: o.update(status="Ready")),
    "annotations not an object": lambda body: _with_first_item(
        body, lambda o: o["metadata"].update(annotations=["k8s.ovn.org/host-cidrs"])
    ),
    "over 64 MiB": lambda body: {**body, "padding": "x" * (64 * _MiB + 1)},
}
GARBLED_EVENTS: dict[str, Callable[[Obj], Any]] = {
    "object not an object": lambda event: {**event, "object": "master-0"},
    "status not an object": lambda event: _with_object(event, lambda o: o.update(status="Ready")),
    "annotations not an object": lambda event: _with_object(
        event, lambda o: o["metadata"].update(annotations="k8s.ovn.org/host-cidrs")
    ),
    "over 16 MiB": lambda event: {**event, "padding": "x" * (16 * _MiB + 1)},
}


class Faults:
    """The switch that is on (or None), the throttle's Retry-After, and the garbling of lists and events.

    *cond* is the simulator's one condition: a switch notifies it, so that a hung request, a trickle or a
    waiting watch sees the change at once.
    """

    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond
        self._mode: str | None = None
        self._retry_after = 0
        self._garbled_list: Callable[[Obj], Any] | None = None
        self._garbled_event: Callable[[Obj], Any] | None = None

    @property
    def mode(self) -> str | None:
        with self._cond:
            return self._mode

    @property
    def retry_after(self) -> int:
        with self._cond:
            return self._retry_after

    def switch(self, mode: str | None) -> None:
        with self._cond:
            self._mode = mode
            self._cond.notify_all()

    def throttle(self, *, retry_after: int) -> None:
        with self._cond:
            self._retry_after = retry_after
        self.switch(THROTTLE)

    def garble(self, *, lists: str | None = None, events: str | None = None) -> None:
        with self._cond:
            self._garbled_list = GARBLED_LISTS[lists] if lists else None
            self._garbled_event = GARBLED_EVENTS[events] if events else None

    def clear(self) -> None:
        self.garble()
        self.switch(None)

    def garbled(self, body: Obj, *, event: bool) -> Any:
        """*body* as the garbling in force serves it (unchanged when there is none)."""
        with self._cond:
            garble = self._garbled_event if event else self._garbled_list
        return garble(body) if garble is not None else body
