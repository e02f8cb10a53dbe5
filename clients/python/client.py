"""The SDK client: one object for datasets, versions, jobs, flavors and models.

Every method returns typed objects (`trainyard.sdk.types`), takes an optional
`timeout` (seconds; the client's default otherwise) and raises
`trainyard.errors` exceptions carrying the status `code`, a message for people,
and for bad input the offending fields (`InvalidArgument.violations`).
Idempotent calls are retried with exponential backoff while the service is
UNAVAILABLE; creating a job is idempotent through its request id.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from trainyard.auth import CallCredentials
from trainyard.common.v1 import training_pb2 as common
from trainyard.dataset.v1 import dataset_service_pb2 as ds
from trainyard.dataset.v1 import dataset_service_pb2_grpc as ds_grpc
from trainyard.errors import Unavailable
from trainyard.rpc import channel, domain_error
from trainyard.scheduler.v1 import scheduler_service_pb2 as sc
from trainyard.scheduler.v1 import scheduler_service_pb2_grpc as sc_grpc
from trainyard.sdk import types
from trainyard.tls import ClientTls

CHUNK_BYTES = 1 << 20
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
T = TypeVar("T")


@dataclass(frozen=True)
class Connection:
    """Where the services are and how to authenticate to them."""

    dataset: str = "127.0.0.1:50051"
    scheduler: str = "127.0.0.1:50052"
    api_key: str | None = None
    tls: ClientTls | None = None

    @classmethod
    def from_env(cls) -> Connection:
        """TRAINYARD_DATASET_ADDRESS, TRAINYARD_SCHEDULER_ADDRESS, TRAINYARD_API_KEY and the TLS
        variables (TRAINYARD_TLS_CA, TRAINYARD_TLS_CLIENT_CERT/KEY); what is unset comes from a
        local stack started in TRAINYARD_DATA_DIR (default .trainyard), else the defaults."""
        env = os.environ
        stack_file = Path(env.get("TRAINYARD_DATA_DIR", ".trainyard")) / "stack.json"
        info = json.loads(stack_file.read_text()) if stack_file.exists() else {}
        api_key = env.get("TRAINYARD_API_KEY") or None
        if api_key is None and info.get("api_key_file") and Path(info["api_key_file"]).exists():
            api_key = Path(info["api_key_file"]).read_text().strip()
        tls = ClientTls.from_env(env)
        if tls is None and info.get("tls_ca"):
            tls = ClientTls.from_files(info["tls_ca"], info.get("tls_client_cert"), info.get("tls_client_key"))
        return cls(
            dataset=env.get("TRAINYARD_DATASET_ADDRESS") or info.get("dataset") or cls.dataset,
            scheduler=env.get("TRAINYARD_SCHEDULER_ADDRESS") or info.get("scheduler") or cls.scheduler,
            api_key=api_key,
            tls=tls,
        )


class Client:
    def __init__(
        self,
        dataset_address: str | None = None,
        scheduler_address: str | None = None,
        *,
        api_key: str | None = None,
        tls: ClientTls | None = None,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.2,
    ) -> None:
        """Arguments left out come from `Connection.from_env()` (environment, then the local stack).

        `api_key` is sent with every call; `tls` (a `trainyard.tls.ClientTls`: the CA to trust and,
        for mTLS, the client certificate) turns TLS on.
        """
        if None in (dataset_address, scheduler_address, api_key, tls):  # read the environment only when needed
            defaults = Connection.from_env()
            dataset_address = dataset_address or defaults.dataset
            scheduler_address = scheduler_address or defaults.scheduler
            api_key = api_key or defaults.api_key
            tls = tls or defaults.tls
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        credentials = CallCredentials(api_key) if api_key else None
        self._datasets = ds_grpc.DatasetServiceStub(channel(dataset_address, tls, credentials))
        self._scheduler = sc_grpc.SchedulerServiceStub(channel(scheduler_address, tls, credentials))

    # plumbing --------------------------------------------------------------------
    def _call(self, method, request, timeout: float | None, *, idempotent: bool = True):
        """One call; retried with exponential backoff and jitter while UNAVAILABLE, if idempotent."""
        attempt = 0
        while True:
            try:
                return method(request, timeout=timeout or self.timeout)
            except grpc.RpcError as exc:
                error = domain_error(exc)
                if not (idempotent and isinstance(error, Unavailable) and attempt < self.retries):
                    raise error from None
            time.sleep(self.backoff * 2**attempt * (0.5 + random.random()))
            attempt += 1

    def _pages(self, method, request, field: str, convert: Callable[[object], T], timeout: float | None) -> list[T]:
        items: list[T] = []
        while True:
            response = self._call(method, request, timeout)
            items += [convert(m) for m in getattr(response, field)]
            if not response.next_page_token:
                return items
            request.page_token = response.next_page_token

    # datasets --------------------------------------------------------------------
    def create_dataset(self, display_name: str, description: str = "", *, timeout: float | None = None) -> types.Dataset:
        request = ds.CreateDatasetRequest(display_name=display_name, description=description)
        return types.Dataset.from_proto(self._call(self._datasets.CreateDataset, request, timeout, idempotent=False).dataset)

    def get_dataset(self, dataset: str, *, timeout: float | None = None) -> types.Dataset:
        return types.Dataset.from_proto(self._call(self._datasets.GetDataset, ds.GetDatasetRequest(dataset_id=dataset), timeout).dataset)

    def list_datasets(self, *, timeout: float | None = None) -> list[types.Dataset]:
        return self._pages(self._datasets.ListDatasets, ds.ListDatasetsRequest(), "datasets", types.Dataset.from_proto, timeout)

    def delete_dataset(self, dataset: str, *, timeout: float | None = None) -> None:
        self._call(self._datasets.DeleteDataset, ds.DeleteDatasetRequest(dataset_id=dataset), timeout, idempotent=False)

    def upload_images(self, dataset: str, files: Iterable[tuple[str, str, bytes]], *, timeout: float | None = None) -> types.UploadSummary:
        """Upload (file_name, label, bytes) triples in one stream, each file in 1 MiB chunks."""

        def requests() -> Iterator[ds.UploadImagesRequest]:
            yield ds.UploadImagesRequest(dataset_id=dataset)
            for file_name, label, data in files:
                yield ds.UploadImagesRequest(header=ds.ImageHeader(file_name=file_name, label=label, size_bytes=len(data)))
                for start in range(0, len(data), CHUNK_BYTES):
                    yield ds.UploadImagesRequest(chunk=data[start:start + CHUNK_BYTES])

        try:
            return types.UploadSummary.from_proto(self._datasets.UploadImages(requests(), timeout=timeout or max(self.timeout, 600)))
        except grpc.RpcError as exc:
            raise domain_error(exc) from None

    def upload_folder(self, dataset: str, folder: str | Path, batch: int = 500,
                      on_batch: Callable[[types.UploadSummary, int, int], None] = lambda summary, done, total: None) -> list[types.UploadSummary]:
        """Upload a folder of <label>/<image> files (images directly in the folder stay unlabeled)."""
        root = Path(folder)
        paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        summaries = []
        for start in range(0, len(paths), batch):
            chunk = paths[start:start + batch]
            files = ((str(p.relative_to(root)), p.parent.name if p.parent != root else "", p.read_bytes()) for p in chunk)
            summary = self.upload_images(dataset, files)
            summaries.append(summary)
            on_batch(summary, start + len(chunk), len(paths))
        return summaries

    def upload_zip(self, dataset: str, path: str | Path, batch: int = 500) -> list[types.UploadSummary]:
        """Upload a zip of <label>/<image> entries (entries at the top level stay unlabeled)."""
        with zipfile.ZipFile(path) as archive:
            names = sorted(n for n in archive.namelist() if not n.endswith("/") and Path(n).suffix.lower() in IMAGE_SUFFIXES)
            return [
                self.upload_images(dataset, ((n, Path(n).parent.name if len(Path(n).parts) > 1 else "", archive.read(n))
                                             for n in names[start:start + batch]))
                for start in range(0, len(names), batch)
            ]

    def import_manifest(self, dataset: str, manifest: str | Path) -> list[types.UploadSummary]:
        """Import an ExeML/ModelArts manifest (JSON Lines with source and annotation).

        Sources that are objects in the deployment's bucket (s3://…) are imported by
        the server; sources that are local paths (relative to the manifest) are uploaded.
        """
        path = Path(manifest)
        local, remote = [], []
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                (remote if "://" in str(record.get("source", "")) else local).append((line, record))
        summaries = []
        if remote:
            request = ds.ImportManifestRequest(dataset_id=dataset, manifest_content="\n".join(line for line, _ in remote).encode())
            summaries.append(types.UploadSummary.from_proto(self._call(self._datasets.ImportManifest, request, max(self.timeout, 600))))
        if local:
            def files():
                for _, record in local:
                    labels = [a.get("name", "") for a in record.get("annotation") or []]
                    yield str(record["source"]), labels[0] if labels else "", (path.parent / record["source"]).read_bytes()
            summaries.append(self.upload_images(dataset, files()))
        return summaries

    def list_images(self, dataset: str, label: str = "", unlabeled_only: bool = False, *, timeout: float | None = None) -> list:
        request = ds.ListImagesRequest(dataset_id=dataset, label=label, unlabeled_only=unlabeled_only)
        return self._pages(self._datasets.ListImages, request, "images", lambda m: m, timeout)

    def set_labels(self, dataset: str, labels: dict[str, str], *, timeout: float | None = None) -> int:
        """Set (or with "" remove) the labels of images by id, all or nothing; the number changed."""
        request = ds.SetLabelsRequest(dataset_id=dataset, assignments=[ds.LabelAssignment(image_id=i, label=label) for i, label in labels.items()])
        return self._call(self._datasets.SetLabels, request, timeout).changed_count

    def rename_class(self, dataset: str, label: str, new_label: str, *, timeout: float | None = None) -> int:
        request = ds.RenameClassRequest(dataset_id=dataset, label=label, new_label=new_label)
        return self._call(self._datasets.RenameClass, request, timeout, idempotent=False).changed_count

    def check_trainability(self, dataset: str, *, timeout: float | None = None) -> types.TrainabilityReport:
        response = self._call(self._datasets.CheckTrainability, ds.CheckTrainabilityRequest(dataset_id=dataset), timeout)
        return types.TrainabilityReport.from_proto(response.report)

    def publish_version(self, dataset: str, name: str = "", train_ratio: str | None = None, seed: int = 0, *, timeout: float | None = None) -> types.DatasetVersion:
        """Publish a version; ``train_ratio`` None means 0.8, any text (even "") is checked by the server (S3)."""
        request = ds.PublishVersionRequest(dataset_id=dataset, version_name=name, seed=seed)
        if train_ratio is not None:
            request.train_ratio = train_ratio
        return types.DatasetVersion.from_proto(self._call(self._datasets.PublishVersion, request, timeout, idempotent=False).version)

    def get_version(self, dataset: str, name: str, *, timeout: float | None = None) -> types.DatasetVersion:
        request = ds.GetVersionRequest(dataset_id=dataset, version_name=name)
        return types.DatasetVersion.from_proto(self._call(self._datasets.GetVersion, request, timeout).version)

    def list_versions(self, dataset: str, *, timeout: float | None = None) -> list[types.DatasetVersion]:
        return self._pages(self._datasets.ListVersions, ds.ListVersionsRequest(dataset_id=dataset), "versions",
                           types.DatasetVersion.from_proto, timeout)

    def diff_versions(self, dataset: str, base: str, target: str, *, timeout: float | None = None) -> ds.DiffVersionsResponse:
        request = ds.DiffVersionsRequest(dataset_id=dataset, base_version=base, target_version=target)
        return self._call(self._datasets.DiffVersions, request, timeout)

    def export_manifest(self, dataset: str, version: str, *, timeout: float | None = None) -> bytes:
        request = ds.ExportManifestRequest(dataset_id=dataset, version_name=version)
        return self._call(lambda r, timeout: b"".join(c.chunk for c in self._datasets.ExportManifest(r, timeout=timeout)),
                          request, timeout or max(self.timeout, 600))

    # jobs ------------------------------------------------------------------------
    def create_training_job(
        self,
        dataset: str,
        *,
        dataset_version: str = "",
        new_version_name: str = "",
        train_ratio: str | None = None,
        seed: int = 0,
        incremental_model_version: str = "",
        max_duration_minutes: int = 0,
        preference: str = "",
        flavor: str = "",
        accept_free_terms: bool = False,
        max_epochs: int = 0,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> types.TrainingJob:
        """Create a job; defaults are the source document's (ratio 0.8, 60 minutes, balance, free flavor).

        ``train_ratio`` None leaves it out (0.8); any text given, even "", is checked by the server (S3).
        A request id (generated when not given) makes the call safe to retry.
        """
        request = sc.CreateTrainingJobRequest(
            request_id=request_id or uuid.uuid4().hex, dataset_id=dataset, dataset_version=dataset_version,
            new_version_name=new_version_name, seed=seed,
            incremental_model_version=incremental_model_version, max_duration_minutes=max_duration_minutes,
            preference=common.TrainingPreference.Value("TRAINING_PREFERENCE_" + preference.upper()) if preference else 0,
            flavor_id=flavor, accept_free_terms=accept_free_terms, max_epochs=max_epochs,
        )
        if train_ratio is not None:
            request.train_ratio = train_ratio
        response = self._call(self._scheduler.CreateTrainingJob, request, timeout or max(self.timeout, 300))
        return types.TrainingJob.from_proto(response.training_job)

    def get_job(self, job_id: str, *, timeout: float | None = None) -> types.TrainingJob:
        return types.TrainingJob.from_proto(self._call(self._scheduler.GetTrainingJob, sc.GetTrainingJobRequest(job_id=job_id), timeout).training_job)

    def list_jobs(self, dataset: str = "", *, timeout: float | None = None) -> list[types.TrainingJob]:
        return self._pages(self._scheduler.ListTrainingJobs, sc.ListTrainingJobsRequest(dataset_id=dataset), "training_jobs",
                           types.TrainingJob.from_proto, timeout)

    def cancel_job(self, job_id: str, *, timeout: float | None = None) -> types.TrainingJob:
        response = self._call(self._scheduler.CancelTrainingJob, sc.CancelTrainingJobRequest(job_id=job_id), timeout, idempotent=False)
        return types.TrainingJob.from_proto(response.training_job)

    def watch(self, job_id: str, after_sequence: int = 0, reconnect_seconds: float = 120.0) -> Iterator[types.JobEvent]:
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
                    event = types.JobEvent.from_proto(response.event)
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

    def wait(self, job_id: str) -> types.TrainingJob:
        """Block until the job ends; returns it."""
        for _ in self.watch(job_id):
            pass
        return self.get_job(job_id)

    # flavors, usage and models -----------------------------------------------------
    def list_flavors(self, *, timeout: float | None = None) -> list[types.Flavor]:
        return [types.Flavor.from_proto(f) for f in self._call(self._scheduler.ListFlavors, sc.ListFlavorsRequest(), timeout).flavors]

    def usage(self, *, timeout: float | None = None) -> list:
        return list(self._call(self._scheduler.GetUsage, sc.GetUsageRequest(), timeout).lines)

    def list_model_versions(self, dataset: str, *, timeout: float | None = None) -> list[types.ModelVersion]:
        return self._pages(self._scheduler.ListModelVersions, sc.ListModelVersionsRequest(dataset_id=dataset), "model_versions",
                           types.ModelVersion.from_proto, timeout)

    def best_model_version(self, dataset: str, *, timeout: float | None = None) -> str:
        """The version with the highest macro precision ("" when none): the usual start for incremental training."""
        return self._call(self._scheduler.ListModelVersions, sc.ListModelVersionsRequest(dataset_id=dataset, page_size=1), timeout).best_version

    def get_model_version(self, dataset: str, version: str, *, timeout: float | None = None) -> types.ModelVersion:
        request = sc.GetModelVersionRequest(dataset_id=dataset, version=version)
        return types.ModelVersion.from_proto(self._call(self._scheduler.GetModelVersion, request, timeout).model_version)

    def predict(self, dataset: str, version: str, images: list[bytes], top_k: int = 5, *, timeout: float | None = None) -> list[list[tuple[str, float]]]:
        """Top-k (label, score) for each image, in order; at most 64 images per call."""
        request = sc.PredictRequest(dataset_id=dataset, version=version, images=images, top_k=top_k)
        response = self._call(self._scheduler.Predict, request, timeout or max(self.timeout, 120))
        return [[(s.label, s.score) for s in p.labels] for p in response.predictions]

    def download_artifact(self, dataset: str, version: str, name: str, *, timeout: float | None = None) -> bytes:
        """One artifact of a model version (`trainyard.artifacts.ARTIFACTS`)."""
        request = sc.DownloadModelArtifactRequest(dataset_id=dataset, version=version, name=name)
        return self._call(lambda r, timeout: b"".join(c.chunk for c in self._scheduler.DownloadModelArtifact(r, timeout=timeout)),
                          request, timeout or max(self.timeout, 600))
