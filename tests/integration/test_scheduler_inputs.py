"""Bad inputs to the scheduler's job, watch and usage RPCs: each one's status code, field and
message, and that nothing already stored changed.

Real dataset and scheduler servers on loopback, a real S3 server; no trainer is registered, so a
job waits in the queue until it is cancelled.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2

from tests.integration.dataset_calls import new_dataset, upload
from tests.integration.rpc_errors import bad_fields, error
from trainyard.dataset.v1 import dataset_service_pb2 as ds
from trainyard.sample_data import digit_files
from trainyard.scheduler.v1 import scheduler_pb2
from trainyard.scheduler.v1 import scheduler_service_pb2 as sc
from trainyard.scheduler.v1 import scheduler_service_pb2_grpc as sc_grpc
from trainyard.services.scheduler.server import SchedulerConfig
from trainyard.services.scheduler.server import build as build_scheduler

INT64_MAX = 2**63 - 1
LONG = "x" * 6000  # an id far longer than any real one
CANCELLED = scheduler_pb2.TRAINING_JOB_STATE_CANCELLED


@pytest.fixture(scope="module")
def dataset(datasets):
    """A trainable dataset (S1): 10 digit classes of 5 images."""
    created = new_dataset(datasets)
    assert upload(datasets, created.id, digit_files(per_class=5)).stored_count == 50
    return created


# --- helpers ----------------------------------------------------------------------


def create(scheduler, dataset, **fields) -> scheduler_pb2.TrainingJob:
    return scheduler.CreateTrainingJob(
        sc.CreateTrainingJobRequest(dataset_id=dataset.id, accept_free_terms=True, **fields)
    ).training_job


def get(scheduler, job_id: str) -> scheduler_pb2.TrainingJob:
    return scheduler.GetTrainingJob(sc.GetTrainingJobRequest(job_id=job_id)).training_job


def queued_job(scheduler, dataset, **fields) -> scheduler_pb2.TrainingJob:
    """A queued job whose log has settled: the dispatcher said why it waits (no trainer)."""
    job = create(scheduler, dataset, **fields)
    deadline = time.monotonic() + 10
    while not job.wait_reason.startswith("no trainer"):
        assert time.monotonic() < deadline, job.wait_reason
        time.sleep(0.05)
        job = get(scheduler, job.id)
    return job


def ended_job(scheduler, dataset) -> scheduler_pb2.TrainingJob:
    job = create(scheduler, dataset)
    return scheduler.CancelTrainingJob(sc.CancelTrainingJobRequest(job_id=job.id)).training_job


def watch(
    scheduler, job_id: str, after: int, timeout: float = 10
) -> list[scheduler_pb2.TrainingJobEvent]:
    request = sc.WatchTrainingJobRequest(job_id=job_id, after_sequence=after)
    return [r.event for r in scheduler.WatchTrainingJob(request, timeout=timeout)]


def stored(scheduler, datasets, dataset) -> tuple[list, list[str]]:
    """What the dataset's jobs and versions are, to compare before and after a refused call: each
    job's id, parameters and creation time (its state moves on by itself while it runs)."""
    jobs = scheduler.ListTrainingJobs(
        sc.ListTrainingJobsRequest(dataset_id=dataset.id)
    ).training_jobs
    versions = datasets.ListVersions(ds.ListVersionsRequest(dataset_id=dataset.id)).versions
    return ([(j.id, j.parameters.SerializeToString(deterministic=True), j.create_time.ToNanoseconds()) for j in jobs],
            [v.name for v in versions])


# --- WatchTrainingJob at the end of a job's log -------------------------------------


def test_watching_an_ended_job_from_its_last_sequence_ends_at_once(scheduler, dataset):
    job = ended_job(scheduler, dataset)
    started = time.monotonic()
    assert watch(scheduler, job.id, job.last_sequence) == []
    assert time.monotonic() - started < 5  # at once, not at the client's deadline
    (final,) = watch(scheduler, job.id, job.last_sequence - 1)
    assert final.final and final.sequence == job.last_sequence


