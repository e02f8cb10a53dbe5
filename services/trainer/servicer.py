"""TrainerService RPCs: proto in → runtime call → proto out."""

from __future__ import annotations

from google.protobuf import json_format

from trainyard.common.v1 import training_pb2 as common
from trainyard.enums import enum_name
from trainyard.services.trainer.runtime import JobEvent, JobSpec, TrainerRuntime
from trainyard.timeconv import seconds, timestamp
from trainyard.trainer.v1 import trainer_pb2 as pb
from trainyard.trainer.v1 import trainer_service_pb2 as api
from trainyard.trainer.v1 import trainer_service_pb2_grpc as api_grpc


def _reason(value: int, field: str) -> str:
    return enum_name(common.StopReason, value, "STOP_REASON_", field)


def event(e: JobEvent) -> pb.TrainerEvent:
    message = pb.TrainerEvent(sequence=e.sequence, time=timestamp(e.time))
    json_format.ParseDict(e.body, getattr(message, e.kind), ignore_unknown_fields=True)
    return message


class TrainerServicer(api_grpc.TrainerServiceServicer):
    def __init__(self, runtime: TrainerRuntime) -> None:
        self.runtime = runtime

    def RunTraining(self, request, context):
        s = request.spec
        spec = JobSpec(
            job_id=s.job_id, dataset_id=s.dataset_id, dataset_version=s.dataset_version, manifest_key=s.manifest_key,
            preference=enum_name(common.TrainingPreference, s.preference or common.TRAINING_PREFERENCE_BALANCE,
                                 "TRAINING_PREFERENCE_", "spec.preference").lower(),
            seed=s.seed, deadline=seconds(s.deadline) if s.HasField("deadline") else 0.0,
            deadline_reason=_reason(s.deadline_reason, "spec.deadline_reason") if s.deadline_reason else "DURATION_LIMIT",
            init_artifact_prefix=s.init_artifact_prefix, artifact_prefix=s.artifact_prefix, max_epochs=s.max_epochs,
        )
        for e in self.runtime.run(spec, request.after_sequence, request.attach_only, context.is_active):
            yield api.RunTrainingResponse(event=event(e))

    def StopTraining(self, request, context):
        return api.StopTrainingResponse(stopping=self.runtime.stop(request.job_id, _reason(request.reason or common.STOP_REASON_CANCELLED, "reason")))

    def GetArtifact(self, request, context):
        for chunk in self.runtime.artifact(request.artifact_prefix, request.name):
            yield api.GetArtifactResponse(chunk=chunk)

    def Predict(self, request, context):
        predictions = self.runtime.predict(request.artifact_prefix, list(request.images), request.top_k)
        return api.PredictResponse(predictions=[
            pb.Prediction(labels=[pb.LabelScore(label=label, score=score) for label, score in p]) for p in predictions
        ])
