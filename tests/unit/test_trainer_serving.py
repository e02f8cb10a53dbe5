"""The trainer runtime's serving and progress: the model cache, cross-request batching,
the per-request image limit, and progress while a job downloads and uploads.

One tiny model (digits, performance_first, one epoch) is trained once through the
runtime itself, on an in-memory object store whose writes are slow, so the same run
also shows progress coming while the artifacts are written; it is served right after.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from tests.unit.memory_objects import MemoryObjects
from trainyard.errors import InvalidArgument, NotFound
from trainyard.services.dataset.manifest import ManifestEntry, manifest_lines
from trainyard.services.trainer import runtime, training
from trainyard.services.trainer.runtime import JobEvent, MicroBatcher, ModelCache, TrainerRuntime

PREFIX = "models/d/job-1/"
CLASSES = [str(d) for d in range(10)]
MAX_GAP = 2.0  # seconds: the longest a running job may go without an event (issue 5)

# torch 2.14 deprecates TorchScript; the runtime's export is still TorchScript on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")


def digit_pngs(count: int) -> list[tuple[str, bytes]]:
    """The first ``count`` 8x8 digits as (label, PNG)."""
    data = load_digits()
    out = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.fromarray((data.images[i] * 255 / 16).round().astype(np.uint8), mode="L").save(buffer, format="PNG")
        out.append((str(data.target[i]), buffer.getvalue()))
    return out


def add_dataset(objects: MemoryObjects, digits: list[tuple[str, bytes]]) -> None:
    entries = []
    for i, (label, blob) in enumerate(digits):
        objects.objects[f"images/{i}"] = blob
        image_id = hashlib.sha256(f"{i}".encode()).hexdigest()
        entries.append(ManifestEntry(image_id, f"images/{i}", label, "EVAL" if i % 4 == 0 else "TRAIN"))
    objects.objects["manifest.jsonl"] = manifest_lines(entries, bucket="b", created=datetime.now(UTC))


def spec(job_id: str = "job-1") -> runtime.JobSpec:
    return runtime.JobSpec(
        job_id=job_id, dataset_id="d", dataset_version="V001", manifest_key="manifest.jsonl",
        preference="performance_first", seed=0, deadline=time.time() + 600, deadline_reason="DURATION_LIMIT",
        init_artifact_prefix="", artifact_prefix=f"models/d/{job_id}/", max_epochs=1,
    )


def largest_gap(events: list[JobEvent]) -> float:
    times = [e.time for e in events]
    return max(b - a for a, b in zip(times, times[1:], strict=False))


@pytest.fixture(scope="module")
def trained() -> tuple[MemoryObjects, list[JobEvent], list[bytes]]:
    """A tiny model trained through the runtime; every artifact write takes 0.3 s."""
    digits = digit_pngs(200)
    objects = MemoryObjects(write_delay=0.3)
    add_dataset(objects, digits)
    trainer = TrainerRuntime(objects, device="cpu")  # type: ignore[arg-type]
    events = list(trainer.run(spec()))
    assert events[-1].kind == "outcome" and events[-1].body["stopReason"] == "STOP_REASON_CONVERGED", events[-1].body
    objects.write_delay = 0.0
    return objects, events, [blob for _, blob in digits]


@pytest.fixture
def trainer(trained):
    objects, _, _ = trained
    served = TrainerRuntime(objects, device="cpu")  # type: ignore[arg-type]
    yield served
    served.close()


def in_threads(count: int, call: Callable[[int], object]) -> list[object]:
    """``call(i)`` in ``count`` threads released together; their results (or exceptions) in order."""
    barrier, results = threading.Barrier(count), [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def same(a: list[list[tuple[str, float]]], b: list[list[tuple[str, float]]]) -> bool:
    return all(
        [label for label, _ in x] == [label for label, _ in y]
        and np.allclose([s for _, s in x], [s for _, s in y], atol=1e-5)
        for x, y in zip(a, b, strict=True)
    )


# --- progress -----------------------------------------------------------------------------


def test_progress_comes_while_the_artifacts_are_exported_and_uploaded(trained):
    _, events, _ = trained
    start = next(i for i, e in enumerate(events) if e.kind == "log" and "writing its artifacts" in e.body["message"])
    writing = events[start:]
    beats = [e for e in writing if e.kind == "progress"]
    assert len(beats) >= 3  # 7 writes of 0.3 s, and the export
    assert largest_gap(writing) <= MAX_GAP
    assert all(b.body["epoch"] == 1 and b.body["eta"] == "0.000s" and b.body["device"] == "cpu" for b in beats)


def test_progress_never_pauses_for_more_than_two_seconds_from_the_first_event_to_the_outcome(trained):
    """Download, decoding, model build, the first steps, evaluations, export and upload: all covered."""
    _, events, _ = trained
    beats = [e for e in events if e.kind in ("progress", "outcome")]
    assert beats[0] is next(e for e in events if e.kind == "progress")
    assert largest_gap(beats) <= MAX_GAP


def test_progress_comes_at_least_every_second_while_the_images_download(monkeypatch):
    monkeypatch.setattr(runtime, "FETCH_LOG_INTERVAL_SECONDS", 1.0)
    # 120 images, 8 reads at a time, 0.2 s each: 3 s of downloading. One class only, so
    # training fails at once after the download (the test is about the download).
    objects = MemoryObjects(read_delay=0.2)
    add_dataset(objects, [("7", blob) for _, blob in digit_pngs(120)])
    trainer = TrainerRuntime(objects, device="cpu")  # type: ignore[arg-type]
    events = list(trainer.run(spec("slow-fetch")))
    assert events[-1].kind == "outcome" and "2 distinct class names" in events[-1].body["errorMessage"]
    assert largest_gap(events) <= MAX_GAP
    loading = [e.body for e in events if e.kind == "progress"]
    assert len(loading) >= 3
    assert all(b["epoch"] == 0 and b["epochsTotal"] == 1 and b["device"] == "cpu" for b in loading)
    assert loading[-1]["imagesPerSecond"] > 0 and float(loading[-1]["eta"].removesuffix("s")) < 3
    fetched = [e.body["message"] for e in events if e.kind == "log" and e.body["message"].startswith("fetched")]
    assert fetched and fetched[-1].endswith("of 120 images")


# --- serving ------------------------------------------------------------------------------


def test_metrics_json_records_the_batch_and_learning_rate_trained_with(trained):
    objects, _, _ = trained
    metrics = json.loads(objects.objects[PREFIX + "metrics.json"])
    hyperparameters = metrics["hyperparameters"]
    assert hyperparameters["arch"] == metrics["architecture"] and hyperparameters["world_size"] == 1
    assert hyperparameters["batch_size"] == 64 and hyperparameters["lr"] == training.get_preset("performance_first").lr
    assert metrics["pipeline"] == "cached"


def test_a_model_serves_as_soon_as_its_job_ends(trainer, trained):
    objects, _, blobs = trained
    predictions = trainer.predict(PREFIX, blobs[:3], top_k=3)
    assert [len(p) for p in predictions] == [3, 3, 3]
    for ranked in predictions:
        scores = [score for _, score in ranked]
        assert scores == sorted(scores, reverse=True) and all(label in CLASSES for label, _ in ranked)
    checkpoint = torch.load(io.BytesIO(objects.objects[PREFIX + "checkpoint.pt"]), weights_only=True)
    assert same(predictions, training.predict(checkpoint, blobs[:3], top_k=3))
    assert [len(p) for p in trainer.predict(PREFIX, blobs[:1], top_k=0)] == [5]  # 0 means 5


def test_concurrent_predicts_run_as_fewer_batches_and_answer_as_alone(trainer, trained, monkeypatch):
    _, _, blobs = trained
    alone = [trainer.predict(PREFIX, [blobs[i]], top_k=3) for i in range(8)]
    batches: list[int] = []
    forward = training.probabilities

    def counting(model, x, **kwargs):
        batches.append(len(x))
        return forward(model, x, **kwargs)

    monkeypatch.setattr(training, "probabilities", counting)
    together = in_threads(8, lambda i: trainer.predict(PREFIX, [blobs[i]], top_k=3))
    assert all(same(t, a) for t, a in zip(together, alone, strict=True)), together  # type: ignore[arg-type]
    assert sum(batches) == 8 and len(batches) < 8, batches


def test_concurrent_first_requests_load_the_model_once(trained, monkeypatch):
    objects, _, blobs = trained
    loads = []
    load = training.load_model

    def slow_load(checkpoint, *args, **kwargs):
        loads.append(1)
        time.sleep(0.3)  # wide enough for every request to miss
        return load(checkpoint, *args, **kwargs)

    monkeypatch.setattr(training, "load_model", slow_load)
    reads_before = objects.reads[PREFIX + "checkpoint.pt"]
    trainer = TrainerRuntime(objects, device="cpu")  # type: ignore[arg-type]
    try:
        results = in_threads(8, lambda i: trainer.predict(PREFIX, [blobs[0]], top_k=2))
    finally:
        trainer.close()
    assert not [r for r in results if isinstance(r, Exception)], results
    assert len(loads) == 1 and objects.reads[PREFIX + "checkpoint.pt"] == reads_before + 1
    assert all(same(r, results[0]) for r in results)  # batched with others or not: equal up to float rounding


def test_the_least_recently_used_model_is_evicted_beyond_the_bound(trained, monkeypatch):
    objects, _, blobs = trained
    for job in ("a", "b", "c"):
        objects.objects[f"models/d/{job}/checkpoint.pt"] = objects.objects[PREFIX + "checkpoint.pt"]
    loaded: list[str] = []
    load = training.load_model
    monkeypatch.setattr(training, "load_model", lambda c, *a, **k: loaded.append("x") or load(c, *a, **k))
    trainer = TrainerRuntime(objects, device="cpu", model_cache_size=2)  # type: ignore[arg-type]
    try:
        for job in ("a", "b", "a", "c"):  # "a" used again before "c" comes: "b" goes
            trainer.predict(f"models/d/{job}/", blobs[:1], top_k=1)
        assert trainer.loaded_models() == ["models/d/a/", "models/d/c/"] and len(loaded) == 3
        trainer.predict("models/d/b/", blobs[:1], top_k=1)  # loaded again
        assert trainer.loaded_models() == ["models/d/c/", "models/d/b/"] and len(loaded) == 4
    finally:
        trainer.close()
    assert trainer.loaded_models() == []


def test_the_trainer_limits_the_images_of_one_request(trainer, trained):
    _, _, blobs = trained
    assert len(trainer.predict(PREFIX, blobs[:64], top_k=1)) == 64
    with pytest.raises(InvalidArgument, match="65 images; at most 64 per request") as error:
        trainer.predict(PREFIX, blobs[:65], top_k=1)
    assert error.value.violations[0].field == "images"
    with pytest.raises(InvalidArgument, match="at least one image"):
        trainer.predict(PREFIX, [], top_k=1)


def test_an_undecodable_image_is_named_and_fails_its_request_only(trainer, trained):
    _, _, blobs = trained
    with pytest.raises(InvalidArgument) as error:
        trainer.predict(PREFIX, [blobs[0], b"not an image"], top_k=1)
    assert error.value.violations[0].field == "images[1]"
    assert len(trainer.predict(PREFIX, [blobs[0]], top_k=1)) == 1
    with pytest.raises(NotFound):
        trainer.predict("models/d/missing/", [blobs[0]], top_k=1)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(("make", "reason"), [
    # 12 kB of PNG that would decode to 10,000 x 10,000 pixels (300 MB as RGB)
    (lambda: encoded(Image.new("1", (10_000, 10_000)), "PNG", optimize=True),
     "the image is 10000 × 10000 = 100,000,000 pixels; the limit is 89,478,485 pixels (TRAINYARD_MAX_IMAGE_PIXELS)"),
    (lambda: encoded(Image.new("RGB", (8, 8)), "GIF"), "GIF images are not accepted; use JPEG, PNG, BMP or WebP"),
    (lambda: encoded(Image.new("RGB", (8, 8)), "TIFF"), "TIFF images are not accepted; use JPEG, PNG, BMP or WebP"),
    (lambda: b"", "the file is empty"),
])
def test_an_image_refused_from_its_header_is_never_decoded(trained, make, reason):
    """What uploads refuse, Predict refuses too, from the header: no pixel decoded, no model loaded."""
    _, _, blobs = trained
    served = TrainerRuntime(trained[0], device="cpu")  # type: ignore[arg-type]
    try:
        with pytest.raises(InvalidArgument) as error:
            served.predict(PREFIX, [blobs[0], make()], top_k=1)
        assert (error.value.violations[0].field, error.value.violations[0].description) == ("images[1]", reason)
        assert served.loaded_models() == []
    finally:
        served.close()


def test_the_pixel_limit_of_predict_is_the_trainers_setting(trained):
    objects, _, blobs = trained
    served = TrainerRuntime(objects, device="cpu", max_image_pixels=63)  # type: ignore[arg-type]
    try:
        with pytest.raises(InvalidArgument, match="8 × 8 = 64 pixels; the limit is 63 pixels"):
            served.predict(PREFIX, [blobs[0]], top_k=1)
    finally:
        served.close()


def test_a_truncated_image_is_named_with_its_reason(trainer, trained):
    _, _, blobs = trained
    noise = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    photo = encoded(Image.fromarray(noise), "JPEG")
    with pytest.raises(InvalidArgument) as error:  # the header is whole, the data stops half-way
        trainer.predict(PREFIX, [blobs[0], photo[: len(photo) // 2]], top_k=1)
    violation = error.value.violations[0]
    assert violation.field == "images[1]" and violation.description.startswith("the image data is truncated or corrupt (")
    assert "BytesIO" not in violation.description


# --- the pieces: batcher and cache, with fakes ---------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    give_up = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < give_up, "timed out"
        time.sleep(0.005)


def queued_behind_a_running_forward(max_images: int) -> list[int]:
    """A batcher whose first forward (one image) is held while requests of 1, 2, ..., 7 images
    queue behind it; then released. Checks that every request got its own rows back (the forward
    adds 1) and returns the image count of each forward."""
    calls: list[int] = []
    first_running, release = threading.Event(), threading.Event()

    def forward(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        if len(calls) == 1:
            first_running.set()
            release.wait(10)
        return x + 1

    batcher = MicroBatcher(forward, window=0.001, max_images=max_images)
    results: dict[int, torch.Tensor] = {}

    def ask(i: int) -> None:
        results[i] = batcher.run(lambda: torch.full((max(i, 1), 1), float(i)))

    threads = [threading.Thread(target=ask, args=(0,))]
    threads[0].start()
    first_running.wait(10)
    threads += [threading.Thread(target=ask, args=(i,)) for i in range(1, 8)]
    for t in threads[1:]:
        t.start()
    wait_until(lambda: batcher.queued() == 7)
    release.set()
    for t in threads:
        t.join(10)
    batcher.close()
    assert batcher.join(5)
    assert all(torch.equal(results[i], torch.full((max(i, 1), 1), i + 1.0)) for i in range(8))
    return calls


def test_requests_queued_during_a_forward_go_together_into_the_next_one():
    calls = queued_behind_a_running_forward(max_images=64)
    assert calls == [1, sum(range(1, 8))]


def test_a_batch_never_takes_more_than_its_image_limit():
    calls = queued_behind_a_running_forward(max_images=8)
    waiting = calls[1:]  # 1 + 2 + ... + 7 = 28 images queued while the first batch ran
    assert sum(waiting) == 28 and all(n <= 8 for n in waiting) and len(waiting) >= 4, calls


def test_a_lone_request_does_not_wait_for_the_window():
    batcher = MicroBatcher(lambda x: x, window=5.0)
    started = time.monotonic()
    batcher.run(lambda: torch.zeros(1, 1))
    assert time.monotonic() - started < 1.0  # no other request on its way: no wait
    batcher.close()


def test_a_failed_forward_fails_every_request_of_its_batch_and_the_worker_goes_on():
    failing = threading.Event()
    failing.set()

    def forward(x: torch.Tensor) -> torch.Tensor:
        if failing.is_set():
            raise RuntimeError("out of memory")
        return x

    batcher = MicroBatcher(forward, window=0.2)
    results = in_threads(4, lambda i: batcher.run(lambda: torch.zeros(1, 1)))
    assert all(isinstance(r, RuntimeError) and "out of memory" in str(r) for r in results)
    failing.clear()
    assert batcher.run(lambda: torch.ones(1, 1)).item() == 1.0
    batcher.close()


def test_closing_answers_what_is_queued_and_never_hangs():
    running, release = threading.Event(), threading.Event()

    def forward(x: torch.Tensor) -> torch.Tensor:
        running.set()
        release.wait(10)
        return x

    batcher = MicroBatcher(forward, window=0.001)
    answers: list[torch.Tensor] = []
    threads = [threading.Thread(target=lambda: answers.append(batcher.run(lambda: torch.ones(1, 1))))
               for _ in range(3)]
    threads[0].start()
    running.wait(10)
    for t in threads[1:]:
        t.start()
    wait_until(lambda: batcher.queued() == 2)  # one in the forward, two queued
    batcher.close()
    release.set()
    for t in threads:
        t.join(10)
    assert len(answers) == 3 and batcher.join(5)
    assert batcher.run(lambda: torch.ones(2, 1)).shape == (2, 1)  # after close: in the caller's thread


def test_the_cache_loads_once_shares_a_failure_and_evicts_the_least_recently_used():
    loads: Counter[str] = Counter()
    closed: list[str] = []
    gate = threading.Event()

    def load(key: str) -> str:
        loads[key] += 1
        gate.wait(10)
        if key == "bad" and loads[key] == 1:
            raise NotFound("no checkpoint")
        return key.upper()

    cache = ModelCache(load, size=2, close=closed.append)
    threading.Timer(0.2, gate.set).start()  # every request misses while the first load runs
    assert in_threads(6, lambda i: cache.get("a")) == ["A"] * 6 and loads["a"] == 1
    gate.clear()
    threading.Timer(0.2, gate.set).start()
    failures = in_threads(3, lambda i: cache.get("bad"))
    assert all(isinstance(f, NotFound) for f in failures) and loads["bad"] == 1
    assert cache.get("bad") == "BAD" and loads["bad"] == 2  # a failure is not kept
    cache.get("a")
    cache.get("c")  # "bad" is the least recently used
    assert cache.keys() == ["a", "c"] and closed == ["BAD"]
    with pytest.raises(ValueError):
        ModelCache(load, size=0)


def test_the_model_cache_bound_comes_from_the_environment():
    from trainyard.services.trainer.server import TrainerConfig

    s3 = {"TRAINYARD_S3_ENDPOINT": "127.0.0.1:9000", "TRAINYARD_S3_ACCESS_KEY": "k", "TRAINYARD_S3_SECRET_KEY": "s",
          "TRAINYARD_INTERNAL_TOKEN": "t" * 32}
    assert TrainerConfig.from_env(s3).model_cache_size == runtime.MODEL_CACHE_SIZE
    assert TrainerConfig.from_env({**s3, "TRAINYARD_TRAINER_MODEL_CACHE": "9"}).model_cache_size == 9
    with pytest.raises(SystemExit, match="TRAINYARD_TRAINER_MODEL_CACHE=0: at least 1 model"):
        TrainerConfig.from_env({**s3, "TRAINYARD_TRAINER_MODEL_CACHE": "0"})
    assert TrainerConfig.from_env({**s3, "TRAINYARD_TRAINER_FLAVORS": " free-gpu , compute-gpu-1,"}).flavors == (
        "free-gpu", "compute-gpu-1")
    with pytest.raises(SystemExit, match="TRAINYARD_TRAINER_SLOTS=0: a trainer runs at least 1 job"):
        TrainerConfig.from_env({**s3, "TRAINYARD_TRAINER_SLOTS": "0"})
    with pytest.raises(SystemExit, match="TRAINYARD_TRAINER_FLAVORS is empty"):
        TrainerConfig.from_env({**s3, "TRAINYARD_TRAINER_FLAVORS": " , "})


def test_closing_the_runtime_waits_for_its_batching_threads(trained):
    """A process that exits while a batching thread still runs a forward aborts (SIGABRT)."""
    objects, _, blobs = trained
    served = TrainerRuntime(objects, device="cpu")  # type: ignore[arg-type]
    served.predict(PREFIX, blobs[:4], top_k=1)
    threads = [t for t in threading.enumerate() if t.name == f"batcher {PREFIX}"]
    assert threads
    served.close()
    assert not any(t.is_alive() for t in threads)
