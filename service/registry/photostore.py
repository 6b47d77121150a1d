"""The photo store: re-encoded (metadata-free) JPEGs, sealed with AES-256-GCM, on local disk,
written atomically."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from service.errors import PhotoKeyMismatch, StorageUnavailable, storage_error
from service.security import PRIVATE_DIR, PRIVATE_FILE, Sealer, private_dir

logger = logging.getLogger(__name__)


class PhotoStore:
    def __init__(self, root: Path, sealer: Sealer, key_matches: bool = True) -> None:
        self.root = root
        self.sealer = sealer
        self.key_matches = key_matches
        private_dir(root)

    def path(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad stored photo name {name!r}")
        return self.root / name[:2] / name

    def put(self, name: str, data: bytes) -> None:
        if not self.key_matches:
            raise PhotoKeyMismatch(
                "new photos are refused: the photo key is not the one the "
                "stored photos were sealed with; restore the right key"
            )
        target = self.path(name)
        tmp = target.with_name(f".{name}.tmp")
        try:
            target.parent.mkdir(exist_ok=True, mode=PRIVATE_DIR)
            with os.fdopen(
                os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE), "wb"
            ) as handle:
                handle.write(self.sealer.seal(data, name))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
            _fsync_dir(target.parent)  # the rename too survives a power cut
        except OSError as err:  # disk full, read-only, I/O error: no half-written file
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise storage_error(err, "the photo") from err

    def read(self, name: str) -> bytes:
        try:
            blob = self.path(name).read_bytes()
        except OSError as err:
            raise StorageUnavailable(f"stored photo {name} cannot be read: {err.strerror}") from err
        return self.sealer.open(blob, name)

    def delete(self, name: str) -> None:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            logger.warning("stored photo %s was already gone", name)
        except OSError as err:  # after the registry forgot it: the next start's sweep removes it
            logger.error("stored photo %s not deleted (%s); left for the sweep", name, err)

    def names(self) -> set[str]:
        return {p.name for p in self.root.glob("*/*") if not p.name.startswith(".")}

    def sweep(self, keep: set[str]) -> int:
        """Delete files the registry no longer references (left by a crash between the
        database commit and the file removal, or half-written by one); returns how many."""
        orphans = self.names() - keep
        for name in orphans:
            self.delete(name)
        partial = [p for p in self.root.glob("*/.*.tmp") if p.is_file()]
        for path in partial:
            path.unlink(missing_ok=True)
        if orphans or partial:
            logger.warning("removed %d orphaned photo file(s)", len(orphans) + len(partial))
        return len(orphans) + len(partial)


def _fsync_dir(path: Path) -> None:
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
