"""Raw DatasetService calls the integration tests share: a new dataset, an upload stream."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator

from trainyard.dataset.v1 import dataset_pb2
from trainyard.dataset.v1 import dataset_service_pb2 as api

Files = Iterable[tuple[str, str, bytes]]  # (file name, label, bytes)


def new_dataset(stub, name: str | None = None) -> dataset_pb2.Dataset:
    """A dataset named `name`, or a fresh unique name."""
    return stub.CreateDataset(api.CreateDatasetRequest(display_name=name or "d-" + uuid.uuid4().hex[:8])).dataset


def upload_requests(dataset_id: str, files: Files, chunk: int = 64 * 1024,
                    declare_size: bool = False) -> Iterator[api.UploadImagesRequest]:
    """An UploadImages stream: the dataset, then per file a header (with its size when
    `declare_size`, as the SDK sends it) and its bytes in chunks."""
    yield api.UploadImagesRequest(dataset_id=dataset_id)
    for name, label, data in files:
        size = len(data) if declare_size else 0
        yield api.UploadImagesRequest(header=api.ImageHeader(file_name=name, label=label, size_bytes=size))
        for start in range(0, len(data), chunk):
            yield api.UploadImagesRequest(chunk=data[start:start + chunk])


def upload(stub, dataset_id: str, files: Files, chunk: int = 64 * 1024,
           declare_size: bool = False) -> api.UploadImagesResponse:
    return stub.UploadImages(upload_requests(dataset_id, files, chunk, declare_size))
