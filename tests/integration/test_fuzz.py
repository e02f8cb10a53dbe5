"""Property-based fuzzing of every RPC of every service (hypothesis).

Generated messages — well-formed but arbitrary field values, valid ids mixed
with garbage — go to real servers on loopback. Whatever the input, the answer is
a deliberate status (OK, INVALID_ARGUMENT, NOT_FOUND, …), never INTERNAL or
UNKNOWN, and the server stays healthy.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.services import in_process_services
from trainyard.dataset.v1 import dataset_service_pb2
from trainyard.scheduler.v1 import scheduler_service_pb2
from trainyard.trainer.v1 import trainer_service_pb2

CASES_PER_RPC = 25
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
SERVICES = {
    "dataset": dataset_service_pb2.DESCRIPTOR.services_by_name["DatasetService"],
    "scheduler": scheduler_service_pb2.DESCRIPTOR.services_by_name["SchedulerService"],
    "trainer": trainer_service_pb2.DESCRIPTOR.services_by_name["TrainerService"],
}
# Methods whose fuzzing would have side effects outside the service under test.
SKIPPED = {"RegisterTrainer"}  # would register unreachable trainers; its validation is tested in test_scheduler
KNOWN_IDS: list[str] = []  # filled with real ids so that cases reach past NOT_FOUND


def text() -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=40), st.sampled_from(KNOWN_IDS or ["x"]), st.sampled_from(
        ["", "0.8", "0.123456", "1", "V001", "v1", "best", "free-gpu", "compute-gpu-1", "../etc", "models/x/", "é" * 70]))


def message_strategy(descriptor: d.Descriptor, depth: int = 0) -> st.SearchStrategy:
    cls = GetMessageClass(descriptor)
    fields = {}
    for field in descriptor.fields:
        value = field_strategy(field, depth)
        if value is None:
            continue
        if field.is_repeated:
            value = st.lists(value, max_size=3)
        fields[field.name] = st.one_of(st.none(), value)

    def build(values: dict) -> object:
        message = cls()
        for name, value in values.items():
            if value is None:
                continue
            field = descriptor.fields_by_name[name]
            if field.is_repeated:
                target = getattr(message, name)
                for item in value:
                    target.add().CopyFrom(item) if field.type == d.FieldDescriptor.TYPE_MESSAGE else target.append(item)
            elif field.type == d.FieldDescriptor.TYPE_MESSAGE:
                getattr(message, name).CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return st.fixed_dictionaries(fields).map(build)


def field_strategy(field: d.FieldDescriptor, depth: int) -> st.SearchStrategy | None:
    t = field.type
    if t == d.FieldDescriptor.TYPE_STRING:
        return text()
    if t == d.FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.just(b"\x89PNG\r\n\x1a\n" + b"\0" * 20))
    if t == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (d.FieldDescriptor.TYPE_INT32, d.FieldDescriptor.TYPE_SINT32):
        return st.integers(-(2**31), 2**31 - 1)
    if t in (d.FieldDescriptor.TYPE_INT64, d.FieldDescriptor.TYPE_SINT64):
        return st.integers(-(2**63), 2**63 - 1)
    if t in (d.FieldDescriptor.TYPE_UINT32, d.FieldDescriptor.TYPE_UINT64):
        return st.integers(0, 2**32 - 1)
    if t in (d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True)
    if t == d.FieldDescriptor.TYPE_ENUM:
        return st.integers(-2, max(v.number for v in field.enum_type.values) + 2)
    if t == d.FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.full_name == "google.protobuf.Timestamp":
            return st.builds(lambda s: GetMessageClass(field.message_type)(seconds=s), st.integers(-62135596800, 253402300799))
        return None if depth >= 2 else message_strategy(field.message_type, depth + 1)
    return None


@pytest.fixture(scope="module")
def addresses(tmp_path_factory, s3_config, security):
    with in_process_services(tmp_path_factory.mktemp("fuzz"), s3_config, security) as services:
        created = services.dataset_service.create_dataset("alpha", "fuzzed")
        KNOWN_IDS.extend([created.id, created.display_name])
        yield {name: services.address(name) for name in ("dataset", "scheduler", "trainer")}


def methods():
    for service_key, service in SERVICES.items():
        for method in service.methods:
            if method.name not in SKIPPED:
                yield pytest.param(service_key, service, method, id=f"{service.name}.{method.name}")


CASES: dict[str, int] = {}


@pytest.mark.parametrize(("service_key", "service", "method"), list(methods()))
def test_no_input_makes_a_server_fail(addresses, security, service_key, service, method):
    # The trainer's API is for the scheduler: fuzz it with the internal credential.
    ch = security.channel(addresses[service_key], internal_for="alpha" if service_key == "trainer" else None)
    request_cls = GetMessageClass(method.input_type)
    response_cls = GetMessageClass(method.output_type)
    path = f"/{service.full_name}/{method.name}"
    kwargs = dict(request_serializer=request_cls.SerializeToString, response_deserializer=response_cls.FromString)
    if method.client_streaming:
        call = ch.stream_unary(path, **kwargs)
        strategy = st.lists(message_strategy(method.input_type), max_size=4)
    elif method.server_streaming:
        call = ch.unary_stream(path, **kwargs)
        strategy = message_strategy(method.input_type)
    else:
        call = ch.unary_unary(path, **kwargs)
        strategy = message_strategy(method.input_type)

    @settings(max_examples=CASES_PER_RPC, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(strategy)
    def case(request) -> None:
        CASES[path] = CASES.get(path, 0) + 1
        try:
            if method.client_streaming:
                call(iter(request), timeout=20)
            elif method.server_streaming:
                for _ in zip(range(3), call(request, timeout=5), strict=False):
                    pass
            else:
                call(request, timeout=20)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and method.server_streaming:
                return  # a valid watch that simply has nothing more to say yet
            assert exc.code() not in FORBIDDEN, f"{path} answered {exc.code().name}: {exc.details()}\nrequest: {request}"

    case()
    health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert CASES[path] >= 1


def test_zz_every_rpc_was_fuzzed(capsys):
    fuzzed = len(list(methods()))
    assert len(CASES) == fuzzed
    with capsys.disabled():
        print(f"\nfuzz: {sum(CASES.values())} generated requests over {fuzzed} RPCs")
