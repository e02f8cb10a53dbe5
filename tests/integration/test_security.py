"""Identity and TLS at every endpoint: keys, the internal credential, revocation, TLS and mTLS."""

from __future__ import annotations

import dataclasses
import time

import grpc
import pytest
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.services import in_process_services
from trainyard.auth import CallCredentials, KeyStore
from trainyard.cli.main import main as cli
from trainyard.dataset.v1 import dataset_service_pb2 as ds
from trainyard.dataset.v1 import dataset_service_pb2_grpc as ds_grpc
from trainyard.rpc import MAX_MESSAGE_BYTES, channel
from trainyard.scheduler.v1 import scheduler_service_pb2, scheduler_service_pb2_grpc
from trainyard.services.dataset.server import DatasetConfig
from trainyard.services.dataset.server import build as build_dataset
from trainyard.services.dataset.service import Limits
from trainyard.stack.devca import create_dev_ca
from trainyard.tls import ClientTls, ServerTls
from trainyard.trainer.v1 import trainer_service_pb2

SERVICES = {
    "dataset": ds.DESCRIPTOR.services_by_name["DatasetService"],
    "scheduler": scheduler_service_pb2.DESCRIPTOR.services_by_name["SchedulerService"],
    "trainer": trainer_service_pb2.DESCRIPTOR.services_by_name["TrainerService"],
}


@pytest.fixture(scope="module")
def addresses(tmp_path_factory, s3_config, security):
    with in_process_services(tmp_path_factory.mktemp("security"), s3_config, security) as services:
        yield {name: services.address(name) for name in ("dataset", "scheduler", "trainer")}


def call(ch: grpc.Channel, service, method, metadata=()) -> None:
    """One call of `method` with an empty request; raises the RpcError."""
    request_cls, response_cls = GetMessageClass(method.input_type), GetMessageClass(method.output_type)
    path = f"/{service.full_name}/{method.name}"
    kwargs = dict(request_serializer=request_cls.SerializeToString, response_deserializer=response_cls.FromString)
    if method.client_streaming:
        ch.stream_unary(path, **kwargs)(iter([request_cls()]), timeout=10, metadata=metadata)
    elif method.server_streaming:
        list(ch.unary_stream(path, **kwargs)(request_cls(), timeout=10, metadata=metadata))
    else:
        ch.unary_unary(path, **kwargs)(request_cls(), timeout=10, metadata=metadata)


def every_method():
    for name, service in SERVICES.items():
        for method in service.methods:
            yield pytest.param(name, service, method, id=f"{service.name}.{method.name}")


@pytest.mark.parametrize(("name", "service", "method"), list(every_method()))
def test_every_rpc_refuses_a_call_without_a_valid_key(addresses, name, service, method):
    ch = channel(addresses[name])
    for metadata in ((), (("authorization", "Bearer tyk_0123456789ab_notarealkeynotarealkey"),),
                     (("authorization", "Basic dXNlcjpwYXNz"),)):
        with pytest.raises(grpc.RpcError) as exc:
            call(ch, service, method, metadata)
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED, exc.value.details()
        assert "API key" in exc.value.details() or "credential" in exc.value.details()
    # health checks need no key: probes and load balancers have none
    assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("method", [*(f"trainer/{m.name}" for m in SERVICES["trainer"].methods), "scheduler/RegisterTrainer"])
def test_a_tenant_key_cannot_call_what_only_services_call(addresses, security, method):
    name, method_name = method.split("/")
    service = SERVICES[name]
    with pytest.raises(grpc.RpcError) as exc:
        call(security.channel(addresses[name]), service, service.methods_by_name[method_name])
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "Trainyard's own services" in exc.value.details()


def test_the_internal_token_passes_and_acts_for_the_named_tenant(addresses, security):
    as_alpha = ds_grpc.DatasetServiceStub(security.channel(addresses["dataset"]))
    created = as_alpha.CreateDataset(ds.CreateDatasetRequest(display_name="internal-view")).dataset
    internal = ds_grpc.DatasetServiceStub(security.channel(addresses["dataset"], internal_for="alpha"))
    assert internal.GetDataset(ds.GetDatasetRequest(dataset_id=created.id)).dataset.id == created.id
    with pytest.raises(grpc.RpcError) as exc:
        ds_grpc.DatasetServiceStub(channel(addresses["dataset"], credentials=CallCredentials(security.internal_token, "Not A Tenant!"))
                                   ).GetDataset(ds.GetDatasetRequest(dataset_id=created.id))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "tenant" in exc.value.details()


