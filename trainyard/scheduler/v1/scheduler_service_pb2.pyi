import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from trainyard.common.v1 import training_pb2 as _training_pb2
from trainyard.scheduler.v1 import scheduler_pb2 as _scheduler_pb2
from trainyard.trainer.v1 import trainer_pb2 as _trainer_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateTrainingJobRequest(_message.Message):
    __slots__ = ("request_id", "dataset_id", "dataset_version", "new_version_name", "train_ratio", "seed", "incremental_model_version", "max_duration_minutes", "preference", "flavor_id", "accept_free_terms", "max_epochs")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_VERSION_FIELD_NUMBER: _ClassVar[int]
    NEW_VERSION_NAME_FIELD_NUMBER: _ClassVar[int]
    TRAIN_RATIO_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    INCREMENTAL_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_MINUTES_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FREE_TERMS_FIELD_NUMBER: _ClassVar[int]
    MAX_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    dataset_id: str
    dataset_version: str
    new_version_name: str
    train_ratio: str
    seed: int
    incremental_model_version: str
    max_duration_minutes: int
    preference: _training_pb2.TrainingPreference
    flavor_id: str
    accept_free_terms: bool
    max_epochs: int
    def __init__(self, request_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., dataset_version: _Optional[str] = ..., new_version_name: _Optional[str] = ..., train_ratio: _Optional[str] = ..., seed: _Optional[int] = ..., incremental_model_version: _Optional[str] = ..., max_duration_minutes: _Optional[int] = ..., preference: _Optional[_Union[_training_pb2.TrainingPreference, str]] = ..., flavor_id: _Optional[str] = ..., accept_free_terms: _Optional[bool] = ..., max_epochs: _Optional[int] = ...) -> None: ...

class CreateTrainingJobResponse(_message.Message):
    __slots__ = ("training_job",)
    TRAINING_JOB_FIELD_NUMBER: _ClassVar[int]
    training_job: _scheduler_pb2.TrainingJob
    def __init__(self, training_job: _Optional[_Union[_scheduler_pb2.TrainingJob, _Mapping]] = ...) -> None: ...

class GetTrainingJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetTrainingJobResponse(_message.Message):
    __slots__ = ("training_job",)
    TRAINING_JOB_FIELD_NUMBER: _ClassVar[int]
    training_job: _scheduler_pb2.TrainingJob
    def __init__(self, training_job: _Optional[_Union[_scheduler_pb2.TrainingJob, _Mapping]] = ...) -> None: ...

class ListTrainingJobsRequest(_message.Message):
    __slots__ = ("dataset_id", "page_size", "page_token")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    page_size: int
    page_token: str
    def __init__(self, dataset_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTrainingJobsResponse(_message.Message):
    __slots__ = ("training_jobs", "next_page_token")
    TRAINING_JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    training_jobs: _containers.RepeatedCompositeFieldContainer[_scheduler_pb2.TrainingJob]
    next_page_token: str
    def __init__(self, training_jobs: _Optional[_Iterable[_Union[_scheduler_pb2.TrainingJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelTrainingJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelTrainingJobResponse(_message.Message):
    __slots__ = ("training_job",)
    TRAINING_JOB_FIELD_NUMBER: _ClassVar[int]
    training_job: _scheduler_pb2.TrainingJob
    def __init__(self, training_job: _Optional[_Union[_scheduler_pb2.TrainingJob, _Mapping]] = ...) -> None: ...

class WatchTrainingJobRequest(_message.Message):
    __slots__ = ("job_id", "after_sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_sequence: int
    def __init__(self, job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchTrainingJobResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _scheduler_pb2.TrainingJobEvent
    def __init__(self, event: _Optional[_Union[_scheduler_pb2.TrainingJobEvent, _Mapping]] = ...) -> None: ...

class ListFlavorsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFlavorsResponse(_message.Message):
    __slots__ = ("flavors",)
    FLAVORS_FIELD_NUMBER: _ClassVar[int]
    flavors: _containers.RepeatedCompositeFieldContainer[_scheduler_pb2.Flavor]
    def __init__(self, flavors: _Optional[_Iterable[_Union[_scheduler_pb2.Flavor, _Mapping]]] = ...) -> None: ...

class ListModelVersionsRequest(_message.Message):
    __slots__ = ("dataset_id", "page_size", "page_token")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    page_size: int
    page_token: str
    def __init__(self, dataset_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelVersionsResponse(_message.Message):
    __slots__ = ("model_versions", "next_page_token", "best_version")
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    BEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_versions: _containers.RepeatedCompositeFieldContainer[_scheduler_pb2.ModelVersion]
    next_page_token: str
    best_version: str
    def __init__(self, model_versions: _Optional[_Iterable[_Union[_scheduler_pb2.ModelVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., best_version: _Optional[str] = ...) -> None: ...

class GetModelVersionRequest(_message.Message):
    __slots__ = ("dataset_id", "version")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    version: str
    def __init__(self, dataset_id: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class GetModelVersionResponse(_message.Message):
    __slots__ = ("model_version",)
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_version: _scheduler_pb2.ModelVersion
    def __init__(self, model_version: _Optional[_Union[_scheduler_pb2.ModelVersion, _Mapping]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("dataset_id", "version", "images", "top_k")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    version: str
    images: _containers.RepeatedScalarFieldContainer[bytes]
    top_k: int
    def __init__(self, dataset_id: _Optional[str] = ..., version: _Optional[str] = ..., images: _Optional[_Iterable[bytes]] = ..., top_k: _Optional[int] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("predictions",)
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[_trainer_pb2.Prediction]
    def __init__(self, predictions: _Optional[_Iterable[_Union[_trainer_pb2.Prediction, _Mapping]]] = ...) -> None: ...

class DownloadModelArtifactRequest(_message.Message):
    __slots__ = ("dataset_id", "version", "name")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    version: str
    name: str
    def __init__(self, dataset_id: _Optional[str] = ..., version: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DownloadModelArtifactResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    def __init__(self, chunk: _Optional[bytes] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("start_time", "end_time")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[_scheduler_pb2.UsageLine]
    def __init__(self, lines: _Optional[_Iterable[_Union[_scheduler_pb2.UsageLine, _Mapping]]] = ...) -> None: ...

class RegisterTrainerRequest(_message.Message):
    __slots__ = ("trainer_id", "address", "flavor_ids", "slots", "device")
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_IDS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    trainer_id: str
    address: str
    flavor_ids: _containers.RepeatedScalarFieldContainer[str]
    slots: int
    device: str
    def __init__(self, trainer_id: _Optional[str] = ..., address: _Optional[str] = ..., flavor_ids: _Optional[_Iterable[str]] = ..., slots: _Optional[int] = ..., device: _Optional[str] = ...) -> None: ...

class RegisterTrainerResponse(_message.Message):
    __slots__ = ("heartbeat_timeout_seconds",)
    HEARTBEAT_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    heartbeat_timeout_seconds: int
    def __init__(self, heartbeat_timeout_seconds: _Optional[int] = ...) -> None: ...
