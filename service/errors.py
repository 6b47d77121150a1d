"""Domain errors. The API maps each to one HTTP status in one place (``api/errors.py``)."""

from __future__ import annotations


class HomewardError(Exception):
    """Base class; ``reason`` is a short machine-readable code, ``str(err)`` the explanation."""

    reason = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason:
            self.reason = reason


class ImageRejected(HomewardError):
    """The upload is not a usable image (corrupt, truncated, not an image)."""

    reason = "image_rejected"


class ImageTooLarge(HomewardError):
    """The upload exceeds the byte or pixel cap."""

    reason = "image_too_large"


class UnsupportedImageFormat(HomewardError):
    """An image format outside the allow-list (JPEG, PNG, WebP)."""

    reason = "unsupported_format"


class NoFaceFound(HomewardError):
    reason = "no_face"


class FaceRejected(HomewardError):
    """A face was found but is not good enough to enroll, or the client's choice is invalid."""

    reason = "face_rejected"


class NotFound(HomewardError):
    reason = "not_found"


class Conflict(HomewardError):
    reason = "conflict"


class InvalidInput(HomewardError):
    reason = "invalid_input"


class ModelUnavailable(HomewardError):
    """Model files missing or failing their checksum; raised at start-up."""

    reason = "model_unavailable"
