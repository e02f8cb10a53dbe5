"""The scheduler's domain with in-memory fakes of the dataset service and a trainer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from trainyard.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from trainyard.services.dataset.rules import parse_train_ratio
from trainyard.services.scheduler import service as scheduler_service
from trainyard.services.scheduler.flavors import FlavorCatalog
from trainyard.services.scheduler.ports import TrainerUpdate, TrainingSpec, VersionInfo
from trainyard.services.scheduler.service import (
    PREFERENCES,
    PRESET_OF_ARCHITECTURE,
    JobRequest,
    SchedulerService,
    SchedulerSettings,
)
from trainyard.services.scheduler.store import SchedulerStore

T = "acme"  # the tenant most tests act as
TENANTS = (T, "alice", "bob")  # tenants that can see dataset ds-1 (a real dataset service answers per tenant)


class FakeDatasets:
    def __init__(self) -> None:
        self.published: list[tuple[str, str, str, int]] = []
        self.refuse: FailedPrecondition | None = None

    def resolve_dataset(self, tenant: str, id_or_name: str, timeout: float = 30.0) -> str:
        if id_or_name not in ("ds-1", "digits") or tenant not in TENANTS:
            raise NotFound(f"dataset {id_or_name!r} does not exist")
        return "ds-1"

    def get_version(self, tenant: str, dataset_id: str, name: str) -> VersionInfo:
        return VersionInfo(dataset_id, name, "0.8", f"datasets/{dataset_id}/versions/{name}/manifest.jsonl")

    def publish_version(self, tenant: str, dataset_id: str, name: str, train_ratio: str | None, seed: int) -> VersionInfo:
        if self.refuse:
            raise self.refuse
        parse_train_ratio("0.8" if train_ratio is None else train_ratio)
        self.published.append((dataset_id, name, train_ratio, seed))
        name = name or f"v{len(self.published)}"
        return VersionInfo(dataset_id, name, "0.8" if train_ratio is None else train_ratio, f"datasets/{dataset_id}/versions/{name}/manifest.jsonl")


ARCHITECTURE = {preference: arch for arch, preference in PRESET_OF_ARCHITECTURE.items()}  # as the presets


class FakeTrainer:
    """Reports progress every 50 ms; finishes after `steps` unless told to stop (or `obey_stop` is off)."""

    def __init__(self, steps: int = 3, obey_stop: bool = True) -> None:
        self.steps = steps
        self.obey_stop = obey_stop
        self.specs: list[TrainingSpec] = []
        self.stops: dict[str, str] = {}

    def run(self, address, spec, after_sequence, attach_only):
        self.specs.append(spec)
        sequence = after_sequence
        for _ in range(self.steps if self.steps else 10**6):
            reason = self.stops.get(spec.job_id)
            if reason and self.obey_stop:
                break
            sequence += 1
            yield TrainerUpdate(sequence, time.time(), "progress", {"epoch": 1, "step": str(sequence), "stepsTotal": "3"})
            time.sleep(0.05)
        reason = self.stops.get(spec.job_id, "CONVERGED")
        yield TrainerUpdate(sequence + 1, time.time(), "outcome", {
            "stopReason": "STOP_REASON_" + reason, "artifactPrefix": spec.artifact_prefix,
            "evaluation": {"accuracy": 0.9}, "architecture": ARCHITECTURE[spec.preference], "epochsRun": 1, "bestEpoch": 1,
        })

    def stop(self, address, job_id, reason):
        self.stops[job_id] = reason

    def predict(self, address, artifact_prefix, images, top_k):
        return [[("a", 1.0)] for _ in images]

    def artifact(self, address, artifact_prefix, name):
        yield f"{artifact_prefix}{name}".encode()


def make(tmp_path: Path, trainer: FakeTrainer | None = None, **settings) -> tuple[SchedulerService, FakeDatasets, FakeTrainer]:
    datasets, trainer = FakeDatasets(), trainer or FakeTrainer()
    defaults = dict(minute_seconds=0.01, stop_grace_seconds=1.0, heartbeat_timeout_seconds=30.0, dispatch_interval_seconds=0.05)
    service = SchedulerService(SchedulerStore(tmp_path / "s.db"), FlavorCatalog.load(), datasets, trainer,
                               SchedulerSettings(**{**defaults, **settings}))
    service.start()
    return service, datasets, trainer


def watch(service: SchedulerService, job_id: str, after: int) -> list:
    """Every event of a watch, as the scheduler's asyncio server streams them."""

    async def collect() -> list:
        return [event async for event in service.watch_async(T, job_id, after)]

    return asyncio.run(asyncio.wait_for(collect(), timeout=30))


def add_trainer(service: SchedulerService, slots: int = 1) -> None:
    service.register_trainer("t1", "127.0.0.1:1", ["free-gpu", "compute-gpu-1"], slots, "cpu")


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


FREE = dict(accept_free_terms=True)


