"""DatasetService RPCs: proto in → domain call → proto out."""

from __future__ import annotations

from collections.abc import Iterator

from trainyard.dataset.v1 import dataset_service_pb2 as api
from trainyard.dataset.v1 import dataset_service_pb2_grpc as api_grpc
from trainyard.errors import InvalidArgument
from trainyard.services.dataset import mapping
from trainyard.services.dataset.service import DatasetService, FileHeader


class DatasetServicer(api_grpc.DatasetServiceServicer):
    def __init__(self, service: DatasetService) -> None:
        self.service = service

    def CreateDataset(self, request, context):
        row = self.service.create_dataset(request.display_name, request.description)
        return api.CreateDatasetResponse(dataset=mapping.dataset(row))

    def GetDataset(self, request, context):
        return api.GetDatasetResponse(dataset=mapping.dataset(self.service.get_dataset(request.dataset_id)))

    def ListDatasets(self, request, context):
        rows, token = self.service.list_datasets(request.page_size, request.page_token)
        return api.ListDatasetsResponse(datasets=[mapping.dataset(r) for r in rows], next_page_token=token)

    def UploadImages(self, request_iterator, context):
        first = next(request_iterator, None)
        if first is None:
            return api.UploadImagesResponse()
        if not first.dataset_id:
            raise InvalidArgument.field("dataset_id", "is required in the first message of an upload")

        def parts() -> Iterator[FileHeader | bytes]:
            for message in _chain(first, request_iterator):
                kind = message.WhichOneof("payload")
                if kind == "header":
                    yield FileHeader(message.header.file_name, message.header.label)
                elif kind == "chunk":
                    yield message.chunk

        outcomes = self.service.upload(first.dataset_id, parts())
        results = [mapping.upload_result(o) for o in outcomes]
        return api.UploadImagesResponse(
            results=results,
            stored_count=sum(o.status == "stored" for o in outcomes),
            duplicate_count=sum(o.status == "duplicate" for o in outcomes),
            rejected_count=sum(o.status == "rejected" for o in outcomes),
        )

    def ListImages(self, request, context):
        rows, token = self.service.list_images(
            request.dataset_id, request.label, request.unlabeled_only, request.page_size, request.page_token
        )
        return api.ListImagesResponse(images=[mapping.image(r) for r in rows], next_page_token=token)

    def CheckTrainability(self, request, context):
        return api.CheckTrainabilityResponse(report=mapping.report(self.service.check_trainability(request.dataset_id)))

    def PublishVersion(self, request, context):
        view = self.service.publish(request.dataset_id, request.version_name, request.train_ratio, request.seed)
        return api.PublishVersionResponse(version=mapping.version(view))

    def GetVersion(self, request, context):
        return api.GetVersionResponse(version=mapping.version(self.service.get_version(request.dataset_id, request.version_name)))

    def ListVersions(self, request, context):
        views, token = self.service.list_versions(request.dataset_id, request.page_size, request.page_token)
        return api.ListVersionsResponse(versions=[mapping.version(v) for v in views], next_page_token=token)


def _chain(first, rest):
    yield first
    yield from rest
