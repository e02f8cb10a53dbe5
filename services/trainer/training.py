"""Training an image classifier: the trainer's PyTorch core (no RPC, no object store).

Reads top to bottom: public types → data → model initialisation → the loop
(``train_one_epoch`` and ``evaluate`` return plain dicts) → ``train`` →
inference (``load_model``, ``predict``).

How a run goes:

* Every image is decoded once with Pillow (RGB, resized to a square at the
  training resolution) into a uint8 tensor cache. Scaling, augmentation
  (random scale and translation, no flips: digits and text must not be
  mirrored) and normalisation happen per batch on the device.
* The schedule is a warmup followed by a cosine decay of the learning rate over
  ``epochs_total`` epochs. With a deadline, the first steps are timed and the
  epochs are cut so that training ends ``DEADLINE_MARGIN`` of the budget (plus
  the final evaluation) before it; each epoch's measured length revises that.
* After every epoch the batch-norm statistics are re-estimated on un-augmented
  training images ("precise BN") and the model is evaluated on the validation
  set; the best epoch (validation accuracy, ties broken by lower validation loss) is kept.
  Training stops when accuracy has not improved for ``patience`` epochs or the
  schedule ends ("converged"), when time is up ("duration_limit"), or when
  ``should_stop()`` returns a reason (that reason). In every case the result
  holds the best epoch's weights.
* Data-parallel (DDP, ``distributed.py``): when torchrun's ``RANK`` is set, or a
  ``Distributed`` is passed, each rank trains on its shard of every epoch, evaluation
  is sharded and gathered, and rank 0 takes every decision that depends on a clock or
  a stop request; only rank 0 reports progress. Without it, a single process.

A checkpoint is a plain dict of tensors and plain values, loadable with
``torch.load(..., weights_only=True)``::

    {"format", "arch", "classes", "resolution", "state_dict", "normalization": {"mean", "std"},
     "tta", "epoch", "best_val_accuracy", "preference", "hyperparameters"}
"""

from __future__ import annotations

import copy
import io
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import structlog
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn

from trainyard.errors import FailedPrecondition, InvalidArgument
from trainyard.services.trainer import distributed
from trainyard.services.trainer.distributed import SINGLE, Distributed
from trainyard.services.trainer.evaluation import evaluate_predictions
from trainyard.services.trainer.presets import (
    Preset,
    build_model,
    choose_resolution,
    classifier_head,
    get_preset,
    pretrained_weights_file,
)

CHECKPOINT_FORMAT = 1
PROGRESS_INTERVAL = 1.0  # seconds between progress reports while running (the contract: <= 2 s)
DEADLINE_MARGIN = 0.10  # share of the time budget kept free for the final evaluation and saving...
DEADLINE_MARGIN_MAX = 300.0  # ...but never more than these seconds
CALIBRATION_STEPS = 3  # steps timed (after the first: it builds kernels) to size the schedule
SIZE_SAMPLE = 256  # images whose size decides the training resolution
STATS_SAMPLE = 1024  # images whose pixels give the normalisation (mean and std)
DECODE_CHUNK = 256  # images decoded between progress reports
EVAL_BATCH_SIZE = 256
MIN_STEPS_PER_EPOCH = 50  # a batch grown to fill a GPU still leaves this many steps an epoch...
MAX_BATCH_GROWTH = 8  # ...and is at most this many times the preset's
GPU_STEP_MEMORY_SHARE = 0.5  # of the GPU's free memory one training step may take
GPU_CACHE_SHARE = 0.25  # of the GPU's free memory the decoded-image cache may take; the rest: model, activations
MIN_CHANNEL_STD = 0.05  # floor of a measured channel std (ImageNet's are about 0.22)
PRECISE_BN_IMAGES = 512  # training images that re-estimate batch-norm statistics (precise BN)
FALLBACK_BN_IMAGES = 128  # ... when a run stopped before its first epoch ended: fewer, to be quick
INCREMENTAL_LR_SCALE = 0.5  # a model that starts from a trained one takes smaller steps
FINAL_LR_FRACTION = 0.01  # the cosine decay ends at this share of the peak learning rate
IMAGENET_NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

T = TypeVar("T")
log = structlog.get_logger(__name__)
CONVERGED = "converged"
DURATION_LIMIT = "duration_limit"


# --- public types -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One labelled image of a dataset version."""

    image_id: str
    label: str
    usage: str  # "TRAIN" or "EVAL"


@dataclass(frozen=True)
class TrainConfig:
    """What to train and within which limits."""

    classes: list[str]  # ordered class names; label index = position
    preference: str = "balance"  # a key of presets.PRESETS (rule S6)
    deadline: float | None = None  # time.time() seconds; training ends (best model kept) before it
    seed: int = 0
    device: str | None = None  # None: cuda when available, else cpu
    max_epochs: int | None = None  # caps the preset's epochs (tiny test runs)
    init_checkpoint: dict | None = None  # incremental training (S4): a checkpoint of an earlier run
    max_cache_bytes: int | None = None  # decoded-image cache budget; None: half the machine's memory
    # other jobs run on the same GPU (a trainer with several slots): its free memory is theirs too,
    # so the cache stays in host memory and the batch is the preset's
    shares_device: bool = False
    # Pretrained weights to start from: a local state-dict file of the preset's torchvision
    # architecture (weights.py puts the store's there). None: the torch hub cache, else scratch.
    pretrained_path: str | None = None
    pretrained_source: str = ""  # where pretrained_path came from: init "pretrained:<this>"


@dataclass
class Progress:
    """A snapshot of a running training. ``epoch`` 0 means the images are still being decoded."""

    epoch: int
    epochs_total: int
    step: int
    steps_total: int
    loss: float  # mean training loss since the last report
    train_accuracy: float  # on the augmented batches of the current epoch so far
    val_accuracy: float | None  # of the last evaluated epoch
    learning_rate: float
    images_per_second: float  # training throughput since the last report
    eta_seconds: float
    device: str


