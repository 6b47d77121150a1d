"""Form fields shared by the API's routes and the pages: a face's box, and text that must be
what it claims to be. Starlette decodes a multipart field that is not valid in its charset
(UTF-8 unless the part says otherwise) as Latin-1, which stores mojibake in a child's
record; here such a field is refused (400) instead."""

from __future__ import annotations

import json

from starlette import formparsers

from service.errors import InvalidInput

MAX_BOX_TEXT = 200


def parse_box(text: str | None) -> tuple[float, float, float, float] | None:
    """A face_box field, "[x, y, w, h]" or "x, y, w, h", in the photo's pixels."""
    if text is None or not text.strip():
        return None
    try:
        values = json.loads(text if text.strip().startswith("[") else f"[{text}]")
        box = tuple(float(v) for v in values)  # may raise on non-numbers
    except (ValueError, TypeError, RecursionError) as err:
        raise InvalidInput("face_box must be four numbers: [x, y, width, height]") from err
    if len(box) != 4 or box[2] <= 0 or box[3] <= 0 or not all(abs(v) < 1e6 for v in box):
        raise InvalidInput("face_box must be [x, y, width, height] with positive width and height")
    return box[0], box[1], box[2], box[3]


def _strict_decode(src: bytes | bytearray, codec: str) -> str:
    try:
        return bytes(src).decode(codec or "utf-8")
    except (UnicodeDecodeError, LookupError) as err:
        raise formparsers.MultiPartException(
            f"a form field is not valid {codec or 'utf-8'} text"
        ) from err


def refuse_undecodable_fields() -> None:
    """Replace Starlette's lenient decoder for multipart field names and values."""
    formparsers._user_safe_decode = _strict_decode
