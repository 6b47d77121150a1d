"""Form fields must be the text they claim to be. Starlette decodes a multipart field that
is not valid in its charset (UTF-8 unless the part says otherwise) as Latin-1, which stores
mojibake in a child's record; here such a field is refused (400) instead."""

from __future__ import annotations

from starlette import formparsers


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