@dataclass
class TrainResult:
    """The outcome of ``train``: the best epoch's checkpoint and its evaluation."""

    checkpoint: dict
    evaluation: dict  # evaluation.evaluate_predictions on the validation set
    history: list[dict]  # one dict per completed epoch
    stop_reason: str  # "converged" | "duration_limit" | the reason should_stop() returned
    epochs_run: int  # completed epochs
    best_epoch: int  # 0 when training stopped before the first epoch ended
    device: str
    images_per_second: float  # mean training throughput
    resolution: int
    arch: str
    # "scratch" | "pretrained:<file>" (torch hub cache) | "pretrained:<TrainConfig.pretrained_source>"
    # (e.g. "pretrained:store:pretrained/resnet18.pth") | "incremental:<how>"
    init: str
    # "cached": decoded once, kept in host memory; "cached-gpu": decoded once, kept on the GPU;
    # "streamed": decoded per batch (over the cache budget)
    pipeline: str = "cached"


# --- data -------------------------------------------------------------------------------


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an encoded image, read from its header."""
    with Image.open(io.BytesIO(data)) as image:
        return image.size


DECODE_STEPS = (
    "JPEG: decode at a reduced scale (libjpeg's 1/2, 1/4 or 1/8: the smallest image whose sides "
    "are both at least resolution; Pillow: image.draft('RGB', (resolution, resolution)))",
    "apply the EXIF orientation",
    "16-bit grayscale (Pillow modes I;16 and I): scale to 8 bits (value >> 8)",
    "transparency (an alpha channel, or a palette or single colour marked transparent): "
    "composite onto white",
    "convert to RGB",
    "resize (bilinear) to resolution x resolution, without keeping the aspect ratio",
)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # PNG's 16-bit grayscale


def decode_image(data: bytes, resolution: int) -> np.ndarray:
    """An encoded image as RGB uint8 (resolution, resolution, 3), by DECODE_STEPS (which the
    export's preprocessing spec states, so that its users decode exactly the same way)."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (resolution, resolution))  # JPEG: decode at a reduced scale when possible
        rgb = _to_rgb(ImageOps.exif_transpose(image))
    if rgb.size != (resolution, resolution):
        rgb = rgb.resize((resolution, resolution), Image.Resampling.BILINEAR)
    return np.array(rgb)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with 16-bit grayscale scaled to 8 bits (Pillow would clip it to white) and
    transparent pixels on white (Pillow would show whatever colour they hold)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64).clip(0, 65535) >> 8
        image = Image.fromarray(values.astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def decode_images(
    items: Sequence[T],
    load: Callable[[T], bytes],
    resolution: int,
    on_chunk: Callable[[int], None] = lambda done: None,
) -> torch.Tensor:
    """The images of ``items`` (``load`` gives an item's bytes) as one uint8 tensor
    (len(items), 3, resolution, resolution). Loaded and decoded in threads, a chunk at a time."""
    cache = torch.empty((len(items), 3, resolution, resolution), dtype=torch.uint8)
    with ThreadPoolExecutor() as pool:
        for start in range(0, len(items), DECODE_CHUNK):
            chunk = items[start : start + DECODE_CHUNK]
            arrays = list(pool.map(lambda item: decode_image(load(item), resolution), chunk))
            cache[start : start + len(arrays)] = torch.from_numpy(np.stack(arrays)).permute(
                0, 3, 1, 2
            )
            on_chunk(start + len(arrays))
    return cache


class StreamedImages:
    """Images decoded on every access instead of cached, for datasets whose uint8 cache would
    not fit the memory budget. Indexed like the cache tensor: len(), slices, index tensors."""

    def __init__(self, items: Sequence[T], load: Callable[[T], bytes], resolution: int) -> None:
        self.items, self.load, self.resolution = items, load, resolution

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: slice | torch.Tensor) -> torch.Tensor:
        positions = range(len(self.items))[key] if isinstance(key, slice) else key.tolist()
        return decode_images([self.items[i] for i in positions], self.load, self.resolution)


