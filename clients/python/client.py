"""The SDK client: one object for datasets, versions, jobs, flavors and models."""

from __future__ import annotations

import json
import os
import time
import uuid
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc

from trainyard.common.v1 import training_pb2 as common
from trainyard.dataset.v1 import dataset_pb2
from trainyard.dataset.v1 import dataset_service_pb2 as ds
from trainyard.dataset.v1 import dataset_service_pb2_grpc as ds_grpc
from trainyard.rpc import channel, domain_error
from trainyard.scheduler.v1 import scheduler_pb2
from trainyard.scheduler.v1 import scheduler_service_pb2 as sc
from trainyard.scheduler.v1 import scheduler_service_pb2_grpc as sc_grpc

CHUNK_BYTES = 1 << 20
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
FINAL_STATES = {
    scheduler_pb2.TRAINING_JOB_STATE_COMPLETED,
    scheduler_pb2.TRAINING_JOB_STATE_FAILED,
    scheduler_pb2.TRAINING_JOB_STATE_CANCELLED,
}


def default_addresses() -> tuple[str, str]:
    """(dataset, scheduler) addresses: TRAINYARD_DATASET_ADDRESS / TRAINYARD_SCHEDULER_ADDRESS,
    else those of a local stack started in TRAINYARD_DATA_DIR (default .trainyard), else the defaults."""
    dataset = os.environ.get("TRAINYARD_DATASET_ADDRESS")
    scheduler = os.environ.get("TRAINYARD_SCHEDULER_ADDRESS")
    stack_file = Path(os.environ.get("TRAINYARD_DATA_DIR", ".trainyard")) / "stack.json"
    if (not dataset or not scheduler) and stack_file.exists():
        info = json.loads(stack_file.read_text())
        dataset, scheduler = dataset or info["dataset"], scheduler or info["scheduler"]
    return dataset or "127.0.0.1:50051", scheduler or "127.0.0.1:50052"


def _call(method, request, timeout: float | None):
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as exc:
        raise domain_error(exc) from None


