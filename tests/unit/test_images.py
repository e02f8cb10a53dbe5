"""Unit tests of image validation by decoding; every case is generated in memory."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image, ImageFile

from trainyard.images import ImageInfo, InvalidImage, inspect_image


def encode(
    fmt: str, size: tuple[int, int] = (32, 24), mode: str = "RGB", **options: object
) -> bytes:
    """An image of the given format, size and mode ("L", "RGB" or "RGBA"), with noisy pixels."""
    noise = random.Random(0).randbytes(size[0] * size[1] * len(mode))
    buffer = io.BytesIO()
    Image.frombytes(mode, size, noise).save(buffer, fmt, **options)
    return buffer.getvalue()


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (8, 8), (40 * n, 0, 0)) for n in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size in its header but carries one tiny IDAT chunk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00"))
        + chunk(b"IEND", b"")
    )


# --- accepted -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mode", "expected_mode"),
    [
        ("JPEG", "RGB", "RGB"),
        ("JPEG", "L", "L"),
        ("PNG", "RGB", "RGB"),
        ("PNG", "RGBA", "RGBA"),
        ("PNG", "L", "L"),
        ("BMP", "RGB", "RGB"),
        ("WEBP", "RGB", "RGB"),
    ],
)
def test_accepted_formats(fmt: str, mode: str, expected_mode: str) -> None:
    info = inspect_image(encode(fmt, (32, 24), mode))
    assert info == ImageInfo(format=fmt, width=32, height=24, mode=expected_mode, frames=1)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_images_are_accepted_with_their_frame_count(fmt: str) -> None:
    info = inspect_image(animated(fmt))
    assert (info.format, info.width, info.height, info.frames) == (fmt, 8, 8, 3)


def test_one_pixel_image() -> None:
    assert inspect_image(encode("PNG", (1, 1))).width == 1


def test_exactly_max_pixels_is_accepted() -> None:
    assert inspect_image(encode("PNG", (10, 10)), max_pixels=100).height == 10


def test_exactly_max_bytes_is_accepted() -> None:
    data = encode("PNG")
    assert inspect_image(data, max_bytes=len(data)).format == "PNG"


# --- rejected -------------------------------------------------------------------------------


def reason(data: bytes, **limits: int) -> str:
    with pytest.raises(InvalidImage) as caught:
        inspect_image(data, **limits)
    assert str(caught.value) == caught.value.reason
    return caught.value.reason


def test_empty() -> None:
    assert reason(b"") == "the file is empty"


def test_over_max_bytes_says_size_and_limit() -> None:
    data = encode("PNG")
    assert reason(data, max_bytes=len(data) - 1) == (
        f"the file is {len(data):,} bytes; the limit is {len(data) - 1:,} bytes"
    )


def test_one_pixel_too_many_says_the_numbers() -> None:
    assert reason(encode("PNG", (10, 10)), max_pixels=99) == (
        "the image is 10 × 10 = 100 pixels; the limit is 99 pixels"
    )


def test_decompression_bomb_is_rejected_before_decoding() -> None:
    data = png_header_only(10_000, 10_000)
    with pytest.warns(Image.DecompressionBombWarning):  # Pillow's own warning at open
        text = reason(data)
    assert text == "the image is 10000 × 10000 = 100,000,000 pixels; the limit is 89,478,485 pixels"


def test_huge_decompression_bomb_is_rejected_by_pillow_at_open() -> None:
    text = reason(png_header_only(30_000, 30_000))
    assert text == "the image has more than 178,956,970 pixels; the limit is 89,478,485 pixels"


def test_pillow_globals_are_left_alone() -> None:
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    reason(encode("PNG", (10, 10)), max_pixels=10)
    inspect_image(encode("PNG", (10, 10)), max_pixels=1000)
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


def test_random_bytes() -> None:
    data = random.Random(1).randbytes(4096)
    assert reason(data) == "the file is not an image in an accepted format (JPEG, PNG, BMP or WebP)"


def test_text_file() -> None:
    assert "not an image" in reason(b"hello, world\n")


@pytest.mark.parametrize(("fmt", "name"), [("GIF", "GIF"), ("TIFF", "TIFF"), ("ICO", "ICO")])
def test_unaccepted_formats_are_named(fmt: str, name: str) -> None:
    assert reason(encode(fmt)) == f"{name} images are not accepted; use JPEG, PNG, BMP or WebP"


def test_heic_signature_is_named() -> None:
    data = b"\x00\x00\x00\x18ftypheic" + bytes(100)
    assert reason(data).startswith("HEIC images are not accepted")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "WEBP"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_images(fmt: str, keep: float) -> None:
    data = encode(fmt, (64, 64))
    text = reason(data[: int(len(data) * keep)])
    assert "corrupt" in text


def test_png_missing_its_end_chunk() -> None:
    data = encode("PNG")
    assert data.endswith(b"IEND\xaeB`\x82")
    assert "truncated or corrupt" in reason(data[:-12])


def test_jpeg_missing_its_end_marker() -> None:
    data = encode("JPEG", (64, 64))
    assert data.endswith(b"\xff\xd9")
    assert "truncated" in reason(data[:-2])


def test_png_with_a_flipped_bit_in_its_pixels() -> None:
    data = bytearray(encode("PNG", (64, 64)))
    position = data.index(b"IDAT") + 40
    data[position] ^= 0x01
    assert "corrupt" in reason(bytes(data))


def test_header_only_png_is_corrupt() -> None:
    assert "corrupt" in reason(png_header_only(64, 64))


def test_valid_header_then_garbage() -> None:
    data = encode("JPEG", (64, 64))
    garbage = data[:200] + random.Random(2).randbytes(len(data) - 200)
    assert "corrupt" in reason(garbage)


@pytest.mark.parametrize(
    ("signature", "name"),
    [
        (b"\xff\xd8\xff\xe0", "JPEG"),
        (b"\x89PNG\r\n\x1a\n", "PNG"),
        (b"BM", "BMP"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WebP"),
    ],
)
def test_accepted_signature_with_a_broken_header(signature: bytes, name: str) -> None:
    assert reason(signature + b"\x00" * 40).startswith(f"the {name} header is corrupt")