def cache_budget() -> int:
    """Half of the machine's physical memory: the default limit of the decoded-image cache."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def cache_on_gpu(cache_bytes: int, device: torch.device) -> bool:
    """Whether the decoded-image cache goes to the training GPU: when it takes at most
    GPU_CACHE_SHARE of that GPU's free memory. Batches are then gathered and augmented
    without a host-to-device copy."""
    if device.type != "cuda":
        return False
    free, _total = torch.cuda.mem_get_info(device)
    return cache_bytes <= GPU_CACHE_SHARE * free


def batch_growth(preset_batch: int, per_rank: int, step_bytes: int, free_bytes: int) -> int:
    """How many times the preset's batch a GPU run trains with: the largest power of two, at
    most MAX_BATCH_GROWTH, whose step takes at most GPU_STEP_MEMORY_SHARE of the free memory
    (``step_bytes``: one step at the preset's batch) and that still leaves MIN_STEPS_PER_EPOCH
    steps an epoch (small datasets keep the preset's batch: they need the steps)."""
    growth = 1
    while (
        growth * 2 <= MAX_BATCH_GROWTH
        and preset_batch * growth * 2 * MIN_STEPS_PER_EPOCH <= per_rank
        and step_bytes * growth * 2 <= GPU_STEP_MEMORY_SHARE * free_bytes
    ):
        growth *= 2
    return growth


def _gpu_batch_growth(
    net: nn.Module,
    batch: int,
    per_rank: int,
    resolution: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]],
) -> int:
    """``batch_growth`` for this network on this GPU: one trial step at ``batch`` images, on a
    copy of the network (its gradients and batch-norm statistics are thrown away), measures
    what a step takes. 1 when even the trial does not fit."""
    if batch_growth(batch, per_rank, step_bytes=0, free_bytes=0) == 1:
        return 1  # too few images to grow, whatever the memory: no trial needed
    torch.cuda.synchronize(device)
    free, _total = torch.cuda.mem_get_info(device)  # what the real steps will have
    trial = copy.deepcopy(net)
    try:
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        x = torch.zeros(batch, 3, resolution, resolution, device=device)
        with autocast():
            trial(x.contiguous(memory_format=torch.channels_last)).float().sum().backward()
        step_bytes = torch.cuda.max_memory_allocated(device) - before  # activations, gradients
        return batch_growth(batch, per_rank, step_bytes, free)
    except torch.cuda.OutOfMemoryError:
        return 1
    finally:
        del trial
        torch.cuda.empty_cache()


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random zoom (0.9-1.1x) and shift (up to 1/8 of the side) of each image of a float batch.

    Edges are replicated into the uncovered border. No flips: digits and text must
    keep their orientation.
    """
    n = x.shape[0]
    scale = torch.empty(n, device=x.device).uniform_(0.9, 1.1, generator=generator)
    shift = torch.empty(n, 2, device=x.device).uniform_(
        -0.25, 0.25, generator=generator
    )  # [-1, 1] coordinates
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = 1 / scale
    theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def tta_views(x: torch.Tensor, resolution: int) -> list[torch.Tensor]:
    """Test-time augmentation: a square batch and four copies shifted by 1/16 of its side (>= 1 pixel)."""
    shift = max(1, resolution // 16)
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    offsets = [(shift, shift), (0, shift), (2 * shift, shift), (shift, 0), (shift, 2 * shift)]
    return [padded[..., dy : dy + resolution, dx : dx + resolution] for dy, dx in offsets]


class InferenceModel(nn.Module):
    """A network wrapped with its input normalisation: uint8 RGB NCHW in, class probabilities out.

    Training calls ``net`` on ``normalize``-d batches; evaluation, prediction and
    the TorchScript export call the wrapper, so they preprocess identically.
    """

    def __init__(
        self,
        net: nn.Module,
        normalization: Mapping[str, list[float]],
        resolution: int,
        tta: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.resolution = resolution
        self.register_buffer(
            "mean", torch.tensor(normalization["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        )
        self.register_buffer(
            "std", torch.tensor(normalization["std"], dtype=torch.float32).view(1, 3, 1, 1)
        )
        self.tta = tta

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """A float batch in [0, 1] standardised per channel."""
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images.float() / 255)
        if not self.tta:
            return self.net(x).float().softmax(dim=1)
        views = tta_views(x, self.resolution)
        return torch.stack([self.net(v).float().softmax(dim=1) for v in views]).mean(dim=0)


# --- model initialisation ---------------------------------------------------------------


def _init_weights(
    net: nn.Module,
    arch: str,
    classes: list[str],
    init_checkpoint: dict | None,
    pretrained_path: str | None = None,
    pretrained_source: str = "",
) -> str:
    """Load starting weights into ``net``; returns how it was initialised (TrainResult.init).

    Precedence: the checkpoint of an earlier run (incremental), else the pretrained file given
    (``pretrained_path``: the object store's, see weights.py), else torchvision's file in the
    local torch hub cache, else scratch. Nothing is ever downloaded. Logged once per run
    ("training.init", on rank 0 only under DDP).
    """
    path: Path | None = None
    if init_checkpoint is not None:
        source, init = "checkpoint", _load_incremental(net, classes, init_checkpoint)
    elif pretrained_path is not None:
        path = Path(pretrained_path)
        label = pretrained_source or f"file:{path.name}"
        source = label.split(":", 1)[0]
        if not path.is_file():
            raise FailedPrecondition(f"pretrained weights {path} ({label}) are not a file")
        init = _load_pretrained(net, arch, path, label)
    else:
        path = _torch_cache_file(arch)
        source = "torch-cache" if path is not None else "none"
        init = "scratch" if path is None else _load_pretrained(net, arch, path, path.name)
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        log.info(
            "training.init", arch=arch, init=init, source=source, path=str(path) if path else None
        )
    return init


def _load_incremental(net: nn.Module, classes: list[str], checkpoint: dict) -> str:
    """Start from a trained checkpoint (S4). A changed class set keeps the backbone and the
    head's rows of the classes that remain (matched by name); new classes get fresh rows."""
    old_classes = list(checkpoint["classes"])
    state = dict(checkpoint["state_dict"])
    if old_classes == classes:
        net.load_state_dict(state)
        return "incremental:same-classes"
    head_name, head = classifier_head(net)
    old_weight = state.pop(f"{head_name}.weight")
    old_bias = state.pop(f"{head_name}.bias")
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {f"{head_name}.weight", f"{head_name}.bias"}:
        raise InvalidArgument.field(
            "init_checkpoint", f"does not fit the model: missing {missing}, unexpected {unexpected}"
        )
    old_index = {name: i for i, name in enumerate(old_classes)}
    kept = [(i, old_index[name]) for i, name in enumerate(classes) if name in old_index]
    with torch.no_grad():
        for new, old in kept:
            head.weight[new] = old_weight[old]
            head.bias[new] = old_bias[old]
    added = len(classes) - len(kept)
    dropped = len(old_classes) - len(kept)
    return f"incremental:new-head(kept={len(kept)},added={added},dropped={dropped})"


def _torch_cache_file(arch: str) -> Path | None:
    """torchvision's ImageNet weights file for ``arch`` when it is in the local torch hub cache."""
    try:
        name = pretrained_weights_file(arch)
    except (ValueError, AttributeError, KeyError):
        return None  # torchvision publishes no weights for this architecture
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    return path if path.is_file() else None


def _load_pretrained(net: nn.Module, arch: str, path: Path, label: str) -> str:
    """Load a pretrained state dict of ``arch`` (ImageNet weights, from a local file) into ``net``.

    The file must hold the stock torchvision architecture, whatever its number of classes:
    every tensor except the classification head's, with the stock shapes. A file that cannot
    be read or does not fit is a FailedPrecondition (the job fails, naming the file), never a
    silent start from scratch. Layers whose shape the small-input stem or the class count
    changed keep their fresh initialisation. Returns ``"pretrained:<label>"``.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or pickled code (refused)
        raise FailedPrecondition(
            f"pretrained weights {path} ({label}) cannot be read: {type(exc).__name__}: {exc}; "
            "replace or remove the file"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise FailedPrecondition(
            f"pretrained weights {path} ({label}) are not a state dict (names to tensors)"
        )
    with torch.device("meta"):  # the stock architecture's shapes, without allocating it
        stock = build_model(arch, 1000, 224)
    stock_head, _ = classifier_head(stock)
    expected = {
        k: v.shape for k, v in stock.state_dict().items() if not k.startswith(stock_head + ".")
    }
    given = {k: v for k, v in state.items() if not k.startswith(stock_head + ".")}
    # batch-norm step counters: absent from older torchvision files, and never used here
    missing = sorted(
        k for k in expected.keys() - given.keys() if not k.endswith("num_batches_tracked")
    )
    unexpected = sorted(given.keys() - expected.keys())
    reshaped = sorted(k for k in expected.keys() & given.keys() if given[k].shape != expected[k])
    if missing or unexpected or reshaped:
        problems = [
            f"{what} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
            for what, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("other shape", reshaped),
            )
            if keys
        ]
        raise FailedPrecondition(
            f"pretrained weights {path} ({label}) do not fit torchvision's {arch}: "
            + "; ".join(problems)
        )
    head_name, _ = classifier_head(net)
    own = net.state_dict()
    usable = {
        k: v
        for k, v in given.items()
        if v.shape == own[k].shape and not k.startswith(head_name + ".")
    }
    net.load_state_dict(usable, strict=False)
    return f"pretrained:{label}"


def _normalization(
    init: str, init_checkpoint: dict | None, train_x: torch.Tensor
) -> dict[str, list[float]]:
    """Per-channel mean and std: the starting checkpoint's, ImageNet's for pretrained weights,
    otherwise measured on (a sample of) the training images."""
    if init_checkpoint is not None:
        return {k: list(v) for k, v in init_checkpoint["normalization"].items()}
    if init.startswith("pretrained:"):
        return IMAGENET_NORMALIZATION
    step = max(1, len(train_x) // STATS_SAMPLE)
    pixels = train_x[::step].float().div_(255)
    return {
        "mean": pixels.mean(dim=(0, 2, 3)).tolist(),
        # a channel that hardly varies in training must not multiply new images' values by 1000
        "std": pixels.std(dim=(0, 2, 3)).clamp_min(MIN_CHANNEL_STD).tolist(),
    }


def _optimizer(net: nn.Module, preset: Preset, lr: float) -> torch.optim.Optimizer:
    """AdamW with weight decay on weight matrices and kernels only (not on biases and norms)."""
    decay = [p for p in net.parameters() if p.dim() >= 2]
    no_decay = [p for p in net.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": preset.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, fused=True)


def learning_rate(step: int, total_steps: int, peak: float, warmup_fraction: float) -> float:
    """Linear warmup to ``peak``, then cosine decay to FINAL_LR_FRACTION of it at ``total_steps``."""
    warmup = max(1, round(warmup_fraction * total_steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return peak * (
        FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))
    )


# --- the loop ---------------------------------------------------------------------------


@dataclass
class _Run:
    """What the loop shares across epochs: the plan, counters, clocks and callbacks."""

    preset: Preset
    peak_lr: float
    device: torch.device
    device_name: str
    autocast: Callable[[], AbstractContextManager[Any]]
    batch_size: int
    steps_per_epoch: int
    epochs_total: int
    val_size: int
    training_ends: float | None  # the deadline less the margin kept for evaluation and saving
    progress: Callable[[Progress], None]
    should_stop: Callable[[], str | None]
    generator: torch.Generator  # augmentation randomness, on the device
    order_generator: torch.Generator  # batch order, on the cpu (the same on every rank)
    train_net: nn.Module  # what the steps call: the network, in DistributedDataParallel under DDP
    ddp: Distributed  # SINGLE, or this rank's place in a data-parallel run
    started: float = field(default_factory=time.time)
    step: int = 0
    time_limited: bool = False  # the deadline cut the planned epochs
    step_seconds: float = 0.0  # a moving average of one optimizer step's wall time
    eval_seconds: float = 0.0  # one evaluation's wall time: estimated, then measured
    evaluated: bool = False  # an epoch has been evaluated, so there is a model to keep
    loss: float = 0.0  # the last reported training loss and accuracy
    accuracy: float = 0.0
    val_accuracy: float | None = None
    train_images: int = 0
    train_seconds: float = 0.0
    last_report: float = 0.0

    @property
    def steps_total(self) -> int:
        return self.epochs_total * self.steps_per_epoch

    @property
    def stop_at(self) -> float | None:
        """When training stops, leaving time for the final test-time-augmented evaluation (5 views)."""
        if self.training_ends is None:
            return None
        return self.training_ends - (5 * self.eval_seconds if self.preset.tta else 0.0)

    def lr(self) -> float:
        return learning_rate(self.step, self.steps_total, self.peak_lr, self.preset.warmup_fraction)

    def stop_reason(self) -> str | None:
        """Why to stop before the next step, if so: rank 0's answer on every rank."""
        return self.ddp.decide(self._stop_reason)

    def requested_stop(self) -> str | None:
        """``should_stop()`` (asked on rank 0 only)."""
        return self.ddp.decide(self.should_stop)

    def _stop_reason(self) -> str | None:
        reason = self.should_stop()
        if reason:
            return reason
        # Never start a step that would end past the stop; before the first evaluation,
        # also keep the time to evaluate the model that will be kept.
        needed = self.step_seconds + (0.0 if self.evaluated else self.eval_seconds)
        if self.stop_at is not None and time.time() + needed >= self.stop_at:
            return DURATION_LIMIT
        return None

    def after_step(self, step_start: float) -> None:
        """Time the step; size the schedule to the deadline once the first steps are timed."""
        if self.step <= 1 + CALIBRATION_STEPS:
            self._sync()  # the device's queue is not full yet: wait for the step to really end
        seconds = time.time() - step_start
        if self.step <= 2:  # the first step also builds kernels: only a stand-in until the second
            self.step_seconds = seconds
        else:
            self.step_seconds = 0.7 * self.step_seconds + 0.3 * seconds
        if not self.evaluated:  # precise BN and evaluation: forward only, ~1/3 of a step per image
            images = self.val_size + min(PRECISE_BN_IMAGES, self.steps_per_epoch * self.batch_size)
            self.eval_seconds = self.step_seconds / self.batch_size / 3 * images
        if self.step == 1 + CALIBRATION_STEPS:
            self.fit_epochs(
                self.started, self.steps_per_epoch * self.step_seconds + self.eval_seconds, done=0
            )

    def evaluated_in(self, seconds: float) -> None:
        self.evaluated = True
        self.eval_seconds = seconds

    def fit_epochs(self, since: float, epoch_seconds: float, done: int) -> None:
        """Cut ``epochs_total`` to what fits between ``since`` and ``stop_at`` at this epoch length
        (rank 0's clock decides for every rank)."""
        if self.stop_at is None:
            return
        self.epochs_total, self.time_limited = self.ddp.decide(
            lambda: self._fitted_epochs(since, epoch_seconds, done)
        )

    def _fitted_epochs(self, since: float, epoch_seconds: float, done: int) -> tuple[int, bool]:
        stop_at = self.stop_at
        assert stop_at is not None
        fit = done + int((stop_at - since) / max(epoch_seconds, 1e-6))
        if fit < self.epochs_total:
            return max(fit, done, 1), True
        return self.epochs_total, self.time_limited

    def report(self, epoch: int, images_per_second: float | None = None) -> None:
        """Call ``progress`` with the current state (``loss``, ``accuracy``: set by the caller).

        ``images_per_second`` defaults to the training throughput so far (reports during an
        evaluation have no throughput of their own, and 0 would read as a stall)."""
        if images_per_second is None:
            images_per_second = self.train_images / self.train_seconds if self.train_seconds > 0 else 0.0
        now = time.time()
        self.last_report = now
        done = self.step / max(1, self.steps_total)
        eta = (now - self.started) * (1 - done) / done if done > 0 else 0.0
        if self.stop_at is not None:
            eta = min(eta, max(0.0, self.stop_at - now))
        self.progress(
            Progress(
                epoch=epoch,
                epochs_total=self.epochs_total,
                step=self.step,
                steps_total=self.steps_total,
                loss=self.loss,
                train_accuracy=self.accuracy,
                val_accuracy=self.val_accuracy,
                learning_rate=self.lr(),
                images_per_second=images_per_second,
                eta_seconds=eta,
                device=self.device_name,
            )
        )

    def due(self) -> bool:
        """Whether to report now: the interval is up, or will be before the next step ends."""
        return time.time() - self.last_report + self.step_seconds >= PROGRESS_INTERVAL

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def train_one_epoch(
    model: InferenceModel,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    epoch: int,
    run: _Run,
) -> dict[str, Any]:
    """One pass over the training set in random order (under DDP: this rank's shard of it).

    Returns {"loss", "accuracy", "images_per_second", "learning_rate", "stop_reason"}, over
    all ranks; ``stop_reason`` is set (and the epoch incomplete) when the run had to stop.
    """
    net = run.train_net
    net.train()
    order = run.ddp.shard_order(torch.randperm(len(x), generator=run.order_generator))
    if len(order) < run.batch_size:  # a batch of one breaks batch norm: repeat the images
        order = order.repeat(math.ceil(run.batch_size / len(order)))
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), dtype=torch.long, device=run.device)
    seen = 0
    window = {
        "loss": torch.zeros((), device=run.device),
        "steps": 0,
        "images": 0,
        "since": time.time(),
    }
    stop_reason = None
    start = time.time()
    for i in range(run.steps_per_epoch):
        if (stop_reason := run.stop_reason()) is not None:
            break
        step_start = time.time()
        index = order[i * run.batch_size : (i + 1) * run.batch_size]
        images = x[index].to(run.device, non_blocking=True)
        labels = y[index].to(run.device, non_blocking=True)
        lr = run.lr()
        for group in optimizer.param_groups:
            group["lr"] = lr

        with run.autocast():
            batch = model.normalize(augment(images.float() / 255, run.generator))
            logits = net(batch.contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(
                logits.float(), labels, label_smoothing=run.preset.label_smoothing
            )
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), run.preset.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        run.step += 1
        run.after_step(step_start)
        loss_sum += loss.detach() * len(labels)
        correct += (logits.argmax(dim=1) == labels).sum()
        seen += len(labels)
        window["loss"] += loss.detach()
        window["steps"] += 1
        window["images"] += len(labels)
        if run.due():
            run.loss = float(window["loss"]) / window["steps"]
            run.accuracy = int(correct) / seen
            images_per_second = window["images"] / max(time.time() - window["since"], 1e-9)
            run.report(epoch, images_per_second * run.ddp.world_size)  # rank 0's, for all ranks
            window = {
                "loss": torch.zeros((), device=run.device),
                "steps": 0,
                "images": 0,
                "since": time.time(),
            }
    loss_total, correct_total, seen_total = run.ddp.sum(
        [float(loss_sum), int(correct), seen]
    )  # waits for the device
    seen = int(seen_total)
    loss, accuracy = loss_total / max(1, seen), int(correct_total) / max(1, seen)
    seconds = time.time() - start
    run.train_images += seen
    run.train_seconds += seconds
    return {
        "loss": loss,
        "accuracy": accuracy,
        "images_per_second": seen / max(seconds, 1e-9),
        "learning_rate": run.lr(),
        "stop_reason": stop_reason,
    }


