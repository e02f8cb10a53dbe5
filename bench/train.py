"""Training-pipeline benchmark: the trainer's pipeline vs a plain torchvision loop.

Same images (photo-sized JPEGs, 640×480, 4 classes), same model
(`performance_first`: MobileNetV3-Small at 128 px), batch size, optimizer,
epochs, and an evaluation after every epoch in both. The baseline is the
textbook loop: ImageFolder + DataLoader (2 workers) + PIL decode every epoch +
Resize/ToTensor/Normalize transforms. The trainer decodes each image once into
a uint8 tensor cache and augments and normalises whole batches on the device.

    python bench/train.py [--images 400] [--epochs 4]

Prints images/s of each and the ratio; writes bench/results/train.json.
Target: >= 3x on CPU (>= 5x on a GPU).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from trainyard.services.trainer import training
from trainyard.services.trainer.presets import build_model, get_preset

RESULTS = Path(__file__).resolve().parent / "results" / "train.json"
CLASSES = ["circle", "square", "triangle", "cross"]


def photo(kind: str, rng: np.random.Generator) -> bytes:
    """A 640×480 JPEG: a noisy, textured background with one shape of the class."""
    base = rng.normal(128, 40, (480, 640, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    cx, cy, r = rng.integers(160, 480), rng.integers(120, 360), rng.integers(60, 110)
    color = tuple(int(c) for c in rng.integers(0, 255, 3))
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
    elif kind == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=color)
    elif kind == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
    else:
        draw.rectangle((cx - r, cy - r // 4, cx + r, cy + r // 4), fill=color)
        draw.rectangle((cx - r // 4, cy - r, cx + r // 4, cy + r), fill=color)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_images(count: int, folder: Path) -> list[training.Sample]:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(count):
        kind = CLASSES[i % len(CLASSES)]
        usage = "EVAL" if i % 5 == 0 else "TRAIN"
        path = folder / usage / kind / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(photo(kind, rng))
        samples.append(training.Sample(str(path), kind, usage))
    return samples


def trainer_pipeline(samples: list[training.Sample], epochs: int) -> dict:
    config = training.TrainConfig(classes=CLASSES, preference="performance_first", max_epochs=epochs, seed=0)
    started = time.perf_counter()
    result = training.train(samples, lambda s: Path(s.image_id).read_bytes(), config)
    seconds = time.perf_counter() - started
    n_train = sum(s.usage == "TRAIN" for s in samples)
    return {"seconds": seconds, "epochs": result.epochs_run, "images_per_second": result.epochs_run * n_train / seconds,
            "val_accuracy": result.evaluation["accuracy"], "resolution": result.resolution, "arch": result.arch}


def baseline(folder: Path, epochs: int, resolution: int, arch: str) -> dict:
    preset = get_preset("performance_first")
    tf = transforms.Compose([
        transforms.Resize((resolution, resolution)),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    train_set = datasets.ImageFolder(str(folder / "TRAIN"), transform=tf)
    val_set = datasets.ImageFolder(str(folder / "EVAL"), transform=tf)
    train_loader = DataLoader(train_set, batch_size=preset.batch_size, shuffle=True, num_workers=2, drop_last=True)
    val_loader = DataLoader(val_set, batch_size=256, num_workers=2)
    torch.manual_seed(0)
    model = build_model(arch, len(CLASSES), resolution)
    optimizer = torch.optim.AdamW(model.parameters(), lr=preset.lr, weight_decay=preset.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=preset.label_smoothing)
    started = time.perf_counter()
    accuracy = 0.0
    for _ in range(epochs):
        model.train()
        for x, y in train_loader:
            loss = loss_fn(model(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), preset.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val_loader:
                correct += int((model(x).argmax(1) == y).sum())
        accuracy = correct / len(val_set)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "epochs": epochs, "images_per_second": epochs * len(train_set) / seconds,
            "val_accuracy": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        samples = make_images(args.images, folder)
        ours = trainer_pipeline(samples, args.epochs)
        plain = baseline(folder, ours["epochs"], ours["resolution"], ours["arch"])
    results = {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "images": args.images, "image_size": "640x480 JPEG",
        "trainer": ours, "torchvision_baseline": plain,
        "ratio": ours["images_per_second"] / plain["images_per_second"],
    }
    results["target_met"] = results["ratio"] >= (5 if results["device"] == "cuda" else 3)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
