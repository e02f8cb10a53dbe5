"""What runs while a component is killed, and the checks that count what was lost.

The load: an uploader streaming batches of images and a publisher publishing
versions of the same dataset, each recording what the API acknowledged and
which calls failed (with when). The checks read everything back through the
API and straight from the bucket (the documented key layout, docs/object-store.md)
and count losses instead of stopping at the first one, so a round reports all.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from trainyard.errors import TrainyardError
from trainyard.objectstore import ObjectStore
from trainyard.sdk import Client
from trainyard.stack.local import LocalStack

ROUNDS = int(os.environ.get("TRAINYARD_FAULT_ROUNDS", "3"))
SEED = int(os.environ.get("TRAINYARD_FAULT_SEED") or random.SystemRandom().randrange(1_000_000))
CALL_TIMEOUT = 30.0  # a background call never waits longer than this for a dead peer

File = tuple[str, str, bytes]  # (file name, label, bytes), as digit_files() gives them
# The fastest job there is: the small model, one epoch, on 50 digits (a few seconds on 2 idle cores).
JOB = {"accept_free_terms": True, "preference": "performance_first", "max_epochs": 1}


@dataclass
class FaultEnv:
    """What every round works with: one stack, two tenants, the bucket, the jobs' dataset."""

    stack: LocalStack
    client: Client  # tenant `default`: the jobs and their watchers
    tenant2: Client  # another tenant: the uploads and versions
    objects: ObjectStore  # the bucket, read directly
    jobs_dataset: str
    jobs_dataset_images: int
    jobs_version: str  # a version that exists, for the recovery probe
    first_upload: list[File]  # 5 digits per class: enough to publish
    upload_batches: list[list[File]]  # then one more digit per class per batch
    probe_file: File  # never uploaded by the load: the upload tried while S3 is down
    job_seconds: list[float]  # how long recent jobs ran (loading to end): kill moments scale with it

    def job_length(self) -> float:
        """A job's typical run time now (the machine's load changes it)."""
        return statistics.median(self.job_seconds[-5:])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Call:
    """One background call: when it ran (time.monotonic) and how it failed, if it did."""

    started: float
    ended: float
    error: TrainyardError | None = None


@dataclass
class Losses:
    """What one round lost; every count must be 0 and `problems` empty."""

    jobs_lost: int = 0
    events_lost: int = 0
    events_duplicated: int = 0
    versions_corrupted: int = 0
    images_lost: int = 0
    partial_writes: int = 0
    problems: list[str] = field(default_factory=list)

    def count(self, what: str, problem: str, n: int = 1) -> None:
        setattr(self, what, getattr(self, what) + n)
        self.problems.append(f"{what}: {problem}")


class Background(threading.Thread):
    """Repeats `step` with a pause until stopped; keeps every call's timing."""

    pause = 0.5

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.calls: list[Call] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set() and self.step():
            self._stopping.wait(self.pause)

    def step(self) -> bool:
        raise NotImplementedError

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=CALL_TIMEOUT + 5)

    def succeeded_since(self, moment: float) -> bool:
        return any(c.error is None and c.started >= moment for c in list(self.calls))


class Uploader(Background):
    """Uploads `batches` one stream each; a cut batch is not retried, so its fate shows."""

    def __init__(self, client: Client, dataset_id: str, first: list[File], batches: list[list[File]]) -> None:
        super().__init__("uploader")
        self.client, self.dataset_id = client, dataset_id
        self._batches = iter(batches)
        self.sent: dict[str, int] = {}  # image id (SHA-256) -> size of every file ever sent
        self.acknowledged: set[str] = set()  # image ids the API reported stored or duplicate
        self.cut: list[set[str]] = []  # per failed batch: the image ids it alone would have added
        self.upload(first)
        if self.calls[-1].error is not None:
            raise self.calls[-1].error

    def step(self) -> bool:
        batch = next(self._batches, None)
        if batch is not None:
            self.upload(batch)
        return batch is not None

    def upload(self, batch: list[File]) -> None:
        ids = {sha256(data): len(data) for _, _, data in batch}
        new = set(ids) - set(self.sent)
        self.sent |= ids
        call = Call(time.monotonic(), 0.0)
        try:
            summary = self.client.upload_images(self.dataset_id, batch, timeout=CALL_TIMEOUT)
            self.acknowledged |= {r.image_id for r in summary.results if r.status in ("stored", "duplicate")}
        except TrainyardError as exc:
            call.error = exc
            self.cut.append(new)
        call.ended = time.monotonic()
        self.calls.append(call)


class Publisher(Background):
    """Publishes versions of the uploader's dataset; a version counts at least what was acknowledged before."""

    pause = 1.5

    def __init__(self, client: Client, uploader: Uploader) -> None:
        super().__init__("publisher")
        self.client, self.uploader = client, uploader
        self.published: list[tuple[str, int]] = []  # (version name, images acknowledged when the call began)

    def step(self) -> bool:
        floor = len(self.uploader.acknowledged)
        call = Call(time.monotonic(), 0.0)
        try:
            version = self.client.publish_version(self.uploader.dataset_id, timeout=CALL_TIMEOUT)
            self.published.append((version.name, floor))
        except TrainyardError as exc:
            call.error = exc
        call.ended = time.monotonic()
        self.calls.append(call)
        return True