@torch.no_grad()
def recalibrate_batch_norm(
    model: InferenceModel,
    x: torch.Tensor,
    *,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
    images: int = PRECISE_BN_IMAGES,
    ddp: Distributed = SINGLE,
) -> None:
    """Re-estimate the batch-norm running statistics on un-augmented training images ("precise BN").

    During training they trail the weights (an exponential average over past
    batches) and describe augmented images; evaluated with them, a young model
    scores far below what it has learnt. This is one forward pass over at most
    ``images`` training images, with the statistics averaged over all batches. Under DDP
    every rank does the same, then takes rank 0's statistics (bitwise equal ranks).
    """
    norms = [m for m in model.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    model.net.train()
    subset = x[torch.tensor(_spread_indices(len(x), images), dtype=torch.long)]  # every label's share
    if len(subset) < 2:  # batch norm needs two values per channel
        subset = subset.repeat(2, 1, 1, 1)
    batch_size = 64 if len(subset) >= 128 else len(subset)
    for start in range(0, len(subset) - batch_size + 1, batch_size):
        batch = subset[start : start + batch_size].to(device, non_blocking=True)
        with autocast():
            model.net(model.normalize(batch.float() / 255).contiguous(memory_format=torch.channels_last))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    ddp.broadcast_buffers(model.net)


@torch.inference_mode()
def evaluate(
    model: InferenceModel,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
    tick: Callable[[], None] = lambda: None,
    ddp: Distributed = SINGLE,
) -> dict[str, Any]:
    """Probabilities, loss and accuracy of ``model`` on uint8 images ``x`` with labels ``y``.

    Returns {"loss", "accuracy", "probs"} (probs: a cpu float tensor, samples × classes).
    Under DDP each rank computes a shard of the probabilities and every rank gets all of them.
    """
    rows = ddp.shard(len(x))
    p = probabilities(model, x, device=device, autocast=autocast, tick=tick, rows=rows)
    if len(rows) < len(x):
        p = ddp.gather_rows(p)
    loss = F.nll_loss(p.clamp_min(1e-12).log(), y)
    accuracy = int((p.argmax(dim=1) == y).sum()) / max(1, len(y))  # exact, as scikit-learn's
    return {"loss": float(loss), "accuracy": accuracy, "probs": p}


@torch.inference_mode()
def probabilities(
    model: InferenceModel,
    x: torch.Tensor,
    *,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
    tick: Callable[[], None] = lambda: None,
    rows: range | None = None,
) -> torch.Tensor:
    """Class probabilities (cpu float, samples × classes) of uint8 images ``x`` (or of its
    ``rows``, a contiguous range), batch by batch."""
    model.eval()
    rows = range(len(x)) if rows is None else rows
    probs = []
    for start in range(rows.start, rows.stop, EVAL_BATCH_SIZE):
        images = x[start : min(start + EVAL_BATCH_SIZE, rows.stop)].to(device, non_blocking=True)
        with autocast():
            probs.append(model(images.contiguous(memory_format=torch.channels_last)).float().cpu())
        tick()
    return torch.cat(probs)


# --- train ------------------------------------------------------------------------------


def train(
    samples: list[Sample],
    images: Callable[[Sample], bytes] | Mapping[str, bytes],
    config: TrainConfig,
    *,
    progress: Callable[[Progress], None] = lambda p: None,
    should_stop: Callable[[], str | None] = lambda: None,
    ddp: Distributed | None = None,
) -> TrainResult:
    """Train a classifier on the TRAIN samples, select and evaluate it on the EVAL samples.

    ``images`` gives a sample's encoded bytes (a callable, or a mapping by image id).
    ``progress`` is called at least every PROGRESS_INTERVAL seconds while training
    and after every epoch; ``should_stop`` is polled before every step.

    ``ddp``: this process's place in a data-parallel run; None: from the environment
    (torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), a single process without it.
    Under DDP every rank calls ``train`` with the same arguments and returns the same
    result; ``progress`` is called on rank 0 only and ``should_stop`` asked there only.
    """
    started = time.time()

    # -- config
    ddp = distributed.from_environment(config.device) if ddp is None else ddp
    if not ddp.is_main:
        progress = lambda p: None  # noqa: E731 - only rank 0 reports
    preset = get_preset(config.preference)
    classes = list(config.classes)
    device = (
        ddp.device
        if ddp.device is not None
        else torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    )
    device_name = ddp.describe(
        f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    )
    if device.type == "cuda":
        # No cuDNN autotuning: measured on an H200, it cost 6 s (ResNet-18) to 20 s (MobileNetV3)
        # in the first epoch, more than it saves in a job of minutes, and it made the throughput
        # measured in the first steps (which sizes the schedule to the deadline) far too low.
        torch.backends.cudnn.benchmark = False
    autocast: Callable[[], AbstractContextManager[Any]] = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
        if device.type == "cuda"
        else nullcontext
    )
    torch.manual_seed(config.seed)
    init_checkpoint = config.init_checkpoint
    arch = init_checkpoint["arch"] if init_checkpoint else preset.arch
    train_samples, val_samples = _split(samples, classes)
    fetch = (lambda s: images[s.image_id]) if isinstance(images, Mapping) else images

    # -- data
    resolution = (
        int(init_checkpoint["resolution"])
        if init_checkpoint
        else choose_resolution(
            (image_size(fetch(s)) for s in _spread(samples, SIZE_SAMPLE)), preset
        )
    )
    planned_epochs = min(preset.epochs, config.max_epochs or preset.epochs)
    total_images = len(train_samples) + len(val_samples)

    def decoded(done: int) -> None:
        progress(
            Progress(
                epoch=0,
                epochs_total=planned_epochs,
                step=0,
                steps_total=0,
                loss=0.0,
                train_accuracy=0.0,
                val_accuracy=None,
                learning_rate=0.0,
                images_per_second=0.0,
                eta_seconds=(time.time() - started) * (total_images - done) / max(1, done),
                device=device_name,
            )
        )

    cache_bytes = total_images * 3 * resolution * resolution
    # ranks on one host share its memory
    budget = (config.max_cache_bytes or cache_budget()) // ddp.local_world_size
    pipeline = "cached" if cache_bytes <= budget else "streamed"
    if pipeline == "cached":
        train_x = decode_images(train_samples, fetch, resolution, decoded)
        val_x = decode_images(
            val_samples, fetch, resolution, lambda done: decoded(len(train_samples) + done)
        )
        if not config.shares_device and cache_on_gpu(cache_bytes, device):
            train_x, val_x = train_x.to(device), val_x.to(device)
            pipeline = "cached-gpu"
    else:  # over the budget: decode each batch as it is needed (threads; the GIL is released)
        train_x = StreamedImages(train_samples, fetch, resolution)
        val_x = StreamedImages(val_samples, fetch, resolution)
    index = {name: i for i, name in enumerate(classes)}
    train_y = torch.tensor([index[s.label] for s in train_samples])
    val_y = torch.tensor([index[s.label] for s in val_samples])

    # -- model
    net = build_model(arch, len(classes), resolution)
    init = _init_weights(
        net, arch, classes, init_checkpoint, config.pretrained_path, config.pretrained_source
    )
    model = InferenceModel(net, _normalization(init, init_checkpoint, train_x), resolution)
    model.to(device)
    # channels-last on every device: oneDNN on CPU is faster with it too (MobileNetV3-Small at
    # 128 px trains 1.3x faster on 2 cores, ResNet-18 at 224 px 1.2x, ResNet-50 1.1-1.4x)
    net.to(memory_format=torch.channels_last)
    peak_lr = preset.lr * (INCREMENTAL_LR_SCALE if init_checkpoint else 1.0)
    per_rank = ddp.samples_per_rank(len(train_x))  # the batch size is per rank (per GPU)
    batch_size = min(preset.batch_size, max(2, per_rank))
    if device.type == "cuda" and not config.shares_device:  # a larger batch fills the GPU; AdamW's rate grows by its square root
        growth = ddp.decide(
            lambda: _gpu_batch_growth(net, batch_size, per_rank, resolution, device, autocast)
        )
        batch_size *= growth
        peak_lr *= math.sqrt(growth)
    train_net = ddp.wrap(net)  # DDP: rank 0's weights on every rank, gradients averaged
    if ddp.active:  # ranks draw different dropout masks
        torch.manual_seed(config.seed + ddp.rank)
    optimizer = _optimizer(net, preset, peak_lr)

    # -- loop
    deadline = config.deadline
    run = _Run(
        preset=preset,
        peak_lr=peak_lr,
        device=device,
        device_name=device_name,
        autocast=autocast,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch(per_rank, batch_size),
        epochs_total=planned_epochs,
        val_size=len(val_x),
        training_ends=None if deadline is None else deadline - _margin(deadline - started),
        progress=progress,
        should_stop=should_stop,
        generator=torch.Generator(device=device).manual_seed(config.seed + ddp.rank),
        order_generator=torch.Generator().manual_seed(config.seed),
        train_net=train_net,
        ddp=ddp,
    )

    def tick() -> None:  # keeps progress coming during long evaluations
        if run.due():
            run.report(epoch)

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    stale = 0  # epochs since validation accuracy last improved
    stop_reason: str | None = None
    epoch = 0
    while stop_reason is None and epoch < run.epochs_total:
        epoch += 1
        epoch_start = time.time()
        stats = train_one_epoch(model, optimizer, train_x, train_y, epoch, run)
        if stats["stop_reason"] is not None:  # an incomplete epoch is not evaluated
            stop_reason = stats["stop_reason"]
            epoch -= 1
            break
        eval_start = time.time()
        recalibrate_batch_norm(model, train_x, device=device, autocast=autocast, ddp=ddp)
        val = evaluate(model, val_x, val_y, device=device, autocast=autocast, tick=tick, ddp=ddp)
        run.evaluated_in(time.time() - eval_start)
        run.val_accuracy = val["accuracy"]
        history.append(
            {
                "epoch": epoch,
                "train_loss": stats["loss"],
                "train_accuracy": stats["accuracy"],
                "val_loss": val["loss"],
                "val_accuracy": val["accuracy"],
                "learning_rate": stats["learning_rate"],
                "images_per_second": stats["images_per_second"],
                "seconds": time.time() - epoch_start,
                "elapsed_seconds": time.time() - started,
            }
        )
        improved = best is None or val["accuracy"] > best["accuracy"]
        if best is None or (val["accuracy"], -val["loss"]) > (best["accuracy"], -best["loss"]):
            best = _snapshot(net, epoch, val)
        stale = 0 if improved else stale + 1
        run.loss, run.accuracy = stats["loss"], stats["accuracy"]
        run.report(epoch, stats["images_per_second"])
        if (stop_reason := run.requested_stop()) or stale >= preset.patience:
            stop_reason = stop_reason or CONVERGED
        elif run.stop_at is not None:
            run.fit_epochs(time.time(), time.time() - epoch_start, done=epoch)
    if stop_reason is None:
        stop_reason = DURATION_LIMIT if run.time_limited else CONVERGED
    if best is None:  # stopped before the first epoch ended: keep what there is
        if run.step > 0:
            recalibrate_batch_norm(
                model, train_x, device=device, autocast=autocast, images=FALLBACK_BN_IMAGES, ddp=ddp
            )
        best = _snapshot(
            net, 0, evaluate(model, val_x, val_y, device=device, autocast=autocast, ddp=ddp)
        )

    # -- the best epoch's evaluation, with test-time augmentation when it helps
    net.load_state_dict(best["state_dict"])
    probs, use_tta = best["probs"], False
    if preset.tta and ddp.decide(lambda: deadline is None or time.time() < deadline):
        model.tta = True
        with_tta = evaluate(
            model, val_x, val_y, device=device, autocast=autocast, tick=tick, ddp=ddp
        )
        use_tta = (with_tta["accuracy"], -with_tta["loss"]) > (best["accuracy"], -best["loss"])
        model.tta = use_tta
        if use_tta:
            probs = with_tta["probs"]
    train_counts = Counter(s.label for s in train_samples)
    val_counts = Counter(s.label for s in val_samples)
    evaluation = evaluate_predictions(
        val_y.tolist(),
        probs.numpy(),
        classes,
        dict(train_counts),
        dict(val_counts),
        [s.image_id for s in val_samples],
    )
    evaluation["test_time_augmentation"] = use_tta
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "classes": classes,
        "resolution": resolution,
        "state_dict": best["state_dict"],
        "normalization": model_normalization(model),
        "tta": use_tta,
        "epoch": best["epoch"],
        "best_val_accuracy": evaluation["accuracy"],
        "preference": preset.name,
        "hyperparameters": {
            **asdict(preset),
            "arch": arch,
            "lr": peak_lr,
            "batch_size": batch_size,  # per rank
            "world_size": ddp.world_size,  # DDP ranks (GPUs); 1: a single process
            "seed": config.seed,
        },
    }
    return TrainResult(
        pipeline=pipeline,
        checkpoint=checkpoint,
        evaluation=evaluation,
        history=history,
        stop_reason=stop_reason,
        epochs_run=len(history),
        best_epoch=best["epoch"],
        device=device_name,
        images_per_second=run.train_images / max(run.train_seconds, 1e-9),
        resolution=resolution,
        arch=arch,
        init=init,
    )


