import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from trainyard.common.v1 import training_pb2 as _training_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainingSpec(_message.Message):
    __slots__ = ("job_id", "dataset_id", "dataset_version", "manifest_key", "preference", "seed", "deadline", "deadline_reason", "init_artifact_prefix", "artifact_prefix", "max_epochs")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_VERSION_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_KEY_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_REASON_FIELD_NUMBER: _ClassVar[int]
    INIT_ARTIFACT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    MAX_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    dataset_id: str
    dataset_version: str
    manifest_key: str
    preference: _training_pb2.TrainingPreference
    seed: int
    deadline: _timestamp_pb2.Timestamp
    deadline_reason: _training_pb2.StopReason
    init_artifact_prefix: str
    artifact_prefix: str
    max_epochs: int
    def __init__(self, job_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., dataset_version: _Optional[str] = ..., manifest_key: _Optional[str] = ..., preference: _Optional[_Union[_training_pb2.TrainingPreference, str]] = ..., seed: _Optional[int] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deadline_reason: _Optional[_Union[_training_pb2.StopReason, str]] = ..., init_artifact_prefix: _Optional[str] = ..., artifact_prefix: _Optional[str] = ..., max_epochs: _Optional[int] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("level", "message")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    level: str
    message: str
    def __init__(self, level: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class TrainingOutcome(_message.Message):
    __slots__ = ("stop_reason", "error_message", "evaluation", "artifact_prefix", "epochs_run", "best_epoch", "device", "initialization", "images_per_second", "resolution", "architecture", "training_time")
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_RUN_FIELD_NUMBER: _ClassVar[int]
    BEST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    INITIALIZATION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    TRAINING_TIME_FIELD_NUMBER: _ClassVar[int]
    stop_reason: _training_pb2.StopReason
    error_message: str
    evaluation: _training_pb2.Evaluation
    artifact_prefix: str
    epochs_run: int
    best_epoch: int
    device: str
    initialization: str
    images_per_second: float
    resolution: int
    architecture: str
    training_time: _duration_pb2.Duration
    def __init__(self, stop_reason: _Optional[_Union[_training_pb2.StopReason, str]] = ..., error_message: _Optional[str] = ..., evaluation: _Optional[_Union[_training_pb2.Evaluation, _Mapping]] = ..., artifact_prefix: _Optional[str] = ..., epochs_run: _Optional[int] = ..., best_epoch: _Optional[int] = ..., device: _Optional[str] = ..., initialization: _Optional[str] = ..., images_per_second: _Optional[float] = ..., resolution: _Optional[int] = ..., architecture: _Optional[str] = ..., training_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class TrainerEvent(_message.Message):
    __slots__ = ("sequence", "time", "progress", "log", "outcome")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    progress: _training_pb2.TrainingProgress
    log: LogLine
    outcome: TrainingOutcome
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., progress: _Optional[_Union[_training_pb2.TrainingProgress, _Mapping]] = ..., log: _Optional[_Union[LogLine, _Mapping]] = ..., outcome: _Optional[_Union[TrainingOutcome, _Mapping]] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[LabelScore]
    def __init__(self, labels: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ...) -> None: ...