# the checks -------------------------------------------------------------------------
def image_key(dataset_id: str, image_id: str) -> str:
    """Where an image lies in the bucket (docs/object-store.md)."""
    return f"datasets/{dataset_id}/images/{image_id[:2]}/{image_id}"


def check_images(client: Client, objects: ObjectStore, uploader: Uploader, losses: Losses) -> dict[str, str]:
    """Acknowledged images listed, listed images whole in the bucket, cut batches all or nothing.

    Returns the listed images (id -> label) for the version checks.
    """
    dataset_id = uploader.dataset_id
    listed = {image.id: image for image in client.list_images(dataset_id)}
    for image_id in sorted(uploader.acknowledged - set(listed)):
        losses.count("images_lost", f"{dataset_id}: acknowledged image {image_id[:12]} is not listed")
    for image_id, image in listed.items():
        if image_id not in uploader.sent:
            losses.count("partial_writes", f"{dataset_id}: listed image {image_id[:12]} is no file that was sent whole")
            continue
        try:
            data = objects.get_bytes(image_key(dataset_id, image_id))
        except TrainyardError as exc:
            losses.count("images_lost", f"{dataset_id}: listed image {image_id[:12]} unreadable in the bucket: {exc}")
            continue
        if sha256(data) != image_id or len(data) != uploader.sent[image_id] or image.size_bytes != len(data):
            losses.count("images_lost", f"{dataset_id}: listed image {image_id[:12]} has other bytes in the bucket")
    for batch in uploader.cut:
        stored = len(batch & set(listed))
        if 0 < stored < len(batch):
            losses.count("partial_writes", f"{dataset_id}: a cut upload left {stored} of its {len(batch)} images")
    count = client.get_dataset(dataset_id).image_count
    if count != len(listed):
        losses.count("images_lost", f"{dataset_id}: image_count says {count}, {len(listed)} are listed")
    return {image_id: image.label for image_id, image in listed.items()}


def check_versions(client: Client, objects: ObjectStore, dataset_id: str, images: dict[str, str],
                   acknowledged: list[tuple[str, int]], exact_count: int | None, losses: Losses) -> int:
    """Every acknowledged version listed; every listed version complete and consistent. Returns how many."""
    versions = client.list_versions(dataset_id)
    names = {v.name for v in versions}
    for name, _ in acknowledged:
        if name not in names:
            losses.count("versions_corrupted", f"{dataset_id}: acknowledged version {name} is not listed")
    floors = dict(acknowledged)
    for version in versions:
        try:
            problem = _version_problem(client, objects, version, images, floors.get(version.name, 0), exact_count)
        except TrainyardError as exc:
            problem = f"unreadable: {exc}"
        if problem:
            losses.count("versions_corrupted", f"{dataset_id} {version.name}: {problem}")
    return len(versions)


def _version_problem(client, objects, version, images, floor, exact_count) -> str:
    total = version.train_count + version.validation_count
    if client.get_version(version.dataset_id, version.name).content_hash != version.content_hash:
        return "GetVersion and ListVersions disagree"
    manifest = client.export_manifest(version.dataset_id, version.name)
    if sha256(manifest) != version.content_hash:
        return "the exported manifest does not match the content hash"
    if objects.get_bytes(version.manifest_key) != manifest:
        return "the manifest in the bucket differs from the exported one"
    metadata = objects.get_json(version.manifest_key.removesuffix("manifest.jsonl") + "metadata.json")
    counts = {label: {"TRAIN": t, "EVAL": e} for label, (t, e) in version.classes.items()}
    if (metadata["content_hash"], metadata["totals"]["ALL"], metadata["counts"]) != (version.content_hash, total, counts):
        return f"metadata.json disagrees with the API: {metadata['totals']} vs {total}"
    lines = [json.loads(line) for line in manifest.decode().splitlines() if line.strip()]
    usage = Counter((line["annotation"][0]["name"], line["usage"]) for line in lines)
    if len(lines) != total or usage != Counter({(k, u): n for k, c in counts.items() for u, n in c.items() if n}):
        return f"the manifest holds {len(lines)} samples, the version says {total}"
    strays = [line["id"] for line in lines if images.get(line["id"]) != line["annotation"][0]["name"]]
    if strays:
        return f"{len(strays)} samples are not listed images with that label, e.g. {strays[0][:12]}"
    if total < floor:
        return f"{total} samples, but {floor} images were acknowledged before it was published"
    if exact_count is not None and total != exact_count:
        return f"{total} samples, the dataset has {exact_count}"
    return ""


def check_watchers(watchers: list[tuple[threading.Thread, list, list]], last_sequence: int, job_id: str,
                   losses: Losses) -> None:
    """Each watcher saw sequences 1..last_sequence, each once, in order."""
    for thread, events, errors in watchers:
        thread.join(timeout=60)
        if thread.is_alive() or errors:
            losses.problems.append(f"watcher of {job_id} did not end cleanly: {errors or 'still running'}")
        seen = [e.sequence for e in list(events)]
        lost = set(range(1, last_sequence + 1)) - set(seen)
        if lost:
            losses.count("events_lost", f"{job_id}: a watcher missed sequences {sorted(lost)}", len(lost))
        if len(seen) != len(set(seen)):
            losses.count("events_duplicated", f"{job_id}: a watcher saw {len(seen) - len(set(seen))} twice",
                         len(seen) - len(set(seen)))
        elif seen != sorted(seen):
            losses.problems.append(f"{job_id}: a watcher saw events out of order: {seen}")
