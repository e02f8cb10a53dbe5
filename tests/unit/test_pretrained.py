"""Pretrained weights: the local torch hub cache, objects in the store, scratch, broken files.

Every run stops before its first step (``should_stop``), so its checkpoint holds exactly the
weights it started from. The weights files are torchvision's architectures with weights=None,
shifted by a constant so that loaded tensors are recognisable. Nothing may be downloaded:
torch's and torchvision's download functions raise in every test here.

The store tests use the session's real S3 server (tests/conftest.py ``objects``).
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import structlog
import torch
import torchvision
from PIL import Image
from sklearn.datasets import load_digits
from structlog.testing import capture_logs

from trainyard.errors import FailedPrecondition
from trainyard.services.trainer import training, weights
from trainyard.services.trainer.presets import (
    build_model,
    classifier_head,
    pretrained_weights_file,
)
from trainyard.services.trainer.training import Sample, TrainConfig

CLASSES = [str(d) for d in range(10)]
ARCH = {"balance": "resnet18", "performance_first": "mobilenet_v3_small"}


def refuse_download(*args, **kwargs):
    raise AssertionError("a weights download was attempted")


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse_download)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse_download)


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch cache: ``hub/checkpoints`` is where torchvision keeps its files."""
    home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert Path(torch.hub.get_dir()) == home / "hub"
    return home


@pytest.fixture
def init_logs(monkeypatch) -> list[dict]:
    """The "training.init" events logged while the test runs."""
    with capture_logs() as logs:
        # a fresh logger: one cached before capture_logs began would bypass it
        monkeypatch.setattr(training, "log", structlog.get_logger(training.__name__))
        yield logs  # type: ignore[misc]


@pytest.fixture(scope="module")
def digits() -> tuple[list[Sample], dict[str, bytes]]:
    """200 8x8 digits as PNG files: 160 TRAIN, 40 EVAL."""
    data = load_digits()
    samples, images = [], {}
    for i in range(200):
        buffer = io.BytesIO()
        pixels = (data.images[i] * 255 / 16).round().astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        images[f"d{i}"] = buffer.getvalue()
        samples.append(Sample(f"d{i}", str(data.target[i]), "EVAL" if i % 5 == 0 else "TRAIN"))
    return samples, images


def stock_weights(
    arch: str, shift: float = 0.01, num_classes: int = 1000
) -> dict[str, torch.Tensor]:
    """A state dict of torchvision's ``arch``, every float tensor shifted by ``shift``."""
    torch.manual_seed(7)
    net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    return {
        k: v + shift if v.is_floating_point() else v.clone() for k, v in net.state_dict().items()
    }


