"""DatasetService RPCs: proto in → domain call → proto out.

Each RPC acts for the tenant the interceptor authenticated (`auth.tenant()`),
passed to the domain explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator

from trainyard import auth
from trainyard.dataset.v1 import dataset_service_pb2 as api
from trainyard.dataset.v1 import dataset_service_pb2_grpc as api_grpc
from trainyard.errors import InvalidArgument
from trainyard.services.dataset import mapping
from trainyard.services.dataset.service import DatasetService, FileHeader


class DatasetServicer(api_grpc.DatasetServiceServicer):
    def __init__(self, service: DatasetService) -> None:
        self.service = service

    def CreateDataset(self, request, context):
        row = self.service.create_dataset(auth.tenant(), request.display_name, request.description)
        return api.CreateDatasetResponse(dataset=mapping.dataset(row))

    def GetDataset(self, request, context):
        return api.GetDatasetResponse(dataset=mapping.dataset(self.service.get_dataset(auth.tenant(), request.dataset_id)))

    def ListDatasets(self, request, context):
        rows, token = self.service.list_datasets(auth.tenant(), request.page_size, request.page_token)
        return api.ListDatasetsResponse(datasets=[mapping.dataset(r) for r in rows], next_page_token=token)

    def UploadImages(self, request_iterator, context):
        tenant = auth.tenant()
        first = next(request_iterator, None)
        if first is None:
            return api.UploadImagesResponse()
        if not first.dataset_id:
            raise InvalidArgument.field("dataset_id", "is required in the first message of an upload")

        def parts() -> Iterator[FileHeader | bytes]:
            for message in _chain(first, request_iterator):
                kind = message.WhichOneof("payload")
                if kind == "header":
                    h = message.header
                    yield FileHeader(h.file_name, h.label, h.size_bytes)
                elif kind == "chunk":
                    yield message.chunk

        return _outcomes(api.UploadImagesResponse, self.service.upload(tenant, first.dataset_id, parts(), context.is_active))

    def ListImages(self, request, context):
        rows, token = self.service.list_images(
            auth.tenant(), request.dataset_id, request.label, request.unlabeled_only, request.page_size, request.page_token
        )
        return api.ListImagesResponse(images=[mapping.image(r) for r in rows], next_page_token=token)

    def CheckTrainability(self, request, context):
        return api.CheckTrainabilityResponse(report=mapping.report(self.service.check_trainability(auth.tenant(), request.dataset_id)))

    def PublishVersion(self, request, context):
        # Left out (None) means the default ratio; an explicit "" is passed on and refused.
        train_ratio = request.train_ratio if request.HasField("train_ratio") else None
        view = self.service.publish(auth.tenant(), request.dataset_id, request.version_name, train_ratio, request.seed)
        return api.PublishVersionResponse(version=mapping.version(view))

    def GetVersion(self, request, context):
        return api.GetVersionResponse(version=mapping.version(self.service.get_version(auth.tenant(), request.dataset_id, request.version_name)))

    def ListVersions(self, request, context):
        views, token = self.service.list_versions(auth.tenant(), request.dataset_id, request.page_size, request.page_token)
        return api.ListVersionsResponse(versions=[mapping.version(v) for v in views], next_page_token=token)

    def SetLabels(self, request, context):
        changed = self.service.set_labels(auth.tenant(), request.dataset_id, [(a.image_id, a.label) for a in request.assignments])
        return api.SetLabelsResponse(changed_count=changed)

    def RenameClass(self, request, context):
        return api.RenameClassResponse(changed_count=self.service.rename_class(auth.tenant(), request.dataset_id, request.label, request.new_label))

    def DiffVersions(self, request, context):
        diff = self.service.diff_versions(auth.tenant(), request.dataset_id, request.base_version, request.target_version)
        return api.DiffVersionsResponse(
            added_image_ids=diff.added, removed_image_ids=diff.removed,
            relabeled=[api.Relabel(image_id=i, base_label=a, target_label=b) for i, a, b in diff.relabeled],
            class_changes=[api.ClassCountChange(label=label, base_count=a, target_count=b) for label, a, b in diff.class_changes],
        )

    def ImportManifest(self, request, context):
        outcomes = self.service.import_manifest(auth.tenant(), request.dataset_id, request.manifest_key, request.manifest_content)
        return _outcomes(api.ImportManifestResponse, outcomes)

    def ExportManifest(self, request, context):
        for chunk in self.service.export_manifest(auth.tenant(), request.dataset_id, request.version_name):
            yield api.ExportManifestResponse(chunk=chunk)

    def DeleteDataset(self, request, context):
        self.service.delete_dataset(auth.tenant(), request.dataset_id)
        return api.DeleteDatasetResponse()


def _outcomes(response_type, outcomes):
    """An upload or import response: the per-file results and their counts."""
    return response_type(
        results=[mapping.upload_result(o) for o in outcomes],
        stored_count=sum(o.status == "stored" for o in outcomes),
        duplicate_count=sum(o.status == "duplicate" for o in outcomes),
        rejected_count=sum(o.status == "rejected" for o in outcomes),
    )


def _chain(first, rest):
    yield first
    yield from rest