@pytest.mark.parametrize(("request_fields", "field"), [
    ({"max_duration_minutes": 5}, "max_duration_minutes"),
    ({"max_duration_minutes": 6001}, "max_duration_minutes"),
    ({"train_ratio": "1"}, "train_ratio"),
    ({"train_ratio": "0.123456"}, "train_ratio"),
    ({"train_ratio": ""}, "train_ratio"),
    ({"flavor_id": "gpu-9000"}, "flavor_id"),
    ({"preference": "FASTEST"}, "preference"),
])
def test_out_of_range_values_name_the_field_and_publish_nothing(tmp_path, request_fields, field):
    service, datasets, _ = make(tmp_path)
    with pytest.raises(InvalidArgument) as exc:
        service.create_job(T, JobRequest(dataset_id="ds-1", **FREE, **request_fields))
    assert exc.value.violations[0].field == field
    assert datasets.published == []


def test_free_flavor_requires_agreement_and_shows_the_terms(tmp_path):
    service, datasets, _ = make(tmp_path)
    with pytest.raises(FailedPrecondition) as exc:
        service.create_job(T, JobRequest(dataset_id="ds-1"))
    assert "one hour" in exc.value.message
    assert datasets.published == []


def test_s1_refusal_from_the_dataset_service_passes_through(tmp_path):
    service, datasets, _ = make(tmp_path)
    datasets.refuse = FailedPrecondition("training cannot start: a; b", ["a", "b"])
    with pytest.raises(FailedPrecondition) as exc:
        service.create_job(T, JobRequest(dataset_id="ds-1", **FREE))
    assert exc.value.violations == ["a", "b"]


def test_defaults_follow_the_source_document(tmp_path):
    service, datasets, _ = make(tmp_path)
    job = service.create_job(T, JobRequest(dataset_id="digits", **FREE))
    assert job.params["trainRatio"] == "0.8"
    assert job.params["maxDurationMinutes"] == 60
    assert job.params["preference"] == "BALANCE"
    assert job.flavor_id == "free-gpu"
    assert datasets.published == [("ds-1", "", None, 0)]  # S2: a version published from the current labels, default ratio


def test_request_id_makes_creation_idempotent(tmp_path):
    service, datasets, _ = make(tmp_path)
    a = service.create_job(T, JobRequest(dataset_id="ds-1", request_id="r-1", **FREE))
    b = service.create_job(T, JobRequest(dataset_id="ds-1", request_id="r-1", **FREE))
    assert a.id == b.id
    assert len(datasets.published) == 1


def test_job_runs_to_a_model_version_and_watch_replays_then_ends(tmp_path):
    service, _, _ = make(tmp_path)
    add_trainer(service)
    job = service.create_job(T, JobRequest(dataset_id="ds-1", **FREE))
    done = wait_for(lambda: (j := service.get_job(T, job.id)).final and j)
    assert done.state == "COMPLETED" and done.stop_reason == "CONVERGED"
    assert done.model_version == "V001"
    events = watch(service, job.id, 0)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].final
    kinds = [next(iter(e.payload)) for e in events]
    assert kinds[0] == "stateChange" and "progress" in kinds and "result" in kinds
    assert [e.sequence for e in watch(service, job.id, 3)] == [e.sequence for e in events[3:]]
    second = service.create_job(T, JobRequest(dataset_id="ds-1", **FREE))
    assert wait_for(lambda: service.get_job(T, second.id).model_version) == "V002"


def test_queue_positions_and_the_free_flavor_tenant_limit(tmp_path):
    service, _, _ = make(tmp_path, FakeTrainer(steps=0))
    first = service.create_job(T, JobRequest(dataset_id="ds-1", **FREE))
    assert (first.state, first.queue_position) == ("QUEUED", 1)
    assert "no trainer" in wait_for(lambda: service.get_job(T, first.id).wait_reason.startswith("no") and service.get_job(T, first.id).wait_reason)
    second = service.create_job(T, JobRequest(dataset_id="ds-1", **FREE))
    assert second.queue_position == 2
    add_trainer(service, slots=2)
    wait_for(lambda: service.get_job(T, first.id).state in ("STARTING", "RUNNING"))
    waiting = wait_for(lambda: (j := service.get_job(T, second.id)).queue_position == 1 and j)
    assert waiting.state == "QUEUED" and "quota" in waiting.wait_reason
    positions = [e.payload["queuePosition"]["position"] for e in service.store.events_after(second.id, 0) if "queuePosition" in e.payload]
    assert positions == sorted(positions, reverse=True)  # never increases
    service.cancel(T, first.id)
    wait_for(lambda: service.get_job(T, second.id).state in ("STARTING", "RUNNING"))


def test_duration_limit_stops_training_and_keeps_the_model(tmp_path):
    service, _, trainer = make(tmp_path, FakeTrainer(steps=0), minute_seconds=0.05)
    add_trainer(service)
    job = service.create_job(T, JobRequest(dataset_id="ds-1", flavor_id="compute-gpu-1", max_duration_minutes=6))
    done = wait_for(lambda: (j := service.get_job(T, job.id)).final and j)
    assert done.state == "COMPLETED" and done.stop_reason == "DURATION_LIMIT" and done.model_version
    assert done.end_time - done.start_time == pytest.approx(0.3, abs=0.5)
    assert trainer.stops[job.id] == "DURATION_LIMIT"