class Client:
    """Errors are `trainyard.errors` exceptions (InvalidArgument with .violations, NotFound, …)."""

    def __init__(self, dataset_address: str | None = None, scheduler_address: str | None = None, *, timeout: float = 60.0) -> None:
        default_dataset, default_scheduler = default_addresses()
        self.timeout = timeout
        self._datasets = ds_grpc.DatasetServiceStub(channel(dataset_address or default_dataset))
        self._scheduler = sc_grpc.SchedulerServiceStub(channel(scheduler_address or default_scheduler))

    # datasets --------------------------------------------------------------------
    def create_dataset(self, display_name: str, description: str = "") -> dataset_pb2.Dataset:
        return _call(self._datasets.CreateDataset, ds.CreateDatasetRequest(display_name=display_name, description=description), self.timeout).dataset

    def get_dataset(self, dataset: str) -> dataset_pb2.Dataset:
        return _call(self._datasets.GetDataset, ds.GetDatasetRequest(dataset_id=dataset), self.timeout).dataset

    def list_datasets(self) -> list[dataset_pb2.Dataset]:
        return list(self._pages(self._datasets.ListDatasets, ds.ListDatasetsRequest(), "datasets"))

    def upload_images(self, dataset: str, files: Iterable[tuple[str, str, bytes]]) -> ds.UploadImagesResponse:
        """Upload (file_name, label, bytes) triples in one stream, each file in 1 MiB chunks."""

        def requests() -> Iterator[ds.UploadImagesRequest]:
            yield ds.UploadImagesRequest(dataset_id=dataset)
            for file_name, label, data in files:
                yield ds.UploadImagesRequest(header=ds.ImageHeader(file_name=file_name, label=label))
                for start in range(0, len(data), CHUNK_BYTES):
                    yield ds.UploadImagesRequest(chunk=data[start:start + CHUNK_BYTES])

        try:
            return self._datasets.UploadImages(requests(), timeout=max(self.timeout, 600))
        except grpc.RpcError as exc:
            raise domain_error(exc) from None

    def upload_folder(self, dataset: str, folder: str | Path, batch: int = 500,
                      on_batch=lambda response, done, total: None) -> list[ds.UploadImagesResponse]:
        """Upload a folder of <label>/<image> files (images directly in the folder stay unlabeled)."""
        root = Path(folder)
        paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        responses = []
        for start in range(0, len(paths), batch):
            chunk = paths[start:start + batch]
            files = ((str(p.relative_to(root)), p.parent.name if p.parent != root else "", p.read_bytes()) for p in chunk)
            response = self.upload_images(dataset, files)
            responses.append(response)
            on_batch(response, start + len(chunk), len(paths))
        return responses

    def upload_zip(self, dataset: str, path: str | Path, batch: int = 500) -> list[ds.UploadImagesResponse]:
        """Upload a zip of <label>/<image> entries (entries at the top level stay unlabeled)."""
        with zipfile.ZipFile(path) as archive:
            names = sorted(n for n in archive.namelist() if not n.endswith("/") and Path(n).suffix.lower() in IMAGE_SUFFIXES)
            responses = []
            for start in range(0, len(names), batch):
                part = names[start:start + batch]
                responses.append(self.upload_images(dataset, (
                    (n, Path(n).parent.name if len(Path(n).parts) > 1 else "", archive.read(n)) for n in part)))
        return responses

    def import_manifest(self, dataset: str, manifest: str | Path) -> ds.ImportManifestResponse | list[ds.UploadImagesResponse]:
        """Import an ExeML/ModelArts manifest (JSON Lines with source and annotation).

        Sources that are objects in the deployment's bucket (s3://…) are imported by
        the server; sources that are local paths (relative to the manifest) are uploaded.
        """
        path = Path(manifest)
        text = path.read_text()
        local, remote = [], []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            record = json.loads(line)
            source = str(record.get("source", ""))
            (remote if "://" in source else local).append((number, line, record))
        results: list = []
        if remote:
            content = "\n".join(line for _, line, _ in remote).encode()
            results.append(_call(self._datasets.ImportManifest, ds.ImportManifestRequest(dataset_id=dataset, manifest_content=content), max(self.timeout, 600)))
        if local:
            def files():
                for _, _, record in local:
                    file = (path.parent / record["source"]).resolve()
                    labels = [a.get("name", "") for a in record.get("annotation") or []]
                    yield str(record["source"]), labels[0] if labels else "", file.read_bytes()
            results.append(self.upload_images(dataset, files()))
        return results

    def set_labels(self, dataset: str, labels: dict[str, str]) -> int:
        """Set (or with "" remove) the labels of images by id, all or nothing; the number changed."""
        request = ds.SetLabelsRequest(dataset_id=dataset, assignments=[ds.LabelAssignment(image_id=i, label=label) for i, label in labels.items()])
        return _call(self._datasets.SetLabels, request, self.timeout).changed_count

    def rename_class(self, dataset: str, label: str, new_label: str) -> int:
        return _call(self._datasets.RenameClass, ds.RenameClassRequest(dataset_id=dataset, label=label, new_label=new_label), self.timeout).changed_count

    def list_images(self, dataset: str, label: str = "", unlabeled_only: bool = False) -> list[dataset_pb2.Image]:
        request = ds.ListImagesRequest(dataset_id=dataset, label=label, unlabeled_only=unlabeled_only)
        return list(self._pages(self._datasets.ListImages, request, "images"))

    def diff_versions(self, dataset: str, base: str, target: str) -> ds.DiffVersionsResponse:
        request = ds.DiffVersionsRequest(dataset_id=dataset, base_version=base, target_version=target)
        return _call(self._datasets.DiffVersions, request, self.timeout)

    def export_manifest(self, dataset: str, version: str) -> bytes:
        try:
            chunks = self._datasets.ExportManifest(ds.ExportManifestRequest(dataset_id=dataset, version_name=version), timeout=max(self.timeout, 600))
            return b"".join(c.chunk for c in chunks)
        except grpc.RpcError as exc:
            raise domain_error(exc) from None

    def delete_dataset(self, dataset: str) -> None:
        _call(self._datasets.DeleteDataset, ds.DeleteDatasetRequest(dataset_id=dataset), self.timeout)

    def check_trainability(self, dataset: str) -> dataset_pb2.TrainabilityReport:
        return _call(self._datasets.CheckTrainability, ds.CheckTrainabilityRequest(dataset_id=dataset), self.timeout).report

    def publish_version(self, dataset: str, name: str = "", train_ratio: str = "", seed: int = 0) -> dataset_pb2.DatasetVersion:
        request = ds.PublishVersionRequest(dataset_id=dataset, version_name=name, train_ratio=train_ratio, seed=seed)
        return _call(self._datasets.PublishVersion, request, self.timeout).version

    def list_versions(self, dataset: str) -> list[dataset_pb2.DatasetVersion]:
        return list(self._pages(self._datasets.ListVersions, ds.ListVersionsRequest(dataset_id=dataset), "versions"))

    # jobs ------------------------------------------------------------------------
    def create_training_job(
        self,
        dataset: str,
        *,
        dataset_version: str = "",
        new_version_name: str = "",
        train_ratio: str = "",
        seed: int = 0,
        incremental_model_version: str = "",
        max_duration_minutes: int = 0,
        preference: str = "",
        flavor: str = "",
        accept_free_terms: bool = False,
        max_epochs: int = 0,
        request_id: str | None = None,
    ) -> scheduler_pb2.TrainingJob:
        """Create a job; defaults are the source document's (ratio 0.8, 60 minutes, balance, free flavor).

        A request id (generated when not given) makes the call safe to retry.
        """
        request = sc.CreateTrainingJobRequest(
            request_id=request_id or uuid.uuid4().hex, dataset_id=dataset, dataset_version=dataset_version,
            new_version_name=new_version_name, train_ratio=train_ratio, seed=seed,
            incremental_model_version=incremental_model_version, max_duration_minutes=max_duration_minutes,
            preference=common.TrainingPreference.Value("TRAINING_PREFERENCE_" + preference.upper()) if preference else 0,
            flavor_id=flavor, accept_free_terms=accept_free_terms, max_epochs=max_epochs,
        )
        return _call(self._scheduler.CreateTrainingJob, request, max(self.timeout, 300)).training_job

    def get_job(self, job_id: str) -> scheduler_pb2.TrainingJob:
        return _call(self._scheduler.GetTrainingJob, sc.GetTrainingJobRequest(job_id=job_id), self.timeout).training_job

    def list_jobs(self, dataset: str = "") -> list[scheduler_pb2.TrainingJob]:
        return list(self._pages(self._scheduler.ListTrainingJobs, sc.ListTrainingJobsRequest(dataset_id=dataset), "training_jobs"))

    def cancel_job(self, job_id: str) -> scheduler_pb2.TrainingJob:
        return _call(self._scheduler.CancelTrainingJob, sc.CancelTrainingJobRequest(job_id=job_id), self.timeout).training_job

    def watch(self, job_id: str, after_sequence: int = 0, reconnect_seconds: float = 120.0) -> Iterator[scheduler_pb2.TrainingJobEvent]:
        """The job's events from after_sequence to the final one.

        Resumes by itself from the last sequence seen when the connection drops
        (for example while the scheduler restarts), for up to reconnect_seconds.
        """
        sequence = after_sequence
        down_since: float | None = None
        while True:
            try:
                for response in self._scheduler.WatchTrainingJob(sc.WatchTrainingJobRequest(job_id=job_id, after_sequence=sequence)):
                    down_since = None
                    event = response.event
                    sequence = event.sequence
                    yield event
                    if event.final:
                        return
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                    raise domain_error(exc) from None
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > reconnect_seconds:
                    raise domain_error(exc) from None
                time.sleep(0.5)

    def wait(self, job_id: str) -> scheduler_pb2.TrainingJob:
        """Block until the job ends; returns it."""
        for _ in self.watch(job_id):
            pass
        return self.get_job(job_id)

    # flavors and models ----------------------------------------------------------
    def list_flavors(self) -> list[scheduler_pb2.Flavor]:
        return list(_call(self._scheduler.ListFlavors, sc.ListFlavorsRequest(), self.timeout).flavors)

    def list_model_versions(self, dataset: str) -> list[scheduler_pb2.ModelVersion]:
        return list(self._pages(self._scheduler.ListModelVersions, sc.ListModelVersionsRequest(dataset_id=dataset), "model_versions"))

    def get_model_version(self, dataset: str, version: str) -> scheduler_pb2.ModelVersion:
        return _call(self._scheduler.GetModelVersion, sc.GetModelVersionRequest(dataset_id=dataset, version=version), self.timeout).model_version

    def predict(self, dataset: str, version: str, images: list[bytes], top_k: int = 5) -> list[list[tuple[str, float]]]:
        request = sc.PredictRequest(dataset_id=dataset, version=version, images=images, top_k=top_k)
        response = _call(self._scheduler.Predict, request, max(self.timeout, 120))
        return [[(s.label, s.score) for s in p.labels] for p in response.predictions]

    def download_artifact(self, dataset: str, version: str, name: str) -> bytes:
        """One artifact of a model version: checkpoint.pt, model.torchscript.pt, preprocessing.json,
        labels.json, metrics.json, confusion_matrix.png or curves.png."""
        request = sc.DownloadModelArtifactRequest(dataset_id=dataset, version=version, name=name)
        try:
            return b"".join(r.chunk for r in self._scheduler.DownloadModelArtifact(request, timeout=max(self.timeout, 600)))
        except grpc.RpcError as exc:
            raise domain_error(exc) from None

    # helpers ---------------------------------------------------------------------
    def _pages(self, method, request, field: str):
        while True:
            response = _call(method, request, self.timeout)
            yield from getattr(response, field)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token
