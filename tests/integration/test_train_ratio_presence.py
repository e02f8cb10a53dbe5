"""Rule S3 through the APIs: a training ratio left out means 0.8; one given, even "", is checked.

train_ratio is an `optional string` in PublishVersionRequest and CreateTrainingJobRequest, so
an explicit empty string is told apart from a field left out. Real dataset and scheduler
servers on loopback, a real S3 server; no trainer is registered, so no job ever trains.
"""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from trainyard.cli.main import main as cli
from trainyard.dataset.v1 import dataset_service_pb2 as ds
from trainyard.errors import InvalidArgument
from trainyard.sample_data import digit_files
from trainyard.scheduler.v1 import scheduler_service_pb2 as sc
from trainyard.sdk import Client

# Each refused ratio with words of the rule it breaks (services/dataset/rules.py).
REFUSED = {
    "": ["is empty"],
    "1": ["strictly between 0 and 1", "0 decimal places"],
    "0": ["strictly between 0 and 1", "0 decimal places"],
    "0.123456": ["6 decimal places", "1 to 5"],
    "abc": ["'abc' is not a decimal number"],
    "-0.5": ["-0.5 must lie strictly between 0 and 1"],
    "1.5": ["1.5 must lie strictly between 0 and 1"],
}


@pytest.fixture(scope="module")
def sdk(services, security):
    return Client(services.address("dataset"), services.address("scheduler"), api_key=security.api_key)


@pytest.fixture(scope="module")
def dataset(datasets):
    """A trainable dataset: 10 digit classes of 10 images."""
    created = datasets.CreateDataset(ds.CreateDatasetRequest(display_name="ratio-" + uuid.uuid4().hex[:8])).dataset

    def requests():
        yield ds.UploadImagesRequest(dataset_id=created.id)
        for name, label, data in digit_files(per_class=10):
            yield ds.UploadImagesRequest(header=ds.ImageHeader(file_name=name, label=label))
            yield ds.UploadImagesRequest(chunk=data)

    assert datasets.UploadImages(requests()).stored_count == 100
    return created


def ratio_violation(error: grpc.RpcError) -> str:
    """The description of the one BadRequest violation, after checking it names train_ratio."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    bad = error_details_pb2.BadRequest()
    details = rpc_status.from_call(error).details
    assert len(details) == 1 and details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["train_ratio"]
    assert error.details().startswith("train_ratio: ")
    return bad.field_violations[0].description


def version_names(datasets, dataset_id: str) -> list[str]:
    return [v.name for v in datasets.ListVersions(ds.ListVersionsRequest(dataset_id=dataset_id)).versions]


# PublishVersion ------------------------------------------------------------------


def test_publish_with_the_ratio_left_out_uses_0_8(datasets, dataset):
    request = ds.PublishVersionRequest(dataset_id=dataset.id, seed=3)
    assert not request.HasField("train_ratio")
    version = datasets.PublishVersion(request).version
    assert version.train_ratio == "0.8"
    assert (version.train_count, version.validation_count) == (80, 20)
    # An explicit "0.8" is the same ratio text: the stable split continues from that version.
    again = datasets.PublishVersion(ds.PublishVersionRequest(dataset_id=dataset.id, train_ratio="0.8", seed=3)).version
    assert (again.train_ratio, again.parent_version) == ("0.8", version.name)


@pytest.mark.parametrize("ratio", list(REFUSED))
def test_publish_refuses_each_bad_ratio_naming_the_rule(datasets, dataset, ratio):
    request = ds.PublishVersionRequest(dataset_id=dataset.id, train_ratio=ratio)
    assert request.HasField("train_ratio")  # sent, even when ""
    before = version_names(datasets, dataset.id)
    with pytest.raises(grpc.RpcError) as exc:
        datasets.PublishVersion(request)
    description = ratio_violation(exc.value)
    for words in REFUSED[ratio]:
        assert words in description, description
    assert version_names(datasets, dataset.id) == before


@pytest.mark.parametrize("ratio", ["0.8", "0.75", "0.12345"])
def test_publish_accepts_1_to_5_decimal_places(datasets, dataset, ratio):
    version = datasets.PublishVersion(ds.PublishVersionRequest(dataset_id=dataset.id, train_ratio=ratio)).version
    assert version.train_ratio == ratio
    assert version.train_count + version.validation_count == 100


# CreateTrainingJob ---------------------------------------------------------------


def jobs_of(scheduler, dataset_id: str) -> list:
    return list(scheduler.ListTrainingJobs(sc.ListTrainingJobsRequest(dataset_id=dataset_id)).training_jobs)


def test_create_job_with_an_empty_ratio_is_refused_before_anything_is_created(datasets, scheduler, dataset):
    jobs_before, versions_before = jobs_of(scheduler, dataset.id), version_names(datasets, dataset.id)
    request = sc.CreateTrainingJobRequest(dataset_id=dataset.id, train_ratio="", accept_free_terms=True,
                                          request_id=uuid.uuid4().hex)
    assert request.HasField("train_ratio")
    with pytest.raises(grpc.RpcError) as exc:
        scheduler.CreateTrainingJob(request)
    assert "is empty" in ratio_violation(exc.value)
    assert jobs_of(scheduler, dataset.id) == jobs_before
    assert version_names(datasets, dataset.id) == versions_before


def test_create_job_with_the_ratio_left_out_publishes_at_0_8(scheduler, dataset):
    request = sc.CreateTrainingJobRequest(dataset_id=dataset.id, accept_free_terms=True, request_id=uuid.uuid4().hex)
    job = scheduler.CreateTrainingJob(request).training_job
    try:
        assert job.parameters.train_ratio == "0.8"
    finally:
        scheduler.CancelTrainingJob(sc.CancelTrainingJobRequest(job_id=job.id))


# Python SDK and CLI ----------------------------------------------------------------


def test_sdk_sends_an_empty_ratio_and_leaves_none_out(sdk, dataset):
    with pytest.raises(InvalidArgument) as exc:
        sdk.publish_version(dataset.id, train_ratio="")
    assert [v.field for v in exc.value.violations] == ["train_ratio"]
    assert "is empty" in exc.value.violations[0].description
    assert sdk.publish_version(dataset.id, train_ratio=None).train_ratio == "0.8"
    assert sdk.publish_version(dataset.id).train_ratio == "0.8"
    jobs = len(sdk.list_jobs(dataset.id))
    with pytest.raises(InvalidArgument) as exc:
        sdk.create_training_job(dataset.id, train_ratio="", accept_free_terms=True)
    assert [v.field for v in exc.value.violations] == ["train_ratio"]
    assert len(sdk.list_jobs(dataset.id)) == jobs


def test_cli_passes_an_empty_ratio_flag_to_the_server(services, security, dataset, capsys):
    connect = ["--dataset-address", services.address("dataset"), "--scheduler-address", services.address("scheduler"),
               "--api-key", security.api_key]
    assert cli([*connect, "dataset", "publish", dataset.id, "--ratio", "", "--json"]) == 1
    out = capsys.readouterr().out
    assert "train_ratio" in out and "is empty" in out, out
    assert cli([*connect, "dataset", "publish", dataset.id, "--json"]) == 0
    assert '"0.8"' in capsys.readouterr().out
