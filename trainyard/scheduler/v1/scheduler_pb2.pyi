import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from trainyard.common.v1 import training_pb2 as _training_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainingJobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAINING_JOB_STATE_UNSPECIFIED: _ClassVar[TrainingJobState]
    TRAINING_JOB_STATE_QUEUED: _ClassVar[TrainingJobState]
    TRAINING_JOB_STATE_STARTING: _ClassVar[TrainingJobState]
    TRAINING_JOB_STATE_RUNNING: _ClassVar[TrainingJobState]
    TRAINING_JOB_STATE_COMPLETED: _ClassVar[TrainingJobState]
    TRAINING_JOB_STATE_FAILED: _ClassVar[TrainingJobState]
    TRAINING_JOB_STATE_CANCELLED: _ClassVar[TrainingJobState]

class FlavorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLAVOR_KIND_UNSPECIFIED: _ClassVar[FlavorKind]
    FLAVOR_KIND_PAY_PER_USE: _ClassVar[FlavorKind]
    FLAVOR_KIND_FREE: _ClassVar[FlavorKind]
TRAINING_JOB_STATE_UNSPECIFIED: TrainingJobState
TRAINING_JOB_STATE_QUEUED: TrainingJobState
TRAINING_JOB_STATE_STARTING: TrainingJobState
TRAINING_JOB_STATE_RUNNING: TrainingJobState
TRAINING_JOB_STATE_COMPLETED: TrainingJobState
TRAINING_JOB_STATE_FAILED: TrainingJobState
TRAINING_JOB_STATE_CANCELLED: TrainingJobState
FLAVOR_KIND_UNSPECIFIED: FlavorKind
FLAVOR_KIND_PAY_PER_USE: FlavorKind
FLAVOR_KIND_FREE: FlavorKind

class TrainingParameters(_message.Message):
    __slots__ = ("dataset_version", "train_ratio", "seed", "incremental_model_version", "max_duration_minutes", "preference", "flavor_id", "free_terms_accepted", "max_epochs")
    DATASET_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAIN_RATIO_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    INCREMENTAL_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_MINUTES_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_ID_FIELD_NUMBER: _ClassVar[int]
    FREE_TERMS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MAX_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    dataset_version: str
    train_ratio: str
    seed: int
    incremental_model_version: str
    max_duration_minutes: int
    preference: _training_pb2.TrainingPreference
    flavor_id: str
    free_terms_accepted: bool
    max_epochs: int
    def __init__(self, dataset_version: _Optional[str] = ..., train_ratio: _Optional[str] = ..., seed: _Optional[int] = ..., incremental_model_version: _Optional[str] = ..., max_duration_minutes: _Optional[int] = ..., preference: _Optional[_Union[_training_pb2.TrainingPreference, str]] = ..., flavor_id: _Optional[str] = ..., free_terms_accepted: _Optional[bool] = ..., max_epochs: _Optional[int] = ...) -> None: ...

class TrainingJob(_message.Message):
    __slots__ = ("id", "dataset_id", "parameters", "state", "stop_reason", "error_message", "queue_position", "wait_reason", "create_time", "start_time", "end_time", "duration_limit", "model_version", "latest_progress", "last_sequence", "billed_seconds", "cost")
    ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    WAIT_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    DURATION_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LATEST_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    BILLED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    id: str
    dataset_id: str
    parameters: TrainingParameters
    state: TrainingJobState
    stop_reason: _training_pb2.StopReason
    error_message: str
    queue_position: int
    wait_reason: str
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    duration_limit: _duration_pb2.Duration
    model_version: str
    latest_progress: _training_pb2.TrainingProgress
    last_sequence: int
    billed_seconds: float
    cost: float
    def __init__(self, id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., parameters: _Optional[_Union[TrainingParameters, _Mapping]] = ..., state: _Optional[_Union[TrainingJobState, str]] = ..., stop_reason: _Optional[_Union[_training_pb2.StopReason, str]] = ..., error_message: _Optional[str] = ..., queue_position: _Optional[int] = ..., wait_reason: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_limit: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., model_version: _Optional[str] = ..., latest_progress: _Optional[_Union[_training_pb2.TrainingProgress, _Mapping]] = ..., last_sequence: _Optional[int] = ..., billed_seconds: _Optional[float] = ..., cost: _Optional[float] = ...) -> None: ...

class UsageLine(_message.Message):
    __slots__ = ("tenant", "flavor_id", "job_count", "billed_seconds", "cost")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_COUNT_FIELD_NUMBER: _ClassVar[int]
    BILLED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    flavor_id: str
    job_count: int
    billed_seconds: float
    cost: float
    def __init__(self, tenant: _Optional[str] = ..., flavor_id: _Optional[str] = ..., job_count: _Optional[int] = ..., billed_seconds: _Optional[float] = ..., cost: _Optional[float] = ...) -> None: ...

