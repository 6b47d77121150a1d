"""Image intake: the one function every upload goes through before any model sees it."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from service.errors import ImageRejected, ImageTooLarge, UnsupportedImageFormat
from service.faces.base import Image

STORED_JPEG_QUALITY = 95

_ALLOWED = {"JPEG", "PNG", "WEBP"}
_OTHER_IMAGE_SIGNATURES = {
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"%PDF": "PDF",
    b"\x00\x00\x00\x0cjP": "JPEG 2000",
    b"\xff\x0a": "JPEG XL",
}


@dataclass(frozen=True)
class DecodedImage:
    pixels: Image  # BGR, EXIF orientation applied
    clean_jpeg: bytes  # re-encoded pixels: no EXIF, GPS or any other metadata
    source_format: str
    upload_sha256: str

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def sniff_format(data: bytes) -> str | None:
    """The allowed format named by the magic bytes, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_upload(data: bytes, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    if len(data) > max_bytes:
        raise ImageTooLarge(f"upload is {len(data)} bytes; the limit is {max_bytes}")
    if not data:
        raise ImageRejected("the upload is empty")
    fmt = sniff_format(data)
    if fmt is None:
        raise _unrecognised(data)
    rgb = _decode_pixels(data, fmt, max_pixels)
    pixels = np.ascontiguousarray(rgb[:, :, ::-1])
    return DecodedImage(
        pixels=pixels,
        clean_jpeg=encode_jpeg(pixels),
        source_format=fmt,
        upload_sha256=hashlib.sha256(data).hexdigest(),
    )


def decode_stored(jpeg: bytes) -> Image:
    """Pixels of a photo this service stored (already checked and re-encoded on intake)."""
    pixels = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if pixels is None:
        raise ImageRejected("a stored photo could not be decoded")
    return np.asarray(pixels, dtype=np.uint8)


def encode_jpeg(pixels: Image, quality: int = STORED_JPEG_QUALITY) -> bytes:
    ok, buffer = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageRejected("the image could not be re-encoded")
    return buffer.tobytes()


def _decode_pixels(data: bytes, fmt: str, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data), formats=[fmt]) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageTooLarge(
                        f"image is {width}x{height} = {width * height} pixels; "
                        f"the limit is {max_pixels}"
                    )
                img.load()  # raises on truncated or corrupt data
                upright = ImageOps.exif_transpose(img)
                return np.asarray(upright.convert("RGB"), dtype=np.uint8)
    except ImageTooLarge:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as err:
        raise ImageTooLarge(f"image has too many pixels: {err}") from err
    except UnidentifiedImageError as err:
        raise ImageRejected(f"{fmt} data could not be decoded: not a valid image") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageRejected(f"{fmt} image is truncated or corrupt: {err}") from err


def _unrecognised(data: bytes) -> Exception:
    for signature, name in _OTHER_IMAGE_SIGNATURES.items():
        if data.startswith(signature):
            return UnsupportedImageFormat(f"{name} images are not accepted; use JPEG, PNG or WebP")
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return UnsupportedImageFormat("HEIC/AVIF images are not accepted; use JPEG, PNG or WebP")
    return ImageRejected("the upload is not an image (no JPEG, PNG or WebP signature)")
