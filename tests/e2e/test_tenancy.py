"""Tenants on the whole stack: nothing of one tenant is visible to another, and no secret leaks.

The dataset service's own RPCs are covered one by one in
tests/integration/test_dataset_tenancy.py; here every scheduler RPC is tried
across tenants against a real trained model, and the logs and responses of a
whole run are searched for credentials and internal addresses.
"""

from __future__ import annotations

import re

import grpc
import pytest

from trainyard.auth import CallCredentials
from trainyard.errors import NotFound
from trainyard.rpc import channel
from trainyard.sample_data import digit_files
from trainyard.scheduler.v1 import scheduler_service_pb2 as sc
from trainyard.scheduler.v1 import scheduler_service_pb2_grpc as sc_grpc

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def trained(stack):
    """The owner's dataset with one trained model version, and the finished job."""
    owner = stack.client()
    ds = owner.create_dataset("tenancy-owner")
    owner.upload_images(ds.id, digit_files(per_class=6))
    job = owner.create_training_job(ds.id, accept_free_terms=True, max_epochs=1, preference="performance_first")
    done = owner.wait(job.id)
    assert done.state == "completed", done.error_message
    return ds, done


@pytest.fixture(scope="module")
def intruder_key(stack) -> str:
    return stack.create_api_key("intruder")


def not_found_message(call) -> str:
    with pytest.raises(NotFound) as exc:
        call()
    return exc.value.message


def test_every_scheduler_rpc_hides_another_tenants_jobs_and_models(stack, trained, intruder_key):
    ds, job = trained
    owner, intruder = stack.client(), stack.client(api_key=intruder_key)
    version = job.model_version
    image = digit_files(per_class=1)[0][2]
    # The same answer as for things that do not exist at all: existence does not leak.
    pairs = [
        (lambda: intruder.get_job(job.id), lambda: intruder.get_job("job-0000000000")),
        (lambda: intruder.cancel_job(job.id), lambda: intruder.cancel_job("job-0000000000")),
        (lambda: list(intruder.watch(job.id)), lambda: list(intruder.watch("job-0000000000"))),
        (lambda: intruder.list_jobs(ds.id), lambda: intruder.list_jobs("ds-00000000")),
        (lambda: intruder.list_model_versions(ds.id), lambda: intruder.list_model_versions("ds-00000000")),
        (lambda: intruder.get_model_version(ds.id, version), lambda: intruder.get_model_version("ds-00000000", version)),
        (lambda: intruder.predict(ds.id, version, [image]), lambda: intruder.predict("ds-00000000", version, [image])),
        (lambda: intruder.download_artifact(ds.id, version, "labels.json"),
         lambda: intruder.download_artifact("ds-00000000", version, "labels.json")),
        (lambda: intruder.create_training_job(ds.id, accept_free_terms=True),
         lambda: intruder.create_training_job("ds-00000000", accept_free_terms=True)),
        (lambda: intruder.create_training_job("tenancy-owner", accept_free_terms=True),  # by display name too
         lambda: intruder.create_training_job("no-such-name", accept_free_terms=True)),
    ]
    for theirs, missing in pairs:
        assert normalise(not_found_message(theirs)) == normalise(not_found_message(missing))
    assert intruder.list_jobs() == []
    assert all(line.tenant == "intruder" for line in intruder.usage())
    assert {f.id for f in intruder.list_flavors()} == {f.id for f in owner.list_flavors()}  # flavors are shared
    # the owner's things are untouched, and the owner (an admin key) sees every tenant's usage
    assert owner.get_job(job.id).state == "completed"
    assert [v.version for v in owner.list_model_versions(ds.id)] == [version]
    assert "default" in {line.tenant for line in owner.usage()}


def normalise(message: str) -> str:
    """Messages name what was asked for; compare them with the asked-for ids blanked."""
    return re.sub(r"'[^']*'", "'…'", message)


def test_trainer_and_registration_refuse_tenant_keys(stack, intruder_key):
    stub = sc_grpc.SchedulerServiceStub(channel(stack.address("scheduler"), stack.client_tls, CallCredentials(intruder_key)))
    capacity = {f.id: f.capacity for f in stack.client().list_flavors()}
    with pytest.raises(grpc.RpcError) as exc:
        stub.RegisterTrainer(sc.RegisterTrainerRequest(trainer_id="rogue", address="10.0.0.1:1", flavor_ids=["free-gpu"], slots=9))
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert {f.id: f.capacity for f in stack.client().list_flavors()} == capacity  # no rogue trainer joined


def test_no_secret_or_internal_address_in_logs_or_responses(stack, trained):
    ds, job = trained
    owner = stack.client()
    secrets = {
        "S3 access key": stack.s3_config.access_key,
        "S3 secret key": stack.s3_config.secret_key,
        "internal token": stack.internal_token_file.read_text().strip(),
        "API key": stack.api_key,
        "API key secret part": stack.api_key.rsplit("_", 1)[-1],
    }
    logs = {name: (stack.data_dir / "logs" / f"{name}.log").read_text(errors="replace")
            for name in ("dataset", "scheduler", "trainer")}
    for log_name, text in logs.items():
        for secret_name, value in secrets.items():
            assert value not in text, f"the {secret_name} appears in the {log_name} log"
    responses = "\n".join([
        repr(owner.get_job(job.id)),
        repr(owner.get_model_version(ds.id, job.model_version)),
        repr(owner.get_dataset(ds.id)),
        repr(owner.list_versions(ds.id)),
        repr(owner.list_flavors()),
        repr(list(owner.watch(job.id))),
    ])
    internal = {**secrets, "S3 endpoint": stack.s3_config.endpoint, "trainer address": stack.address("trainer"),
                "dataset service address": stack.address("dataset")}
    for name, value in internal.items():
        assert value not in responses, f"the {name} appears in an API response"