def test_free_flavor_hour_caps_a_longer_maximum(tmp_path):
    service, _, trainer = make(tmp_path, FakeTrainer(steps=0), minute_seconds=0.01)
    add_trainer(service)
    job = service.create_job(T, JobRequest(dataset_id="ds-1", max_duration_minutes=6000, **FREE))
    assert service.get_job(T, job.id).duration_limit == pytest.approx(0.6)
    done = wait_for(lambda: (j := service.get_job(T, job.id)).final and j)
    assert done.stop_reason == "FREE_FLAVOR_HOUR" and done.state == "COMPLETED"


def test_a_trainer_that_ignores_the_stop_fails_the_job_after_the_grace_period(tmp_path):
    service, _, _ = make(tmp_path, FakeTrainer(steps=0, obey_stop=False), minute_seconds=0.05, stop_grace_seconds=0.5)
    add_trainer(service)
    job = service.create_job(T, JobRequest(dataset_id="ds-1", flavor_id="compute-gpu-1", max_duration_minutes=6))
    done = wait_for(lambda: (j := service.get_job(T, job.id)).final and j)
    assert done.state == "FAILED"
    assert "did not stop within 0.5 s" in done.error_message


def test_silent_trainer_is_dropped_and_its_jobs_fail(tmp_path):
    service, _, _ = make(tmp_path, FakeTrainer(steps=0), heartbeat_timeout_seconds=0.5)
    add_trainer(service)
    job = service.create_job(T, JobRequest(dataset_id="ds-1", flavor_id="compute-gpu-1"))
    done = wait_for(lambda: (j := service.get_job(T, job.id)).final and j)
    assert (done.state, done.stop_reason) == ("FAILED", "TRAINER_LOST")
    assert service.store.trainers() == []


def test_cancel_queued_job_and_refuse_cancelling_an_ended_one(tmp_path):
    service, _, _ = make(tmp_path)
    job = service.create_job(T, JobRequest(dataset_id="ds-1", **FREE))
    cancelled = service.cancel(T, job.id)
    assert (cancelled.state, cancelled.stop_reason) == ("CANCELLED", "CANCELLED")
    assert watch(service, job.id, 0)[-1].final
    with pytest.raises(FailedPrecondition):
        service.cancel(T, job.id)


def test_incremental_version_must_exist(tmp_path):
    service, _, _ = make(tmp_path)
    with pytest.raises(NotFound) as exc:
        service.create_job(T, JobRequest(dataset_id="ds-1", incremental_model_version="V009", **FREE))
    assert "V009" in exc.value.message


def test_unknown_job_is_not_found(tmp_path):
    service, _, _ = make(tmp_path)
    with pytest.raises(NotFound):
        service.get_job(T, "job-nope")
    with pytest.raises(NotFound):
        watch(service, "job-nope", 0)


def test_pay_per_use_jobs_are_billed_and_free_jobs_cost_nothing(tmp_path):
    service, _, _ = make(tmp_path)
    add_trainer(service, slots=2)
    paid = service.create_job(T, JobRequest(dataset_id="ds-1", flavor_id="compute-gpu-1"))
    free = service.create_job(T, JobRequest(dataset_id="ds-1", **FREE))
    paid_done = wait_for(lambda: (j := service.get_job(T, paid.id)).final and j)
    free_done = wait_for(lambda: (j := service.get_job(T, free.id)).final and j)
    assert paid_done.billed_seconds == pytest.approx(paid_done.end_time - paid_done.start_time)
    assert paid_done.cost == pytest.approx(paid_done.billed_seconds * 3.40 / 3600)
    assert (free_done.billed_seconds, free_done.cost) == (0, 0)
    lines = {flavor: (n, s, c) for _, flavor, n, s, c in service.usage(None, None, None)}
    assert lines["compute-gpu-1"] == (1, pytest.approx(paid_done.billed_seconds), pytest.approx(paid_done.cost))
    assert lines["free-gpu"][2] == 0
    assert service.usage(None, 0, 1) == []  # a period before any job ended
    with pytest.raises(InvalidArgument):
        service.usage(None, 10, 5)


def test_pruned_events_give_a_clear_out_of_range_error(tmp_path):
    from trainyard.errors import OutOfRange

    service, _, _ = make(tmp_path)
    add_trainer(service)
    job = service.create_job(T, JobRequest(dataset_id="ds-1", **FREE))
    done = wait_for(lambda: (j := service.get_job(T, job.id)).final and j)
    assert service.store.prune_events(ended_before=done.end_time + 1) == done.last_sequence - 1
    with pytest.raises(OutOfRange) as exc:
        watch(service, job.id, 0)
    assert f"after_sequence {done.last_sequence - 1}" in exc.value.message
    (final,) = watch(service, job.id, done.last_sequence - 1)
    assert final.final


