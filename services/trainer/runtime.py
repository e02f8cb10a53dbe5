"""The trainer's runtime: runs jobs in threads, keeps their event logs, serves predictions.

A job id runs at most once per trainer process: a second RunTraining for the same
id attaches to the running (or finished) job and replays its events, which is how
the scheduler re-attaches after its own restart. Training reads the version's
manifest and images straight from the object store (the data plane) and writes
its artifacts there.

Serving keeps the models of recently used versions loaded (a bounded LRU, each model
loaded once however many requests miss at the same time) and runs concurrent
Predict calls of one version through the model as one batch.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import structlog
import torch

from trainyard import images as images_check
from trainyard.artifacts import ARTIFACTS, MAX_PREDICT_IMAGES
from trainyard.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from trainyard.objectstore import ObjectStore
from trainyard.services.dataset.manifest import parse_manifest
from trainyard.services.trainer import distributed, export, presets, training, weights
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

    # what weights.materialise_pretrained reads (weights.WeightsStore)
    def list_modified(self, prefix: str = "") -> list[tuple[str, float]]:
        return self._patiently(f"listing {prefix}", lambda: self.objects.list_modified(prefix))

    def size(self, key: str) -> int:
        return self._patiently(f"reading {key}", lambda: self.objects.size(key))

    def get_file(self, key: str, path: str | Path) -> None:
        self._patiently(f"reading {key}", lambda: self.objects.get_file(key, path))

PROGRESS_INTERVAL_SECONDS = 1.0
FETCH_LOG_INTERVAL_SECONDS = 10.0  # a "fetched N of M images" log line while the images download
FINISHED_JOBS_KEPT = 64  # ended jobs whose events stay in memory for re-attaching schedulers
MODEL_CACHE_SIZE = 4  # loaded models kept per trainer (least recently used evicted)
BATCH_WINDOW_SECONDS = 0.005  # how long a forward batch waits for requests still on their way
BATCH_MAX_IMAGES = 64  # a batch stops gathering requests once it holds this many images
BATCHER_CLOSE_SECONDS = 10.0  # at shutdown, how long to wait for a model's batching thread to end


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
    on_outcome: Callable[[dict[str, Any]], None] = lambda body: None  # told once, when the job ends

    def emit(self, kind: str, body: dict[str, Any]) -> None:
        with self.changed:
            self.events.append(JobEvent(len(self.events) + 1, time.time(), kind, body))
            if kind == "outcome":
                self.done = True
            self.changed.notify_all()
        if kind == "outcome":
            self.on_outcome(body)


class TrainerRuntime:
    def __init__(self, objects: ObjectStore, slots: int = 1, device: str | None = None,
                 model_cache_size: int = MODEL_CACHE_SIZE, ddp_processes: int = 1,
                 batch_window_seconds: float = BATCH_WINDOW_SECONDS,
                 max_image_pixels: int = images_check.DEFAULT_MAX_PIXELS) -> None:
        self.objects = objects
        self.max_image_pixels = max_image_pixels  # of an image sent to predict
        self.slots = slots
        self.device = device
        # Processes per job: one per GPU (DDP) on a multi-GPU trainer, else 1 (in this process).
        self.ddp_processes = ddp_processes
        self._jobs: dict[str, JobRun] = {}
        self._finished: Counter[str] = Counter()  # jobs ended, by stop reason (for metrics)
        self._finished_lock = threading.Lock()
        self._lock = threading.Lock()
        self._batch_window = batch_window_seconds
        self._models: ModelCache[ServedModel] = ModelCache(self._load_served, model_cache_size, ServedModel.close)

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
                job = JobRun(spec, on_outcome=self.count_finished)
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
            loading = _LoadingProgress(job, len(entries), _planned_epochs(spec), self.device_description)
            with _heartbeat(loading.beat):  # the download can take minutes: progress (epoch 0) every second
                images = _fetch_images(objects, entries, on_image=loading.fetched)
                init_checkpoint = None
                if spec.init_artifact_prefix:
                    init_checkpoint = _load_checkpoint(objects.get_bytes(spec.init_artifact_prefix + "checkpoint.pt"))
                pretrained = None  # incremental training starts from its checkpoint instead
                if init_checkpoint is None:  # the store's pretrained/ weights, copied to local disk once
                    pretrained = weights.materialise_pretrained(objects, presets.get_preset(spec.preference).arch)
            classes = sorted({s.label for s in samples})
            job.emit("log", {"level": "info", "message": f"{len(samples)} images, {len(classes)} classes; training on {self.device_description}"})
            last_progress = [0.0]
            latest: list[training.Progress | None] = [None]
            reporting = threading.Lock()  # training's reports and the keep-alive go out in order, never older after newer

            def progress(p: training.Progress) -> None:
                with reporting:
                    latest[0] = p
                    now = time.time()
                    epoch_end = p.steps_total > 0 and p.step == p.steps_total
                    if now - last_progress[0] >= PROGRESS_INTERVAL_SECONDS or epoch_end:
                        last_progress[0] = now
                        job.emit("progress", _progress_body(p))

            def keep_alive() -> None:  # covers training's silent stretches: model build, first kernels
                with reporting:
                    if time.time() - last_progress[0] < PROGRESS_INTERVAL_SECONDS:
                        return
                    last_progress[0] = time.time()
                    if latest[0] is None:
                        loading.beat()
                    else:
                        job.emit("progress", _progress_body(latest[0]))

            config = training.TrainConfig(
                classes=classes, preference=spec.preference, deadline=spec.deadline, seed=spec.seed,
                device=self.device, max_epochs=spec.max_epochs or None, init_checkpoint=init_checkpoint,
                pretrained_path=str(pretrained.path) if pretrained else None,
                pretrained_source=pretrained.source if pretrained else "",
                shares_device=self.slots > 1,
            )

            with _heartbeat(keep_alive):
                if self.ddp_processes > 1:  # rank 0's progress and result come back here; artifacts are written once
                    result = distributed.spawn_train(samples, images, config, self.ddp_processes, progress=progress,
                                                     should_stop=lambda: job.stop_reason).result
                else:
                    result = training.train(samples, images, config, progress=progress,
                                            should_stop=lambda: job.stop_reason, ddp=distributed.SINGLE)
            reason = {"converged": "CONVERGED", "duration_limit": spec.deadline_reason}.get(result.stop_reason, result.stop_reason)
            job.emit("log", {"level": "info", "message": f"exporting the model and writing its artifacts to {spec.artifact_prefix}"})
            final = replace(latest[0] or _idle_progress(result), eta_seconds=0.0)
            with _heartbeat(lambda: job.emit("progress", _progress_body(final))):  # the last state, repeated
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

    def count_finished(self, outcome: dict[str, Any]) -> None:
        """Count a job that ended (JobRun.on_outcome)."""
        with self._finished_lock:
            self._finished[str(outcome.get("stopReason", "STOP_REASON_UNSPECIFIED"))] += 1

    def finished_jobs(self) -> Counter[str]:
        """Jobs ended since this process started, by stop reason ("STOP_REASON_…"): a true count,
        unlike jobs(), which keeps only the most recent ended ones."""
        with self._finished_lock:
            return Counter(self._finished)

    # serving ---------------------------------------------------------------------
    def predict(self, artifact_prefix: str, images: list[bytes], top_k: int) -> list[list[tuple[str, float]]]:
        """The top-k (label, probability) pairs of each image; batched with concurrent calls."""
        _check_prefix(artifact_prefix)
        if not images:
            raise InvalidArgument.field("images", "at least one image is required")
        if len(images) > MAX_PREDICT_IMAGES:
            raise InvalidArgument.field("images", f"{len(images)} images; at most {MAX_PREDICT_IMAGES} per request")
        for index, blob in enumerate(images):  # the format and the pixel count, before any decoding
            try:
                images_check.check_header(blob, max_pixels=self.max_image_pixels)
            except images_check.InvalidImage as exc:
                raise InvalidArgument.field(f"images[{index}]", _reason(exc)) from None
        served = self._models.get(artifact_prefix)
        classes = served.classes
        k = top_k or min(5, len(classes))
        if not 1 <= k <= len(classes):
            raise InvalidArgument.field("top_k", f"must be 1 to {len(classes)} (the number of classes)")
        return served.predict(images, k)

    def loaded_models(self) -> list[str]:
        """The artifact prefixes of the models in the cache, least recently used first."""
        return self._models.keys()

    def close(self) -> None:
        """Unload every model and stop its batching thread (requests already queued are answered),
        waiting for the threads: a process that exits while one still runs a forward aborts."""
        for served in self._models.clear():
            if not served.batcher.join(BATCHER_CLOSE_SECONDS):
                log.warning("serving.batcher_still_running", thread=served.batcher.thread_name, seconds=BATCHER_CLOSE_SECONDS)

    def artifact(self, artifact_prefix: str, name: str, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        """One artifact's bytes, in chunks."""
        if name not in ARTIFACTS:
            raise InvalidArgument.field("name", f"{name!r} is not an artifact; one of {', '.join(ARTIFACTS)}")
        _check_prefix(artifact_prefix)
        data = self.objects.get_bytes(artifact_prefix + name)
        for start in range(0, len(data), chunk_bytes):
            yield data[start:start + chunk_bytes]

    def _load_served(self, artifact_prefix: str) -> ServedModel:
        model, spec = training.load_model(_load_checkpoint(self.objects.get_bytes(artifact_prefix + "checkpoint.pt")))
        device = next(model.parameters()).device
        batcher = MicroBatcher(lambda x: training.probabilities(model, x, device=device),
                               window=self._batch_window, name=artifact_prefix)
        return ServedModel(model, spec, batcher)