def saved(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def in_torch_cache(torch_home: Path, arch: str, data: bytes) -> Path:
    path = torch_home / "hub" / "checkpoints" / pretrained_weights_file(arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def start(digits, preference: str, **config) -> training.TrainResult:
    """A run stopped before its first step: its checkpoint holds its initial weights."""
    samples, images = digits
    return training.train(
        samples,
        images,
        TrainConfig(classes=CLASSES, preference=preference, **config),
        should_stop=lambda: "cancelled",
    )


def assert_started_from(result: training.TrainResult, state: dict[str, torch.Tensor]) -> set[str]:
    """Every tensor of the file with the model's shape is the model's, the head excepted;
    returns the keys not taken from the file."""
    assert result.epochs_run == 0 and result.stop_reason == "cancelled"
    head, _ = classifier_head(build_model(result.arch, len(CLASSES), result.resolution))
    kept = set()
    for key, value in result.checkpoint["state_dict"].items():
        if key.startswith(head + ".") or value.shape != state[key].shape:
            kept.add(key)
        else:
            assert torch.equal(value, state[key]), key
    normalization = result.checkpoint["normalization"]
    for name, values in training.IMAGENET_NORMALIZATION.items():
        assert normalization[name] == pytest.approx(values)
    return kept


# --- the torch hub cache ----------------------------------------------------------------


@pytest.mark.parametrize("preference", ["balance", "performance_first"])
def test_weights_in_the_torch_cache_are_the_starting_point(
    preference, digits, torch_home, init_logs
):
    arch = ARCH[preference]
    state = stock_weights(arch)
    path = in_torch_cache(torch_home, arch, saved(state))

    result = start(digits, preference)

    assert result.init == f"pretrained:{path.name}"
    kept = assert_started_from(result, state)
    if arch == "resnet18":  # the small-input stem (3x3, stride 1) and the 10-class head
        assert kept == {"conv1.weight", "fc.weight", "fc.bias"}
    else:  # the small-input stem keeps its kernels' shapes: only the head is fresh
        assert kept == {"classifier.3.weight", "classifier.3.bias"}
    assert [e for e in init_logs if e["event"] == "training.init"] == [
        {
            "event": "training.init",
            "log_level": "info",
            "arch": arch,
            "init": result.init,
            "source": "torch-cache",
            "path": str(path),
        }
    ]


def test_without_weights_training_starts_from_scratch(digits, init_logs):
    result = start(digits, "performance_first")

    assert result.init == "scratch"
    assert result.checkpoint["normalization"]["mean"] != pytest.approx(  # measured on the data
        training.IMAGENET_NORMALIZATION["mean"]
    )
    events = [e for e in init_logs if e["event"] == "training.init"]
    assert [(e["init"], e["source"], e["path"]) for e in events] == [("scratch", "none", None)]


def test_weights_with_another_class_count_still_fit(digits, torch_home):
    state = stock_weights("mobilenet_v3_small", num_classes=37)
    in_torch_cache(torch_home, "mobilenet_v3_small", saved(state))

    result = start(digits, "performance_first")

    assert result.init.startswith("pretrained:")
    assert assert_started_from(result, state) == {"classifier.3.weight", "classifier.3.bias"}


# --- the object store -------------------------------------------------------------------


class CountingStore:
    """The object store, counting the objects copied out of it."""

    def __init__(self, objects) -> None:
        self.objects, self.copied = objects, []

    def list_modified(self, prefix: str = "") -> list[tuple[str, float]]:
        return self.objects.list_modified(prefix)

    def size(self, key: str) -> int:
        return self.objects.size(key)

    def get_file(self, key: str, path: str | Path) -> None:
        self.copied.append(key)
        self.objects.get_file(key, path)


@pytest.fixture
def store(objects):
    """The session's bucket; the test's ``pretrained/`` objects are removed afterwards (other
    tests of the session must not train from them)."""
    objects.ensure_bucket()
    before = set(objects.list_keys(weights.STORE_PREFIX))
    assert not before, f"the bucket already holds pretrained weights: {before}"
    yield CountingStore(objects)
    for key in objects.list_keys(weights.STORE_PREFIX):
        objects.delete(key)


def test_store_weights_are_copied_once_and_training_records_the_store(
    digits, store, tmp_path, torch_home, init_logs
):
    arch = "mobilenet_v3_small"
    state = stock_weights(arch, shift=0.01)
    data = saved(state)
    store.objects.put_bytes(f"pretrained/{arch}.pth", data)
    # the torch cache holds other weights: the store's win
    in_torch_cache(torch_home, arch, saved(stock_weights(arch, shift=-0.01)))
    cache = tmp_path / "cache"

    found = weights.materialise_pretrained(store, arch, cache)

    assert found is not None
    assert found.key == f"pretrained/{arch}.pth"
    assert found.path == cache / f"{arch}.pth"
    assert found.path.read_bytes() == data
    assert store.copied == [found.key]
    assert [p.name for p in cache.iterdir()] == [found.path.name]  # no partial file left
    inode = found.path.stat().st_ino

    again = weights.materialise_pretrained(store, arch, cache)

    assert again == found
    assert store.copied == [found.key]  # not copied again
    assert found.path.stat().st_ino == inode

    result = start(
        digits,
        "performance_first",
        pretrained_path=str(found.path),
        pretrained_source=found.source,
    )

    assert result.init == f"pretrained:store:pretrained/{arch}.pth"
    assert_started_from(result, state)
    events = [e for e in init_logs if e["event"] == "training.init"]
    assert [(e["init"], e["source"], e["path"]) for e in events] == [
        (result.init, "store", str(found.path))
    ]


def test_a_changed_or_missing_copy_is_copied_again(store, tmp_path):
    key = "pretrained/resnet50.pth"
    store.objects.put_bytes(key, b"first")
    cache = tmp_path / "cache"
    found = weights.materialise_pretrained(store, "resnet50", cache)
    assert found is not None and found.path.read_bytes() == b"first"

    store.objects.put_bytes(key, b"second, longer")
    assert weights.materialise_pretrained(store, "resnet50", cache) == found
    assert found.path.read_bytes() == b"second, longer"

    found.path.unlink()
    assert weights.materialise_pretrained(store, "resnet50", cache) == found
    assert found.path.read_bytes() == b"second, longer"
    assert store.copied == [key, key, key]


def test_partial_copies_left_by_a_killed_trainer_are_removed_on_the_next_copy(store, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    stale, fresh = cache / ".resnet50.pth.dead.part", cache / ".resnet50.pth.busy.part"
    stale.write_bytes(b"x" * 100)
    fresh.write_bytes(b"y" * 100)  # another job's copy in progress
    old = time.time() - weights.STALE_PART_SECONDS - 60
    os.utime(stale, (old, old))
    store.objects.put_bytes("pretrained/resnet50.pth", b"weights")
    assert weights.materialise_pretrained(store, "resnet50", cache) is not None
    assert not stale.exists() and fresh.exists()


def test_no_object_for_the_arch_gives_none(store, tmp_path):
    store.objects.put_bytes("pretrained/resnet50.pth", b"other arch")
    store.objects.put_bytes("pretrained/resnet18.pth.bak", b"not the name")

    assert weights.materialise_pretrained(store, "resnet18", tmp_path / "cache") is None
    assert weights.materialise_pretrained(store, "no-such-arch", tmp_path / "cache") is None
    assert store.copied == []


def test_a_torchvision_named_object_is_preferred_and_must_match_its_hash(store, tmp_path):
    arch = "resnet18"
    named = weights.STORE_PREFIX + pretrained_weights_file(arch)  # resnet18-<sha256 prefix>.pth
    assert weights.store_keys(arch) == [named, f"pretrained/{arch}.pth"]
    store.objects.put_bytes(named, b"not torchvision's file")
    store.objects.put_bytes(f"pretrained/{arch}.pth", b"the fallback")
    cache = tmp_path / "cache"

    with pytest.raises(FailedPrecondition, match="not the file torchvision publishes"):
        weights.materialise_pretrained(store, arch, cache)

    assert store.copied == [named]
    assert list(cache.iterdir()) == []  # neither the copy nor a partial file stays


# --- broken weights files: the run fails, naming the file --------------------------------


def test_a_corrupt_weights_file_fails_the_run_clearly(digits, torch_home):
    path = in_torch_cache(
        torch_home, "mobilenet_v3_small", saved(stock_weights("mobilenet_v3_small"))[:5000]
    )

    with pytest.raises(FailedPrecondition, match="cannot be read") as raised:
        start(digits, "performance_first")
    assert str(path) in str(raised.value)


def test_weights_of_another_architecture_fail_the_run_clearly(digits, torch_home):
    path = in_torch_cache(torch_home, "mobilenet_v3_small", saved(stock_weights("resnet18")))

    with pytest.raises(FailedPrecondition, match="do not fit torchvision's mobilenet_v3_small"):
        start(digits, "performance_first")
    assert path.is_file()  # left for the operator to replace


def test_a_state_dict_of_other_shapes_fails_the_run_clearly(digits, tmp_path):
    state = stock_weights("resnet18")
    state["layer1.0.conv1.weight"] = torch.zeros(8, 8, 3, 3)
    path = tmp_path / "resnet18.pth"
    path.write_bytes(saved(state))

    with pytest.raises(FailedPrecondition, match=r"other shape layer1\.0\.conv1\.weight \(1\)"):
        start(digits, "balance", pretrained_path=str(path), pretrained_source="store:x")


def test_a_given_weights_file_that_is_missing_fails_the_run(digits, tmp_path):
    with pytest.raises(FailedPrecondition, match="not a file"):
        start(digits, "balance", pretrained_path=str(tmp_path / "gone.pth"))


def test_not_a_state_dict_fails_the_run(digits, torch_home):
    in_torch_cache(torch_home, "mobilenet_v3_small", saved([torch.zeros(3)]))  # type: ignore[arg-type]

    with pytest.raises(FailedPrecondition, match="not a state dict"):
        start(digits, "performance_first")


def test_an_incremental_checkpoint_wins_over_pretrained_weights(digits, torch_home):
    in_torch_cache(torch_home, "mobilenet_v3_small", saved(stock_weights("mobilenet_v3_small")))
    first = start(digits, "performance_first")
    assert first.init.startswith("pretrained:")

    again = start(digits, "performance_first", init_checkpoint=first.checkpoint)

    assert again.init == "incremental:same-classes"
    for key, value in first.checkpoint["state_dict"].items():
        assert torch.equal(again.checkpoint["state_dict"][key], value), key