@pytest.mark.parametrize("past", [1, 5, INT64_MAX])
@pytest.mark.parametrize("kind", ["ended", "live"])
def test_watching_past_the_last_event_is_out_of_range_naming_the_last_sequence(
    scheduler, dataset, kind, past
):
    job = ended_job(scheduler, dataset) if kind == "ended" else queued_job(scheduler, dataset)
    after = min(job.last_sequence + past, INT64_MAX)
    err = error(lambda: watch(scheduler, job.id, after))
    assert err.code() == grpc.StatusCode.OUT_OF_RANGE, err.details()
    assert err.details().startswith(
        f"after_sequence: {after} is past the last event of job {job.id}, "
    )
    assert f"sequence {job.last_sequence}" in err.details()
    assert f"watch from after_sequence 0 to {job.last_sequence}" in err.details()
    assert get(scheduler, job.id) == job  # nothing changed


def test_watching_a_live_job_from_its_last_sequence_gets_the_final_event(scheduler, dataset):
    job = queued_job(scheduler, dataset)
    cancel = threading.Timer(
        0.5, lambda: scheduler.CancelTrainingJob(sc.CancelTrainingJobRequest(job_id=job.id))
    )
    cancel.start()
    try:
        events = watch(scheduler, job.id, job.last_sequence)
    finally:
        cancel.join()
    assert (
        events and events[-1].final and events[-1].sequence == get(scheduler, job.id).last_sequence
    )
    assert all(e.sequence > job.last_sequence for e in events)


def test_a_negative_after_sequence_is_invalid_argument(scheduler, dataset):
    job = ended_job(scheduler, dataset)
    err = error(lambda: watch(scheduler, job.id, -1))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err) == ["after_sequence"]


# --- GetUsage periods --------------------------------------------------------------

BAD_TIMESTAMPS = {
    "seconds 10**15": timestamp_pb2.Timestamp(seconds=10**15),
    "nanos -5": timestamp_pb2.Timestamp(nanos=-5),
    "seconds -10**12": timestamp_pb2.Timestamp(seconds=-(10**12)),
    "nanos 10**9": timestamp_pb2.Timestamp(seconds=1, nanos=10**9),
}


@pytest.mark.parametrize("field", ["start_time", "end_time"])
@pytest.mark.parametrize("bad", list(BAD_TIMESTAMPS))
def test_an_invalid_timestamp_is_invalid_argument_naming_the_field_and_the_range(
    scheduler, field, bad
):
    err = error(lambda: scheduler.GetUsage(sc.GetUsageRequest(**{field: BAD_TIMESTAMPS[bad]})))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert bad_fields(err) == [field]
    assert err.details().startswith(f"{field}: is not a valid timestamp")
    assert "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z" in err.details()


def test_an_end_time_at_the_epoch_is_a_time_not_left_out(scheduler, dataset):
    ended_job(scheduler, dataset)
    assert [line.tenant for line in scheduler.GetUsage(sc.GetUsageRequest()).lines] == ["alpha"]
    epoch = sc.GetUsageRequest(end_time=timestamp_pb2.Timestamp(seconds=0))
    assert epoch.HasField("end_time")
    assert list(scheduler.GetUsage(epoch).lines) == []  # no job ended before 1970
    since_epoch = sc.GetUsageRequest(start_time=timestamp_pb2.Timestamp(seconds=0))
    assert [line.tenant for line in scheduler.GetUsage(since_epoch).lines] == ["alpha"]
    both = sc.GetUsageRequest(
        start_time=timestamp_pb2.Timestamp(seconds=0), end_time=timestamp_pb2.Timestamp(seconds=0)
    )
    err = error(lambda: scheduler.GetUsage(both))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and bad_fields(err) == ["end_time"]


# --- request_id: a retry, or another request -----------------------------------------


