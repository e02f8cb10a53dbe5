"""How the trainer decodes an image, and that the export's preprocessing spec says exactly how:
a user who follows `preprocessing.json` with plain Pillow and the TorchScript export gets the
service's predictions, for the images where plain Pillow would decode differently (JPEGs far
larger than the model's input, EXIF rotation, 16-bit grayscale, transparency)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from trainyard.services.trainer import export, training
from trainyard.services.trainer.training import Sample, TrainConfig

jit_deprecation = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo(seed: int, size: tuple[int, int] = (1600, 1200)) -> Image.Image:
    """A textured photo-like image: noise at several scales, so reduced-scale decoding shows."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (size[1] // 40, size[0] // 40, 3), dtype=np.uint8)
    base = np.array(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    fine = rng.integers(-40, 40, (size[1], size[0], 3))
    return Image.fromarray((base + fine).clip(0, 255).astype(np.uint8))


def rotated_jpeg(seed: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    return encoded(photo(seed, (640, 480)), "JPEG", exif=exif.tobytes())


def sixteen_bit_png() -> bytes:
    ramp = np.linspace(0, 65535, 96 * 96).reshape(96, 96).astype(np.uint16)
    return encoded(Image.fromarray(ramp), "PNG")


def transparent_png(hidden: tuple[int, int, int]) -> bytes:
    """Left half opaque red, right half fully transparent over `hidden`."""
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[:, :32] = (220, 20, 20, 255)
    rgba[:, 32:] = (*hidden, 0)
    return encoded(Image.fromarray(rgba, "RGBA"), "PNG")


def palette_with_transparency() -> bytes:
    image = Image.new("P", (64, 64), 0)
    image.putpalette([0, 0, 0, 30, 200, 30] + [0] * 762)
    image.paste(1, (0, 0, 32, 64))
    return encoded(image, "PNG", transparency=0)


def test_sixteen_bit_grayscale_is_scaled_not_clipped_to_white():
    x = training.decode_image(sixteen_bit_png(), 96)
    assert 120 < x.mean() < 135 and (x == 255).mean() < 0.01  # Pillow's convert alone: 99.6% white


@pytest.mark.parametrize("hidden", [(0, 0, 0), (255, 255, 255), (0, 0, 255)])
def test_transparent_pixels_are_white_whatever_colour_they_hold(hidden):
    x = training.decode_image(transparent_png(hidden), 64).astype(int)
    assert (x[:, 40:] == 255).all() and (abs(x[:, :24] - (220, 20, 20)) <= 1).all()
    palette = training.decode_image(palette_with_transparency(), 64)
    assert (palette[:, 40:] == 255).all() and (palette[:, :24] == (30, 200, 30)).all()


def test_spread_takes_every_part_of_a_list_in_label_order():
    samples = [Sample(f"{label}-{i}", str(label), "TRAIN") for label in range(10) for i in range(100)]
    assert {s.label for s in training._spread(samples, 256)} == {str(d) for d in range(10)}
    assert training._spread_indices(1000, 512)[-1] >= 998 and training._spread_indices(3, 512) == [0, 1, 2]


@pytest.mark.parametrize(("images", "batch", "steps"), [(127, 64, 2), (129, 64, 2), (130, 64, 3), (128, 64, 2),
                                                        (64, 64, 1), (1, 2, 1), (320, 64, 5)])
def test_an_epoch_passes_over_every_image_with_a_smaller_last_batch(images, batch, steps):
    assert training.steps_per_epoch(images, batch) == steps


def documented_decode(data: bytes, spec: dict) -> torch.Tensor:
    """preprocessing.json's `decode` steps, done with plain Pillow and numpy by a user of the export."""
    resolution = spec["resolution"]
    assert len(spec["decode"]) == 6 and "draft" in spec["decode"][0]
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (resolution, resolution))
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I"):
            image = Image.fromarray((np.asarray(image).astype(np.int64) >> 8).astype(np.uint8), "L")
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
        image = image.convert("RGB").resize((resolution, resolution), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


@pytest.fixture(scope="module")
def photo_model() -> dict:
    """performance_first on 16 photos of 1600 x 1200 (two classes), one epoch: a 128 px model."""
    samples, images = [], {}
    for i in range(16):
        label = "warm" if i % 2 else "cool"
        image = photo(i)
        if label == "warm":
            image = Image.eval(image, lambda v: min(255, v + 40))
        images[f"p{i}"] = encoded(image, "JPEG", quality=90)
        samples.append(Sample(f"p{i}", label, "EVAL" if i % 4 == 0 else "TRAIN"))
    config = TrainConfig(classes=["cool", "warm"], preference="performance_first", max_epochs=1, seed=0)
    result = training.train(samples, images, config)
    assert result.resolution == 128
    return result.checkpoint


@jit_deprecation
def test_the_export_and_the_documented_decoding_reproduce_predict(photo_model):
    archive, spec = export.export_torchscript(photo_model)
    scripted = torch.jit.load(io.BytesIO(archive))
    blobs = [encoded(photo(100), "JPEG", quality=90), rotated_jpeg(101), sixteen_bit_png(),
             transparent_png((0, 0, 255)), palette_with_transparency(),
             encoded(photo(102, (300, 200)).convert("L"), "PNG")]
    served = training.predict(photo_model, blobs, top_k=2)
    with torch.no_grad():
        probs = scripted(torch.stack([documented_decode(b, spec) for b in blobs]))
    for row, ranked in zip(probs, served, strict=True):
        assert {spec["classes"][i]: p for i, p in enumerate(row.tolist())} == pytest.approx(dict(ranked), abs=1e-5)


def test_a_channel_that_hardly_varies_is_not_scaled_a_thousandfold():
    flat = torch.full((8, 3, 4, 4), 128, dtype=torch.uint8)
    flat[:, 0] = torch.randint(0, 256, (8, 4, 4), dtype=torch.uint8)
    std = training._normalization("scratch", None, flat)["std"]
    assert std[0] > 0.2 and std[1:] == pytest.approx([training.MIN_CHANNEL_STD] * 2)
