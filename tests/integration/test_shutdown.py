"""Graceful shutdown: health goes NOT_SERVING at once, calls in flight finish, new ones are refused."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trainyard.dataset.v1 import dataset_service_pb2 as api
from trainyard.dataset.v1 import dataset_service_pb2_grpc as api_grpc
from trainyard.sample_data import digit_files
from trainyard.services.dataset.server import DatasetConfig, build
from trainyard.services.dataset.service import Limits


def test_in_flight_upload_finishes_while_health_says_not_serving(tmp_path, s3_config, security):
    running, service = build(DatasetConfig("127.0.0.1:0", tmp_path, s3_config, Limits(), security.config))
    ch = security.channel(f"127.0.0.1:{running.port}")
    stub = api_grpc.DatasetServiceStub(ch)
    health = health_pb2_grpc.HealthStub(ch)
    ds = stub.CreateDataset(api.CreateDatasetRequest(display_name="shutdown")).dataset
    files = digit_files(per_class=3)
    half_sent = threading.Event()
    go_on = threading.Event()

    def requests():
        yield api.UploadImagesRequest(dataset_id=ds.id)
        for i, (name, label, data) in enumerate(files):
            if i == len(files) // 2:
                half_sent.set()
                go_on.wait(10)
            yield api.UploadImagesRequest(header=api.ImageHeader(file_name=name, label=label))
            yield api.UploadImagesRequest(chunk=data)

    result = {}
    upload = threading.Thread(target=lambda: result.update(response=stub.UploadImages(requests(), timeout=30)))
    upload.start()
    assert half_sent.wait(10)
    stopper = threading.Thread(target=running.stop, kwargs={"grace": 10, "drain": 1.0})
    stopper.start()
    time.sleep(0.3)
    status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    go_on.set()
    upload.join(15)
    stopper.join(15)
    assert result["response"].stored_count == len(files)  # the call in flight finished normally
    with pytest.raises(grpc.RpcError) as exc:
        stub.GetDataset(api.GetDatasetRequest(dataset_id=ds.id), timeout=2)
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