def test_best_version_by_macro_precision_and_incremental_best(tmp_path):
    service, _, trainer = make(tmp_path)
    with pytest.raises(FailedPrecondition):
        service.create_job(T, JobRequest(dataset_id="ds-1", incremental_model_version="best", **FREE))
    add_trainer(service)
    for _ in range(2):
        job = service.create_job(T, JobRequest(dataset_id="ds-1", **FREE))
        wait_for(lambda: service.get_job(T, job.id).final)  # noqa: B023
    with service.store.transaction() as tx:  # make V001 the more precise one
        body = service.store.model_version("ds-1", "V001")
        body["evaluation"] = {"macro": {"precision": 0.99}}
        tx.execute("UPDATE model_versions SET body = ? WHERE version = 'V001'", (__import__("json").dumps(body),))
    assert service.best_model_version(T, "ds-1") == "V001"
    job = service.create_job(T, JobRequest(dataset_id="ds-1", incremental_model_version="best", **FREE))
    assert job.params["incrementalModelVersion"] == "V001"
    assert job.params["initArtifactPrefix"] == body["artifactPrefix"]


def test_pay_per_use_quota_makes_jobs_wait_not_fail(tmp_path):
    service, _, _ = make(tmp_path, FakeTrainer(steps=0))
    add_trainer(service, slots=5)
    jobs = [service.create_job(T, JobRequest(dataset_id="ds-1", flavor_id="compute-gpu-1")) for _ in range(3)]
    wait_for(lambda: sum(service.get_job(T, j.id).state == "STARTING" or service.get_job(T, j.id).state == "RUNNING" for j in jobs) == 2)
    third = wait_for(lambda: (j := service.get_job(T, jobs[2].id)).wait_reason.startswith("your quota") and j)
    assert third.state == "QUEUED" and "quota of 2" in third.wait_reason
    service.cancel(T, jobs[0].id)
    wait_for(lambda: service.get_job(T, jobs[2].id).state in ("STARTING", "RUNNING"))


def test_many_watchers_each_see_every_event_once_in_order(tmp_path):
    service, _, _ = make(tmp_path, FakeTrainer(steps=20))
    job = service.create_job(T, JobRequest(dataset_id="ds-1", **FREE))

    async def watchers() -> list[list[int]]:
        async def one() -> list[int]:
            return [e.sequence async for e in service.watch_async(T, job.id, 0)]

        tasks = [asyncio.create_task(one()) for _ in range(50)]
        await asyncio.sleep(0.2)  # every watcher is waiting before training starts
        add_trainer(service)
        return await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)

    seen = asyncio.run(watchers())
    final = service.get_job(T, job.id)
    assert final.state == "COMPLETED"
    assert len(seen) == 50
    assert all(s == list(range(1, final.last_sequence + 1)) for s in seen)


def test_a_database_of_another_schema_version_is_refused(tmp_path):
    from trainyard.db import Database, SchemaMismatch

    Database(tmp_path / "x.db", "CREATE TABLE IF NOT EXISTS t (a INTEGER);", version=1).close()
    Database(tmp_path / "x.db", "CREATE TABLE IF NOT EXISTS t (a INTEGER);", version=1).close()  # same version: fine
    with pytest.raises(SchemaMismatch, match="schema version 1; this release expects 2"):
        Database(tmp_path / "x.db", "CREATE TABLE IF NOT EXISTS t (a INTEGER);", version=2)


def test_one_free_queue_across_tenants_and_a_tenant_over_quota_lets_others_pass(tmp_path):
    service, _, _ = make(tmp_path, FakeTrainer(steps=0))
    a1 = service.create_job("alice", JobRequest(dataset_id="ds-1", **FREE))
    a2 = service.create_job("alice", JobRequest(dataset_id="ds-1", **FREE))
    b1 = service.create_job("bob", JobRequest(dataset_id="ds-1", **FREE))
    assert [a1.queue_position, a2.queue_position, b1.queue_position] == [1, 2, 3]  # one queue for the flavor
    add_trainer(service, slots=2)
    wait_for(lambda: service.get_job("bob", b1.id).state in ("STARTING", "RUNNING"))
    assert service.get_job("alice", a1.id).state in ("STARTING", "RUNNING")
    waiting = service.get_job("alice", a2.id)
    assert waiting.state == "QUEUED" and waiting.queue_position == 1 and "quota" in waiting.wait_reason
    positions = [e.payload["queuePosition"]["position"] for e in service.store.events_after(a2.id, 0) if "queuePosition" in e.payload]
    assert positions == sorted(positions, reverse=True)


def test_another_tenants_job_is_not_found_exactly_like_a_missing_one(tmp_path):
    service, _, _ = make(tmp_path, FakeTrainer(steps=2))
    add_trainer(service)
    job = service.create_job("alice", JobRequest(dataset_id="ds-1", **FREE))
    wait_for(lambda: service.get_job("alice", job.id).final)
    with pytest.raises(NotFound) as missing:
        service.get_job("bob", "job-0000000000")

    async def watch_as_bob():
        return [e async for e in service.watch_async("bob", job.id, 0)]

    for call in (lambda: service.get_job("bob", job.id), lambda: service.cancel("bob", job.id),
                 lambda: asyncio.run(watch_as_bob())):
        with pytest.raises(NotFound) as exc:
            call()
        assert exc.value.message == missing.value.message.replace("job-0000000000", job.id)

    assert [j.id for j in service.list_jobs("bob", "", 0, "")[0]] == []
    assert [j.id for j in service.list_jobs("alice", "", 0, "")[0]] == [job.id]
    assert {t for t, *_ in service.usage("bob", None, None)} == set()
    assert {t for t, *_ in service.usage(None, None, None)} == {"alice"}  # an admin's view
    assert service.get_job("alice", job.id).state == "COMPLETED"  # untouched by bob's attempts


