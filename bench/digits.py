"""Benchmark: each training preference on scikit-learn's handwritten digits.

The 1,797 8x8 digits are written as PNG files in memory, split 80/20 stratified
(random_state=0, as in the brief), and trained with each preference under a
60-minute deadline and no epoch override, so that early stopping (not the
deadline) has to end each run. The baseline, run on the same split in the same
process, is the brief's reference point: ``SVC(gamma=0.001)`` on the raw pixels.

    python bench/digits.py [--preferences balance ...] [--out bench/results/digits.json]

Prints one line per run (wall time, accuracy, ratio to the baseline) and writes
the numbers, the epoch histories and the machine's load as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

from trainyard.services.trainer import presets, training

DEADLINE_SECONDS = 60 * 60


def digits_as_samples() -> tuple[list[training.Sample], dict[str, bytes], np.ndarray, np.ndarray]:
    """The digits as samples with PNG bytes, and the train/eval index arrays of the split."""
    data = load_digits()
    ids = [f"digit-{i:04d}" for i in range(len(data.target))]
    train_idx, eval_idx = train_test_split(
        np.arange(len(ids)), stratify=data.target, random_state=0, test_size=0.2
    )
    samples = [training.Sample(ids[i], str(data.target[i]), "TRAIN") for i in train_idx]
    samples += [training.Sample(ids[i], str(data.target[i]), "EVAL") for i in eval_idx]
    images = {}
    for i, pixels in enumerate(data.images):
        buffer = io.BytesIO()
        Image.fromarray((pixels * 255 / 16).round().astype(np.uint8), mode="L").save(
            buffer, format="PNG"
        )
        images[ids[i]] = buffer.getvalue()
    return samples, images, train_idx, eval_idx


def baseline(train_idx: np.ndarray, eval_idx: np.ndarray) -> dict:
    data = load_digits()
    start = time.perf_counter()
    model = SVC(gamma=0.001).fit(data.data[train_idx], data.target[train_idx])
    accuracy = float(model.score(data.data[eval_idx], data.target[eval_idx]))
    return {
        "model": "SVC(gamma=0.001) on raw pixels",
        "accuracy": accuracy,
        "wall_seconds": time.perf_counter() - start,
    }


def run_preference(preference: str, samples, images) -> dict:
    classes = [str(d) for d in range(10)]
    config = training.TrainConfig(
        classes=classes, preference=preference, deadline=time.time() + DEADLINE_SECONDS, seed=0
    )
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    result = training.train(samples, images, config)
    wall = time.perf_counter() - start
    reached = next(
        (h["elapsed_seconds"] for h in result.history if h["val_accuracy"] >= 0.97), None
    )
    return {
        "preference": preference,
        "arch": result.arch,
        "resolution": result.resolution,
        "wall_seconds": round(wall, 2),
        "accuracy": result.evaluation["accuracy"],
        "macro_f1": result.evaluation["macro"]["f1"],
        "stop_reason": result.stop_reason,
        "epochs_run": result.epochs_run,
        "epochs_cap": presets.get_preset(preference).epochs,
        "best_epoch": result.best_epoch,
        "seconds_to_0.97": None if reached is None else round(reached, 2),
        "test_time_augmentation": result.evaluation["test_time_augmentation"],
        "train_images_per_second": round(result.images_per_second, 1),
        "device": result.device,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "history": result.history,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--preferences", nargs="+", default=list(presets.PRESETS), choices=list(presets.PRESETS)
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "digits.json"
    )
    args = parser.parse_args()

    samples, images, train_idx, eval_idx = digits_as_samples()
    reference = baseline(train_idx, eval_idx)
    print(
        f"baseline  {reference['model']}: accuracy {reference['accuracy']:.4f} in {reference['wall_seconds']:.2f}s"
    )
    runs = []
    for preference in args.preferences:
        run = run_preference(preference, samples, images)
        runs.append(run)
        print(
            f"{preference:<18} {run['arch']:<19} {run['resolution']:>3}px  wall {run['wall_seconds']:7.1f}s  "
            f"accuracy {run['accuracy']:.4f} (x{run['accuracy'] / reference['accuracy']:.3f} of baseline)  "
            f"epochs {run['epochs_run']}/{run['epochs_cap']} best {run['best_epoch']}  {run['stop_reason']}  "
            f"0.97 after {run['seconds_to_0.97']}s  load {run['load_average_before']:.1f}->{run['load_average_after']:.1f}",
            flush=True,
        )
        report = {
            "benchmark": "digits: 1,797 8x8 digits, 80/20 stratified split (random_state=0), 60-minute deadline",
            "machine": {
                "cpus": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "cuda": torch.cuda.is_available(),
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "baseline": reference,
            "runs": runs,
            "accuracy_ratio_to_baseline": {
                r["preference"]: r["accuracy"] / reference["accuracy"] for r in runs
            },
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(report, indent=2) + "\n"
        )  # after each run: partial results survive


if __name__ == "__main__":
    main()