def _margin(budget_seconds: float) -> float:
    """The time kept free before the deadline, for the final evaluation and saving."""
    return min(DEADLINE_MARGIN * max(0.0, budget_seconds), DEADLINE_MARGIN_MAX)


def _split(samples: list[Sample], classes: list[str]) -> tuple[list[Sample], list[Sample]]:
    """The TRAIN and EVAL samples; InvalidArgument for unknown labels or usages, or an empty set."""
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise InvalidArgument.field("classes", "needs at least 2 distinct class names")
    known = set(classes)
    unknown = sorted({s.label for s in samples} - known)
    if unknown:
        raise InvalidArgument.field(
            "samples", f"labels not among the classes: {', '.join(unknown[:10])}"
        )
    bad_usage = sorted({s.usage for s in samples} - {"TRAIN", "EVAL"})
    if bad_usage:
        raise InvalidArgument.field(
            "samples", f"usage must be TRAIN or EVAL, not {', '.join(bad_usage)}"
        )
    train_samples = [s for s in samples if s.usage == "TRAIN"]
    val_samples = [s for s in samples if s.usage == "EVAL"]
    if not train_samples or not val_samples:
        raise InvalidArgument.field("samples", "needs at least one TRAIN and one EVAL sample")
    return train_samples, val_samples


