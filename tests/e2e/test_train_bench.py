"""bench/train.py at a tiny size: both loops run the same epochs on the same images and the JSON says so.

The ratio is not asserted (speed is for the benchmark to report on a quiet machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_train_benchmark_compares_like_with_like(tmp_path):
    output = tmp_path / "train.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train.py"), "--images", "40", "--epochs", "2", "--size", "160x120",
         "--output", str(output)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads(output.read_text())
    ours, plain = results["trainer"], results["torchvision_baseline"]
    assert ours["epochs"] == plain["epochs"] == 2
    assert ours["arch"] == "mobilenet_v3_small" and ours["resolution"] == 128
    assert ours["images_per_second"] > 0 and plain["images_per_second"] > 0
    assert results["ratio"] == pytest.approx(ours["images_per_second"] / plain["images_per_second"])
    assert len(ours["epoch_seconds"]) == 2
