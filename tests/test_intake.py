"""Image intake: caps, allow-list by magic bytes, EXIF orientation, no metadata kept."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.errors import ImageRejected, ImageTooLarge, UnsupportedImageFormat
from service.faces.intake import decode_upload
from tests.images import astronaut_bgr

LIMITS = {"max_bytes": 15 * 1024 * 1024, "max_pixels": 40_000_000}


def pil_bytes(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def astronaut() -> Image.Image:
    return Image.fromarray(astronaut_bgr()[:, :, ::-1])


def exif_with_gps_and_rotation() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    exif[0x010F] = "PhoneMaker"
    gps = {1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)}
    exif[0x8825] = gps
    return exif


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_allowed_formats_decode_to_bgr(fmt: str) -> None:
    decoded = decode_upload(pil_bytes(astronaut(), fmt), **LIMITS)
    assert decoded.source_format == fmt
    assert decoded.pixels.shape == (512, 512, 3) and decoded.pixels.dtype == np.uint8
    # Same picture in the same (BGR) channel order; JPEG and WebP are lossy.
    error = np.abs(decoded.pixels.astype(int) - astronaut_bgr().astype(int)).mean(axis=(0, 1))
    swapped = np.abs(decoded.pixels.astype(int) - astronaut_bgr()[:, :, ::-1]).mean(axis=(0, 1))
    assert error.max() < 8 and swapped[0] > 2 * error[0]


def test_exif_orientation_is_applied_and_no_metadata_survives() -> None:
    wide = astronaut().resize((400, 200))
    data = pil_bytes(wide, "JPEG", exif=exif_with_gps_and_rotation())
    assert b"PhoneMaker" in data
    decoded = decode_upload(data, **LIMITS)
    assert decoded.pixels.shape[:2] == (400, 200)  # rotated upright: now tall
    stored = Image.open(io.BytesIO(decoded.clean_jpeg))
    assert not stored.getexif() and "exif" not in stored.info
    assert b"PhoneMaker" not in decoded.clean_jpeg and b"Exif" not in decoded.clean_jpeg


def test_png_text_chunks_are_not_kept() -> None:
    from PIL import PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    meta.add_text("Location", "51.5N 0.1W")
    decoded = decode_upload(pil_bytes(astronaut(), "PNG", pnginfo=meta), **LIMITS)
    assert b"51.5N" not in decoded.clean_jpeg


def test_truncated_jpeg_is_rejected_with_reason() -> None:
    data = pil_bytes(astronaut(), "JPEG")
    with pytest.raises(ImageRejected, match="truncated or corrupt"):
        decode_upload(data[: len(data) // 2], **LIMITS)


def test_corrupt_png_is_rejected() -> None:
    data = bytearray(pil_bytes(astronaut(), "PNG"))
    data[200:400] = b"\x00" * 200
    with pytest.raises(ImageRejected):
        decode_upload(bytes(data), **LIMITS)


@pytest.mark.parametrize("data", [b"", b"hello, this is text", b"\xff\xd8\xff" + b"\x00" * 50])
def test_non_images_are_rejected(data: bytes) -> None:
    with pytest.raises(ImageRejected):
        decode_upload(data, **LIMITS)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_image_formats_are_unsupported(fmt: str) -> None:
    with pytest.raises(UnsupportedImageFormat, match="JPEG, PNG or WebP"):
        decode_upload(pil_bytes(astronaut(), fmt), **LIMITS)


def test_byte_cap() -> None:
    data = pil_bytes(astronaut(), "PNG")
    with pytest.raises(ImageTooLarge, match="limit"):
        decode_upload(data, max_bytes=len(data) - 1, max_pixels=40_000_000)


def test_pixel_cap_is_checked_before_decoding() -> None:
    # A 20000 x 20000 PNG that compresses to a few hundred kB: a decompression bomb.
    big = Image.new("L", (20000, 20000))
    data = pil_bytes(big, "PNG")
    assert len(data) < 2_000_000
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode_upload(data, **LIMITS)
