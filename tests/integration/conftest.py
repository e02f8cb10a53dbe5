"""Integration fixtures: the three services in this process (tests/integration/services.py) and
stubs of the two public ones, one set per test module. A module defining its own wins."""

from __future__ import annotations

import pytest

from tests.integration.services import in_process_services
from trainyard.dataset.v1 import dataset_service_pb2_grpc as ds_grpc
from trainyard.scheduler.v1 import scheduler_service_pb2_grpc as sc_grpc


@pytest.fixture(scope="module")
def services(tmp_path_factory, s3_config, security):
    with in_process_services(tmp_path_factory.mktemp("services"), s3_config, security) as running:
        yield running


@pytest.fixture(scope="module")
def datasets(services, security):
    return ds_grpc.DatasetServiceStub(security.channel(services.address("dataset")))


@pytest.fixture(scope="module")
def scheduler(services, security):
    return sc_grpc.SchedulerServiceStub(security.channel(services.address("scheduler")))
