import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainingPreference(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAINING_PREFERENCE_UNSPECIFIED: _ClassVar[TrainingPreference]
    TRAINING_PREFERENCE_PERFORMANCE_FIRST: _ClassVar[TrainingPreference]
    TRAINING_PREFERENCE_BALANCE: _ClassVar[TrainingPreference]
    TRAINING_PREFERENCE_ACCURACY_FIRST: _ClassVar[TrainingPreference]

class StopReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STOP_REASON_UNSPECIFIED: _ClassVar[StopReason]
    STOP_REASON_CONVERGED: _ClassVar[StopReason]
    STOP_REASON_DURATION_LIMIT: _ClassVar[StopReason]
    STOP_REASON_FREE_FLAVOR_HOUR: _ClassVar[StopReason]
    STOP_REASON_CANCELLED: _ClassVar[StopReason]
    STOP_REASON_TRAINER_LOST: _ClassVar[StopReason]
    STOP_REASON_ERROR: _ClassVar[StopReason]
TRAINING_PREFERENCE_UNSPECIFIED: TrainingPreference
TRAINING_PREFERENCE_PERFORMANCE_FIRST: TrainingPreference
TRAINING_PREFERENCE_BALANCE: TrainingPreference
TRAINING_PREFERENCE_ACCURACY_FIRST: TrainingPreference
STOP_REASON_UNSPECIFIED: StopReason
STOP_REASON_CONVERGED: StopReason
STOP_REASON_DURATION_LIMIT: StopReason
STOP_REASON_FREE_FLAVOR_HOUR: StopReason
STOP_REASON_CANCELLED: StopReason
STOP_REASON_TRAINER_LOST: StopReason
STOP_REASON_ERROR: StopReason

class TrainingProgress(_message.Message):
    __slots__ = ("epoch", "epochs_total", "step", "steps_total", "loss", "train_accuracy", "validation_accuracy", "learning_rate", "images_per_second", "eta", "device")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    epochs_total: int
    step: int
    steps_total: int
    loss: float
    train_accuracy: float
    validation_accuracy: float
    learning_rate: float
    images_per_second: float
    eta: _duration_pb2.Duration
    device: str
    def __init__(self, epoch: _Optional[int] = ..., epochs_total: _Optional[int] = ..., step: _Optional[int] = ..., steps_total: _Optional[int] = ..., loss: _Optional[float] = ..., train_accuracy: _Optional[float] = ..., validation_accuracy: _Optional[float] = ..., learning_rate: _Optional[float] = ..., images_per_second: _Optional[float] = ..., eta: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., device: _Optional[str] = ...) -> None: ...

class AveragedMetrics(_message.Message):
    __slots__ = ("precision", "recall", "f1")
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    F1_FIELD_NUMBER: _ClassVar[int]
    precision: float
    recall: float
    f1: float
    def __init__(self, precision: _Optional[float] = ..., recall: _Optional[float] = ..., f1: _Optional[float] = ...) -> None: ...

class ClassMetrics(_message.Message):
    __slots__ = ("label", "precision", "recall", "f1", "support", "train_count", "validation_count")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    F1_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_FIELD_NUMBER: _ClassVar[int]
    TRAIN_COUNT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_COUNT_FIELD_NUMBER: _ClassVar[int]
    label: str
    precision: float
    recall: float
    f1: float
    support: int
    train_count: int
    validation_count: int
    def __init__(self, label: _Optional[str] = ..., precision: _Optional[float] = ..., recall: _Optional[float] = ..., f1: _Optional[float] = ..., support: _Optional[int] = ..., train_count: _Optional[int] = ..., validation_count: _Optional[int] = ...) -> None: ...

class ConfusionMatrix(_message.Message):
    __slots__ = ("labels", "counts")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, labels: _Optional[_Iterable[str]] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("accuracy", "macro", "weighted", "classes", "confusion_matrix", "top5_accuracy", "validation_samples")
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    MACRO_FIELD_NUMBER: _ClassVar[int]
    WEIGHTED_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    CONFUSION_MATRIX_FIELD_NUMBER: _ClassVar[int]
    TOP5_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    accuracy: float
    macro: AveragedMetrics
    weighted: AveragedMetrics
    classes: _containers.RepeatedCompositeFieldContainer[ClassMetrics]
    confusion_matrix: ConfusionMatrix
    top5_accuracy: float
    validation_samples: int
    def __init__(self, accuracy: _Optional[float] = ..., macro: _Optional[_Union[AveragedMetrics, _Mapping]] = ..., weighted: _Optional[_Union[AveragedMetrics, _Mapping]] = ..., classes: _Optional[_Iterable[_Union[ClassMetrics, _Mapping]]] = ..., confusion_matrix: _Optional[_Union[ConfusionMatrix, _Mapping]] = ..., top5_accuracy: _Optional[float] = ..., validation_samples: _Optional[int] = ...) -> None: ...