class StateChange(_message.Message):
    __slots__ = ("state", "stop_reason", "message")
    STATE_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    state: TrainingJobState
    stop_reason: _training_pb2.StopReason
    message: str
    def __init__(self, state: _Optional[_Union[TrainingJobState, str]] = ..., stop_reason: _Optional[_Union[_training_pb2.StopReason, str]] = ..., message: _Optional[str] = ...) -> None: ...

class QueuePosition(_message.Message):
    __slots__ = ("position", "jobs_ahead", "wait_reason")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    JOBS_AHEAD_FIELD_NUMBER: _ClassVar[int]
    WAIT_REASON_FIELD_NUMBER: _ClassVar[int]
    position: int
    jobs_ahead: int
    wait_reason: str
    def __init__(self, position: _Optional[int] = ..., jobs_ahead: _Optional[int] = ..., wait_reason: _Optional[str] = ...) -> None: ...

class JobLogLine(_message.Message):
    __slots__ = ("level", "message")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    level: str
    message: str
    def __init__(self, level: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class JobResult(_message.Message):
    __slots__ = ("model_version",)
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_version: ModelVersion
    def __init__(self, model_version: _Optional[_Union[ModelVersion, _Mapping]] = ...) -> None: ...

class TrainingJobEvent(_message.Message):
    __slots__ = ("job_id", "sequence", "time", "final", "state_change", "queue_position", "progress", "log", "result")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    sequence: int
    time: _timestamp_pb2.Timestamp
    final: bool
    state_change: StateChange
    queue_position: QueuePosition
    progress: _training_pb2.TrainingProgress
    log: JobLogLine
    result: JobResult
    def __init__(self, job_id: _Optional[str] = ..., sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., final: _Optional[bool] = ..., state_change: _Optional[_Union[StateChange, _Mapping]] = ..., queue_position: _Optional[_Union[QueuePosition, _Mapping]] = ..., progress: _Optional[_Union[_training_pb2.TrainingProgress, _Mapping]] = ..., log: _Optional[_Union[JobLogLine, _Mapping]] = ..., result: _Optional[_Union[JobResult, _Mapping]] = ...) -> None: ...

class Flavor(_message.Message):
    __slots__ = ("id", "display_name", "kind", "gpus_per_job", "price_per_hour", "tenant_concurrency_quota", "capacity", "slots_in_use", "queue_length", "terms", "max_job_duration")
    ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    GPUS_PER_JOB_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    TENANT_CONCURRENCY_QUOTA_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    SLOTS_IN_USE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    MAX_JOB_DURATION_FIELD_NUMBER: _ClassVar[int]
    id: str
    display_name: str
    kind: FlavorKind
    gpus_per_job: int
    price_per_hour: float
    tenant_concurrency_quota: int
    capacity: int
    slots_in_use: int
    queue_length: int
    terms: str
    max_job_duration: _duration_pb2.Duration
    def __init__(self, id: _Optional[str] = ..., display_name: _Optional[str] = ..., kind: _Optional[_Union[FlavorKind, str]] = ..., gpus_per_job: _Optional[int] = ..., price_per_hour: _Optional[float] = ..., tenant_concurrency_quota: _Optional[int] = ..., capacity: _Optional[int] = ..., slots_in_use: _Optional[int] = ..., queue_length: _Optional[int] = ..., terms: _Optional[str] = ..., max_job_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("dataset_id", "version", "job_id", "dataset_version", "parameters", "evaluation", "stop_reason", "artifact_prefix", "create_time", "architecture", "initialization", "epochs_run", "best_epoch", "device", "training_time")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_VERSION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    INITIALIZATION_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_RUN_FIELD_NUMBER: _ClassVar[int]
    BEST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TRAINING_TIME_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    version: str
    job_id: str
    dataset_version: str
    parameters: TrainingParameters
    evaluation: _training_pb2.Evaluation
    stop_reason: _training_pb2.StopReason
    artifact_prefix: str
    create_time: _timestamp_pb2.Timestamp
    architecture: str
    initialization: str
    epochs_run: int
    best_epoch: int
    device: str
    training_time: _duration_pb2.Duration
    def __init__(self, dataset_id: _Optional[str] = ..., version: _Optional[str] = ..., job_id: _Optional[str] = ..., dataset_version: _Optional[str] = ..., parameters: _Optional[_Union[TrainingParameters, _Mapping]] = ..., evaluation: _Optional[_Union[_training_pb2.Evaluation, _Mapping]] = ..., stop_reason: _Optional[_Union[_training_pb2.StopReason, str]] = ..., artifact_prefix: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., architecture: _Optional[str] = ..., initialization: _Optional[str] = ..., epochs_run: _Optional[int] = ..., best_epoch: _Optional[int] = ..., device: _Optional[str] = ..., training_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
