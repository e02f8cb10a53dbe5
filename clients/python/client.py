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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc

from trainyard.auth import CallCredentials
from trainyard.common.v1 import training_pb2 as common
from trainyard.dataset.v1 import dataset_service_pb2 as ds
from trainyard.dataset.v1 import dataset_service_pb2_grpc as ds_grpc
from trainyard.errors import FieldViolation, InvalidArgument, Unavailable
from trainyard.rpc import channel, domain_error
from trainyard.scheduler.v1 import scheduler_service_pb2 as sc
from trainyard.scheduler.v1 import scheduler_service_pb2_grpc as sc_grpc
from trainyard.sdk import types
from trainyard.tls import ClientTls

CHUNK_BYTES = 1 << 20
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
UPLOAD_BATCH = 500  # files per upload stream (the server takes at most 5,000)
T = TypeVar("T")


class ManifestError(InvalidArgument):
    """A local manifest that cannot be read: the message names the file and the line.

    Raised before anything is sent, so nothing of the manifest is imported."""

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        where = f"{path}, line {line}" if line else str(path)
        super().__init__(f"{where}: {problem}", [FieldViolation(f"line {line}" if line else "manifest", problem)])
        self.path = path
        self.line = line


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """The records of an ExeML/ModelArts manifest: JSON Lines (one object a line, the format
    versions are exported in) or, in any file, one JSON array of such objects.

    Each record needs a `source` (a path relative to the manifest, or s3://bucket/key); its
    first `annotation`'s `name` is the label. Raises ManifestError naming the first bad line.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ManifestError(path, None, f"cannot be read: {exc.strerror or exc}") from None
    entries: list[tuple[str, int, Any]] = []  # (where: "line" or "item", its number, the record)
    if text.lstrip().startswith("["):  # one JSON array, pretty-printed or not
        try:
            items = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ManifestError(path, getattr(exc, "lineno", None), f"not valid JSON ({getattr(exc, 'msg', exc)})") from None
        entries = [("item", number, item) for number, item in enumerate(items, start=1)]
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    entries.append(("line", number, json.loads(line)))
                except (ValueError, RecursionError) as exc:
                    raise ManifestError(path, number, f"not valid JSON ({getattr(exc, 'msg', exc)}); a manifest holds "
                                                      "one JSON object a line, or one JSON array of objects") from None
    for where, number, record in entries:
        line = number if where == "line" else None
        prefix = f"item {number} of the array " if where == "item" else ""
        if not isinstance(record, dict):
            raise ManifestError(path, line, f"{prefix}is {type(record).__name__}, not an object with a source")
        source = record.get("source")
        if not isinstance(source, str) or not source.strip():
            raise ManifestError(path, line, f"{prefix}has no source (the image's path, or its s3:// address)")
        annotations = record.get("annotation") or []
        if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
            raise ManifestError(path, line, f"{prefix}has an annotation that is not a list of objects")
    return [record for _, _, record in entries]


def manifest_label(record: dict[str, Any]) -> str:
    """The label of a manifest record: its first annotation's name ("" when none)."""
    names = [str(a.get("name") or "") for a in record.get("annotation") or []]
    return names[0] if names else ""


