"""Domain errors. The API maps each to one HTTP status in one place (``api/errors.py``)."""

from __future__ import annotations

import errno


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
    """A face was found but the client's choice of face is invalid (out of range, no face
    at the given box)."""

    reason = "face_rejected"


class SeveralFaces(FaceRejected):
    """A photo to enroll shows several faces and the client did not say which is the child's
    (a poor face is enrolled, but never a guessed one)."""

    reason = "several_faces"

    def __init__(self, count: int) -> None:
        super().__init__(
            f"{count} faces were found; choose the child's with face_index (0 is the "
            "largest, faces ordered by size) or face_box ([x, y, w, h])"
        )
        self.count = count


class NotFound(HomewardError):
    reason = "not_found"


class Conflict(HomewardError):
    reason = "conflict"


class InvalidInput(HomewardError):
    reason = "invalid_input"


class ModelUnavailable(HomewardError):
    """Model files missing or failing their checksum; raised at start-up."""

    reason = "model_unavailable"


class DataDirInUse(HomewardError):
    """Another process already serves this embedded data dir (SQLite and FAISS have one
    writer); raised at start-up."""

    reason = "data_dir_in_use"


class Unauthorized(HomewardError):
    """No API key, or one that is unknown, expired or revoked."""

    reason = "unauthorized"


class Forbidden(HomewardError):
    """The caller's roles do not allow this."""

    reason = "forbidden"


class RateLimited(HomewardError):
    reason = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageUnavailable(HomewardError):
    """The registry database cannot be reached or written."""

    reason = "storage_unavailable"


class StorageFull(StorageUnavailable):
    """The disk (or quota) holding the registry, the photos or the index is full: nothing was
    changed, and writes work again once space is freed, without a restart."""

    reason = "insufficient_storage"


def storage_error(err: OSError, what: str) -> StorageUnavailable:
    """A failed file write as a domain error: full (no space, over quota or over the file
    size limit) or otherwise unavailable (read-only, I/O error, permissions)."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StorageFull(f"{what} could not be written: the disk is full")
    return StorageUnavailable(f"{what} could not be written: {err.strerror or err}")


class AuditUnavailable(StorageUnavailable):
    """The audit record of an action cannot be written, so the action does not happen."""

    reason = "audit_unavailable"


class PhotoKeyMismatch(HomewardError):
    """Stored photos were sealed with another key: they cannot be read with this one."""

    reason = "photo_key_mismatch"


class NotReady(HomewardError):
    """The service is still loading (or could not load) what it needs to answer."""

    reason = "not_ready"