def steps_per_epoch(images: int, batch_size: int) -> int:
    """Steps that pass over ``images`` once: full batches, then the rest as a smaller one when
    it has at least two images (batch norm needs two; a single leftover waits for the next
    epoch's order)."""
    full, rest = divmod(images, batch_size)
    return max(1, full + (rest >= 2))


def _spread(samples: list[Sample], count: int) -> list[Sample]:
    """Up to ``count`` samples evenly spread over the whole list (deterministic): a list in
    label order gives every label its share."""
    return [samples[i] for i in _spread_indices(len(samples), count)]


def _spread_indices(length: int, count: int) -> list[int]:
    """``min(count, length)`` positions evenly spread over ``range(length)``, ascending."""
    n = min(count, length)
    return [i * length // n for i in range(n)]


def _snapshot(net: nn.Module, epoch: int, val: dict[str, Any]) -> dict[str, Any]:
    """A cpu copy of the weights with the validation results they scored."""
    state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
    return {
        "state_dict": state,
        "epoch": epoch,
        "accuracy": val["accuracy"],
        "loss": val["loss"],
        "probs": val["probs"],
    }


def model_normalization(model: InferenceModel) -> dict[str, list[float]]:
    return {"mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist()}


# --- inference --------------------------------------------------------------------------


def preprocessing_spec(checkpoint: dict) -> dict[str, Any]:
    """How to turn an image into the input of the model that ``load_model`` or the export returns."""
    resolution = int(checkpoint["resolution"])
    return {
        "format": "trainyard.preprocessing/v2",  # v2: decode is the list of steps
        "arch": checkpoint["arch"],
        "classes": list(checkpoint["classes"]),
        "resolution": resolution,
        "decode": list(DECODE_STEPS),
        "input": {
            "dtype": "uint8",
            "layout": "NCHW",
            "channels": "RGB",
            "shape": [-1, 3, resolution, resolution],
        },
        "normalization": {
            **{k: list(v) for k, v in checkpoint["normalization"].items()},
            "applied": "inside the model, on input / 255",
        },
        "test_time_augmentation": bool(checkpoint.get("tta", False)),
        "output": "probabilities (softmax), one per class, in the order of `classes`",
    }


def load_model(
    checkpoint: dict, device: str | torch.device = "cpu"
) -> tuple[InferenceModel, dict[str, Any]]:
    """The checkpoint's model in eval mode (uint8 RGB NCHW in, probabilities out) and its preprocessing spec."""
    net = build_model(checkpoint["arch"], len(checkpoint["classes"]), int(checkpoint["resolution"]))
    net.load_state_dict(checkpoint["state_dict"])
    net.to(memory_format=torch.channels_last)
    model = InferenceModel(
        net,
        checkpoint["normalization"],
        int(checkpoint["resolution"]),
        tta=bool(checkpoint.get("tta", False)),
    )
    return model.to(device).eval(), preprocessing_spec(checkpoint)


def predict(
    checkpoint_or_loaded: dict | tuple[InferenceModel, dict[str, Any]],
    images: list[bytes],
    top_k: int = 5,
) -> list[list[tuple[str, float]]]:
    """The ``top_k`` (class, probability) pairs of each encoded image, most probable first.

    Takes a checkpoint, or what ``load_model`` returned (cheaper when called often).
    """
    if isinstance(checkpoint_or_loaded, tuple):
        model, spec = checkpoint_or_loaded
    else:
        model, spec = load_model(checkpoint_or_loaded)
    classes = spec["classes"]
    x = decode_images(images, lambda blob: blob, spec["resolution"])
    device = next(model.parameters()).device
    return ranked(probabilities(model, x, device=device), classes, top_k)


def ranked(probs: torch.Tensor, classes: list[str], top_k: int) -> list[list[tuple[str, float]]]:
    """The ``top_k`` (class, probability) pairs of each row of ``probs``, most probable first."""
    values, indices = probs.topk(min(top_k, len(classes)), dim=1)
    return [
        [
            (classes[j], float(v))
            for v, j in zip(row_values.tolist(), row_indices.tolist(), strict=True)
        ]
        for row_values, row_indices in zip(values, indices, strict=True)
    ]
