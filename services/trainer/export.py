"""Export of a trained model for serving without Trainyard.

The TorchScript module is the checkpoint's network wrapped with its
normalisation (and test-time augmentation when the checkpoint uses it): it takes
a uint8 RGB NCHW tensor at the training resolution and returns class
probabilities, exactly what ``training.predict`` computes. Loading it needs only
``torch.jit.load``; the preprocessing spec (how to decode and resize an image,
the class order) travels beside it as JSON and inside the archive as
``preprocessing.json``.
"""

from __future__ import annotations

import io
import json
from typing import Any

import torch

from trainyard.services.trainer.training import load_model, preprocessing_spec

__all__ = ["export_torchscript", "preprocessing_spec"]


def export_torchscript(checkpoint: dict) -> tuple[bytes, dict[str, Any]]:
    """The checkpoint's model as a TorchScript archive (bytes), and its preprocessing spec."""
    model, spec = load_model(checkpoint, device="cpu")
    resolution = spec["resolution"]
    example = torch.zeros((2, 3, resolution, resolution), dtype=torch.uint8)
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={"preprocessing.json": json.dumps(spec)})
    return buffer.getvalue(), spec