# serving: the model cache and the batcher ----------------------------------------

V = TypeVar("V")


class ModelCache(Generic[V]):
    """Loaded models by artifact prefix: a bounded LRU.

    A miss loads the model once however many requests ask for it meanwhile: the first
    loads (outside the lock, so hits and other versions are not held up) and the others
    wait for its result. A failed load is not kept; every waiter gets its error. Beyond
    `size` models the least recently used is evicted and `close`d.
    """

    def __init__(self, load: Callable[[str], V], size: int, close: Callable[[V], None] = lambda value: None) -> None:
        if size < 1:
            raise ValueError(f"a model cache holds at least 1 model, not {size}")
        self._load, self._size, self._close = load, size, close
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, V] = OrderedDict()
        self._loading: dict[str, Future[V]] = {}

    def get(self, key: str) -> V:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            loading = self._loading.get(key)
            if loading is not None:
                waiting = True
            else:
                waiting, loading = False, Future()
                self._loading[key] = loading
        if waiting:
            return loading.result()
        try:
            value = self._load(key)
        except BaseException as exc:  # every waiter gets the error; the next request tries again
            with self._lock:
                del self._loading[key]
            loading.set_exception(exc)
            raise
        with self._lock:
            del self._loading[key]
            self._entries[key] = value
            evicted = []
            while len(self._entries) > self._size:
                evicted.append(self._entries.popitem(last=False)[1])
        loading.set_result(value)
        for old in evicted:
            self._close(old)
        return value

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> list[V]:
        """Close and forget every loaded model; the models closed."""
        with self._lock:
            values = list(self._entries.values())
            self._entries.clear()
        for value in values:
            self._close(value)
        return values


