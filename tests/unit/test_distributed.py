"""Data-parallel training (DDP) on CPU: two ranks with the gloo backend, on tiny digits.

The path a multi-GPU trainer takes, minus CUDA and NCCL (no GPU here): the
runtime's launcher (``spawn_train``) forks the ranks, each joins the process group
from the environment torchrun would set, trains on its shard with
DistributedDataParallel, and rank 0 reports. The ranks are forked from one
"forkserver" that imports the trainer once per test session, so each run costs a
second or two after the first.
"""

from __future__ import annotations

import hashlib
import io
import time
from datetime import UTC, datetime

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from tests.unit.memory_objects import MemoryObjects
from trainyard.services.dataset.manifest import ManifestEntry, manifest_lines
from trainyard.services.trainer import distributed, runtime, training
from trainyard.services.trainer.distributed import SINGLE, Distributed, DistributedError
from trainyard.services.trainer.training import Progress, Sample, TrainConfig

CLASSES = [str(d) for d in range(10)]
RUN_TIMEOUT = 120  # seconds; a hung rank fails the test instead of the session

# torch 2.14 deprecates TorchScript; the runtime's export is still TorchScript on purpose.
jit_deprecation = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")


def digits(count: int, size: int = 8) -> tuple[list[Sample], dict[str, bytes]]:
    """The first ``count`` digits as PNGs of ``size`` px; every fourth one is EVAL."""
    data = load_digits()
    samples, images = [], {}
    for i in range(count):
        pixels = (data.images[i] * 255 / 16).round().astype(np.uint8)
        image = Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        image_id = hashlib.sha256(buffer.getvalue() + str(i).encode()).hexdigest()
        images[image_id] = buffer.getvalue()
        samples.append(Sample(image_id, str(data.target[i]), "EVAL" if i % 4 == 0 else "TRAIN"))
    return samples, images


@pytest.fixture(scope="module")
def small() -> tuple[list[Sample], dict[str, bytes]]:
    return digits(160)


def config(**overrides) -> TrainConfig:
    return TrainConfig(
        **{"classes": CLASSES, "preference": "balance", "device": "cpu", "seed": 1, **overrides}
    )


# --- the training run across two ranks ---------------------------------------------------


@pytest.mark.timeout(RUN_TIMEOUT)
def test_two_ranks_train_in_step_and_only_rank_0_reports(small):
    samples, images = small
    reports: list[Progress] = []
    # A distant deadline: the epoch plan is revised (and agreed) after the first steps and epochs.
    run = distributed.spawn_train(
        samples,
        images,
        config(max_epochs=3, deadline=time.time() + 600),
        2,
        progress=reports.append,
    )
    result = run.result
    assert result.stop_reason == "converged" and result.epochs_run == 3
    assert run.weight_digests[0] == run.weight_digests[1]  # DDP kept the ranks identical
    assert run.progress_calls[0] == len(reports) > 0 and run.progress_calls[1] == 0
    assert result.device == "DDP 2 x cpu" and all(p.device == "DDP 2 x cpu" for p in reports)
    # Each rank trains on half of the 120 training images: one batch of 60 per epoch.
    assert result.checkpoint["hyperparameters"]["batch_size"] == 60
    assert result.checkpoint["hyperparameters"]["world_size"] == 2
    assert max(p.steps_total for p in reports) == 3
    # Evaluation was sharded and gathered: every validation image has a prediction.
    assert result.evaluation["validation_samples"] == sum(s.usage == "EVAL" for s in samples)
    assert len(result.history) == 3
    assert distributed.weights_digest(result.checkpoint["state_dict"]) == run.weight_digests[0]
    # The result is a usable model.
    blobs = [images[s.image_id] for s in samples[:4]]
    assert [len(p) for p in training.predict(result.checkpoint, blobs, top_k=2)] == [2, 2, 2, 2]


@pytest.mark.timeout(RUN_TIMEOUT)
def test_a_stop_request_ends_every_rank(small):
    samples, images = small
    reports: list[Progress] = []
    started = time.time()
    # Asked of the launcher, forwarded to rank 0 only: rank 1 stops because rank 0 decides.
    run = distributed.spawn_train(
        samples,
        images,
        config(),
        2,
        progress=reports.append,
        should_stop=lambda: "cancelled" if reports else None,
    )
    assert run.result.stop_reason == "cancelled"
    assert run.result.epochs_run < 8  # the preset's schedule did not run out
    assert run.weight_digests[0] == run.weight_digests[1]
    assert time.time() - started < RUN_TIMEOUT


@pytest.mark.timeout(RUN_TIMEOUT)
def test_the_deadline_ends_every_rank():
    # All the digits: 80 steps of 64 per rank, which no CPU runs in 4 seconds. Rank 0's clock
    # decides when to stop; rank 1 follows (its own clock would decide a step later or sooner).
    samples, images = digits(1797)
    deadline = time.time() + 4
    run = distributed.spawn_train(samples, images, config(deadline=deadline), 2)
    assert run.result.stop_reason == "duration_limit"
    assert run.weight_digests[0] == run.weight_digests[1]
    # Kept within the margin; a loaded machine may stretch the last step and the evaluation.
    assert time.time() <= deadline + 10


@pytest.mark.timeout(RUN_TIMEOUT)
def test_a_failing_rank_fails_the_run_without_hanging(small):
    samples, images = small
    with pytest.raises(DistributedError, match=r"rank \d failed: .*samples"):
        distributed.spawn_train([Sample("x", "cat", "TRAIN"), *samples], images, config(), 2)


# --- the runtime: one job, two processes, one set of events and artifacts ------------------