def test_job_creations_per_tenant_per_minute_are_limited_and_named(tmp_path):
    service, _, _ = make(tmp_path, job_creations_per_minute=3)
    made = [service.create_job("alice", JobRequest(dataset_id="ds-1", flavor_id="compute-gpu-1", request_id=f"r{i}"))
            for i in range(3)]
    with pytest.raises(ResourceExhausted) as exc:
        service.create_job("alice", JobRequest(dataset_id="ds-1", flavor_id="compute-gpu-1"))
    assert "job creations per tenant per minute" in exc.value.message and "3" in exc.value.message
    assert "retry in" in exc.value.message
    # a retry of a created job still answers; another tenant is not affected; nothing was lost
    assert service.create_job("alice", JobRequest(dataset_id="ds-1", flavor_id="compute-gpu-1", request_id="r0")).id == made[0].id
    service.create_job("bob", JobRequest(dataset_id="ds-1", flavor_id="compute-gpu-1"))
    assert len(service.list_jobs("alice", "", 0, "")[0]) == 3


def test_a_restarted_scheduler_does_not_count_its_own_downtime_against_trainers(tmp_path):
    service, _, _ = make(tmp_path, heartbeat_timeout_seconds=5.0)
    add_trainer(service)
    service.stop()
    now = [time.time() + 60]  # the scheduler was down for a minute, far past the heartbeat timeout
    restarted = SchedulerService(SchedulerStore(tmp_path / "s.db"), FlavorCatalog.load(), FakeDatasets(), FakeTrainer(),
                                 SchedulerSettings(heartbeat_timeout_seconds=5.0), clock=lambda: now[0])
    restarted._drop_lost_trainers()
    assert [t.id for t in restarted.store.trainers()] == ["t1"]  # it may not have had a chance to heartbeat yet
    now[0] += 6  # still silent a whole timeout after the restart: now it is lost
    restarted._drop_lost_trainers()
    assert restarted.store.trainers() == []


def test_a_slow_dataset_service_cuts_the_deletion_checks_short_instead_of_holding_up_dispatch(tmp_path, monkeypatch):
    service, datasets, _ = make(tmp_path)
    try:
        asked: list[float] = []

        def slow(tenant: str, id_or_name: str, timeout: float = 30.0) -> str:
            asked.append(timeout)
            time.sleep(0.2)
            return id_or_name

        monkeypatch.setattr(datasets, "resolve_dataset", slow)
        monkeypatch.setattr(scheduler_service, "DATASET_CHECKS_SECONDS", 0.3)
        pairs = {(T, f"ds-{i}") for i in range(6)}
        started = time.monotonic()
        answers = service._dataset_exists(pairs)
        assert time.monotonic() - started < 1.5  # six answers would take 1.2 s
        assert set(answers) == pairs
        checked = sum(a is True for a in answers.values())
        assert 1 <= checked <= 2 and sum(a is None for a in answers.values()) == 6 - checked  # the rest: next time
        assert asked == [scheduler_service.DATASET_CHECK_TIMEOUT] * checked
    finally:
        service.stop()


# --- watching from the end of a job's log --------------------------------------------


def ended_job(service: SchedulerService):
    """A job cancelled while queued: its log is complete."""
    job = service.create_job(T, JobRequest(dataset_id="ds-1", **FREE))
    service.cancel(T, job.id)
    return service.get_job(T, job.id)


def watch_quickly(service: SchedulerService, job_id: str, after: int, timeout: float = 5.0) -> list:
    async def collect() -> list:
        return [event async for event in service.watch_async(T, job_id, after)]

    return asyncio.run(asyncio.wait_for(collect(), timeout=timeout))


def test_watching_an_ended_job_from_its_last_sequence_ends_at_once_with_nothing(tmp_path):
    service, _, _ = make(tmp_path)
    job = ended_job(service)
    assert watch_quickly(service, job.id, job.last_sequence) == []
    assert [e.sequence for e in watch_quickly(service, job.id, job.last_sequence - 1)] == [job.last_sequence]


@pytest.mark.parametrize("past", [1, 5, 2**63 - 1])
def test_watching_past_the_last_event_is_out_of_range_naming_the_last_sequence(tmp_path, past):
    from trainyard.errors import OutOfRange

    service, _, _ = make(tmp_path)
    ended, live = ended_job(service), service.create_job(T, JobRequest(dataset_id="ds-1", **FREE))
    # settled: the dispatcher has said why it waits (no trainer), and adds no event until one registers
    live = wait_for(lambda: (j := service.get_job(T, live.id)).wait_reason.startswith("no trainer") and j)
    for job in (ended, live):
        after = min(job.last_sequence + past, 2**63 - 1)
        with pytest.raises(OutOfRange) as exc:
            watch_quickly(service, job.id, after)
        message = exc.value.message
        assert message.startswith(f"after_sequence: {after} is past the last event of job {job.id}, sequence {job.last_sequence}")
        assert f"watch from after_sequence 0 to {job.last_sequence}" in message
    assert service.get_job(T, ended.id) == ended  # nothing changed
    assert service.get_job(T, live.id).state == "QUEUED"


