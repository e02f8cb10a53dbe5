"""The trainer's runtime: runs jobs in threads, keeps their event logs, serves predictions.

A job id runs at most once per trainer process: a second RunTraining for the same
id attaches to the running (or finished) job and replays its events, which is how
the scheduler re-attaches after its own restart. Training reads the version's
manifest and images straight from the object store (the data plane) and writes
its artifacts there.
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog
import torch

from trainyard.artifacts import ARTIFACTS
from trainyard.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from trainyard.objectstore import ObjectStore
from trainyard.services.dataset.manifest import parse_manifest
from trainyard.services.trainer import distributed, export, training
from trainyard.services.trainer import evaluation as evaluation_mod

log = structlog.get_logger(__name__)

OBJECT_STORE_PATIENCE_SECONDS = 120.0  # a job waits this long for an unreachable object store


class PatientObjects:
    """A job's view of the object store: calls retried with backoff while the store is unreachable.

    A job reads its data at the start and writes its artifacts at the end; an object
    store that is down for a moment (a restart, a network blip) must not throw away
    a finished training run. Each retry is reported to the job's watchers.
    """

    def __init__(self, objects: ObjectStore, on_retry: Callable[[str], None],
                 patience: float = OBJECT_STORE_PATIENCE_SECONDS, sleep: Callable[[float], None] = time.sleep) -> None:
        self.objects, self.on_retry, self.patience, self.sleep = objects, on_retry, patience, sleep

    def _patiently(self, what: str, call: Callable[[], Any]) -> Any:
        give_up = time.monotonic() + self.patience
        delay = 0.5
        while True:
            try:
                return call()
            except Unavailable as exc:
                if time.monotonic() + delay > give_up:
                    raise
                self.on_retry(f"object store unreachable while {what} ({exc.message}); retrying in {delay:g} s")
                self.sleep(delay)
                delay = min(delay * 2, 10.0)

    def get_bytes(self, key: str) -> bytes:
        return self._patiently(f"reading {key}", lambda: self.objects.get_bytes(key))

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._patiently(f"writing {key}", lambda: self.objects.put_bytes(key, data, content_type))

    def put_json(self, key: str, obj: Any) -> None:
        self._patiently(f"writing {key}", lambda: self.objects.put_json(key, obj))

PROGRESS_INTERVAL_SECONDS = 1.0
FINISHED_JOBS_KEPT = 64  # ended jobs whose events stay in memory for re-attaching schedulers


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    dataset_id: str
    dataset_version: str
    manifest_key: str
    preference: str  # "performance_first" | "balance" | "accuracy_first"
    seed: int
    deadline: float
    deadline_reason: str  # reported when the deadline ends training
    init_artifact_prefix: str
    artifact_prefix: str
    max_epochs: int


@dataclass
class JobEvent:
    sequence: int
    time: float
    kind: str  # "progress" | "log" | "outcome"
    body: dict[str, Any]


@dataclass
class JobRun:
    spec: JobSpec
    events: list[JobEvent] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    stop_reason: str | None = None
    done: bool = False

    def emit(self, kind: str, body: dict[str, Any]) -> None:
        with self.changed:
            self.events.append(JobEvent(len(self.events) + 1, time.time(), kind, body))
            if kind == "outcome":
                self.done = True
            self.changed.notify_all()


class TrainerRuntime:
    def __init__(self, objects: ObjectStore, slots: int = 1, device: str | None = None, model_cache_size: int = 4,
                 ddp_processes: int = 1) -> None:
        self.objects = objects
        self.slots = slots
        self.device = device
        # Processes per job: one per GPU (DDP) on a multi-GPU trainer, else 1 (in this process).
        self.ddp_processes = ddp_processes
        self._jobs: dict[str, JobRun] = {}
        self._lock = threading.Lock()
        self._models: OrderedDict[str, tuple] = OrderedDict()
        self._models_lock = threading.Lock()
        self._model_cache_size = model_cache_size

    def jobs(self) -> list[JobRun]:
        """A snapshot of the jobs this process has run or runs (for metrics)."""
        with self._lock:
            return list(self._jobs.values())

    @property
    def device_description(self) -> str:
        if (self.device or "").startswith("cuda") or (self.device is None and torch.cuda.is_available()):
            base = f"cuda ({torch.cuda.get_device_name(0)})"
        else:
            base = "cpu"
        return f"DDP {self.ddp_processes} x {base}" if self.ddp_processes > 1 else base

    # training --------------------------------------------------------------------
    def run(self, spec: JobSpec, after_sequence: int = 0, attach_only: bool = False,
            is_active: Callable[[], bool] = lambda: True) -> Iterator[JobEvent]:
        """Start the job unless known, then stream its events after `after_sequence` until the outcome."""
        with self._lock:
            job = self._jobs.get(spec.job_id)
            if job is None:
                if attach_only:
                    raise NotFound(f"this trainer does not know job {spec.job_id}")
                _check_spec(spec)
                running = sum(1 for j in self._jobs.values() if not j.done)
                if running >= self.slots:
                    raise ResourceExhausted(f"all {self.slots} training slot(s) of this trainer are busy")
                job = JobRun(spec)
                self._forget_old_jobs()
                self._jobs[spec.job_id] = job
                threading.Thread(target=self._train, args=(job,), name=f"train-{spec.job_id}", daemon=True).start()
        sequence = after_sequence
        while is_active():
            with job.changed:
                pending = job.events[sequence:]
                if not pending:
                    if job.done:
                        return
                    job.changed.wait(timeout=1.0)
                    continue
            for event in pending:
                yield event
                sequence = event.sequence
            if job.done and sequence >= len(job.events):
                return

    def _forget_old_jobs(self) -> None:
        """Keep the events of the most recent ended jobs only (the lock is held)."""
        ended = [job_id for job_id, job in self._jobs.items() if job.done]
        for job_id in ended[: max(0, len(ended) - FINISHED_JOBS_KEPT)]:
            del self._jobs[job_id]

    def stop(self, job_id: str, reason: str) -> bool:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"this trainer does not know job {job_id}")
        if job.done:
            return False
        job.stop_reason = reason
        return True

    def _train(self, job: JobRun) -> None:
        spec = job.spec
        bound = log.bind(job_id=spec.job_id)
        started = time.time()

        def retrying(message: str) -> None:
            bound.warning("training.object_store_retry", message=message)
            job.emit("log", {"level": "warning", "message": message})

        objects = PatientObjects(self.objects, retrying)
        try:
            job.emit("log", {"level": "info", "message": f"loading dataset version {spec.dataset_version}"})
            entries = parse_manifest(objects.get_bytes(spec.manifest_key))
            samples = [training.Sample(e.image_id, e.label, e.usage) for e in entries]
            images = _fetch_images(objects, entries)
            classes = sorted({s.label for s in samples})
            init_checkpoint = None
            if spec.init_artifact_prefix:
                init_checkpoint = _load_checkpoint(objects.get_bytes(spec.init_artifact_prefix + "checkpoint.pt"))
            job.emit("log", {"level": "info", "message": f"{len(samples)} images, {len(classes)} classes; training on {self.device_description}"})
            last_progress = [0.0]

            def progress(p: training.Progress) -> None:
                now = time.time()
                epoch_end = p.steps_total > 0 and p.step == p.steps_total
                if now - last_progress[0] >= PROGRESS_INTERVAL_SECONDS or epoch_end:
                    last_progress[0] = now
                    job.emit("progress", _progress_body(p))

            config = training.TrainConfig(
                classes=classes, preference=spec.preference, deadline=spec.deadline, seed=spec.seed,
                device=self.device, max_epochs=spec.max_epochs or None, init_checkpoint=init_checkpoint,
            )
            if self.ddp_processes > 1:  # rank 0's progress and result come back here; artifacts are written once
                result = distributed.spawn_train(samples, images, config, self.ddp_processes, progress=progress,
                                                 should_stop=lambda: job.stop_reason).result
            else:
                result = training.train(samples, images, config, progress=progress,
                                        should_stop=lambda: job.stop_reason, ddp=distributed.SINGLE)
            reason = {"converged": "CONVERGED", "duration_limit": spec.deadline_reason}.get(result.stop_reason, result.stop_reason)
            _write_artifacts(objects, spec, result, samples)
            job.emit("outcome", {
                "stopReason": "STOP_REASON_" + reason, "evaluation": evaluation_body(result.evaluation),
                "artifactPrefix": spec.artifact_prefix, "epochsRun": result.epochs_run, "bestEpoch": result.best_epoch,
                "device": result.device, "initialization": result.init, "imagesPerSecond": result.images_per_second,
                "resolution": result.resolution, "architecture": result.arch,
                "trainingTime": f"{time.time() - started:.3f}s",
            })
            bound.info("training.done", reason=reason, accuracy=result.evaluation.get("accuracy"))
        except Exception as exc:  # any failure ends the job with a reason, never silently
            bound.exception("training.failed")
            job.emit("outcome", {"stopReason": "STOP_REASON_ERROR", "errorMessage": f"{type(exc).__name__}: {exc}",
                                 "trainingTime": f"{time.time() - started:.3f}s"})

    # serving ---------------------------------------------------------------------
    def predict(self, artifact_prefix: str, images: list[bytes], top_k: int) -> list[list[tuple[str, float]]]:
        _check_prefix(artifact_prefix)
        if not images:
            raise InvalidArgument.field("images", "at least one image is required")
        loaded = self._model(artifact_prefix)
        classes = loaded[1]["classes"]
        k = top_k or min(5, len(classes))
        if not 1 <= k <= len(classes):
            raise InvalidArgument.field("top_k", f"must be 1 to {len(classes)} (the number of classes)")
        try:
            return training.predict(loaded, images, top_k=k)
        except Exception as exc:
            raise InvalidArgument.field("images", f"an image could not be decoded: {exc}") from None

    def artifact(self, artifact_prefix: str, name: str, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        """One artifact's bytes, in chunks."""
        if name not in ARTIFACTS:
            raise InvalidArgument.field("name", f"{name!r} is not an artifact; one of {', '.join(ARTIFACTS)}")
        _check_prefix(artifact_prefix)
        data = self.objects.get_bytes(artifact_prefix + name)
        for start in range(0, len(data), chunk_bytes):
            yield data[start:start + chunk_bytes]

    def _model(self, artifact_prefix: str) -> tuple:
        """The loaded model (and its preprocessing) of a version; a bounded LRU cache of them."""
        with self._models_lock:
            if artifact_prefix in self._models:
                self._models.move_to_end(artifact_prefix)
                return self._models[artifact_prefix]
        loaded = training.load_model(_load_checkpoint(self.objects.get_bytes(artifact_prefix + "checkpoint.pt")))
        with self._models_lock:
            self._models[artifact_prefix] = loaded
            while len(self._models) > self._model_cache_size:
                self._models.popitem(last=False)
        return loaded


