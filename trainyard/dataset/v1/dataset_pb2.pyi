import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UploadStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UPLOAD_STATUS_UNSPECIFIED: _ClassVar[UploadStatus]
    UPLOAD_STATUS_STORED: _ClassVar[UploadStatus]
    UPLOAD_STATUS_DUPLICATE: _ClassVar[UploadStatus]
    UPLOAD_STATUS_REJECTED: _ClassVar[UploadStatus]
UPLOAD_STATUS_UNSPECIFIED: UploadStatus
UPLOAD_STATUS_STORED: UploadStatus
UPLOAD_STATUS_DUPLICATE: UploadStatus
UPLOAD_STATUS_REJECTED: UploadStatus

class Dataset(_message.Message):
    __slots__ = ("id", "display_name", "description", "create_time", "image_count", "labeled_image_count", "version_count")
    ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    LABELED_IMAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    VERSION_COUNT_FIELD_NUMBER: _ClassVar[int]
    id: str
    display_name: str
    description: str
    create_time: _timestamp_pb2.Timestamp
    image_count: int
    labeled_image_count: int
    version_count: int
    def __init__(self, id: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., image_count: _Optional[int] = ..., labeled_image_count: _Optional[int] = ..., version_count: _Optional[int] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("id", "file_name", "label", "format", "width", "height", "size_bytes", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    file_name: str
    label: str
    format: str
    width: int
    height: int
    size_bytes: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., file_name: _Optional[str] = ..., label: _Optional[str] = ..., format: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., size_bytes: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ClassCount(_message.Message):
    __slots__ = ("label", "image_count")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    label: str
    image_count: int
    def __init__(self, label: _Optional[str] = ..., image_count: _Optional[int] = ...) -> None: ...

class RuleViolation(_message.Message):
    __slots__ = ("rule", "message", "label", "count", "required")
    RULE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    rule: str
    message: str
    label: str
    count: int
    required: int
    def __init__(self, rule: _Optional[str] = ..., message: _Optional[str] = ..., label: _Optional[str] = ..., count: _Optional[int] = ..., required: _Optional[int] = ...) -> None: ...

class TrainabilityReport(_message.Message):
    __slots__ = ("trainable", "violations", "classes", "unlabeled_image_count")
    TRAINABLE_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    UNLABELED_IMAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    trainable: bool
    violations: _containers.RepeatedCompositeFieldContainer[RuleViolation]
    classes: _containers.RepeatedCompositeFieldContainer[ClassCount]
    unlabeled_image_count: int
    def __init__(self, trainable: _Optional[bool] = ..., violations: _Optional[_Iterable[_Union[RuleViolation, _Mapping]]] = ..., classes: _Optional[_Iterable[_Union[ClassCount, _Mapping]]] = ..., unlabeled_image_count: _Optional[int] = ...) -> None: ...

class VersionClassCount(_message.Message):
    __slots__ = ("label", "train_count", "validation_count")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TRAIN_COUNT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_COUNT_FIELD_NUMBER: _ClassVar[int]
    label: str
    train_count: int
    validation_count: int
    def __init__(self, label: _Optional[str] = ..., train_count: _Optional[int] = ..., validation_count: _Optional[int] = ...) -> None: ...

class DatasetVersion(_message.Message):
    __slots__ = ("dataset_id", "name", "train_ratio", "seed", "create_time", "classes", "train_count", "validation_count", "manifest_key", "metadata_key", "content_hash", "parent_version")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRAIN_RATIO_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    TRAIN_COUNT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_COUNT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_KEY_FIELD_NUMBER: _ClassVar[int]
    METADATA_KEY_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    PARENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    name: str
    train_ratio: str
    seed: int
    create_time: _timestamp_pb2.Timestamp
    classes: _containers.RepeatedCompositeFieldContainer[VersionClassCount]
    train_count: int
    validation_count: int
    manifest_key: str
    metadata_key: str
    content_hash: str
    parent_version: str
    def __init__(self, dataset_id: _Optional[str] = ..., name: _Optional[str] = ..., train_ratio: _Optional[str] = ..., seed: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., classes: _Optional[_Iterable[_Union[VersionClassCount, _Mapping]]] = ..., train_count: _Optional[int] = ..., validation_count: _Optional[int] = ..., manifest_key: _Optional[str] = ..., metadata_key: _Optional[str] = ..., content_hash: _Optional[str] = ..., parent_version: _Optional[str] = ...) -> None: ...

class UploadResult(_message.Message):
    __slots__ = ("file_name", "status", "image_id", "reason")
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    file_name: str
    status: UploadStatus
    image_id: str
    reason: str
    def __init__(self, file_name: _Optional[str] = ..., status: _Optional[_Union[UploadStatus, str]] = ..., image_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
