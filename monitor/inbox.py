"""The loop's one queue: any thread posts, the loop drains what is queued at once, coalesced to what matters."""

from __future__ import annotations

import queue
from collections.abc import Sequence

from monitor.events import Event, Objects, Stop, TemplateChanged


def coalesce(batch: Sequence[Event]) -> list[Event]:
    """The queued events worth handling, in order: a Stop pre-empts all the rest, and of several Objects (each
    one the full set) or several TemplateChanged only the newest is kept, so a burst costs one rediscovery."""
    for event in batch:
        if isinstance(event, Stop):
            return [event]
    newest: dict[type, int] = {
        type(e): i for i, e in enumerate(batch) if isinstance(e, Objects | TemplateChanged)
    }
    return [e for i, e in enumerate(batch) if newest.get(type(e), i) == i]


class Inbox(queue.Queue[Event]):
    """Adapters, the file watcher, the poller and signal handlers ``put``; only the loop drains."""

    def stop_queued(self) -> bool:
        """A Stop waits in the queue: work that may take long (a drain) should cut itself short."""
        with self.mutex:
            return any(isinstance(e, Stop) for e in self.queue)

    def put_all(self, events: Sequence[Event]) -> None:
        """Queue several events at once: the loop is woken once for all of them, not once for each."""
        with self.not_empty:
            for event in events:
                self._put(event)
            self.unfinished_tasks += len(events)
            self.not_empty.notify()

    def drain(self, *, wait: float) -> list[Event]:
        """The next event (waited for up to ``wait`` seconds) with all else queued already, coalesced."""
        try:
            batch = [self.get(timeout=wait)]
        except queue.Empty:
            return []
        for _ in range(self.qsize()):  # what is queued now; later arrivals wait for the next round
            try:
                batch.append(self.get_nowait())
            except queue.Empty:
                break
        return coalesce(batch)
