"""Processes killed with SIGKILL and restarted: nothing acknowledged is lost, no job runs twice."""

from __future__ import annotations

import threading
import time

import pytest

from tests.e2e.stacks import running_stack
from trainyard.sample_data import digit_files

pytestmark = pytest.mark.e2e

RUNNING, COMPLETED, FAILED, STARTING = "running", "completed", "failed", "starting"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A stack of its own: these tests kill its processes."""
    yield from running_stack(tmp_path_factory.mktemp("stack"), heartbeat_seconds=0.5, heartbeat_timeout_seconds=4.0)


@pytest.fixture(scope="module")
def dataset(client):
    ds = client.create_dataset("digits-restarts")
    client.upload_images(ds.id, digit_files(per_class=12))
    return ds


def wait_state(client, job_id, states, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get_job(job_id)
        if job.state in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not reach {states}")


def watch_in_background(client, job_id):
    events, errors = [], []

    def run():
        try:
            events.extend(client.watch(job_id))
        except Exception as exc:  # surfaced by the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, events, errors


@pytest.mark.parametrize("kill_at", ["queued", "running", "running-sigterm"])
def test_scheduler_killed_and_restarted(stack, client, dataset, kill_at):
    job = client.create_training_job(dataset.id, accept_free_terms=True, max_epochs=6, preference="performance_first")
    thread, events, errors = watch_in_background(client, job.id)
    if kill_at.startswith("running"):
        wait_state(client, job.id, {RUNNING})
    if kill_at.endswith("sigterm"):  # graceful: watch streams end UNAVAILABLE and the SDK resumes
        stack.stop_service("scheduler")
    else:
        stack.kill("scheduler")
    time.sleep(0.5)
    stack.start_service("scheduler")
    thread.join(timeout=180)
    assert not thread.is_alive() and not errors, errors
    sequences = [e.sequence for e in events]
    assert sequences == list(range(1, len(sequences) + 1)), "the watcher saw a gap or a duplicate"
    done = client.get_job(job.id)
    assert done.state == COMPLETED, done.error_message
    versions = [v for v in client.list_model_versions(dataset.id) if v.job_id == job.id]
    assert len(versions) == 1
    loads = [e for e in events if e.kind == "log" and "loading dataset version" in e.message]
    assert len(loads) == 1, "the job ran more than once"


def test_dataset_service_killed_keeps_everything_acknowledged(stack, client):
    ds = client.create_dataset("kill-dataset")
    response = client.upload_images(ds.id, digit_files(per_class=6))
    version = client.publish_version(ds.id)
    stack.kill("dataset")
    stack.start_service("dataset")
    again = stack.client()
    assert again.get_dataset(ds.id).image_count == response.stored
    assert [v.content_hash for v in again.list_versions(ds.id)] == [version.content_hash]


def test_trainer_killed_fails_the_job_as_trainer_lost(stack, client, dataset):
    job = client.create_training_job(dataset.id, accept_free_terms=True, preference="accuracy_first")
    wait_state(client, job.id, {RUNNING, STARTING})
    stack.kill("trainer")
    done = wait_state(client, job.id, {FAILED}, timeout=60)
    assert done.stop_reason == "trainer_lost"
    stack.start_service("trainer")
    # a new job runs on the restarted trainer once it has registered again
    again = client.create_training_job(dataset.id, accept_free_terms=True, max_epochs=1, preference="performance_first")
    assert wait_state(client, again.id, {COMPLETED}, timeout=180).model_version


def test_object_store_down_gives_unavailable_and_no_partial_write(stack, client):
    from trainyard.errors import Unavailable

    ds = client.create_dataset("s3-down")
    first = digit_files(per_class=5)
    more = [f for f in digit_files(per_class=6) if f not in first]  # one more image of each class
    client.upload_images(ds.id, first)
    before = client.get_dataset(ds.id)
    stack.s3.kill()
    try:
        with pytest.raises(Unavailable) as exc:
            client.upload_images(ds.id, more)
        assert "object store unreachable" in exc.value.message
        with pytest.raises(Unavailable):
            client.publish_version(ds.id)
    finally:
        stack.s3.restart()
    after = client.get_dataset(ds.id)
    assert (after.image_count, after.version_count) == (before.image_count, before.version_count)
    assert client.upload_images(ds.id, more).stored == 10
    assert client.publish_version(ds.id).train_count + client.list_versions(ds.id)[0].validation_count == 60
