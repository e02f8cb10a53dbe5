"""A generic gRPC client lists and calls every service through server reflection."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from trainyard.rpc import channel
from trainyard.services.dataset.server import DatasetConfig
from trainyard.services.dataset.server import build as build_dataset
from trainyard.services.dataset.service import Limits
from trainyard.services.scheduler.server import SchedulerConfig
from trainyard.services.scheduler.server import build as build_scheduler
from trainyard.services.trainer.server import TrainerConfig
from trainyard.services.trainer.server import build as build_trainer


@pytest.fixture(scope="module")
def servers(tmp_path_factory, s3_config, security):
    data = tmp_path_factory.mktemp("reflection")
    dataset, _ = build_dataset(DatasetConfig("127.0.0.1:0", data / "dataset", s3_config, Limits(), security.config))
    scheduler_config = SchedulerConfig.from_env({"TRAINYARD_SCHEDULER_LISTEN": "127.0.0.1:0", "TRAINYARD_DATA_DIR": str(data),
                                                 "TRAINYARD_DATASET_ADDRESS": f"127.0.0.1:{dataset.port}", **security.env})
    scheduler, scheduler_service = build_scheduler(scheduler_config)
    trainer, _ = build_trainer(TrainerConfig.from_env({"TRAINYARD_TRAINER_LISTEN": "127.0.0.1:0", **s3_config.to_env(), **security.env}))
    yield {"trainyard.dataset.v1.DatasetService": dataset.port,
           "trainyard.scheduler.v1.SchedulerService": scheduler.port,
           "trainyard.trainer.v1.TrainerService": trainer.port}
    scheduler_service.stop()
    for running in (dataset, scheduler, trainer):
        running.stop(0)


def generic_call(ch: grpc.Channel, pool: descriptor_pool.DescriptorPool, method_path: str, request_json: str):
    service_name, method_name = method_path.rsplit("/", 1)
    method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
    request_cls, response_cls = GetMessageClass(method.input_type), GetMessageClass(method.output_type)
    call = ch.unary_unary(f"/{service_name}/{method_name}", request_serializer=request_cls.SerializeToString,
                          response_deserializer=response_cls.FromString)
    return call(json_format.Parse(request_json, request_cls()), timeout=10)


@pytest.mark.parametrize("service", ["trainyard.dataset.v1.DatasetService", "trainyard.scheduler.v1.SchedulerService",
                                     "trainyard.trainer.v1.TrainerService"])
def test_every_service_is_listed_and_described(servers, service):
    ch = channel(f"127.0.0.1:{servers[service]}")
    database = ProtoReflectionDescriptorDatabase(ch)
    services = database.get_services()
    assert service in services and "grpc.health.v1.Health" in services
    pool = descriptor_pool.DescriptorPool(database)
    methods = [m.name for m in pool.FindServiceByName(service).methods]
    assert methods, f"{service} lists no methods"


def test_generic_calls_without_generated_code(servers, security):
    ch = security.channel(f"127.0.0.1:{servers['trainyard.dataset.v1.DatasetService']}")
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(ch))
    created = generic_call(ch, pool, "trainyard.dataset.v1.DatasetService/CreateDataset", '{"displayName": "reflected"}')
    assert json_format.MessageToDict(created)["dataset"]["displayName"] == "reflected"
    ch = security.channel(f"127.0.0.1:{servers['trainyard.scheduler.v1.SchedulerService']}")
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(ch))
    flavors = json_format.MessageToDict(generic_call(ch, pool, "trainyard.scheduler.v1.SchedulerService/ListFlavors", "{}"))
    assert {f["id"] for f in flavors["flavors"]} == {"free-gpu", "compute-gpu-1"}
    with pytest.raises(grpc.RpcError) as exc:
        generic_call(ch, pool, "trainyard.scheduler.v1.SchedulerService/GetTrainingJob", '{"jobId": "job-none"}')
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
