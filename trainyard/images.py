"""Validation of images from users (uploads, and images sent for prediction) with Pillow.

An upload is accepted only if Pillow decodes it fully as JPEG, PNG, BMP or WebP
within the size and pixel limits (``inspect_image``). An image sent for prediction
gets the header checks (``check_header``: the format and the pixel limit) before
the trainer decodes it. Decisions:

- The pixel limit is checked from the header, before any pixel is decoded.
  Pillow's global ``Image.MAX_IMAGE_PIXELS`` is never changed; Pillow itself still
  refuses, at open time, images over twice that global (those are reported with
  the limit here too), and warns (``DecompressionBombWarning``) for images between
  once and twice it, which this check then rejects when ``max_pixels`` is the
  default.
- Structure is checked as well as pixels: ``verify()`` first (for PNG it checks
  every chunk's CRC up to IEND), then a full decode with ``load()`` on a fresh
  open. ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off, so truncated data fails.
- Animated PNG and WebP are accepted; what is validated, and what training sees
  when it opens the file with Pillow, is the first frame. ``ImageInfo.frames``
  says how many frames the file has.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

ACCEPTED_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")
DEFAULT_MAX_BYTES = 50 * 2**20
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default decompression-bomb limit

_ACCEPTED_IN_WORDS = "JPEG, PNG, BMP or WebP"
_FORMAT_NAMES = {"JPEG": "JPEG", "PNG": "PNG", "BMP": "BMP", "WEBP": "WebP"}

# Signatures of the accepted formats, to tell a corrupt header from another format.
_ACCEPTED_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
)

# Signatures of common image formats that we do not accept, to name them in errors.
_OTHER_FORMATS = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "Photoshop (PSD)"),
    (b"%PDF", "PDF"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
)
_HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"avif": "AVIF"}


@dataclass(frozen=True)
class ImageInfo:
    """What decoding an accepted image found out.

    ``format`` is one of ``ACCEPTED_FORMATS``; ``mode`` is Pillow's pixel mode
    ("RGB", "L", "RGBA", "CMYK", ...); ``frames`` is 1 unless the image is animated.
    """

    format: str
    width: int
    height: int
    mode: str
    frames: int = 1


class InvalidImage(Exception):
    """An upload that is not an acceptable image; ``reason`` is written for people.

    ``over_pixel_limit`` is set when the image has more pixels than allowed, so that a
    caller can name the setting behind the limit.
    """

    def __init__(self, reason: str, *, over_pixel_limit: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.over_pixel_limit = over_pixel_limit


def inspect_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageInfo:
    """Validate an uploaded image by decoding it fully; return what it is.

    Raises ``InvalidImage`` if the data is empty, larger than ``max_bytes``, not an
    image in an accepted format, larger than ``max_pixels`` (checked before
    decoding), or truncated or corrupt.
    """
    if not data:
        raise InvalidImage("the file is empty")
    if len(data) > max_bytes:
        raise InvalidImage(f"the file is {len(data):,} bytes; the limit is {max_bytes:,} bytes")
    with _open(data, max_pixels) as image:
        width, height = _within_pixels(image, max_pixels)
        info = ImageInfo(
            format=str(image.format),
            width=width,
            height=height,
            mode=image.mode,
            frames=int(getattr(image, "n_frames", 1)),
        )
        _decode(image.verify, info.format)
    with _open(data, max_pixels) as image:
        if info.format == "JPEG":
            # Decode every entropy-coded block (truncation and corruption still fail) but
            # let libjpeg skip most of the inverse DCT by scaling to 1/8: same verdict,
            # a fraction of the work for photo-sized images.
            image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
        _decode(image.load, info.format)
    return info


def check_header(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Check what the header says, decoding no pixel: InvalidImage unless the data is a JPEG,
    PNG, BMP or WebP image of at most ``max_pixels`` pixels. Corrupt data past the header
    fails later, when it is decoded."""
    if not data:
        raise InvalidImage("the file is empty")
    with _open(data, max_pixels) as image:
        _within_pixels(image, max_pixels)


def decode_pixels(data: bytes) -> int:
    """About how many pixels validating the data decodes (inspect_image: JPEG at 1/8 scale), read
    from the header; 0 when the header cannot be read (validation then says why)."""
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            width, height = image.size
            scale = 8 if image.format == "JPEG" else 1
    except Exception:  # noqa: BLE001 - any unreadable header: inspect_image names the problem
        return 0
    return max(1, width // scale) * max(1, height // scale)


def _within_pixels(image: Image.Image, max_pixels: int) -> tuple[int, int]:
    """The image's (width, height); InvalidImage if it has more than ``max_pixels`` pixels."""
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidImage(
            f"the image is {width} × {height} = {width * height:,} pixels; "
            f"the limit is {max_pixels:,} pixels",
            over_pixel_limit=True,
        )
    return width, height


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open the data with the accepted formats' decoders only (reads the header)."""
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise InvalidImage(
            f"the image has more than {pillow_limit:,} pixels; "
            f"the limit is {min(max_pixels, pillow_limit):,} pixels",
            over_pixel_limit=True,
        ) from None
    except UnidentifiedImageError:
        raise InvalidImage(_unaccepted_reason(data)) from None
    except Exception as error:  # decoders of untrusted bytes raise many types
        name = _accepted_format(data) or "image"
        raise InvalidImage(f"the {name} header is corrupt ({error})") from None


def _decode(step: Callable[[], object], image_format: str) -> None:
    """Run a Pillow verify/load step, turning any failure into InvalidImage."""
    try:
        step()
    except Exception as error:  # decoders of untrusted bytes raise many types
        raise InvalidImage(
            f"the {_FORMAT_NAMES[image_format]} image data is truncated or corrupt ({error})"
        ) from None


def _unaccepted_reason(data: bytes) -> str:
    """Why data that no accepted decoder recognizes is refused, naming its format."""
    accepted = _accepted_format(data)
    if accepted:
        return f"the {accepted} header is corrupt"
    name = _other_format(data)
    if name:
        return f"{name} images are not accepted; use {_ACCEPTED_IN_WORDS}"
    return f"the file is not an image in an accepted format ({_ACCEPTED_IN_WORDS})"


def _accepted_format(data: bytes) -> str:
    """The accepted format whose signature the data starts with, or ""."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    for signature, name in _ACCEPTED_SIGNATURES:
        if data.startswith(signature):
            return name
    return ""


def _other_format(data: bytes) -> str:
    """The name of a known but unaccepted image format, or "" if not recognized."""
    for signature, name in _OTHER_FORMATS:
        if data.startswith(signature):
            return name
    if data[4:8] == b"ftyp":
        return _HEIF_BRANDS.get(data[8:12], "")
    return ""
