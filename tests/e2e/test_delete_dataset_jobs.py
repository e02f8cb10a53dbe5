"""Deleting a dataset while jobs use it, on the whole stack with a real trainer (issue 3).

The decision (docs/datasets.md, "Deleting a dataset"): a job already started finishes
and makes its model version; a job still queued never starts and ends FAILED saying the
dataset was deleted; a new job is NOT_FOUND, saying so; model versions made from the
dataset stay readable and keep predicting by the dataset's id, even after the purge.

The stack's trainer serves only the free flavor, so a job on compute-gpu-1 waits with
"no trainer serves" for as long as a test likes; a second free job of one tenant waits
behind the first for the tenant's quota of one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.e2e.stacks import running_stack
from trainyard.errors import NotFound
from trainyard.sample_data import digit_files
from trainyard.stack.local import LocalStack

pytestmark = pytest.mark.e2e

DELETED_BEFORE_START = "was deleted before the job started"
FREE = {"accept_free_terms": True, "preference": "performance_first"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalStack]:
    """A stack of its own: the tests restart its services with other settings and purge its datasets."""
    yield from running_stack(tmp_path_factory.mktemp("delete-stack"), extra_env={
        "TRAINYARD_TRAINER_FLAVORS": "free-gpu",
        # The sweep of queued jobs runs once at start, then hourly: only dispatch can catch a deletion
        # here, until test_queued_job_without_a_trainer_ends_soon_after_deletion shortens it.
        "TRAINYARD_DATASET_CHECK_SECONDS": "3600",
    })


@pytest.fixture(scope="module")
def intruder_key(stack) -> str:
    return stack.create_api_key("intruder")


@pytest.fixture(scope="module")
def deleted(stack):
    """A dataset deleted while job A ran on it and job B waited behind A; both jobs ended."""
    client = stack.client()
    ds = client.create_dataset("delete-while-training")
    assert client.upload_images(ds.id, digit_files(per_class=6)).stored == 60
    running = client.create_training_job(ds.id, max_epochs=3, **FREE)
    queued = client.create_training_job(ds.id, max_epochs=1, **FREE)
    deadline = time.monotonic() + 120
    while (a := client.get_job(running.id)).state != "running":
        assert not a.final and time.monotonic() < deadline, (a.state, a.error_message)
        time.sleep(0.05)
    b = client.get_job(queued.id)
    assert b.state == "queued" and "quota" in b.wait_reason, b
    started = time.monotonic()
    client.delete_dataset(ds.id)
    assert not client.get_job(running.id).final  # the deletion happened while A ran
    a_done, b_done = client.wait(running.id), client.wait(queued.id)
    return ds, a_done, b_done, time.monotonic() - started


def not_found(call) -> str:
    with pytest.raises(NotFound) as exc:
        call()
    return exc.value.message


def normalise(message: str) -> str:
    """Messages name what was asked for; compare them with the asked-for ids blanked."""
    return re.sub(r"'[^']*'", "'…'", message)


def test_running_job_finishes_with_its_model_version(stack, deleted):
    ds, a, _, _ = deleted
    assert (a.state, a.stop_reason) == ("completed", "converged"), a.error_message
    assert a.model_version == "V001"
    assert a.dataset_id == ds.id


def test_queued_job_ends_failed_at_dispatch_without_reaching_a_trainer(stack, deleted):
    ds, a, b, _ = deleted
    assert (b.state, b.stop_reason) == ("failed", "error")
    assert b.error_message == (f"dataset {ds.id} {DELETED_BEFORE_START}; "
                               "the job did not run, made no model version and was not billed")
    assert b.start_time is None and b.billed_seconds == 0 and not b.model_version
    assert b.end_time >= a.end_time  # caught when A's end freed the slot, not by the hourly sweep
    events = list(stack.client().watch(b.id))
    states = [e.state for e in events if e.kind == "state_change"]
    assert states == ["queued", "failed"]  # never starting: no trainer saw it
    assert events[-1].final and DELETED_BEFORE_START in events[-1].message
    assert b.id not in stack.log_tail("trainer", lines=10_000)


def test_new_job_on_deleted_dataset_is_not_found_and_says_why(stack, deleted, intruder_key):
    ds, _, _, _ = deleted
    owner, intruder = stack.client(), stack.client(api_key=intruder_key)
    message = not_found(lambda: owner.create_training_job(ds.id, **FREE))
    assert message == (f"dataset {ds.id!r} was deleted; a new training job cannot use it "
                       "(its jobs and model versions stay readable by this id)")
    # the name is free again: by name the deleted dataset is simply not there
    assert not_found(lambda: owner.create_training_job(ds.display_name, **FREE)) == \
        f"dataset {ds.display_name!r} does not exist"
    # another tenant learns nothing: the answers of a dataset that never existed
    for theirs, missing in [
        (lambda: intruder.create_training_job(ds.id, **FREE), lambda: intruder.create_training_job("ds-00000000", **FREE)),
        (lambda: intruder.list_model_versions(ds.id), lambda: intruder.list_model_versions("ds-00000000")),
        (lambda: intruder.get_model_version(ds.id, "V001"), lambda: intruder.get_model_version("ds-00000000", "V001")),
        (lambda: intruder.list_jobs(ds.id), lambda: intruder.list_jobs("ds-00000000")),
    ]:
        assert normalise(not_found(theirs)) == normalise(not_found(missing))


def test_model_version_of_deleted_dataset_still_serves_even_after_the_purge(stack, deleted):
    ds, a, b, _ = deleted
    client = stack.client()
    image = digit_files(per_class=1)[3][2]

    def still_served() -> None:
        assert [v.version for v in client.list_model_versions(ds.id)] == ["V001"]
        assert client.best_model_version(ds.id) == "V001"
        assert client.get_model_version(ds.id, "V001").artifact_prefix
        assert len(client.predict(ds.id, "V001", [image], top_k=3)[0]) == 3
        assert client.download_artifact(ds.id, "V001", "labels.json")  # read from the bucket each time
        assert {j.id for j in client.list_jobs(ds.id)} == {a.id, b.id}

    still_served()
    # Purge now: a dataset service whose retention is zero purges every deleted dataset at start.
    stack.settings.extra_env["TRAINYARD_DELETED_RETENTION_HOURS"] = "0"
    stack.restart("dataset")
    deadline = time.monotonic() + 60
    while not any("dataset.purged" in line and ds.id in line for line in stack.log_tail("dataset", lines=500).splitlines()):
        assert time.monotonic() < deadline, stack.log_tail("dataset")
        time.sleep(0.2)
    still_served()


def test_queued_job_without_a_trainer_ends_soon_after_deletion(stack):
    stack.settings.extra_env["TRAINYARD_DATASET_CHECK_SECONDS"] = "1"
    stack.restart("scheduler")
    client = stack.client()
    ds = client.create_dataset("delete-while-queued")
    client.upload_images(ds.id, digit_files(per_class=6))
    job = client.create_training_job(ds.id, flavor="compute-gpu-1", max_epochs=1)
    deadline = time.monotonic() + 30
    while "no trainer serves" not in (waiting := client.get_job(job.id)).wait_reason:
        assert waiting.state == "queued" and time.monotonic() < deadline, waiting
        time.sleep(0.1)
    started = time.monotonic()
    client.delete_dataset(ds.id)
    done = client.wait(job.id)
    assert time.monotonic() - started < 10  # the sweep, not a dispatch that never comes
    assert (done.state, done.stop_reason) == ("failed", "error")
    assert DELETED_BEFORE_START in done.error_message and done.billed_seconds == 0
