"""Training preferences (rule S6) and the models they build.

A preference is a row of hyperparameters: which torchvision architecture, the
largest input resolution it may use, how many epochs at most, the optimizer's
settings and how patient early stopping is. The resolution actually used
follows the data (``choose_resolution``): small images are not blown up to the
preset's maximum.

Models are torchvision constructors with ``weights=None``; for small inputs
(<= ``SMALL_INPUT`` pixels) their ImageNet stem, which divides the input by 4
before the first block, is replaced by a CIFAR-style stem that keeps the
resolution, and the classification head is sized to the classes.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import nn
from torchvision import models

from trainyard.errors import InvalidArgument

SMALL_INPUT = 64  # inputs up to this size get a stem that does not downsample


@dataclass(frozen=True)
class Preset:
    """The hyperparameters of one training preference."""

    name: str
    arch: str  # a key of ARCHITECTURES
    max_resolution: int  # the training resolution never exceeds this (pixels, square)
    min_resolution: int  # ...and is never below this, even for tiny images
    epochs: int  # the schedule's length when the time budget allows it
    batch_size: int
    lr: float  # AdamW peak learning rate (one-cycle: warmup then cosine decay)
    weight_decay: float
    patience: int  # early stop after this many epochs without a better validation accuracy
    tta: bool  # try test-time augmentation at the end; kept only when it helps
    warmup_fraction: float = 0.15  # part of the schedule spent warming the learning rate up
    label_smoothing: float = 0.1
    grad_clip: float = 2.0  # max gradient norm


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        # A short schedule on a small model: fastest to train and to serve.
        Preset(
            name="performance_first",
            arch="mobilenet_v3_small",
            max_resolution=128,
            min_resolution=8,
            epochs=10,
            batch_size=64,
            lr=4e-3,
            weight_decay=0.05,
            patience=3,
            tta=False,
        ),
        # The default: ResNet-18 at a moderate resolution.
        Preset(
            name="balance",
            arch="resnet18",
            max_resolution=224,
            min_resolution=8,
            epochs=8,
            batch_size=64,
            lr=3e-3,
            weight_decay=0.05,
            patience=3,
            tta=False,
        ),
        # A larger model, a higher resolution, a longer schedule and test-time augmentation.
        Preset(
            name="accuracy_first",
            arch="resnet50",
            max_resolution=320,
            min_resolution=8,
            epochs=15,
            batch_size=64,
            lr=2e-3,
            weight_decay=0.05,
            patience=4,
            tta=True,
        ),
    )
}


def get_preset(name: str) -> Preset:
    """The preset of a preference name; InvalidArgument when there is none."""
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(PRESETS)
        raise InvalidArgument.field(
            "preference", f"unknown preference {name!r}; use one of {known}"
        ) from None


def choose_resolution(sizes: Iterable[tuple[int, int]], preset: Preset) -> int:
    """The training resolution for images of these (width, height) sizes.

    The median of the images' larger side, rounded up to a multiple of 8, kept
    between the preset's minimum and maximum.
    """
    larger = [max(w, h) for w, h in sizes]
    if not larger:
        return preset.min_resolution
    median = statistics.median(larger)
    rounded = 8 * math.ceil(median / 8)
    return max(preset.min_resolution, min(preset.max_resolution, rounded))


# --- models ---------------------------------------------------------------------------


def _resnet(constructor: Callable[..., models.ResNet]) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, resolution: int) -> nn.Module:
        # zero_init_residual: each block starts as the identity, which helps from scratch.
        model = constructor(weights=None, num_classes=num_classes, zero_init_residual=True)
        if resolution <= SMALL_INPUT:
            model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            model.maxpool = nn.Identity()
        return model

    return build


def _mobilenet_v3_small(num_classes: int, resolution: int) -> nn.Module:
    model = models.mobilenet_v3_small(weights=None, num_classes=num_classes)
    # torchvision's momentum of 0.01 suits long ImageNet runs; in a short run the running
    # statistics would lag far behind and evaluation would see chance-level accuracy.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    if resolution <= SMALL_INPUT:
        # Like the CIFAR stem of the ResNets: drop the first two stride-2 steps (the stem and the
        # first block's depthwise conv). Same kernels, so pretrained weights keep their shapes.
        for conv in (model.features[0][0], model.features[1].block[0][0]):
            assert isinstance(conv, nn.Conv2d)
            conv.stride = (1, 1)
    return model


ARCHITECTURES: dict[str, Callable[[int, int], nn.Module]] = {
    "mobilenet_v3_small": _mobilenet_v3_small,
    "resnet18": _resnet(models.resnet18),
    "resnet50": _resnet(models.resnet50),
}


def build_model(arch: str, num_classes: int, resolution: int) -> nn.Module:
    """A freshly initialised ``arch`` for ``num_classes`` classes at ``resolution`` pixels."""
    if arch not in ARCHITECTURES:
        raise InvalidArgument.field(
            "arch", f"unknown architecture {arch!r}; use one of {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[arch](num_classes, resolution)


def classifier_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """The name and module of the model's last linear layer: the one with a row per class."""
    linears = [
        (name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)
    ]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear classification head")
    return linears[-1]


def pretrained_weights_file(arch: str) -> str:
    """The file name torchvision downloads the arch's default ImageNet weights to
    (``resnet18-f37072fd.pth``: the part after the dash starts the file's SHA-256).

    Read from torchvision's weights enum; nothing is downloaded. Training looks for this file
    in the torch hub cache, and weights.py for ``pretrained/<this name>`` in the store.
    ValueError (or KeyError) for an architecture torchvision publishes no weights for.
    """
    url: str = models.get_model_weights(arch).DEFAULT.url  # type: ignore[attr-defined]
    return url.rsplit("/", 1)[-1]
