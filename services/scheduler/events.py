"""Live fan-out of job events to many watchers.

The store tells the feed after each commit which jobs got events; the feed
then reads those events once and keeps them in memory for the jobs that are
being watched, so a thousand watchers of one job cost one database read per
event, not a thousand. Watchers that start behind (a replay from sequence 0,
a resume after a disconnect) read the gap from the store first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from trainyard.services.scheduler.store import Event, SchedulerStore

MAX_CACHED_EVENTS = 5000  # per watched job; older ones are read from the store when needed


@dataclass
class _Watched:
    first: int  # sequence of events[0] once there are events; the next expected otherwise
    changed: threading.Condition  # shares the feed's lock; woken only for this job's events
    events: list[Event] = field(default_factory=list)
    watchers: int = 0

    @property
    def last(self) -> int:
        return self.events[-1].sequence if self.events else self.first - 1


class EventFeed:
    def __init__(self, store: SchedulerStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._jobs: dict[str, _Watched] = {}

    def published(self, job_ids: set[str]) -> None:
        """Called after a commit that appended events to these jobs."""
        with self._lock:
            for job_id in job_ids:
                entry = self._jobs.get(job_id)
                if entry is not None:
                    entry.events.extend(self.store.events_after(job_id, entry.last, limit=MAX_CACHED_EVENTS))
                    if len(entry.events) > MAX_CACHED_EVENTS:
                        del entry.events[: len(entry.events) - MAX_CACHED_EVENTS]
                        entry.first = entry.events[0].sequence
                    entry.changed.notify_all()

    def wake(self) -> None:
        """Wake every watcher (shutdown)."""
        with self._lock:
            for entry in self._jobs.values():
                entry.changed.notify_all()

    def follow(self, job_id: str, after: int, keep_going: Callable[[], bool]) -> Iterator[Event]:
        """Events with a sequence above `after`, live, until the final one or keep_going() is false."""
        with self._lock:
            entry = self._jobs.get(job_id)
            if entry is None:
                job = self.store.get_job(job_id)
                first = (job.last_sequence if job else 0) + 1
                entry = self._jobs[job_id] = _Watched(first=first, changed=threading.Condition(self._lock))
            entry.watchers += 1
        try:
            sequence = after
            while keep_going():
                with self._lock:
                    if sequence + 1 >= entry.first:
                        batch = entry.events[max(0, sequence + 1 - entry.first):]
                        if not batch:
                            entry.changed.wait(timeout=1.0)
                            continue
                    else:
                        batch = None
                if batch is None:  # behind what memory holds: read the gap from the store
                    batch = self.store.events_after(job_id, sequence)
                for event in batch:
                    yield event
                    sequence = event.sequence
                    if event.final:
                        return
        finally:
            with self._lock:
                entry.watchers -= 1
                if entry.watchers == 0:
                    self._jobs.pop(job_id, None)
