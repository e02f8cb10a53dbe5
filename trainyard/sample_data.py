"""Real sample data without a network: scikit-learn's bundled handwritten digits.

1,797 8×8 grayscale images of the digits 0–9 (values 0–16), written out as PNG
files in class folders, the layout `trainyard dataset import` reads.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def digits() -> tuple[np.ndarray, np.ndarray]:
    """(images as uint8 N×8×8 scaled to 0–255, integer labels)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images * (255 / 16)).round().astype(np.uint8), data.target


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def digit_files(per_class: int | None = None) -> list[tuple[str, str, bytes]]:
    """(file name, label, PNG bytes) for each digit, optionally the first `per_class` of each class."""
    images, labels = digits()
    seen: dict[int, int] = {}
    files = []
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        seen[label] = seen.get(label, 0) + 1
        if per_class is not None and seen[label] > per_class:
            continue
        files.append((f"{label}/digit-{index:04d}.png", str(label), png_bytes(pixels)))
    return files


def write_digits(folder: Path, per_class: int | None = None) -> int:
    """Write the digits as <folder>/<label>/digit-NNNN.png; returns the number of files."""
    files = digit_files(per_class)
    for name, _, data in files:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return len(files)
