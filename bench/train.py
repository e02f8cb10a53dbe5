"""Training-pipeline benchmark: the trainer's pipeline vs a plain torchvision loop.

Same images (photo-sized JPEGs, 1024×768 by default as in bench/upload.py, or
`--size 640x480`; 4 classes), same model
(`performance_first`: MobileNetV3-Small at 128 px), batch size, optimizer,
epochs, and an evaluation after every epoch in both. The epochs are the preset's
schedule (10) unless `--epochs` says otherwise; when the trainer stops early, the
baseline runs as many epochs as it did. The baseline is the
textbook loop: ImageFolder + DataLoader (2 workers) + PIL decode every epoch +
Resize/ToTensor/Normalize transforms. The trainer decodes each image once into
a uint8 tensor cache and augments and normalises whole batches on the device.

    python bench/train.py [--images 400] [--epochs N] [--output PATH]
    python bench/train.py --throughput [--output PATH]   # on a GPU

Prints images/s of each and the ratio; writes bench/results/train.json.
Target: >= 3x on CPU (>= 5x on a GPU). The baseline's DataLoader uses 2 workers
on CPU (the machine's 2 cores) and 8 with pinned memory on a GPU host.

`--throughput` measures the training step alone (ResNet-18 and ResNet-50 at
224 px, bf16 autocast, channels_last, batch 256, data already on the GPU):
the ceiling the pipeline feeds; writes bench/results/train-throughput.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
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


def photo(kind: str, rng: np.random.Generator, width: int = 1024, height: int = 768) -> bytes:
    """A JPEG photo: a noisy, textured background with one shape of the class (sizes scale with the photo)."""
    base = rng.normal(128, 40, (height, width, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    k = width / 640
    cx, cy, r = int(rng.integers(160, 480) * k), int(rng.integers(120, 360) * k), int(rng.integers(60, 110) * k)
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


def make_images(count: int, folder: Path, width: int = 1024, height: int = 768) -> list[training.Sample]:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(count):
        kind = CLASSES[i % len(CLASSES)]
        usage = "EVAL" if i % 5 == 0 else "TRAIN"
        path = folder / usage / kind / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(photo(kind, rng, width, height))
        samples.append(training.Sample(str(path), kind, usage))
    return samples


def trainer_pipeline(samples: list[training.Sample], epochs: int) -> dict:
    config = training.TrainConfig(classes=CLASSES, preference="performance_first", max_epochs=epochs, seed=0)
    started = time.perf_counter()
    result = training.train(samples, lambda s: Path(s.image_id).read_bytes(), config)
    seconds = time.perf_counter() - started
    n_train = sum(s.usage == "TRAIN" for s in samples)
    first, last = result.history[0], result.history[-1]
    return {"seconds": seconds, "epochs": result.epochs_run, "images_per_second": result.epochs_run * n_train / seconds,
            "val_accuracy": result.evaluation["accuracy"], "resolution": result.resolution, "arch": result.arch,
            "batch_size": result.checkpoint["hyperparameters"]["batch_size"],
            # where the time went: decoding and setup, each epoch (training + precise BN + evaluation), the end
            "setup_seconds": round(first["elapsed_seconds"] - first["seconds"], 3),
            "epoch_seconds": [round(h["seconds"], 3) for h in result.history],
            "finish_seconds": round(seconds - last["elapsed_seconds"], 3)}


def warm_up(arch: str, resolution: int) -> None:
    """One training step on the device before anything is timed: a trainer process initialises
    CUDA and its libraries once, not per job, so neither loop should pay for it."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(arch, len(CLASSES), resolution).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss = model(torch.randn(8, 3, resolution, resolution, device=device)).sum()
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()


def baseline(folder: Path, epochs: int, resolution: int, arch: str, batch_size: int) -> dict:
    preset = get_preset("performance_first")
    tf = transforms.Compose([
        transforms.Resize((resolution, resolution)),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    train_set = datasets.ImageFolder(str(folder / "TRAIN"), transform=tf)
    val_set = datasets.ImageFolder(str(folder / "EVAL"), transform=tf)
    cuda = torch.cuda.is_available()
    workers = min(8, os.cpu_count() or 2) if cuda else 2
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                              pin_memory=cuda)
    val_loader = DataLoader(val_set, batch_size=256, num_workers=workers, pin_memory=cuda)
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    model = build_model(arch, len(CLASSES), resolution).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=preset.lr, weight_decay=preset.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=preset.label_smoothing)
    started = time.perf_counter()
    accuracy = 0.0
    for _ in range(epochs):
        model.train()
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), preset.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val_loader:
                correct += int((model(x.to(device)).argmax(1) == y.to(device)).sum())
        accuracy = correct / len(val_set)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "epochs": epochs, "images_per_second": epochs * len(train_set) / seconds,
            "val_accuracy": accuracy}


def step_throughput(arch: str, batch: int = 256, resolution: int = 224, steps: int = 30) -> dict:
    """Training images/s of one architecture: bf16 autocast, channels_last, data on the GPU."""
    device = torch.device("cuda")
    model = build_model(arch, 1000, resolution).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x = torch.randn(batch, 3, resolution, resolution, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"arch": arch, "batch": batch, "resolution": resolution, "precision": "bf16 autocast",
            "images_per_second": steps * batch / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--epochs", type=int, help="default: the preset's schedule, as a user's job runs it")
    parser.add_argument("--size", default="1024x768", help="photo size WIDTHxHEIGHT")
    parser.add_argument("--throughput", action="store_true", help="training-step images/s of ResNet-18/50 (GPU)")
    parser.add_argument("--output", type=Path, help="where to write the JSON (default bench/results/)")
    args = parser.parse_args()
    if args.throughput:
        if not torch.cuda.is_available():
            raise SystemExit("--throughput measures a GPU; none is available")
        results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "models": [step_throughput("resnet18"), step_throughput("resnet50")]}
        output = args.output or RESULTS.with_name("train-throughput.json")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results, indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        width, height = (int(v) for v in args.size.lower().split("x"))
        samples = make_images(args.images, folder, width, height)
        preset = get_preset("performance_first")
        warm_up(preset.arch, 128)
        ours = trainer_pipeline(samples, args.epochs or preset.epochs)
        plain = baseline(folder, ours["epochs"], ours["resolution"], ours["arch"], ours["batch_size"])
    results = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "images": args.images, "image_size": f"{args.size} JPEG",
        "trainer": ours, "torchvision_baseline": plain,
        "ratio": ours["images_per_second"] / plain["images_per_second"],
    }
    results["target_met"] = results["ratio"] >= (5 if torch.cuda.is_available() else 3)
    output = args.output or RESULTS
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
