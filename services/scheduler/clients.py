"""The scheduler's gRPC clients of the dataset service and the trainers (ports.py)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import grpc
from google.protobuf import json_format

from trainyard.auth import TENANT_HEADER
from trainyard.common.v1 import training_pb2 as common
from trainyard.config import SecurityConfig
from trainyard.dataset.v1 import dataset_service_pb2 as ds
from trainyard.dataset.v1 import dataset_service_pb2_grpc as ds_grpc
from trainyard.errors import FieldViolation, InvalidArgument, TrainyardError
from trainyard.rpc import channel, domain_error
from trainyard.services.scheduler.ports import TrainerUpdate, TrainingSpec, VersionInfo
from trainyard.timeconv import seconds, timestamp
from trainyard.trainer.v1 import trainer_pb2 as tr
from trainyard.trainer.v1 import trainer_service_pb2 as trs
from trainyard.trainer.v1 import trainer_service_pb2_grpc as trs_grpc

CALL_TIMEOUT = 30.0


def _acting_for(tenant: str) -> tuple[tuple[str, str], ...]:
    """Call metadata naming the tenant an internal call acts for."""
    return ((TENANT_HEADER, tenant),)


class DatasetClient:
    """Calls the dataset service with the internal credential, always on behalf of a tenant."""

    def __init__(self, address: str, security: SecurityConfig) -> None:
        self.stub = ds_grpc.DatasetServiceStub(channel(address, security.client_tls, security.internal_credentials()))

    def resolve_dataset(self, tenant: str, id_or_name: str, timeout: float = CALL_TIMEOUT) -> str:
        if not id_or_name:
            raise InvalidArgument.field("dataset_id", "is required")
        try:
            return self.stub.GetDataset(ds.GetDatasetRequest(dataset_id=id_or_name), timeout=timeout,
                                   metadata=_acting_for(tenant)).dataset.id
        except grpc.RpcError as exc:
            raise domain_error(exc) from None

    def get_version(self, tenant: str, dataset_id: str, name: str) -> VersionInfo:
        """The version CreateTrainingJob's `dataset_version` names; errors name that field."""
        try:
            v = self.stub.GetVersion(ds.GetVersionRequest(dataset_id=dataset_id, version_name=name), timeout=CALL_TIMEOUT,
                                    metadata=_acting_for(tenant)).version
        except grpc.RpcError as exc:
            raise _renamed(domain_error(exc), {"version_name": "dataset_version"}) from None
        return VersionInfo(v.dataset_id, v.name, v.train_ratio, v.manifest_key)

    def publish_version(self, tenant: str, dataset_id: str, name: str, train_ratio: str | None, seed: int) -> VersionInfo:
        """Publish a version for CreateTrainingJob; train_ratio None leaves the ratio out (the
        dataset service's default). Errors name CreateTrainingJob's fields (`new_version_name`)."""
        request = ds.PublishVersionRequest(dataset_id=dataset_id, version_name=name, seed=seed)
        if train_ratio is not None:
            request.train_ratio = train_ratio
        try:
            v = self.stub.PublishVersion(request, timeout=CALL_TIMEOUT * 4, metadata=_acting_for(tenant)).version
        except grpc.RpcError as exc:
            raise _renamed(domain_error(exc), {"version_name": "new_version_name"}) from None
        return VersionInfo(v.dataset_id, v.name, v.train_ratio, v.manifest_key)


def _renamed(error: TrainyardError, names: dict[str, str]) -> TrainyardError:
    """A dataset service INVALID_ARGUMENT in the words of the scheduler's request: each field of
    the dataset service's request that the scheduler's names differently (`names`, old → new) is
    renamed in the field violations and where the message names it ("version_name: …").

    Fields of the same name in both requests (dataset_id, train_ratio, seed) stay as they are.
    """
    if not isinstance(error, InvalidArgument):
        return error
    violations = [FieldViolation(names.get(v.field, v.field), v.description) for v in error.violations]
    message = re.sub(
        r"(^|; )(" + "|".join(map(re.escape, names)) + r"):",
        lambda m: f"{m.group(1)}{names[m.group(2)]}:",
        error.message,
    )
    return InvalidArgument(message, violations)


class TrainerClient:
    """Calls trainers by address; one channel per address, kept."""

    def __init__(self, security: SecurityConfig) -> None:
        self._stubs: dict[str, trs_grpc.TrainerServiceStub] = {}
        self._lock = threading.Lock()
        self._security = security

    def _stub(self, address: str) -> trs_grpc.TrainerServiceStub:
        with self._lock:
            if address not in self._stubs:
                self._stubs[address] = trs_grpc.TrainerServiceStub(
                    channel(address, self._security.client_tls, self._security.internal_credentials()))
            return self._stubs[address]

    def run(self, address: str, spec: TrainingSpec, after_sequence: int, attach_only: bool) -> Iterator[TrainerUpdate]:
        request = trs.RunTrainingRequest(
            spec=tr.TrainingSpec(
                job_id=spec.job_id, dataset_id=spec.dataset_id, dataset_version=spec.dataset_version,
                manifest_key=spec.manifest_key, preference=common.TrainingPreference.Value("TRAINING_PREFERENCE_" + spec.preference),
                seed=spec.seed, deadline=timestamp(spec.deadline),
                deadline_reason=common.StopReason.Value("STOP_REASON_" + spec.deadline_reason),
                init_artifact_prefix=spec.init_artifact_prefix, artifact_prefix=spec.artifact_prefix,
                max_epochs=spec.max_epochs,
            ),
            after_sequence=after_sequence,
            attach_only=attach_only,
        )
        try:
            for response in self._stub(address).RunTraining(request):
                event = response.event
                kind = event.WhichOneof("kind")
                body = json_format.MessageToDict(getattr(event, kind))
                yield TrainerUpdate(event.sequence, seconds(event.time), kind, body)
        except grpc.RpcError as exc:
            raise domain_error(exc) from None

    def stop(self, address: str, job_id: str, reason: str) -> None:
        request = trs.StopTrainingRequest(job_id=job_id, reason=common.StopReason.Value("STOP_REASON_" + reason))
        try:
            self._stub(address).StopTraining(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:
            raise domain_error(exc) from None

    def artifact(self, address: str, artifact_prefix: str, name: str) -> Iterator[bytes]:
        try:
            for response in self._stub(address).GetArtifact(trs.GetArtifactRequest(artifact_prefix=artifact_prefix, name=name), timeout=600):
                yield response.chunk
        except grpc.RpcError as exc:
            raise domain_error(exc) from None

    def predict(self, address: str, artifact_prefix: str, images: list[bytes], top_k: int) -> list[list[tuple[str, float]]]:
        request = trs.PredictRequest(artifact_prefix=artifact_prefix, images=images, top_k=top_k)
        try:
            response = self._stub(address).Predict(request, timeout=CALL_TIMEOUT * 4)
        except grpc.RpcError as exc:
            raise domain_error(exc) from None
        return [[(s.label, s.score) for s in p.labels] for p in response.predictions]