@jit_deprecation
@pytest.mark.timeout(RUN_TIMEOUT)
def test_the_runtime_runs_a_job_on_two_processes(small):
    samples, images = small
    objects = MemoryObjects()
    for s in samples:
        objects.objects[f"images/{s.image_id}"] = images[s.image_id]
    entries = [ManifestEntry(s.image_id, f"images/{s.image_id}", s.label, s.usage) for s in samples]
    objects.objects["manifest.jsonl"] = manifest_lines(
        entries, bucket="b", created=datetime.now(UTC)
    )
    trainer = runtime.TrainerRuntime(objects, device="cpu", ddp_processes=2)  # type: ignore[arg-type]
    assert trainer.device_description == "DDP 2 x cpu"
    spec = runtime.JobSpec(
        job_id="job-1",
        dataset_id="d",
        dataset_version="V001",
        manifest_key="manifest.jsonl",
        preference="performance_first",
        seed=0,
        deadline=time.time() + 600,
        deadline_reason="DURATION_LIMIT",
        init_artifact_prefix="",
        artifact_prefix="models/d/job-1/",
        max_epochs=2,
    )
    events = list(trainer.run(spec))
    outcome = events[-1]
    assert outcome.kind == "outcome", outcome.body
    assert outcome.body["stopReason"] == "STOP_REASON_CONVERGED", outcome.body
    assert outcome.body["device"] == "DDP 2 x cpu" and outcome.body["epochsRun"] == 2
    progress = [e for e in events if e.kind == "progress"]
    assert progress and all(e.body["device"] == "DDP 2 x cpu" for e in progress)
    # Artifacts are written once, by this process, from rank 0's result.
    written = {k: n for k, n in objects.writes.items() if k.startswith("models/")}
    assert written and set(written.values()) == {1}
    assert "models/d/job-1/checkpoint.pt" in written
    checkpoint = torch.load(
        io.BytesIO(objects.objects["models/d/job-1/checkpoint.pt"]), weights_only=True
    )
    assert checkpoint["hyperparameters"]["world_size"] == 2


# --- the pieces, in one process -----------------------------------------------------------


def test_without_torchrun_variables_training_is_a_single_process():
    assert distributed.from_environment("cpu", env={}) is SINGLE
    assert distributed.from_environment("cpu", env={"RANK": "0", "WORLD_SIZE": "1"}) is SINGLE


def test_ddp_is_used_only_with_several_gpus_and_can_be_turned_off():
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 1
    assert distributed.job_world_size(None, 1, env={}) == max(1, gpus)
    assert distributed.job_world_size("cpu", 1, env={}) == 1
    assert distributed.job_world_size("cuda:1", 1, env={}) == 1  # pinned to one GPU
    assert distributed.job_world_size(None, 2, env={}) == 1  # several jobs share the GPUs
    assert distributed.job_world_size(None, 1, env={"TRAINYARD_TRAINER_DDP": "0"}) == 1
    with pytest.raises(SystemExit, match="TRAINYARD_TRAINER_DDP"):
        distributed.job_world_size(None, 1, env={"TRAINYARD_TRAINER_DDP": "yes"})


@pytest.mark.parametrize("count", [1, 3, 7, 64, 65])
@pytest.mark.parametrize("world_size", [2, 3, 8])
def test_shards_split_the_data_between_the_ranks(count, world_size):
    ranks = [Distributed(rank=r, world_size=world_size, active=True) for r in range(world_size)]
    order = torch.randperm(count, generator=torch.Generator().manual_seed(0))
    parts = [d.shard_order(order) for d in ranks]
    # Training: equal shares, never the same image twice in one epoch (unless there are
    # fewer images than ranks), each share as long as samples_per_rank says.
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) == ranks[0].samples_per_rank(count)
    used = torch.cat(parts)
    if count >= world_size:
        assert len(set(used.tolist())) == len(used) > count - world_size
    # Evaluation: contiguous rows that cover the set once, in rank order.
    rows = [d.shard(count) for d in ranks]
    if count >= world_size:
        assert [i for r in rows for i in r] == list(range(count))
    else:  # fewer rows than ranks: every rank takes them all, nothing is gathered
        assert all(r == range(count) for r in rows)


def test_single_is_the_identity():
    order = torch.arange(10)
    assert SINGLE.shard_order(order) is order
    assert SINGLE.shard(10) == range(10) and SINGLE.samples_per_rank(10) == 10
    assert SINGLE.decide(lambda: "x") == "x" and SINGLE.sum([1.0, 2]) == [1.0, 2]
    net = torch.nn.Linear(2, 2)
    assert SINGLE.wrap(net) is net and SINGLE.describe("cpu") == "cpu"


def test_the_weights_digest_sees_every_byte():
    state = {"a": torch.zeros(3), "b": torch.ones(2, dtype=torch.long)}
    changed = {"a": torch.tensor([0.0, 0.0, 1e-30]), "b": state["b"]}
    assert distributed.weights_digest(state) == distributed.weights_digest(dict(state))
    assert distributed.weights_digest(state) != distributed.weights_digest(changed)


def test_the_standalone_entry_point_trains_a_folder(tmp_path):
    samples, images = digits(60)
    for s in samples:
        path = tmp_path / "images" / s.label / f"{s.image_id[:12]}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(images[s.image_id])
    distributed.main(
        [
            str(tmp_path / "images"),
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--max-epochs",
            "1",
            "--preference",
            "performance_first",
        ]
    )
    checkpoint = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)
    assert checkpoint["classes"] == CLASSES and checkpoint["hyperparameters"]["world_size"] == 1
    assert (tmp_path / "out" / "metrics.json").is_file()