def test_a_revoked_key_is_refused_within_a_second_without_a_restart(addresses, security):
    record, key = security.keys.create("revoked-soon", "to revoke")
    stub = scheduler_service_pb2_grpc.SchedulerServiceStub(security.channel(addresses["scheduler"], api_key=key))
    stub.ListFlavors(scheduler_service_pb2.ListFlavorsRequest())  # a new key works at once
    security.keys.revoke(record.id)
    deadline = time.monotonic() + 1.5
    while True:
        try:
            stub.ListFlavors(scheduler_service_pb2.ListFlavorsRequest())
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
            break
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.05)


def test_the_key_file_keeps_hashes_only(tmp_path):
    keys = KeyStore(tmp_path / "keys.json")
    record, key = keys.create("acme", "ci")
    stored = (tmp_path / "keys.json").read_text()
    assert key not in stored and key.split("_")[-1] not in stored and record.sha256 in stored
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600
    assert keys.authenticate(key) == record
    assert keys.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None


def test_keys_cli_creates_lists_and_revokes(tmp_path, capsys):
    path = tmp_path / "keys.json"
    assert cli(["keys", "--keys-file", str(path), "create", "--tenant", "acme", "--name", "laptop"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    store = KeyStore(path)
    record = store.authenticate(key)
    assert record is not None and record.tenant == "acme" and record.name == "laptop"
    assert cli(["keys", "--keys-file", str(path), "list"]) == 0
    listed = capsys.readouterr().out
    assert record.id in listed and key not in listed
    assert cli(["keys", "--keys-file", str(path), "revoke", record.id]) == 0
    assert KeyStore(path).authenticate(key) is None  # a service rereads the file (within half a second)
    assert cli(["keys", "--keys-file", str(path), "create", "--tenant", "Bad Tenant"]) != 0


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return create_dev_ca(tmp_path_factory.mktemp("ca"))


def tls_dataset_server(tmp_path, s3_config, security, certificates, mutual: bool):
    server_tls = ServerTls(certificates.server_cert.read_bytes(), certificates.server_key.read_bytes(),
                           certificates.ca.read_bytes() if mutual else None)
    config = dataclasses.replace(security.config, server_tls=server_tls)
    running, _ = build_dataset(DatasetConfig("127.0.0.1:0", tmp_path, s3_config, Limits(), config))
    return running


def test_tls_round_trip_and_clients_that_do_not_trust_the_server_are_refused(tmp_path, s3_config, security, certificates):
    running = tls_dataset_server(tmp_path, s3_config, security, certificates, mutual=False)
    address, key = f"127.0.0.1:{running.port}", CallCredentials(security.api_key)
    try:
        trusted = ds_grpc.DatasetServiceStub(channel(address, ClientTls.from_files(certificates.ca), key))
        assert trusted.CreateDataset(ds.CreateDatasetRequest(display_name="over-tls")).dataset.display_name == "over-tls"
        other_ca = create_dev_ca(tmp_path / "other")
        for ch in (channel(address, credentials=key), channel(address, ClientTls.from_files(other_ca.ca), key)):
            with pytest.raises(grpc.RpcError) as exc:
                ds_grpc.DatasetServiceStub(ch).ListDatasets(ds.ListDatasetsRequest(), timeout=5)
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop(0)


def test_mutual_tls_refuses_a_client_without_a_certificate(tmp_path, s3_config, security, certificates):
    running = tls_dataset_server(tmp_path, s3_config, security, certificates, mutual=True)
    address, key = f"127.0.0.1:{running.port}", CallCredentials(security.api_key)
    try:
        with_cert = ClientTls.from_files(certificates.ca, certificates.client_cert, certificates.client_key)
        ds_grpc.DatasetServiceStub(channel(address, with_cert, key)).ListDatasets(ds.ListDatasetsRequest(), timeout=5)
        with pytest.raises(grpc.RpcError) as exc:
            ds_grpc.DatasetServiceStub(channel(address, ClientTls.from_files(certificates.ca), key)).ListDatasets(
                ds.ListDatasetsRequest(), timeout=5)
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop(0)


def test_a_message_over_the_size_limit_is_resource_exhausted_naming_the_limit(addresses, security):
    """A client that allows itself larger messages still meets the server's 16 MiB limit."""
    big = grpc.insecure_channel(addresses["scheduler"], options=[("grpc.max_send_message_length", 64 * 2**20)])
    stub = scheduler_service_pb2_grpc.SchedulerServiceStub(big)
    request = scheduler_service_pb2.PredictRequest(dataset_id="d", version="V001", images=[b"x" * (17 * 2**20)])
    with pytest.raises(grpc.RpcError) as exc:
        stub.Predict(request, timeout=30, metadata=CallCredentials(security.api_key).metadata())
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(MAX_MESSAGE_BYTES) in exc.value.details()
