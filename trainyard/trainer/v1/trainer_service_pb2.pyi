from trainyard.common.v1 import training_pb2 as _training_pb2
from trainyard.trainer.v1 import trainer_pb2 as _trainer_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunTrainingRequest(_message.Message):
    __slots__ = ("spec", "after_sequence", "attach_only")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ATTACH_ONLY_FIELD_NUMBER: _ClassVar[int]
    spec: _trainer_pb2.TrainingSpec
    after_sequence: int
    attach_only: bool
    def __init__(self, spec: _Optional[_Union[_trainer_pb2.TrainingSpec, _Mapping]] = ..., after_sequence: _Optional[int] = ..., attach_only: _Optional[bool] = ...) -> None: ...

class RunTrainingResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _trainer_pb2.TrainerEvent
    def __init__(self, event: _Optional[_Union[_trainer_pb2.TrainerEvent, _Mapping]] = ...) -> None: ...

class StopTrainingRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: _training_pb2.StopReason
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[_Union[_training_pb2.StopReason, str]] = ...) -> None: ...

class StopTrainingResponse(_message.Message):
    __slots__ = ("stopping",)
    STOPPING_FIELD_NUMBER: _ClassVar[int]
    stopping: bool
    def __init__(self, stopping: _Optional[bool] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("artifact_prefix", "images", "top_k")
    ARTIFACT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    artifact_prefix: str
    images: _containers.RepeatedScalarFieldContainer[bytes]
    top_k: int
    def __init__(self, artifact_prefix: _Optional[str] = ..., images: _Optional[_Iterable[bytes]] = ..., top_k: _Optional[int] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("predictions",)
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[_trainer_pb2.Prediction]
    def __init__(self, predictions: _Optional[_Iterable[_Union[_trainer_pb2.Prediction, _Mapping]]] = ...) -> None: ...

class GetArtifactRequest(_message.Message):
    __slots__ = ("artifact_prefix", "name")
    ARTIFACT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    artifact_prefix: str
    name: str
    def __init__(self, artifact_prefix: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class GetArtifactResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    def __init__(self, chunk: _Optional[bytes] = ...) -> None: ...