def _fetch_images(objects: PatientObjects, entries) -> dict[str, bytes]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        data = list(pool.map(lambda e: objects.get_bytes(e.object_key), entries))
    return {e.image_id: d for e, d in zip(entries, data, strict=True)}


def _write_artifacts(objects: PatientObjects, spec: JobSpec, result: training.TrainResult,
                     samples: list[training.Sample]) -> None:
    prefix = spec.artifact_prefix
    buffer = io.BytesIO()
    torch.save(result.checkpoint, buffer)
    objects.put_bytes(prefix + "checkpoint.pt", buffer.getvalue())
    scripted, preprocessing = export.export_torchscript(result.checkpoint)
    objects.put_bytes(prefix + "model.torchscript.pt", scripted)
    objects.put_json(prefix + "preprocessing.json", preprocessing)
    objects.put_json(prefix + "labels.json", result.checkpoint["classes"])
    counts = Counter((s.label, s.usage) for s in samples)
    objects.put_json(prefix + "metrics.json", {
        "evaluation": result.evaluation, "history": result.history, "stop_reason": result.stop_reason,
        "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "device": result.device,
        "architecture": result.arch, "resolution": result.resolution, "initialization": result.init,
        "pipeline": result.pipeline,
        "parameters": asdict(spec), "samples": {f"{label}/{usage}": n for (label, usage), n in sorted(counts.items())},
    })
    objects.put_bytes(prefix + "confusion_matrix.png", evaluation_mod.plot_confusion_matrix(result.evaluation), "image/png")
    objects.put_bytes(prefix + "curves.png", evaluation_mod.plot_curves(result.history), "image/png")


