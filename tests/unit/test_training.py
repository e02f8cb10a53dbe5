"""The trainer's PyTorch core on real data: scikit-learn's handwritten digits as PNG files.

Runs are tiny (a subset of the digits, one to three epochs) so that the file
takes well under a minute on two CPU cores.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from trainyard.services.trainer import export, presets, training
from trainyard.services.trainer.presets import get_preset
from trainyard.services.trainer.training import Progress, Sample, TrainConfig

CLASSES = [str(d) for d in range(10)]
SUBSET = 700  # digits used by the tests (of 1,797)

# torch 2.14 deprecates TorchScript (torch.jit.save/load) in favour of torch.export; the
# export format is still TorchScript, deliberately, so that plain `torch.jit.load` serves it.
jit_deprecation = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")


def png(pixels: np.ndarray) -> bytes:
    """An 8x8 digit (values 0..16) as a grayscale PNG."""
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255 / 16).round().astype(np.uint8), mode="L").save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digits() -> tuple[list[Sample], dict[str, bytes]]:
    data = load_digits()
    ids = [f"digit-{i:04d}" for i in range(SUBSET)]
    labels = data.target[:SUBSET]
    train_idx, eval_idx = train_test_split(
        np.arange(SUBSET), stratify=labels, random_state=0, test_size=0.2
    )
    samples = [Sample(ids[i], str(labels[i]), "TRAIN") for i in train_idx]
    samples += [Sample(ids[i], str(labels[i]), "EVAL") for i in eval_idx]
    images = {ids[i]: png(data.images[i]) for i in range(SUBSET)}
    return samples, images


@pytest.fixture(scope="module")
def tiny_run(digits) -> tuple[training.TrainResult, list[tuple[float, Progress]]]:
    samples, images = digits
    calls: list[tuple[float, Progress]] = []
    config = TrainConfig(classes=CLASSES, preference="balance", max_epochs=3, seed=1)
    result = training.train(
        samples, images, config, progress=lambda p: calls.append((time.time(), p))
    )
    return result, calls


def eval_part(samples: list[Sample], images: dict[str, bytes]) -> tuple[list[bytes], list[str]]:
    held_out = [s for s in samples if s.usage == "EVAL"]
    return [images[s.image_id] for s in held_out], [s.label for s in held_out]


# --- a tiny run ----------------------------------------------------------------------------


def test_tiny_run_learns_and_keeps_the_best_epoch(tiny_run, digits):
    result, _ = tiny_run
    samples, images = digits
    assert result.arch == "resnet18"
    assert result.resolution == 8  # 8x8 digits are not blown up
    assert result.init == "scratch"
    assert result.stop_reason == "converged"
    assert result.epochs_run == len(result.history) == 3
    assert result.evaluation["accuracy"] > 0.5  # chance is 0.1

    best = max(result.history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    assert result.best_epoch == best["epoch"] == result.checkpoint["epoch"]
    assert result.checkpoint["best_val_accuracy"] == pytest.approx(best["val_accuracy"])
    assert result.evaluation["accuracy"] == pytest.approx(best["val_accuracy"])

    # The checkpoint predicts what the evaluation says.
    blobs, labels = eval_part(samples, images)
    top1 = [ranked[0][0] for ranked in training.predict(result.checkpoint, blobs, top_k=1)]
    assert np.mean([p == t for p, t in zip(top1, labels, strict=True)]) == pytest.approx(
        result.evaluation["accuracy"]
    )


def test_checkpoint_is_plain_and_loads_with_weights_only(tiny_run):
    checkpoint = tiny_run[0].checkpoint
    assert {
        "arch",
        "classes",
        "resolution",
        "state_dict",
        "normalization",
        "epoch",
        "best_val_accuracy",
        "preference",
    } <= checkpoint.keys()
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    model, spec = training.load_model(loaded)
    assert not model.training
    assert spec["classes"] == CLASSES and spec["resolution"] == 8


def test_progress_is_reported_during_and_after_every_epoch(tiny_run):
    result, calls = tiny_run
    progress = [p for _, p in calls]
    training_calls = [p for p in progress if p.epoch > 0]
    assert {p.epoch for p in training_calls} == {1, 2, 3}
    assert [p.step for p in training_calls] == sorted(p.step for p in training_calls)
    ends = [p for p in training_calls if p.step == p.steps_total]
    assert ends and ends[-1].val_accuracy == pytest.approx(result.history[-1]["val_accuracy"])
    assert all(p.device == "cpu" and p.learning_rate > 0 for p in training_calls)
    assert len(training_calls) > 3  # also between epoch ends
    ended_first_epoch = [p for p in training_calls if p.epoch > 1 or p.step == p.steps_total]
    assert all(p.images_per_second > 0 for p in ended_first_epoch)  # reports during evaluation too


def test_history_and_evaluation_are_json(tiny_run):
    result = tiny_run[0]
    json.dumps(result.history)
    json.dumps(result.evaluation)


# --- stopping ---------------------------------------------------------------------------


def test_deadline_ends_the_run_with_a_usable_model(digits):
    samples, images = digits
    deadline = time.time() + 3
    result = training.train(samples, images, TrainConfig(classes=CLASSES, deadline=deadline))
    # The model kept is evaluated within the margin; a loaded machine may stretch the last step.
    assert time.time() <= deadline + 5.0
    assert result.stop_reason == "duration_limit"
    blobs, _ = eval_part(samples, images)
    predictions = training.predict(result.checkpoint, blobs[:4], top_k=3)
    assert [len(p) for p in predictions] == [3, 3, 3, 3]


def test_should_stop_ends_the_run_with_its_reason_and_the_best_epoch(digits):
    samples, images = digits
    epochs_done: list[int] = []

    def progress(p: Progress) -> None:
        if p.val_accuracy is not None and p.step == p.steps_total * p.epoch // p.epochs_total:
            epochs_done.append(p.epoch)

    result = training.train(
        samples,
        images,
        TrainConfig(classes=CLASSES, preference="performance_first", max_epochs=5),
        progress=progress,
        should_stop=lambda: "cancelled" if len(epochs_done) >= 2 else None,
    )
    assert result.stop_reason == "cancelled"
    assert result.epochs_run == 2
    best = max(result.history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    assert result.checkpoint["epoch"] == best["epoch"]
    assert result.evaluation["accuracy"] == pytest.approx(best["val_accuracy"])


def test_a_run_stopped_before_any_step_keeps_its_initial_weights(digits, tiny_run):
    samples, images = digits
    start = tiny_run[0].checkpoint
    result = training.train(
        samples,
        images,
        TrainConfig(classes=CLASSES, init_checkpoint=start),
        should_stop=lambda: "cancelled",
    )
    assert result.stop_reason == "cancelled"
    assert result.epochs_run == 0 and result.best_epoch == 0
    assert result.init == "incremental:same-classes"
    for key, value in start["state_dict"].items():
        assert torch.equal(result.checkpoint["state_dict"][key], value), key


# --- incremental training (S4) ----------------------------------------------------------


def test_a_changed_class_set_keeps_the_head_rows_of_kept_classes(digits, tiny_run):
    samples, images = digits
    start = tiny_run[0].checkpoint
    classes = [
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
        "8",
        "nine",
    ]  # "9" renamed: one dropped, one added
    renamed = [Sample(s.image_id, "nine" if s.label == "9" else s.label, s.usage) for s in samples]
    result = training.train(
        renamed,
        images,
        TrainConfig(classes=classes, init_checkpoint=start),
        should_stop=lambda: "cancelled",
    )
    assert result.init == "incremental:new-head(kept=9,added=1,dropped=1)"
    state = result.checkpoint["state_dict"]
    head, _ = presets.classifier_head(presets.build_model(start["arch"], 10, start["resolution"]))
    for key, value in start["state_dict"].items():
        if not key.startswith(head + "."):
            assert torch.equal(state[key], value), key
    old_weight, new_weight = start["state_dict"][f"{head}.weight"], state[f"{head}.weight"]
    assert torch.equal(new_weight[:9], old_weight[:9])
    assert not torch.equal(new_weight[9], old_weight[9])


def test_incremental_training_starts_from_the_earlier_model(digits, tiny_run):
    samples, images = digits
    start = tiny_run[0]
    subset = [s for s in samples if s.label in {"3", "5", "8"}]
    result = training.train(
        subset,
        images,
        TrainConfig(classes=["3", "5", "8"], max_epochs=1, init_checkpoint=start.checkpoint),
    )
    assert result.init == "incremental:new-head(kept=3,added=0,dropped=7)"
    assert result.arch == start.arch and result.resolution == start.resolution
    assert result.evaluation["accuracy"] > 0.8


def test_incremental_training_reaches_the_parents_accuracy_in_fewer_steps(digits, tiny_run):
    samples, images = digits
    parent = tiny_run[0]
    target = parent.evaluation["accuracy"]
    incremental = training.train(samples, images, TrainConfig(classes=CLASSES, max_epochs=3, seed=2,
                                                              init_checkpoint=parent.checkpoint))
    scratch = training.train(samples, images, TrainConfig(classes=CLASSES, preference="balance", max_epochs=3, seed=2))

    def steps_to_target(result: training.TrainResult) -> float:
        """Optimizer steps until an epoch's validation accuracy reached the parent's (same data, same batches)."""
        steps_per_epoch = len([s for s in samples if s.usage == "TRAIN"]) // get_preset("balance").batch_size
        epoch = next((h["epoch"] for h in result.history if h["val_accuracy"] >= target), math.inf)
        return epoch * steps_per_epoch

    assert steps_to_target(incremental) < steps_to_target(scratch)


# --- serving ----------------------------------------------------------------------------


@jit_deprecation
def test_predict_and_the_torchscript_export_agree(digits, tiny_run):
    samples, images = digits
    checkpoint = tiny_run[0].checkpoint
    blobs, _ = eval_part(samples, images)
    blobs = blobs[:32]
    predicted = training.predict(checkpoint, blobs, top_k=3)
    assert all(len(p) == 3 and p[0][1] >= p[1][1] >= p[2][1] for p in predicted)

    archive, spec = export.export_torchscript(checkpoint)
    extra = {"preprocessing.json": ""}
    scripted = torch.jit.load(io.BytesIO(archive), _extra_files=extra)
    assert json.loads(extra["preprocessing.json"]) == spec
    assert spec["input"]["dtype"] == "uint8" and spec["resolution"] == 8
    x = torch.stack(
        [
            torch.from_numpy(training.decode_image(b, spec["resolution"])).permute(2, 0, 1)
            for b in blobs
        ]
    )
    with torch.no_grad():
        probs = scripted(x)
    assert probs.shape == (32, 10)
    assert torch.allclose(probs.sum(dim=1), torch.ones(32), atol=1e-5)
    for row, ranked in zip(probs, predicted, strict=True):
        values, indices = row.topk(3)
        assert [spec["classes"][i] for i in indices.tolist()] == [name for name, _ in ranked]
        assert values.tolist() == pytest.approx([p for _, p in ranked], abs=1e-5)


@jit_deprecation
def test_the_export_keeps_test_time_augmentation(tiny_run):
    checkpoint = {**tiny_run[0].checkpoint, "tta": True}
    archive, spec = export.export_torchscript(checkpoint)
    assert spec["test_time_augmentation"] is True
    scripted = torch.jit.load(io.BytesIO(archive))
    model, _ = training.load_model(checkpoint)
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-6)


def test_predict_accepts_color_and_large_images(tiny_run):
    rgb = io.BytesIO()
    Image.new("RGB", (300, 200), (200, 10, 10)).save(rgb, format="JPEG")
    loaded = training.load_model(tiny_run[0].checkpoint)
    (ranked,) = training.predict(loaded, [rgb.getvalue()], top_k=10)
    assert sorted(name for name, _ in ranked) == CLASSES
    assert sum(p for _, p in ranked) == pytest.approx(1.0, abs=1e-5)


# --- presets and models -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "preference", "expected"),
    [
        ([(8, 8)] * 5, "balance", 8),  # tiny images stay tiny
        ([(3, 5)] * 5, "accuracy_first", 8),  # never below the preset's floor
        ([(50, 40), (60, 30), (30, 70)], "balance", 64),  # median larger side 60 -> 64
        ([(640, 480)] * 3, "balance", 224),  # capped by the preset
        ([(640, 480)] * 3, "performance_first", 128),
    ],
)
def test_resolution_follows_the_data(sizes, preference, expected):
    assert presets.choose_resolution(sizes, presets.get_preset(preference)) == expected


@pytest.mark.parametrize("arch", sorted(presets.ARCHITECTURES))
@pytest.mark.parametrize("resolution", [8, 32, 96])
def test_models_keep_small_inputs_usable(arch, resolution):
    model = presets.build_model(arch, 7, resolution).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, resolution, resolution))
    assert logits.shape == (2, 7)
    _, head = presets.classifier_head(model)
    assert head.out_features == 7


def test_every_preference_has_a_preset():
    assert set(presets.PRESETS) == {"performance_first", "balance", "accuracy_first"}
    with pytest.raises(Exception, match="preference"):
        presets.get_preset("fastest")


def test_bad_samples_are_refused_with_the_field_named(digits):
    samples, images = digits
    with pytest.raises(Exception, match="samples"):
        training.train(
            [Sample("x", "cat", "TRAIN"), *samples], images, TrainConfig(classes=CLASSES)
        )
    with pytest.raises(Exception, match="samples"):
        training.train(
            [s for s in samples if s.usage == "TRAIN"], images, TrainConfig(classes=CLASSES)
        )


def test_the_learning_rate_warms_up_then_decays():
    rates = [training.learning_rate(step, 100, 1.0, 0.1) for step in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:], strict=False))
    assert rates[-1] < 0.05


def test_a_dataset_over_the_cache_budget_is_decoded_per_batch(digits):
    samples, images = digits
    fetched: list[str] = []

    def load(sample: Sample) -> bytes:
        fetched.append(sample.image_id)
        return images[sample.image_id]

    config = TrainConfig(classes=CLASSES, preference="performance_first", max_epochs=2, seed=3, max_cache_bytes=1024)
    result = training.train(samples, load, config)
    assert result.pipeline == "streamed"
    assert len(fetched) > 2 * len(samples)  # decoded again on every pass, not cached
    assert result.evaluation["accuracy"] > 0.3  # it still learns (10 classes: chance is 0.1)
    assert sum(c["support"] for c in result.evaluation["classes"]) == sum(s.usage == "EVAL" for s in samples)


def test_the_cache_goes_to_the_gpu_only_when_it_takes_a_quarter_of_its_free_memory_at_most(monkeypatch):
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (40 * gib, 141 * gib))
    gpu = torch.device("cuda", 0)
    assert training.cache_on_gpu(10 * gib, gpu)
    assert not training.cache_on_gpu(10 * gib + 1, gpu)
    assert not training.cache_on_gpu(1024, torch.device("cpu"))  # a CPU run keeps it in host memory


def test_a_cpu_run_keeps_its_cache_in_host_memory(digits):
    samples, images = digits
    config = TrainConfig(classes=CLASSES, preference="performance_first", max_epochs=1, seed=3)
    assert training.train(samples, images, config).pipeline == "cached"


def test_a_gpu_batch_grows_only_while_memory_and_steps_per_epoch_allow():
    mib = 2**20
    # plenty of memory and images: the growth stops at its cap
    assert training.batch_growth(64, 1_000_000, 100 * mib, 80_000 * mib) == training.MAX_BATCH_GROWTH
    # few images: the preset's batch, so an epoch keeps its MIN_STEPS_PER_EPOCH steps
    assert training.batch_growth(64, 64 * training.MIN_STEPS_PER_EPOCH * 2 - 1, 100 * mib, 80_000 * mib) == 1
    assert training.batch_growth(64, 64 * training.MIN_STEPS_PER_EPOCH * 2, 100 * mib, 80_000 * mib) == 2
    # memory: a step of 1 GiB with 9 GiB free may double twice (4 GiB <= half of 9), not three times
    assert training.batch_growth(64, 1_000_000, 1024 * mib, 9 * 1024 * mib) == 4
    assert training.batch_growth(64, 1_000_000, 1024 * mib, 1024 * mib) == 1


def test_the_gpu_batch_trial_step_measures_on_a_copy_and_leaves_the_network_untouched(monkeypatch):
    """The CUDA memory calls are faked (no GPU here); the trial step itself runs for real."""
    mib = 2**20
    allocated = iter([1000 * mib])  # before the trial; the peak below is 100 MiB more
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (900 * mib, 80_000 * mib))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: next(allocated))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 1100 * mib)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    net = presets.build_model("mobilenet_v3_small", 3, 32)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    growth = training._gpu_batch_growth(net, 4, 4 * training.MIN_STEPS_PER_EPOCH * 8, 32, torch.device("cpu"),
                                        contextlib.nullcontext)
    assert growth == 4  # 100 MiB a step, 900 MiB free: 4x takes 400 MiB, within half; 8x would not be
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # weights and BN statistics
    assert all(p.grad is None for p in net.parameters())
    assert training._gpu_batch_growth(net, 4, 10, 32, torch.device("cpu"), contextlib.nullcontext) == 1  # too few images