def test_a_job_that_ends_right_after_the_check_still_gives_its_watcher_the_final_event(tmp_path, monkeypatch):
    service, _, _ = make(tmp_path)
    job = service.create_job(T, JobRequest(dataset_id="ds-1", **FREE))
    last = service.get_job(T, job.id).last_sequence
    check = service._check_watch

    def check_then_cancel(tenant, job_id, after):  # the job ends between the check and the follow
        check(tenant, job_id, after)
        service.cancel(T, job_id)

    monkeypatch.setattr(service, "_check_watch", check_then_cancel)
    events = watch_quickly(service, job.id, last)
    assert events[-1].final and all(e.sequence > last for e in events)


def test_a_new_watcher_of_a_job_that_ended_while_watched_ends_at_once(tmp_path):
    service, _, _ = make(tmp_path)
    job = service.create_job(T, JobRequest(dataset_id="ds-1", **FREE))

    async def scenario() -> tuple[list, list]:
        first = asyncio.create_task(asyncio.wait_for(
            _collect(service, job.id, service.get_job(T, job.id).last_sequence), timeout=5))
        await asyncio.sleep(0.1)  # the first watcher holds the feed's entry for the job, made while it was live
        await asyncio.to_thread(service.cancel, T, job.id)
        seen = await first
        last = service.get_job(T, job.id).last_sequence
        return seen, await asyncio.wait_for(_collect(service, job.id, last), timeout=5)

    seen, after_end = asyncio.run(scenario())
    assert seen[-1].final and after_end == []


async def _collect(service: SchedulerService, job_id: str, after: int) -> list:
    return [event async for event in service.watch_async(T, job_id, after)]


# --- request ids: the same request again, or another one ------------------------------


def test_a_request_id_sent_again_with_other_fields_is_already_exists_naming_them(tmp_path):
    from trainyard.errors import AlreadyExists

    service, datasets, _ = make(tmp_path)
    first = service.create_job(T, JobRequest(dataset_id="ds-1", request_id="r-1", **FREE))
    again = JobRequest(dataset_id="ds-1", request_id="r-1", max_duration_minutes=30, seed=7, **FREE)
    with pytest.raises(AlreadyExists) as exc:
        service.create_job(T, again)
    assert "request_id 'r-1' was used for a different request" in exc.value.message
    assert f"(job {first.id})" in exc.value.message
    assert "these fields differ: max_duration_minutes, seed" in exc.value.message
    assert service.create_job(T, JobRequest(dataset_id="ds-1", request_id="r-1", **FREE)).id == first.id  # a true retry
    assert [j.id for j in service.list_jobs(T, "", 0, "")[0]] == [first.id]
    assert len(datasets.published) == 1
    kept = service.get_job(T, first.id)  # as created (its queue state moves on by itself)
    assert (kept.params, kept.request_fields, kept.create_time) == (first.params, first.request_fields, first.create_time)


def test_a_request_id_sent_again_with_an_invalid_field_names_that_field(tmp_path):
    service, datasets, _ = make(tmp_path)
    first = service.create_job(T, JobRequest(dataset_id="ds-1", request_id="r-1", **FREE))
    with pytest.raises(InvalidArgument) as exc:
        service.create_job(T, JobRequest(dataset_id="ds-1", request_id="r-1", max_duration_minutes=5, **FREE))
    assert [v.field for v in exc.value.violations] == ["max_duration_minutes"]
    assert [j.id for j in service.list_jobs(T, "", 0, "")[0]] == [first.id]
    assert len(datasets.published) == 1


def test_the_same_request_id_of_another_tenant_is_another_request(tmp_path):
    service, _, _ = make(tmp_path)
    a = service.create_job("alice", JobRequest(dataset_id="ds-1", request_id="r-1", **FREE))
    b = service.create_job("bob", JobRequest(dataset_id="ds-1", request_id="r-1", seed=3, **FREE))
    assert a.id != b.id


def test_request_fields_are_canonical_and_leave_the_request_id_out():
    from trainyard.services.scheduler.service import request_fields

    one = request_fields(JobRequest(dataset_id="ds-1", request_id="a", seed=1, train_ratio="0.8"))
    assert one == request_fields(JobRequest(request_id="b", train_ratio="0.8", seed=1, dataset_id="ds-1"))
    assert one != request_fields(JobRequest(dataset_id="ds-1", seed=1))  # a ratio left out is not "0.8" sent
    assert '"request_id"' not in one


# --- GetUsage periods ------------------------------------------------------------------