def _check_spec(spec: JobSpec) -> None:
    for name in ("job_id", "manifest_key", "artifact_prefix"):
        if not getattr(spec, name):
            raise InvalidArgument.field(f"spec.{name}", "is required")
    if spec.deadline <= 0:
        raise InvalidArgument.field("spec.deadline", "is required")
    if spec.preference not in ("performance_first", "balance", "accuracy_first"):
        raise FailedPrecondition(f"unknown preference {spec.preference!r}")


def _check_prefix(artifact_prefix: str) -> None:
    """A model's artifact prefix as the scheduler writes it: models/<dataset>/<job>/."""
    parts = artifact_prefix.split("/")
    if len(parts) != 4 or parts[0] != "models" or parts[3] or not all(p and p not in (".", "..") for p in parts[1:3]):
        raise InvalidArgument.field("artifact_prefix", f"{artifact_prefix[:100]!r} is not a model's artifact prefix (models/<dataset>/<job>/)")


def _load_checkpoint(data: bytes) -> dict:
    # weights_only: a checkpoint is tensors and plain values; never unpickle code from the store
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _progress_body(p: training.Progress) -> dict[str, Any]:
    body = {
        "epoch": p.epoch, "epochsTotal": p.epochs_total, "step": str(p.step), "stepsTotal": str(p.steps_total),
        "loss": p.loss, "trainAccuracy": p.train_accuracy, "learningRate": p.learning_rate,
        "imagesPerSecond": p.images_per_second, "eta": f"{max(p.eta_seconds, 0):.3f}s", "device": p.device,
    }
    if p.val_accuracy is not None:
        body["validationAccuracy"] = p.val_accuracy
    return body


def evaluation_body(ev: dict[str, Any]) -> dict[str, Any]:
    """The Evaluation proto-JSON of an evaluation dict (evaluation.evaluate_predictions).

    The full dict (misclassified samples, precision-recall curves) is in metrics.json.
    """
    matrix = ev["confusion_matrix"]
    body: dict[str, Any] = {
        "accuracy": ev["accuracy"],
        "macro": ev["macro"],
        "weighted": ev["weighted"],
        "classes": [
            {"label": c["label"], "precision": c["precision"], "recall": c["recall"], "f1": c["f1"],
             "support": str(c["support"]), "trainCount": str(c["train_count"]), "validationCount": str(c["validation_count"])}
            for c in ev["classes"]
        ],
        "confusionMatrix": {"labels": matrix["labels"], "counts": [str(v) for row in matrix["matrix"] for v in row]},
        "validationSamples": str(ev["validation_samples"]),
    }
    if ev.get("top5_accuracy") is not None:
        body["top5Accuracy"] = ev["top5_accuracy"]
    return body