def test_a_request_id_with_the_identical_request_returns_the_job(scheduler, datasets, dataset):
    request_id = uuid.uuid4().hex
    job = queued_job(scheduler, dataset, request_id=request_id, seed=4)
    before = stored(scheduler, datasets, dataset)
    assert create(scheduler, dataset, request_id=request_id, seed=4) == job
    assert stored(scheduler, datasets, dataset) == before


def test_a_request_id_with_a_different_request_is_already_exists(scheduler, datasets, dataset):
    request_id = uuid.uuid4().hex
    job = queued_job(scheduler, dataset, request_id=request_id)
    before = stored(scheduler, datasets, dataset)
    err = error(
        lambda: create(
            scheduler,
            dataset,
            request_id=request_id,
            max_duration_minutes=30,
            new_version_name="v-other",
        )
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err.details()
    assert err.details().startswith(
        f"request_id '{request_id}' was used for a different request (job {job.id})"
    )
    assert "these fields differ: max_duration_minutes, new_version_name" in err.details()
    assert stored(scheduler, datasets, dataset) == before
    assert get(scheduler, job.id) == job


def test_a_request_id_with_an_invalid_request_names_the_bad_field(scheduler, datasets, dataset):
    request_id = uuid.uuid4().hex
    queued_job(scheduler, dataset, request_id=request_id)
    before = stored(scheduler, datasets, dataset)
    err = error(lambda: create(scheduler, dataset, request_id=request_id, max_duration_minutes=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert bad_fields(err) == ["max_duration_minutes"]
    assert stored(scheduler, datasets, dataset) == before


# --- dataset service errors in CreateTrainingJob's words -----------------------------


def test_a_bad_new_version_name_names_new_version_name(scheduler, datasets, dataset):
    before = stored(scheduler, datasets, dataset)
    err = error(
        lambda: create(scheduler, dataset, new_version_name="bad name", request_id=uuid.uuid4().hex)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert err.details().startswith("new_version_name: 'bad name' may contain only"), err.details()
    assert bad_fields(err) == ["new_version_name"]
    assert stored(scheduler, datasets, dataset) == before


def test_a_bad_train_ratio_checked_by_the_dataset_service_keeps_its_name(
    scheduler, datasets, dataset
):
    before = stored(scheduler, datasets, dataset)
    err = error(lambda: create(scheduler, dataset, train_ratio="0.123456"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and bad_fields(err) == [
        "train_ratio"
    ]
    assert stored(scheduler, datasets, dataset) == before


# --- ids far too long: their own answer, not a transport error ---------------------------


def test_a_6000_character_id_gets_its_own_status_with_a_short_message(scheduler, datasets, dataset):
    before = stored(scheduler, datasets, dataset)
    calls = {
        grpc.StatusCode.NOT_FOUND: [
            lambda: get(scheduler, LONG),
            lambda: scheduler.CancelTrainingJob(sc.CancelTrainingJobRequest(job_id=LONG)),
            lambda: watch(scheduler, LONG, 0),
            lambda: scheduler.GetModelVersion(
                sc.GetModelVersionRequest(dataset_id=dataset.id, version=LONG)
            ),
            lambda: create(scheduler, dataset, incremental_model_version=LONG),
            lambda: scheduler.CreateTrainingJob(
                sc.CreateTrainingJobRequest(dataset_id=LONG, accept_free_terms=True)
            ),
        ],
        grpc.StatusCode.INVALID_ARGUMENT: [lambda: create(scheduler, dataset, flavor_id=LONG)],
    }
    for code, refused in calls.items():
        for call in refused:
            err = error(call)
            assert err.code() == code, (err.code(), err.details()[:200])
            assert len(err.details()) < 1000 and "6,000 characters" in err.details(), err.details()[
                :200
            ]
    assert stored(scheduler, datasets, dataset) == before


# --- a scheduler database of release 1 --------------------------------------------------

SCHEMA_1_JOBS = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, request_id TEXT, tenant TEXT NOT NULL,
    dataset_id TEXT NOT NULL, flavor_id TEXT NOT NULL, params TEXT NOT NULL, state TEXT NOT NULL,
    stop_reason TEXT NOT NULL DEFAULT '', error_message TEXT NOT NULL DEFAULT '',
    queue_position INTEGER NOT NULL DEFAULT 0, wait_reason TEXT NOT NULL DEFAULT '', create_time REAL NOT NULL,
    start_time REAL, end_time REAL, duration_limit REAL NOT NULL, deadline_reason TEXT NOT NULL,
    trainer_id TEXT NOT NULL DEFAULT '', trainer_seq INTEGER NOT NULL DEFAULT 0, stop_requested TEXT NOT NULL DEFAULT '',
    model_version TEXT NOT NULL DEFAULT '', latest_progress TEXT NOT NULL DEFAULT '',
    last_sequence INTEGER NOT NULL DEFAULT 0, billed_seconds REAL NOT NULL DEFAULT 0, cost REAL NOT NULL DEFAULT 0,
    first_sequence INTEGER NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX jobs_by_request ON jobs(tenant, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX jobs_by_state ON jobs(state, flavor_id, seq);
CREATE INDEX jobs_by_tenant ON jobs(tenant, create_time);
CREATE TABLE events (job_id TEXT NOT NULL, sequence INTEGER NOT NULL, time REAL NOT NULL, final INTEGER NOT NULL,
    payload TEXT NOT NULL, PRIMARY KEY (job_id, sequence));
INSERT INTO jobs (id, request_id, tenant, dataset_id, flavor_id, params, state, stop_reason, create_time, end_time,
                  duration_limit, deadline_reason, last_sequence)
    VALUES ('job-release1', 'old-request', 'alpha', 'ds-gone', 'free-gpu',
            '{"datasetVersion": "v1", "trainRatio": "0.8", "seed": 0, "incrementalModelVersion": "",
              "maxDurationMinutes": 60, "preference": "BALANCE", "flavorId": "free-gpu", "freeTermsAccepted": true,
              "maxEpochs": 0, "manifestKey": "m", "initArtifactPrefix": ""}',
            'CANCELLED', 'CANCELLED', 1.0, 2.0, 3600, 'FREE_FLAVOR_HOUR', 1);
INSERT INTO events VALUES ('job-release1', 1, 2.0, 1, '{"stateChange": {"state": "TRAINING_JOB_STATE_CANCELLED"}}');
PRAGMA user_version = 1;
"""


def test_a_release_1_database_upgrades_on_start_and_its_jobs_match_any_request(
    tmp_path: Path, services, security, dataset
):
    path = tmp_path / "scheduler" / "scheduler.db"
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_1_JOBS)
    conn.close()
    running, service = build_scheduler(
        SchedulerConfig.from_env(
            {
                "TRAINYARD_SCHEDULER_LISTEN": "127.0.0.1:0",
                "TRAINYARD_DATA_DIR": str(tmp_path),
                "TRAINYARD_DATASET_ADDRESS": services.address("dataset"),
                **security.env,
            }
        )
    )
    try:
        assert service.store.db.query_one("PRAGMA user_version")[0] == 2
        upgraded = sc_grpc.SchedulerServiceStub(security.channel(f"127.0.0.1:{running.port}"))
        old = get(upgraded, "job-release1")
        assert (old.state, old.last_sequence) == (CANCELLED, 1)
        # a job of release 1 recorded no request: any request with its id is taken as its retry
        assert create(upgraded, dataset, request_id="old-request", seed=99).id == "job-release1"
        # jobs created now record theirs
        new = create(upgraded, dataset, request_id="new-request")
        err = error(lambda: create(upgraded, dataset, request_id="new-request", seed=99))
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS and new.id in err.details()
        assert {
            j.id for j in upgraded.ListTrainingJobs(sc.ListTrainingJobsRequest()).training_jobs
        } == {"job-release1", new.id}
    finally:
        service.stop()
        running.stop(0)
