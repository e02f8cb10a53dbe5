"""Preset benchmark: the size and throughput of each training preference's model, measured.

For every preset (rule S6) the model is built as the trainer builds it, at the
preset's largest resolution, and measured on this machine's device the way the
trainer runs it (channels-last; bf16 autocast on CUDA): parameters, the size of
its float32 weights, training images/s (forward, backward, AdamW step at the
preset's batch size) and inference images/s (evaluation mode, no gradients). No
baseline: these are the figures the preset table in docs/trainer.md quotes.

    python bench/presets.py [--steps 4] [--output PATH]

Writes bench/results/presets.json (bench/results/gpu/presets.json on a GPU host
via bench/gpu.sh).
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from trainyard.services.trainer.presets import PRESETS, Preset, build_model

RESULTS = Path(__file__).resolve().parent / "results" / "presets.json"
CLASSES = 10


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(preset: Preset, device: torch.device, steps: int) -> dict:
    """Parameters, weight size and train/inference images/s of one preset's model."""
    resolution = preset.max_resolution
    torch.manual_seed(0)
    model = build_model(preset.arch, CLASSES, resolution).to(device, memory_format=torch.channels_last)
    parameters = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=preset.lr)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else nullcontext
    # the CPU has few cores: a smaller batch keeps the run short without changing images/s much
    batch = preset.batch_size if device.type == "cuda" else min(preset.batch_size, 16)
    x = torch.rand(batch, 3, resolution, resolution, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, CLASSES, (batch,), device=device)

    def train_step() -> None:
        with autocast():
            loss = nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def timed(step, count: int) -> float:
        step()  # the first call builds kernels; not timed
        _synchronize(device)
        started = time.perf_counter()
        for _ in range(count):
            step()
        _synchronize(device)
        return count * batch / (time.perf_counter() - started)

    model.train()
    train_rate = timed(train_step, steps)
    model.eval()

    @torch.inference_mode()
    def infer_step() -> None:
        with autocast():
            model(x)

    infer_rate = timed(infer_step, steps)
    return {
        "preference": preset.name, "arch": preset.arch, "resolution": resolution, "batch": batch,
        "parameters": parameters, "weights_mib": round(parameters * 4 / 2**20, 1),
        "train_images_per_second": round(train_rate, 1), "inference_images_per_second": round(infer_rate, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps of each kind per preset")
    parser.add_argument("--output", type=Path, help="where to write the JSON (default bench/results/)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "precision": "bf16 autocast" if device.type == "cuda" else "float32",
        "presets": [],
    }
    for preset in PRESETS.values():
        row = measure(preset, device, args.steps)
        results["presets"].append(row)
        print(f"{row['preference']:<18} {row['arch']:<20} {row['resolution']:>4} px  {row['parameters'] / 1e6:5.2f} M "
              f"{row['weights_mib']:6.1f} MiB  train {row['train_images_per_second']:8.1f} img/s  "
              f"inference {row['inference_images_per_second']:8.1f} img/s")
    output = args.output or RESULTS
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
