from trainyard.dataset.v1 import dataset_pb2 as _dataset_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateDatasetRequest(_message.Message):
    __slots__ = ("display_name", "description")
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    display_name: str
    description: str
    def __init__(self, display_name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class CreateDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: _dataset_pb2.Dataset
    def __init__(self, dataset: _Optional[_Union[_dataset_pb2.Dataset, _Mapping]] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class GetDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: _dataset_pb2.Dataset
    def __init__(self, dataset: _Optional[_Union[_dataset_pb2.Dataset, _Mapping]] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets", "next_page_token")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[_dataset_pb2.Dataset]
    next_page_token: str
    def __init__(self, datasets: _Optional[_Iterable[_Union[_dataset_pb2.Dataset, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ImageHeader(_message.Message):
    __slots__ = ("file_name", "label", "size_bytes")
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    file_name: str
    label: str
    size_bytes: int
    def __init__(self, file_name: _Optional[str] = ..., label: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class UploadImagesRequest(_message.Message):
    __slots__ = ("dataset_id", "header", "chunk")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    header: ImageHeader
    chunk: bytes
    def __init__(self, dataset_id: _Optional[str] = ..., header: _Optional[_Union[ImageHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadImagesResponse(_message.Message):
    __slots__ = ("results", "stored_count", "duplicate_count", "rejected_count")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    STORED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_dataset_pb2.UploadResult]
    stored_count: int
    duplicate_count: int
    rejected_count: int
    def __init__(self, results: _Optional[_Iterable[_Union[_dataset_pb2.UploadResult, _Mapping]]] = ..., stored_count: _Optional[int] = ..., duplicate_count: _Optional[int] = ..., rejected_count: _Optional[int] = ...) -> None: ...

class ListImagesRequest(_message.Message):
    __slots__ = ("dataset_id", "label", "unlabeled_only", "page_size", "page_token")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    UNLABELED_ONLY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    label: str
    unlabeled_only: bool
    page_size: int
    page_token: str
    def __init__(self, dataset_id: _Optional[str] = ..., label: _Optional[str] = ..., unlabeled_only: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListImagesResponse(_message.Message):
    __slots__ = ("images", "next_page_token")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[_dataset_pb2.Image]
    next_page_token: str
    def __init__(self, images: _Optional[_Iterable[_Union[_dataset_pb2.Image, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CheckTrainabilityRequest(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class CheckTrainabilityResponse(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: _dataset_pb2.TrainabilityReport
    def __init__(self, report: _Optional[_Union[_dataset_pb2.TrainabilityReport, _Mapping]] = ...) -> None: ...

class PublishVersionRequest(_message.Message):
    __slots__ = ("dataset_id", "version_name", "train_ratio", "seed")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_NAME_FIELD_NUMBER: _ClassVar[int]
    TRAIN_RATIO_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    version_name: str
    train_ratio: str
    seed: int
    def __init__(self, dataset_id: _Optional[str] = ..., version_name: _Optional[str] = ..., train_ratio: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class PublishVersionResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: _dataset_pb2.DatasetVersion
    def __init__(self, version: _Optional[_Union[_dataset_pb2.DatasetVersion, _Mapping]] = ...) -> None: ...

class GetVersionRequest(_message.Message):
    __slots__ = ("dataset_id", "version_name")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_NAME_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    version_name: str
    def __init__(self, dataset_id: _Optional[str] = ..., version_name: _Optional[str] = ...) -> None: ...

class GetVersionResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: _dataset_pb2.DatasetVersion
    def __init__(self, version: _Optional[_Union[_dataset_pb2.DatasetVersion, _Mapping]] = ...) -> None: ...

class ListVersionsRequest(_message.Message):
    __slots__ = ("dataset_id", "page_size", "page_token")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    page_size: int
    page_token: str
    def __init__(self, dataset_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListVersionsResponse(_message.Message):
    __slots__ = ("versions", "next_page_token")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[_dataset_pb2.DatasetVersion]
    next_page_token: str
    def __init__(self, versions: _Optional[_Iterable[_Union[_dataset_pb2.DatasetVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class LabelAssignment(_message.Message):
    __slots__ = ("image_id", "label")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    label: str
    def __init__(self, image_id: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class SetLabelsRequest(_message.Message):
    __slots__ = ("dataset_id", "assignments")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    assignments: _containers.RepeatedCompositeFieldContainer[LabelAssignment]
    def __init__(self, dataset_id: _Optional[str] = ..., assignments: _Optional[_Iterable[_Union[LabelAssignment, _Mapping]]] = ...) -> None: ...

class SetLabelsResponse(_message.Message):
    __slots__ = ("changed_count",)
    CHANGED_COUNT_FIELD_NUMBER: _ClassVar[int]
    changed_count: int
    def __init__(self, changed_count: _Optional[int] = ...) -> None: ...

class RenameClassRequest(_message.Message):
    __slots__ = ("dataset_id", "label", "new_label")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    NEW_LABEL_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    label: str
    new_label: str
    def __init__(self, dataset_id: _Optional[str] = ..., label: _Optional[str] = ..., new_label: _Optional[str] = ...) -> None: ...

class RenameClassResponse(_message.Message):
    __slots__ = ("changed_count",)
    CHANGED_COUNT_FIELD_NUMBER: _ClassVar[int]
    changed_count: int
    def __init__(self, changed_count: _Optional[int] = ...) -> None: ...

class DiffVersionsRequest(_message.Message):
    __slots__ = ("dataset_id", "base_version", "target_version")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    base_version: str
    target_version: str
    def __init__(self, dataset_id: _Optional[str] = ..., base_version: _Optional[str] = ..., target_version: _Optional[str] = ...) -> None: ...

class Relabel(_message.Message):
    __slots__ = ("image_id", "base_label", "target_label")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_LABEL_FIELD_NUMBER: _ClassVar[int]
    TARGET_LABEL_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    base_label: str
    target_label: str
    def __init__(self, image_id: _Optional[str] = ..., base_label: _Optional[str] = ..., target_label: _Optional[str] = ...) -> None: ...

class ClassCountChange(_message.Message):
    __slots__ = ("label", "base_count", "target_count")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    BASE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TARGET_COUNT_FIELD_NUMBER: _ClassVar[int]
    label: str
    base_count: int
    target_count: int
    def __init__(self, label: _Optional[str] = ..., base_count: _Optional[int] = ..., target_count: _Optional[int] = ...) -> None: ...

class DiffVersionsResponse(_message.Message):
    __slots__ = ("added_image_ids", "removed_image_ids", "relabeled", "class_changes")
    ADDED_IMAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_IMAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    RELABELED_FIELD_NUMBER: _ClassVar[int]
    CLASS_CHANGES_FIELD_NUMBER: _ClassVar[int]
    added_image_ids: _containers.RepeatedScalarFieldContainer[str]
    removed_image_ids: _containers.RepeatedScalarFieldContainer[str]
    relabeled: _containers.RepeatedCompositeFieldContainer[Relabel]
    class_changes: _containers.RepeatedCompositeFieldContainer[ClassCountChange]
    def __init__(self, added_image_ids: _Optional[_Iterable[str]] = ..., removed_image_ids: _Optional[_Iterable[str]] = ..., relabeled: _Optional[_Iterable[_Union[Relabel, _Mapping]]] = ..., class_changes: _Optional[_Iterable[_Union[ClassCountChange, _Mapping]]] = ...) -> None: ...

class ImportManifestRequest(_message.Message):
    __slots__ = ("dataset_id", "manifest_key", "manifest_content")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_KEY_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_CONTENT_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    manifest_key: str
    manifest_content: bytes
    def __init__(self, dataset_id: _Optional[str] = ..., manifest_key: _Optional[str] = ..., manifest_content: _Optional[bytes] = ...) -> None: ...

class ImportManifestResponse(_message.Message):
    __slots__ = ("results", "stored_count", "duplicate_count", "rejected_count")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    STORED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_dataset_pb2.UploadResult]
    stored_count: int
    duplicate_count: int
    rejected_count: int
    def __init__(self, results: _Optional[_Iterable[_Union[_dataset_pb2.UploadResult, _Mapping]]] = ..., stored_count: _Optional[int] = ..., duplicate_count: _Optional[int] = ..., rejected_count: _Optional[int] = ...) -> None: ...

class DeleteDatasetRequest(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class DeleteDatasetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExportManifestRequest(_message.Message):
    __slots__ = ("dataset_id", "version_name")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_NAME_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    version_name: str
    def __init__(self, dataset_id: _Optional[str] = ..., version_name: _Optional[str] = ...) -> None: ...

class ExportManifestResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    def __init__(self, chunk: _Optional[bytes] = ...) -> None: ...