def test_usage_takes_an_explicit_epoch_as_a_time_not_as_left_out(tmp_path):
    service, _, _ = make(tmp_path)
    ended_job(service)
    assert [n for _, _, n, _, _ in service.usage(T, None, None)] == [1]
    assert service.usage(T, None, 0.0) == []  # the period ending at the epoch: nothing ended before 1970
    assert [n for _, _, n, _, _ in service.usage(T, 0.0, None)] == [1]
    with pytest.raises(InvalidArgument) as exc:
        service.usage(T, 0.0, 0.0)
    assert [v.field for v in exc.value.violations] == ["end_time"]
    with pytest.raises(InvalidArgument, match=r"left out, end_time is now"):
        service.usage(T, time.time() + 3600, None)


# --- dataset service errors in the words of CreateTrainingJob --------------------------


def test_dataset_service_field_names_become_the_create_requests_names():
    from trainyard.errors import FieldViolation
    from trainyard.services.scheduler.clients import _renamed

    error = InvalidArgument("version_name: 'bad name' may contain only ASCII letters",
                            [FieldViolation("version_name", "'bad name' may contain only ASCII letters")])
    renamed = _renamed(error, {"version_name": "new_version_name"})
    assert renamed.message == "new_version_name: 'bad name' may contain only ASCII letters"
    assert renamed.violations == [FieldViolation("new_version_name", "'bad name' may contain only ASCII letters")]
    both = InvalidArgument("train_ratio: is empty; version_name: is empty",
                           [FieldViolation("train_ratio", "is empty"), FieldViolation("version_name", "is empty")])
    renamed = _renamed(both, {"version_name": "new_version_name"})
    assert renamed.message == "train_ratio: is empty; new_version_name: is empty"
    assert [v.field for v in renamed.violations] == ["train_ratio", "new_version_name"]
    refused = FailedPrecondition("training cannot start: a", ["a"])
    assert _renamed(refused, {"version_name": "new_version_name"}) is refused


def test_messages_quote_at_most_80_characters_of_an_id(tmp_path):
    service, _, _ = make(tmp_path)
    long_id = "x" * 6000
    for call in (lambda: service.get_job(T, long_id), lambda: service.cancel(T, long_id),
                 lambda: watch_quickly(service, long_id, 0)):
        with pytest.raises(NotFound) as exc:
            call()
        assert len(exc.value.message) < 200 and "6,000 characters" in exc.value.message
    with pytest.raises(InvalidArgument) as exc:
        service.create_job(T, JobRequest(dataset_id="ds-1", flavor_id=long_id))
    assert len(exc.value.message) < 300 and "6,000 characters" in exc.value.message
    with pytest.raises(NotFound) as exc:
        service.create_job(T, JobRequest(dataset_id="ds-1", incremental_model_version=long_id, **FREE))
    assert len(exc.value.message) < 300


def test_a_slot_busy_with_one_flavors_job_is_in_use_for_every_flavor_it_serves(tmp_path):
    """One trainer serving both flavors with one slot: a compute job running leaves no free slot."""
    service, _, _ = make(tmp_path, FakeTrainer(steps=0))
    add_trainer(service, slots=1)
    job = service.create_job(T, JobRequest(dataset_id="ds-1", flavor_id="compute-gpu-1"))
    wait_for(lambda: service.get_job(T, job.id).state in ("STARTING", "RUNNING"))
    queued = service.create_job(T, JobRequest(dataset_id="ds-1", **FREE))
    status = {flavor.id: (capacity, in_use, waiting) for flavor, capacity, in_use, waiting in service.flavors()}
    assert status == {"free-gpu": (1, 1, 1), "compute-gpu-1": (1, 1, 0)}
    service.cancel(T, job.id)
    wait_for(lambda: service.get_job(T, queued.id).state in ("STARTING", "RUNNING"))
    status = {flavor.id: (capacity, in_use, waiting) for flavor, capacity, in_use, waiting in service.flavors()}
    assert status == {"free-gpu": (1, 1, 0), "compute-gpu-1": (1, 1, 0)}


def test_incremental_training_continues_with_its_parents_preference(tmp_path):
    """The parent's preference chose its architecture, which incremental training keeps (S4, S6)."""
    service, datasets, _ = make(tmp_path)
    add_trainer(service)
    parent = service.create_job(T, JobRequest(dataset_id="ds-1", preference="ACCURACY_FIRST", **FREE))
    wait_for(lambda: service.get_job(T, parent.id).final)
    child = service.create_job(T, JobRequest(dataset_id="ds-1", incremental_model_version="V001", **FREE))
    assert child.params["preference"] == "ACCURACY_FIRST"
    same = service.create_job(T, JobRequest(dataset_id="ds-1", incremental_model_version="V001",
                                            preference="ACCURACY_FIRST", **FREE))
    assert same.params["preference"] == "ACCURACY_FIRST"
    published = list(datasets.published)
    with pytest.raises(FailedPrecondition) as refused:
        service.create_job(T, JobRequest(dataset_id="ds-1", incremental_model_version="V001",
                                         preference="PERFORMANCE_FIRST", **FREE))
    assert refused.value.message == (
        "preference: model version V001 was trained with accuracy_first (resnet50), and incremental training "
        "keeps its architecture; leave preference out (or choose accuracy_first) to continue it, or train "
        "from scratch with performance_first")
    assert datasets.published == published  # refused before any version was published


