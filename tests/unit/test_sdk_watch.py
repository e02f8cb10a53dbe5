"""Client.watch when a stream ends without the job's final event: nothing follows an ended job's
last sequence (the scheduler ends that watch at once), anything else is a drop to resume from."""

from __future__ import annotations

import time

from trainyard.scheduler.v1 import scheduler_pb2
from trainyard.scheduler.v1 import scheduler_service_pb2 as sc
from trainyard.sdk import Client

RUNNING = scheduler_pb2.TRAINING_JOB_STATE_RUNNING
COMPLETED = scheduler_pb2.TRAINING_JOB_STATE_COMPLETED


class FakeScheduler:
    """Streams events 1..`total` (the last final); the first `short` watches stop after one event."""

    def __init__(self, total: int, short: int = 0) -> None:
        self.total, self.short, self.watches = total, short, []

    def WatchTrainingJob(self, request):  # noqa: N802 - the gRPC method's name
        self.watches.append(request.after_sequence)
        assert len(self.watches) <= 10, "the client keeps reconnecting"
        last = request.after_sequence + 1 if len(self.watches) <= self.short else self.total
        for sequence in range(request.after_sequence + 1, min(last, self.total) + 1):
            yield sc.WatchTrainingJobResponse(event=scheduler_pb2.TrainingJobEvent(
                job_id="job-1", sequence=sequence, final=sequence == self.total))

    def GetTrainingJob(self, request, timeout=None, metadata=None):  # noqa: N802
        ended = len(self.watches) > self.short
        return sc.GetTrainingJobResponse(training_job=scheduler_pb2.TrainingJob(
            id="job-1", state=COMPLETED if ended else RUNNING, last_sequence=self.total))


def client_with(scheduler: FakeScheduler) -> Client:
    client = Client("127.0.0.1:9", "127.0.0.1:9", api_key="tyk_test", tls=None)
    client._scheduler = scheduler
    return client


def test_watching_an_ended_job_from_its_last_sequence_gives_nothing_and_returns():
    scheduler = FakeScheduler(total=4)
    started = time.monotonic()
    assert list(client_with(scheduler).watch("job-1", after_sequence=4)) == []
    assert scheduler.watches == [4] and time.monotonic() - started < 1  # one call, no reconnect loop


def test_a_stream_that_ends_early_on_a_running_job_is_resumed_from_the_last_event():
    scheduler = FakeScheduler(total=4, short=1)
    events = list(client_with(scheduler).watch("job-1"))
    assert [e.sequence for e in events] == [1, 2, 3, 4] and events[-1].final
    assert scheduler.watches == [0, 1]


def test_waiting_for_an_ended_job_returns_it_without_watching():
    scheduler = FakeScheduler(total=4)
    scheduler.watches.append(0)  # the job has ended (see GetTrainingJob)
    job = client_with(scheduler).wait("job-1")
    assert job.final and scheduler.watches == [0]  # no new watch: its old events may be pruned


def test_waiting_for_a_running_job_watches_from_its_last_event():
    scheduler = FakeScheduler(total=4)  # running until it is first watched
    job = client_with(scheduler).wait("job-1")
    assert job.final and scheduler.watches == [4]
