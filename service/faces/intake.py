"""Image intake: the one function every upload goes through before any model sees it."""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np
from PIL import ExifTags, UnidentifiedImageError
from PIL import Image as PILImage

from service.errors import ImageRejected, ImageTooLarge, UnsupportedImageFormat
from service.faces.base import Image

STORED_JPEG_QUALITY = 95
# Bounds on decoding one JPEG (see _checked_jpeg): the memory it may take (its buffer of
# coefficients, if it has one, and its pixels twice: OpenCV hands them to Python as a
# copy), its scans, and the coefficients they visit (a 40 MP progressive JPEG with
# full-resolution colour visits about 280 million; 500 million decode in about 0.7 s).
DECODE_BUDGET_BYTES = 256 * 2**20
MAX_JPEG_SCANS = 32
MAX_JPEG_WORK = 500_000_000
_JPEG_MARKER = re.compile(rb"\xff+([^\x00\xd0-\xd7\xff])")  # not stuffing, a restart or fill
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_PROGRESSIVE_FRAMES = {0xC2, 0xC6, 0xCA, 0xCE}

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
    source_format: str
    upload_sha256: str

    @cached_property
    def clean_jpeg(self) -> bytes:
        """The pixels re-encoded: no EXIF, GPS or any other metadata. Encoded when first
        asked for (by the routes that store the photo), not for every upload."""
        return encode_jpeg(self.pixels)

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
    return DecodedImage(
        pixels=_decode_pixels(data, fmt, max_pixels),
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


def _decode_pixels(data: bytes, fmt: str, max_pixels: int) -> Image:
    """The upright BGR pixels, decoded with bounded memory.

    Pillow reads the header (the pixel cap is checked before any pixel is decoded) and the
    EXIF orientation; a JPEG's structure and completeness are checked (``_checked_jpeg``)
    before anything decodes it. OpenCV then decodes the pixels straight into one 8-bit
    BGR array, 16-bit samples scaled to 8 bits (a 16-bit PNG keeps its tones instead of
    being clipped to white), and the orientation is applied to that array. Decoding the
    full image with Pillow held it three or four times over (Pillow's 4-byte pixels, the
    transposed and converted copies, numpy's copy): about 600 MB for a 40 MP photo.
    A JPEG of several scans may be decoded at a reduced size (see ``_checked_jpeg``).
    """
    orientation, reduction = _checked_header(data, fmt, max_pixels)
    flags = _REDUCED[reduction] | cv2.IMREAD_IGNORE_ORIENTATION
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if decoded is None or decoded.ndim != 3 or decoded.shape[2] != 3 or decoded.size == 0:
        raise ImageRejected(f"{fmt} image is truncated or corrupt: it could not be decoded")
    if decoded.shape[0] * decoded.shape[1] > max_pixels:  # the decoder saw another size
        raise ImageTooLarge(f"image has more than {max_pixels} pixels")
    pixels: Image = np.asarray(decoded, dtype=np.uint8)
    del decoded
    for step in _UPRIGHT[orientation]:  # as Pillow's exif_transpose; each step frees the last
        pixels = step(pixels)
    return pixels


def _checked_header(data: bytes, fmt: str, max_pixels: int) -> tuple[int, int]:
    """The EXIF orientation (1 to 8) of an image within the pixel cap, whose data Pillow
    reads, and the factor to decode it reduced by (1: full size): ImageTooLarge or
    ImageRejected otherwise."""
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
                orientation = _orientation(img, data, fmt)
                reduction = _checked_jpeg(img, data) if fmt == "JPEG" else 1
                return orientation, reduction
    except ImageTooLarge:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as err:
        raise ImageTooLarge(f"image has too many pixels: {err}") from err
    except UnidentifiedImageError as err:
        raise ImageRejected(f"{fmt} data could not be decoded: not a valid image") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageRejected(f"{fmt} image is truncated or corrupt: {err}") from err


def _checked_jpeg(img: PILImage.Image, data: bytes) -> int:
    """The factor (1, 2, 4 or 8) to decode a JPEG reduced by, once its structure is
    within bounds and its data complete; ImageRejected or ImageTooLarge otherwise.

    A JPEG of one scan is decoded by Pillow at 1/8 of the pixels, which reads every byte
    of its entropy-coded data (cheap: it raises on a truncated file). One of several scans
    (every progressive one) is decoded through a buffer of all its DCT coefficients, 2
    bytes a sample (240 MB at 40 MP with full-resolution colour), one pass over it per
    scan: its scans and the coefficients they visit are bounded (a blank image's scan
    takes a few dozen bytes, so a 0.5 MB upload of a thousand scans took seconds to
    decode, twice), it must reach its end-of-image marker, and its pixels are decoded
    reduced in the DCT (free; half size keeps 10 MP at the cap) when the buffer and the
    pixels would pass the decode budget. A buffer alone over the budget (only a 4-channel
    CMYK image near the cap) is refused."""
    jpeg = _jpeg_structure(data)
    if len(jpeg.scans) > MAX_JPEG_SCANS or jpeg.work > MAX_JPEG_WORK:
        raise ImageRejected(
            f"JPEG has {len(jpeg.scans)} scans visiting {jpeg.work / 1e6:.0f} million "
            f"coefficients; at most {MAX_JPEG_SCANS} scans and {MAX_JPEG_WORK / 1e6:.0f} "
            "million are accepted (an ordinary progressive JPEG has about 10): save it again"
        )
    width, height = img.size
    if not jpeg.buffered:
        img.draft(None, ((width + 7) // 8, (height + 7) // 8))
        img.load()
        return 1
    if not jpeg.complete:
        raise ImageRejected("JPEG image is truncated or corrupt: it ends before its last scan")
    for factor in _REDUCED:
        if jpeg.coefficient_bytes + 2 * 3 * width * height / factor**2 <= DECODE_BUDGET_BYTES:
            return factor
    raise ImageTooLarge(
        f"this {width}x{height} JPEG of several scans would need "
        f"{jpeg.coefficient_bytes / 2**20:.0f} MiB to decode; save it as a baseline JPEG"
    )


@dataclass(frozen=True)
class _JpegStructure:
    blocks: dict[int, int]  # 8x8 blocks per component id
    scans: list[tuple[tuple[int, ...], int, int]]  # component ids, first and last coefficient
    progressive: bool
    complete: bool  # its end-of-image marker was reached

    @property
    def buffered(self) -> bool:
        """Decoded through a buffer of all its coefficients."""
        return self.progressive or len(self.scans) > 1

    @property
    def coefficient_bytes(self) -> int:
        return 2 * 64 * sum(self.blocks.values())

    @property
    def work(self) -> int:
        """Coefficients its scans visit, all together."""
        return sum(
            self.blocks.get(component, 0) * (last - first + 1)
            for components, first, last in self.scans
            for component in components
        )


def _jpeg_structure(data: bytes) -> _JpegStructure:
    """A JPEG's first image, from its marker segments (skipped by their lengths, so an
    EXIF thumbnail is not looked into; entropy-coded data is searched for the next
    marker) up to its end-of-image marker."""
    blocks: dict[int, int] = {}
    scans: list[tuple[tuple[int, ...], int, int]] = []
    progressive, pos = False, 2
    try:
        while (found := _JPEG_MARKER.search(data, pos)) is not None:
            marker = found.group(1)[0]
            if marker == 0xD9:
                return _JpegStructure(blocks, scans, progressive, complete=True)
            pos = found.end()
            if marker in (0x01, 0xD8):  # no length
                continue
            end = pos + int.from_bytes(data[pos : pos + 2], "big")
            body, pos = data[pos + 2 : end], end
            if marker in _JPEG_FRAMES and not blocks:
                progressive = marker in _JPEG_PROGRESSIVE_FRAMES
                blocks = _component_blocks(body)
            elif marker == 0xDA:
                count = body[0]
                components = tuple(body[1 : 1 + 2 * count : 2])
                scans.append((components, body[1 + 2 * count], body[2 + 2 * count]))
    except IndexError as err:
        raise ImageRejected("JPEG image is truncated or corrupt: a short segment") from err
    return _JpegStructure(blocks, scans, progressive, complete=False)


def _component_blocks(frame: bytes) -> dict[int, int]:
    """8x8 blocks per component, from a frame header (SOF) segment's body."""
    height, width = int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")
    sampling = {frame[6 + 3 * i]: divmod(frame[7 + 3 * i], 16) for i in range(frame[5])}
    h_max = max((h for h, _ in sampling.values()), default=1) or 1
    v_max = max((v for _, v in sampling.values()), default=1) or 1
    return {
        component: _ceil_div(_ceil_div(width * h, h_max), 8)
        * _ceil_div(_ceil_div(height * v, v_max), 8)
        for component, (h, v) in sampling.items()
    }


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _orientation(img: PILImage.Image, data: bytes, fmt: str) -> int:
    # Pillow looks for a PNG's EXIF after the pixel data by decoding them: only when there
    # is an eXIf chunk at all.
    if fmt == "PNG" and b"eXIf" not in data:
        return 1
    value = img.getexif().get(ExifTags.Base.Orientation, 1)
    return value if isinstance(value, int) and value in _UPRIGHT else 1


def _flip(code: int) -> Callable[[Image], Image]:
    return lambda p: np.asarray(cv2.flip(p, code), dtype=np.uint8)


def _rotate(code: int) -> Callable[[Image], Image]:
    return lambda p: np.asarray(cv2.rotate(p, code), dtype=np.uint8)


def _transpose(pixels: Image) -> Image:
    return np.asarray(cv2.transpose(pixels), dtype=np.uint8)


# Decoding reduced by 1, 2, 4 or 8 (JPEG only: done in the DCT).
_REDUCED = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}

# EXIF orientation -> the steps that make the picture upright.
_UPRIGHT: dict[int, tuple[Callable[[Image], Image], ...]] = {
    1: (),
    2: (_flip(1),),
    3: (_rotate(cv2.ROTATE_180),),
    4: (_flip(0),),
    5: (_transpose,),
    6: (_rotate(cv2.ROTATE_90_CLOCKWISE),),
    7: (_transpose, _rotate(cv2.ROTATE_180)),
    8: (_rotate(cv2.ROTATE_90_COUNTERCLOCKWISE),),
}


def _unrecognised(data: bytes) -> Exception:
    for signature, name in _OTHER_IMAGE_SIGNATURES.items():
        if data.startswith(signature):
            return UnsupportedImageFormat(f"{name} images are not accepted; use JPEG, PNG or WebP")
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return UnsupportedImageFormat("HEIC/AVIF images are not accepted; use JPEG, PNG or WebP")
    return ImageRejected("the upload is not an image (no JPEG, PNG or WebP signature)")