def test_a_retry_matches_a_job_recorded_before_a_field_existed(tmp_path):
    """A field added by a later release counts as its default in a record that lacks it."""
    import json as json_module

    from trainyard.errors import AlreadyExists

    service, _, _ = make(tmp_path)
    first = service.create_job(T, JobRequest(dataset_id="ds-1", request_id="r-1", **FREE))
    recorded = json_module.loads(first.request_fields)
    del recorded["max_epochs"]  # as an earlier release, without the field, would have recorded it
    with service.store.transaction() as tx:
        tx.execute("UPDATE jobs SET request_fields = ? WHERE id = ?", (json_module.dumps(recorded), first.id))
    assert service.create_job(T, JobRequest(dataset_id="ds-1", request_id="r-1", **FREE)).id == first.id
    with pytest.raises(AlreadyExists, match="these fields differ: max_epochs"):
        service.create_job(T, JobRequest(dataset_id="ds-1", request_id="r-1", max_epochs=3, **FREE))


def test_a_request_id_sent_again_with_a_bad_version_name_names_that_field(tmp_path):
    service, datasets, _ = make(tmp_path)
    service.create_job(T, JobRequest(dataset_id="ds-1", request_id="r-1", **FREE))
    with pytest.raises(InvalidArgument) as exc:
        service.create_job(T, JobRequest(dataset_id="ds-1", request_id="r-1", new_version_name="bad name", **FREE))
    assert exc.value.violations[0].field == "new_version_name"
    assert len(datasets.published) == 1


def test_the_scheduler_knows_the_architecture_of_every_preset():
    from trainyard.services.trainer.presets import get_preset

    assert {get_preset(p.lower()).arch: p for p in PREFERENCES} == PRESET_OF_ARCHITECTURE


def test_an_incremental_job_takes_the_preference_of_its_parents_architecture(tmp_path):
    """A parent an earlier release recorded under another preference than its model's."""
    import json as json_module

    service, _, _ = make(tmp_path)
    add_trainer(service)
    parent = service.create_job(T, JobRequest(dataset_id="ds-1", preference="PERFORMANCE_FIRST", **FREE))
    wait_for(lambda: service.get_job(T, parent.id).final)
    with service.store.transaction() as tx:  # recorded as performance_first, but a ResNet-18: balance's model
        body = service.store.model_version("ds-1", "V001")
        body["architecture"] = "resnet18"
        tx.execute("UPDATE model_versions SET body = ? WHERE version = 'V001'", (json_module.dumps(body),))
    child = service.create_job(T, JobRequest(dataset_id="ds-1", incremental_model_version="V001", **FREE))
    assert child.params["preference"] == "BALANCE"


def test_a_job_held_back_while_the_dataset_service_is_down_keeps_the_head_of_the_queue(tmp_path):
    """The first job has a slot but waits for the dataset service to confirm its dataset: it is
    place 1, the job behind it place 2 (both were shown place 1)."""
    from trainyard.errors import Unavailable

    service, datasets, _ = make(tmp_path, FakeTrainer(steps=0))
    first = service.create_job(T, JobRequest(dataset_id="ds-1", flavor_id="compute-gpu-1"))
    second = service.create_job(T, JobRequest(dataset_id="ds-1", flavor_id="compute-gpu-1"))
    resolve = datasets.resolve_dataset

    def down(tenant, id_or_name, timeout=30.0):
        raise Unavailable("the dataset service cannot be reached")

    datasets.resolve_dataset = down
    add_trainer(service, slots=1)
    held = wait_for(lambda: (j := service.get_job(T, first.id)).wait_reason.startswith("waiting for the dataset") and j)
    behind = wait_for(lambda: (j := service.get_job(T, second.id)).wait_reason and j)
    assert (held.state, held.queue_position) == ("QUEUED", 1)
    assert (behind.queue_position, behind.wait_reason) == (2, "waiting for a free slot on Compute-intensive 1 instance (GPU)")
    datasets.resolve_dataset = resolve
    wait_for(lambda: service.get_job(T, first.id).state in ("STARTING", "RUNNING"))
    wait_for(lambda: service.get_job(T, second.id).queue_position == 1)


def test_a_watch_is_ready_before_a_quiet_jobs_first_event(tmp_path):
    """The servicer sends the response headers when `ready` is awaited, so a client knows its watch
    is established while a queued job says nothing (the TypeScript SDK resets its reconnect clock)."""
    service, _, _ = make(tmp_path)  # no trainer: the job stays queued and quiet
    job = service.create_job(T, JobRequest(dataset_id="ds-1", **FREE))
    last = service.get_job(T, job.id).last_sequence
    ready = asyncio.Event()

    async def first_event_or_ready() -> str:
        async def on_ready() -> None:
            ready.set()

        events = service.watch_async(T, job.id, last, ready=on_ready)
        waiting = asyncio.ensure_future(events.__anext__())
        await asyncio.wait_for(ready.wait(), timeout=5)
        done = waiting.done()
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await waiting
        await events.aclose()
        return "event" if done else "ready"

    assert asyncio.run(first_event_or_ready()) == "ready"
