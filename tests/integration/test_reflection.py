"""A generic gRPC client lists and calls every service through server reflection."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.integration.services import in_process_services
from trainyard.rpc import channel


@pytest.fixture(scope="module")
def servers(tmp_path_factory, s3_config, security):
    with in_process_services(tmp_path_factory.mktemp("reflection"), s3_config, security) as services:
        yield {"trainyard.dataset.v1.DatasetService": services.dataset.port,
               "trainyard.scheduler.v1.SchedulerService": services.scheduler.port,
               "trainyard.trainer.v1.TrainerService": services.trainer.port}


def generic_call(ch: grpc.Channel, pool: descriptor_pool.DescriptorPool, method_path: str, request_json: str):
    service_name, method_name = method_path.rsplit("/", 1)
    method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
    request_cls, response_cls = GetMessageClass(method.input_type), GetMessageClass(method.output_type)
    call = ch.unary_unary(f"/{service_name}/{method_name}", request_serializer=request_cls.SerializeToString,
                          response_deserializer=response_cls.FromString)
    return call(json_format.Parse(request_json, request_cls()), timeout=10)


@pytest.mark.parametrize("service", ["trainyard.dataset.v1.DatasetService", "trainyard.scheduler.v1.SchedulerService",
                                     "trainyard.trainer.v1.TrainerService"])
def test_every_service_is_listed_and_described(servers, security, service):
    with pytest.raises(grpc.RpcError) as exc:  # reflection needs a key like every RPC but the health check
        ProtoReflectionDescriptorDatabase(channel(f"127.0.0.1:{servers[service]}")).get_services()
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    ch = security.channel(f"127.0.0.1:{servers[service]}")
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