def image_files(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """The image files under a folder (by suffix: IMAGE_SUFFIXES), sorted, and the other files."""
    root = Path(folder)
    images, others = [], []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            (images if p.suffix.lower() in IMAGE_SUFFIXES else others).append(p)
    return images, others


def zip_image_names(archive: zipfile.ZipFile) -> tuple[list[str], list[str]]:
    """The image entries of a zip (by suffix), sorted, and its other file entries."""
    images, others = [], []
    for name in sorted(n for n in archive.namelist() if not n.endswith("/")):
        (images if Path(name).suffix.lower() in IMAGE_SUFFIXES else others).append(name)
    return images, others


def _unreadable(exc: BaseException) -> str:
    """Why a local file could not be sent, for people."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, OSError):
        return f"cannot read the file: {exc.strerror or exc}"
    return f"cannot read the file: {exc or type(exc).__name__}"


class ConnectionSettingsError(ValueError):
    """The local stack's stack.json cannot be used: the message names the file and what is wrong."""


STACK_FILE_FIELDS = ("dataset", "scheduler", "api_key_file", "tls_ca", "tls_client_cert", "tls_client_key")


def _stack_info(path: Path) -> dict[str, Any]:
    """The local stack's stack.json ({} when there is none); ConnectionSettingsError when it is not one."""
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ConnectionSettingsError(f"{path} is not valid JSON ({getattr(exc, 'msg', exc)}); it describes the local "
                                      "stack: start `trainyard dev up` again, or remove the file") from None
    except OSError as exc:
        raise ConnectionSettingsError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if not isinstance(info, dict):
        raise ConnectionSettingsError(f"{path} holds a JSON {type(info).__name__}, not an object with the local stack's "
                                      "addresses: start `trainyard dev up` again, or remove the file")
    for name in STACK_FILE_FIELDS:
        if info.get(name) is not None and not isinstance(info[name], str):
            raise ConnectionSettingsError(f"{path}: {name!r} is a JSON {type(info[name]).__name__}, not a string")
    return info


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
        local stack started in TRAINYARD_DATA_DIR (default .trainyard), else the defaults.

        Raises ConnectionSettingsError, naming the file, when that stack.json is not valid."""
        env = os.environ
        info = _stack_info(Path(env.get("TRAINYARD_DATA_DIR", ".trainyard")) / "stack.json")
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



class _StreamEnded(Exception):
    """A watch stream that ended cleanly before the job's final event."""

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

    def upload_files(self, dataset: str, files: list[tuple[str, str, Callable[[], bytes]]], *,
                     timeout: float | None = None) -> types.UploadSummary:
        """Upload (file_name, label, read) triples in one stream, reading each file as it is sent.

        A file that cannot be read (missing, unreadable) is reported as rejected with the
        reason, by the client, and the other files go on. Results are in the order given;
        each result's `label` is the label it was sent with.
        """
        unreadable: dict[int, str] = {}

        def readable() -> Iterator[tuple[str, str, bytes]]:
            # gRPC runs this in its request thread, where an exception ends the whole stream
            # ("Exception iterating requests!"): any error reading one file rejects that file
            # (OSError, a zip entry's bad CRC or corrupt deflate/bzip2/lzma data: zlib.error,
            # EOFError, lzma.LZMAError, encryption: RuntimeError, …)
            for index, (file_name, label, read) in enumerate(files):
                try:
                    data = read()
                except Exception as exc:  # any: see above
                    unreadable[index] = _unreadable(exc)
                    continue
                yield file_name, label, data

        sent = self.upload_images(dataset, readable(), timeout=timeout)
        answered = iter(sent.results)
        results = []
        for index, (file_name, label, _) in enumerate(files):
            if index in unreadable:
                results.append(types.UploadResult(file_name, "rejected", "", unreadable[index], label))
            else:
                result = next(answered, None)
                if result is not None:
                    results.append(replace(result, label=label))
        results += list(answered)
        return types.UploadSummary(results, sent.stored, sent.duplicates, sent.rejected + len(unreadable))

    def upload_folder(self, dataset: str, folder: str | Path, batch: int = UPLOAD_BATCH,
                      on_batch: Callable[[types.UploadSummary, int, int], None] = lambda summary, done, total: None) -> list[types.UploadSummary]:
        """Upload a folder of <label>/<image> files (images directly in the folder stay unlabeled).

        Image files are those with an image suffix (`image_files`); a file that cannot be read
        is rejected by itself. One upload stream per `batch` files; `on_batch(summary, done, total)`
        after each."""
        root = Path(folder)
        paths, _ = image_files(root)
        summaries = []
        for start in range(0, len(paths), batch):
            chunk = paths[start:start + batch]
            summary = self.upload_files(dataset, [(str(p.relative_to(root)), p.parent.name if p.parent != root else "",
                                                   p.read_bytes) for p in chunk])
            summaries.append(summary)
            on_batch(summary, start + len(chunk), len(paths))
        return summaries

    def upload_zip(self, dataset: str, path: str | Path, batch: int = UPLOAD_BATCH,
                   on_batch: Callable[[types.UploadSummary, int, int], None] = lambda summary, done, total: None) -> list[types.UploadSummary]:
        """Upload a zip of <label>/<image> entries (entries at the top level stay unlabeled); an entry
        that cannot be read (a bad CRC, encrypted) is rejected by itself."""
        with zipfile.ZipFile(path) as archive:
            names, _ = zip_image_names(archive)
            summaries = []
            for start in range(0, len(names), batch):
                chunk = names[start:start + batch]
                summary = self.upload_files(dataset, [(n, Path(n).parent.name if len(Path(n).parts) > 1 else "",
                                                       lambda n=n: archive.read(n)) for n in chunk])
                summaries.append(summary)
                on_batch(summary, start + len(chunk), len(names))
            return summaries

    def import_manifest(self, dataset: str, manifest: str | Path, batch: int = UPLOAD_BATCH,
                        on_batch: Callable[[types.UploadSummary, int, int], None] = lambda summary, done, total: None) -> list[types.UploadSummary]:
        """Import an ExeML/ModelArts manifest (`read_manifest`: JSON Lines, or a JSON array).

        Sources that are objects in the deployment's bucket (s3://…) are imported by
        the server; sources that are local paths (relative to the manifest) are uploaded,
        and one that is missing or unreadable is rejected by itself. A malformed manifest
        raises ManifestError before anything is sent. `batch` records per request.
        """
        path = Path(manifest)
        records = read_manifest(path)
        remote = [r for r in records if "://" in r["source"]]
        local = [r for r in records if "://" not in r["source"]]
        summaries = []
        done = 0
        for start in range(0, len(remote), batch):
            chunk = remote[start:start + batch]
            content = "\n".join(json.dumps(r, ensure_ascii=False) for r in chunk).encode()
            request = ds.ImportManifestRequest(dataset_id=dataset, manifest_content=content)
            summary = types.UploadSummary.from_proto(self._call(self._datasets.ImportManifest, request, max(self.timeout, 600)))
            labels = {r["source"]: manifest_label(r) for r in chunk}
            summary = replace(summary, results=[replace(r, label=labels.get(r.file_name, "")) for r in summary.results])
            summaries.append(summary)
            done += len(chunk)
            on_batch(summary, done, len(records))
        for start in range(0, len(local), batch):
            chunk = local[start:start + batch]
            summary = self.upload_files(dataset, [(r["source"], manifest_label(r), (path.parent / r["source"]).read_bytes)
                                                  for r in chunk])
            summaries.append(summary)
            done += len(chunk)
            on_batch(summary, done, len(records))
        return summaries

    def list_images(self, dataset: str, label: str = "", unlabeled_only: bool = False, *, timeout: float | None = None) -> list[types.Image]:
        """The dataset's images, all of them or those of one label, or only the unlabeled ones."""
        request = ds.ListImagesRequest(dataset_id=dataset, label=label, unlabeled_only=unlabeled_only)
        return self._pages(self._datasets.ListImages, request, "images", types.Image.from_proto, timeout)

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
        """The job's events from after_sequence to the final one (none when after_sequence is an
        ended job's last sequence: the scheduler ends the stream at once).

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
                if self._ended_at(job_id, sequence):
                    return  # the job had ended at `sequence`: nothing follows
                raise _StreamEnded  # ended early (a proxy, say): as good as a drop
            except (grpc.RpcError, _StreamEnded) as exc:
                if isinstance(exc, grpc.RpcError) and exc.code() not in (
                        grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                    raise domain_error(exc) from None
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > reconnect_seconds:
                    if isinstance(exc, _StreamEnded):
                        raise Unavailable(f"the watch of job {job_id} kept ending before its final event") from None
                    raise domain_error(exc) from None
                time.sleep(0.5)

    def _ended_at(self, job_id: str, sequence: int) -> bool:
        """Whether the job has ended and `sequence` is its last event (a watch from there is empty)."""
        try:
            job = self.get_job(job_id)
        except Unavailable:
            return False  # the scheduler went away meanwhile: reconnect as after a drop
        return job.final and sequence >= job.last_sequence

    def wait(self, job_id: str) -> types.TrainingJob:
        """Block until the job ends; returns it. A job that has ended is returned at once (the
        events of jobs that ended long ago are pruned: watching them from the start would fail)."""
        job = self.get_job(job_id)
        if job.final:
            return job
        for _ in self.watch(job_id, job.last_sequence):
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
