"""Limits every RPC shares (trainyard/rpc.py, trainyard/paging.py), against a real dataset service:
an error quoting a huge input still arrives with its own code, a forged page token is refused,
and a client that cancels its upload is counted as CANCELLED, not as a server error."""

from __future__ import annotations

import base64
import threading
import time

import grpc
import pytest
from grpc_status import rpc_status

from tests.integration.dataset_calls import new_dataset
from tests.integration.rpc_errors import error
from trainyard import metrics
from trainyard.dataset.v1 import dataset_service_pb2 as api
from trainyard.dataset.v1 import dataset_service_pb2_grpc as api_grpc
from trainyard.rpc import MESSAGE_BYTES
from trainyard.sample_data import digit_files
from trainyard.services.dataset.server import DatasetConfig, build


@pytest.fixture(scope="module")
def server(tmp_path_factory, s3_config, security):
    config = DatasetConfig.from_env({
        "TRAINYARD_DATASET_LISTEN": "127.0.0.1:0",
        "TRAINYARD_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        **s3_config.to_env(),
        **security.env,
    })
    running, service = build(config)
    yield running, service
    running.stop(0)


@pytest.fixture(scope="module")
def stub(server, security):
    return api_grpc.DatasetServiceStub(security.channel(f"127.0.0.1:{server[0].port}"))


@pytest.mark.parametrize("dataset_id", ["x" * 6000, "é" * 6000, "ds-" + "0" * 100_000])
def test_an_error_quoting_a_huge_input_keeps_its_code(stub, dataset_id):
    """Clients refuse response headers over 8 KiB; the message is cut so NOT_FOUND still arrives."""
    exc = error(lambda: stub.GetDataset(api.GetDatasetRequest(dataset_id=dataset_id)))
    assert exc.code() == grpc.StatusCode.NOT_FOUND, exc.details()
    assert len(exc.details().encode()) <= MESSAGE_BYTES
    status = rpc_status.from_call(exc)
    assert status is not None and status.message == exc.details()


def test_a_page_token_with_an_offset_past_any_list_is_invalid(stub):
    new_dataset(stub)
    for raw in (b"o:99999999999999999999", b"o:9223372036854775808", b"o: 1", b"o:-1", b"o:\xff"):
        token = base64.urlsafe_b64encode(raw).decode()
        exc = error(lambda token=token: stub.ListDatasets(api.ListDatasetsRequest(page_token=token)))
        assert (exc.code(), exc.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT, "page_token: is not a token returned by this list call"), raw
    assert stub.ListDatasets(api.ListDatasetsRequest(page_size=1)).datasets


def handled(method: str, code: str) -> float:
    for family in metrics.RPC_HANDLED.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels == {
                    "grpc_service": "trainyard.dataset.v1.DatasetService", "grpc_method": method, "grpc_code": code}:
                return sample.value
    return 0.0


def test_an_upload_the_client_cancels_is_counted_as_cancelled_and_stores_nothing(stub, server, monkeypatch):
    dataset = new_dataset(stub)
    (name, label, data), = list(digit_files(per_class=1))[:1]
    sent, release, received = threading.Event(), threading.Event(), threading.Event()
    service = server[1]
    upload = service.upload

    def upload_noting_bytes(tenant, dataset_id, parts, is_active):
        def noted():
            for part in parts:
                if isinstance(part, bytes):
                    received.set()  # the server is in the handler, reading the stream
                yield part
        return upload(tenant, dataset_id, noted(), is_active)

    monkeypatch.setattr(service, "upload", upload_noting_bytes)

    def requests():
        yield api.UploadImagesRequest(dataset_id=dataset.id)
        yield api.UploadImagesRequest(header=api.ImageHeader(file_name=name, label=label))
        yield api.UploadImagesRequest(chunk=data)
        sent.set()
        release.wait(10)  # the stream stays open until the client cancels

    codes = ("CANCELLED", "INTERNAL", "ABORTED")  # the stream may fail, or end early and be refused
    before = tuple(handled("UploadImages", code) for code in codes)
    call = stub.UploadImages.future(requests())
    assert sent.wait(10) and received.wait(20)  # cancelled before its handler ran, a call is not counted at all
    call.cancel()
    release.set()
    deadline = time.monotonic() + 20
    while handled("UploadImages", "CANCELLED") == before[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tuple(handled("UploadImages", code) for code in codes) == (before[0] + 1, before[1], before[2])
    assert stub.GetDataset(api.GetDatasetRequest(dataset_id=dataset.id)).dataset.image_count == 0