@dataclass
class _Request:
    images: torch.Tensor  # uint8 NCHW
    answer: Future[torch.Tensor] = field(default_factory=Future)


class MicroBatcher:
    """Runs the images of concurrent requests through one model as one forward batch.

    A worker thread takes the first queued request, gathers the requests that follow
    within `window` seconds — without waiting at all when no other request is on its
    way — up to `max_images` images, runs `forward` once on all of them and hands each
    request its rows. An error fails every request of that batch; the worker carries
    on. After `close` the queued requests are still answered, then the worker ends;
    later requests run `forward` in their own thread.
    """

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], window: float = BATCH_WINDOW_SECONDS,
                 max_images: int = BATCH_MAX_IMAGES, name: str = "") -> None:
        self.forward, self.window, self.max_images = forward, window, max_images
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._arriving = 0  # requests preparing their images (decoding), about to be queued
        self._closed = False
        self._worker = threading.Thread(target=self._work, name=f"batcher {name}", daemon=True)
        self._worker.start()

    def run(self, prepare: Callable[[], torch.Tensor]) -> torch.Tensor:
        """`forward` of the images `prepare` returns, batched with other requests' images."""
        with self._lock:
            self._arriving += 1
        try:
            images = prepare()
        except BaseException:
            with self._lock:
                self._arriving -= 1
            raise
        request = _Request(images)
        with self._lock:  # queued under the lock: never behind the stop marker
            self._arriving -= 1
            closed = self._closed
            if not closed:
                self._queue.put(request)
        return self.forward(images) if closed else request.answer.result()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)

    @property
    def thread_name(self) -> str:
        return self._worker.name

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker to end (after `close`); whether it has."""
        self._worker.join(timeout)
        return not self._worker.is_alive()

    def queued(self) -> int:
        """Requests waiting for the worker."""
        return self._queue.qsize()

    def _work(self) -> None:
        held: _Request | None = None  # taken from the queue but left out of a full batch: it starts the next
        while True:
            first = held if held is not None else self._queue.get()
            if first is None:
                return
            batch, held, stop = self._gather(first)
            self._run(batch)
            if stop:
                return

    def _gather(self, first: _Request) -> tuple[list[_Request], _Request | None, bool]:
        """A batch of at most max_images images (or the one larger request it starts with), the request
        that did not fit, and whether the stop marker came."""
        batch, count = [first], len(first.images)
        give_up = time.monotonic() + self.window
        while count < self.max_images:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                remaining = give_up - time.monotonic()
                if self._arriving == 0 or remaining <= 0:
                    break
                try:
                    request = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if request is None:
                return batch, None, True
            if count + len(request.images) > self.max_images:
                return batch, request, False
            batch.append(request)
            count += len(request.images)
        return batch, None, False

    def _run(self, batch: list[_Request]) -> None:
        try:
            images = batch[0].images if len(batch) == 1 else torch.cat([r.images for r in batch])
            output = self.forward(images)
        except BaseException as exc:  # every request of the batch gets the error; the worker lives on
            for request in batch:
                request.answer.set_exception(exc)
            return
        start = 0
        for request in batch:
            request.answer.set_result(output[start:start + len(request.images)])
            start += len(request.images)


@dataclass
class ServedModel:
    """A loaded model version: its network, its preprocessing and its batcher."""

    model: training.InferenceModel
    spec: dict[str, Any]  # training.preprocessing_spec
    batcher: MicroBatcher

    @property
    def classes(self) -> list[str]:
        return self.spec["classes"]

    def predict(self, images: list[bytes], top_k: int) -> list[list[tuple[str, float]]]:
        probs = self.batcher.run(lambda: _decode(images, self.spec["resolution"]))
        return training.ranked(probs, self.classes, top_k)

    def close(self) -> None:
        self.batcher.close()


def _decode(images: list[bytes], resolution: int) -> torch.Tensor:
    """A request's images (their headers checked) as one uint8 batch; INVALID_ARGUMENT naming
    the first one whose data is corrupt."""
    try:
        return training.decode_images(images, lambda blob: blob, resolution)
    except Exception:
        for index, blob in enumerate(images):
            try:
                training.decode_image(blob, resolution)
            except Exception as exc:  # decoders of untrusted bytes raise many types
                raise InvalidArgument.field(f"images[{index}]", f"the image data is truncated or corrupt ({exc})") from None
        raise


def _reason(invalid: images_check.InvalidImage) -> str:
    """Why an image sent to predict is refused, naming the setting when it was the pixel limit."""
    return f"{invalid.reason} (TRAINYARD_MAX_IMAGE_PIXELS)" if invalid.over_pixel_limit else invalid.reason


# training: loading and progress -----------------------------------------------------


def _fetch_images(objects: PatientObjects, entries, on_image: Callable[[], None] = lambda: None) -> dict[str, bytes]:
    def fetch(entry) -> bytes:
        data = objects.get_bytes(entry.object_key)
        on_image()
        return data

    with ThreadPoolExecutor(max_workers=8) as pool:
        data = list(pool.map(fetch, entries))
    return {e.image_id: d for e, d in zip(entries, data, strict=True)}


@contextmanager
def _heartbeat(beat: Callable[[], None], interval: float = PROGRESS_INTERVAL_SECONDS) -> Iterator[None]:
    """Call `beat` now and every `interval` seconds, from a thread, while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                beat()
            except Exception:  # a failed report must not end the job
                log.exception("training.heartbeat_failed")
            if stop.wait(interval):
                return

    thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class _LoadingProgress:
    """Progress of the loading phase (epoch 0) while a job downloads its images."""

    def __init__(self, job: JobRun, total: int, epochs_total: int, device: str) -> None:
        self.job, self.total, self.epochs_total, self.device = job, total, epochs_total, device
        self.done = 0
        self._lock = threading.Lock()
        self._started = time.time()
        self._logged = self._started

    def fetched(self) -> None:
        with self._lock:
            self.done += 1

    def beat(self) -> None:
        done, elapsed = self.done, time.time() - self._started
        self.job.emit("progress", _progress_body(training.Progress(
            epoch=0, epochs_total=self.epochs_total, step=0, steps_total=0, loss=0.0, train_accuracy=0.0,
            val_accuracy=None, learning_rate=0.0, images_per_second=done / elapsed if elapsed > 0 else 0.0,
            eta_seconds=elapsed * (self.total - done) / max(1, done), device=self.device,
        )))
        if time.time() - self._logged >= FETCH_LOG_INTERVAL_SECONDS:
            self._logged = time.time()
            self.job.emit("log", {"level": "info", "message": f"fetched {done} of {self.total} images"})


def _planned_epochs(spec: JobSpec) -> int:
    epochs = presets.get_preset(spec.preference).epochs
    return min(epochs, spec.max_epochs) if spec.max_epochs else epochs


def _idle_progress(result: training.TrainResult) -> training.Progress:
    """What progress reads when training reported none (stopped before its first step)."""
    return training.Progress(
        epoch=result.epochs_run, epochs_total=result.epochs_run, step=0, steps_total=0, loss=0.0,
        train_accuracy=0.0, val_accuracy=None, learning_rate=0.0, images_per_second=0.0, eta_seconds=0.0,
        device=result.device,
    )


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
        "hyperparameters": result.checkpoint["hyperparameters"],  # the batch and learning rate as trained
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
