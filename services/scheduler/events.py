"""Live fan-out of job events to many watchers.

The store tells the feed after each commit which jobs got events; the feed
then reads those events once and keeps them in memory for the jobs that are
being watched, so a thousand watchers of one job cost one database read per
event, not a thousand. Watchers that start behind (a replay from sequence 0,
a resume after a disconnect) read the gap from the store first.

Watchers are coroutines (the scheduler's asyncio server): one event loop
serves every stream, and a published event wakes each loop once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from trainyard.services.scheduler.store import Event, SchedulerStore

MAX_CACHED_EVENTS = 5000  # per watched job; older ones are read from the store when needed


@dataclass
class _Watched:
    first: int  # sequence of events[0] once there are events; the next expected otherwise
    final: int | None = None  # sequence of the job's final event once it is recorded: nothing follows it
    events: list[Event] = field(default_factory=list)
    watchers: int = 0
    async_waiters: dict[asyncio.Event, asyncio.AbstractEventLoop] = field(default_factory=dict)

    @property
    def last(self) -> int:
        return self.events[-1].sequence if self.events else self.first - 1


def _set_all(events: list[asyncio.Event]) -> None:
    for event in events:
        event.set()


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
                    new = self.store.events_after(job_id, entry.last, limit=MAX_CACHED_EVENTS)
                    entry.events.extend(new)
                    if new and new[-1].final:
                        entry.final = new[-1].sequence
                    if len(entry.events) > MAX_CACHED_EVENTS:
                        del entry.events[: len(entry.events) - MAX_CACHED_EVENTS]
                        entry.first = entry.events[0].sequence
                    self._notify(entry)

    def wake(self) -> None:
        """Wake every watcher (shutdown)."""
        with self._lock:
            for entry in self._jobs.values():
                self._notify(entry)

    @staticmethod
    def _notify(entry: _Watched) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Event]] = {}
        for event, loop in entry.async_waiters.items():
            by_loop.setdefault(loop, []).append(event)
        for loop, events in by_loop.items():  # one hand-over per loop, not one per watcher
            loop.call_soon_threadsafe(_set_all, events)

    def _enter(self, job_id: str) -> _Watched:
        """Register a watcher (the feed's lock is held)."""
        entry = self._jobs.get(job_id)
        if entry is None:
            job = self.store.get_job(job_id)
            first = (job.last_sequence if job else 0) + 1
            final = job.last_sequence if job and job.final else None
            entry = self._jobs[job_id] = _Watched(first=first, final=final)
        entry.watchers += 1
        return entry

    def _leave(self, job_id: str, entry: _Watched) -> None:
        entry.watchers -= 1
        if entry.watchers == 0:
            self._jobs.pop(job_id, None)

    @staticmethod
    def _cached(entry: _Watched, sequence: int) -> list[Event] | None:
        """The events after `sequence` from memory; None when memory starts later."""
        if sequence + 1 < entry.first:
            return None
        return entry.events[sequence + 1 - entry.first:]

    async def follow_async(self, job_id: str, after: int, keep_going: Callable[[], bool]) -> AsyncIterator[Event]:
        """Events with a sequence above `after`, live, until the final one or keep_going() is false.

        Ends at once, with nothing, when `after` is at or past the final event of a job that has
        ended (the caller refuses an `after` past the last event; see SchedulerService.watch_async).
        Waiting costs no thread: the feed wakes the watcher's event loop when its job gets events.
        """
        wake = asyncio.Event()
        with self._lock:
            entry = self._enter(job_id)
            entry.async_waiters[wake] = asyncio.get_running_loop()
        try:
            sequence = after
            while keep_going():
                wake.clear()  # before looking, so that an event published meanwhile is not missed
                with self._lock:
                    if entry.final is not None and sequence >= entry.final:
                        return  # the job has ended and its final event was sent or skipped
                    batch = self._cached(entry, sequence)
                if batch is None:
                    batch = await asyncio.to_thread(self.store.events_after, job_id, sequence)
                if not batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), timeout=1.0)
                    continue
                for event in batch:
                    yield event
                    sequence = event.sequence
                    if event.final:
                        return
        finally:
            with self._lock:
                entry.async_waiters.pop(wake, None)
                self._leave(job_id, entry)
