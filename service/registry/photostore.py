"""The photo store: re-encoded (metadata-free) JPEGs, sealed with AES-256-GCM, on local disk,
written atomically."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from service.errors import PhotoKeyMismatch
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
        target.parent.mkdir(exist_ok=True, mode=PRIVATE_DIR)
        tmp = target.with_name(f".{name}.tmp")
        with os.fdopen(
            os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE), "wb"
        ) as handle:
            handle.write(self.sealer.seal(data, name))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)

    def read(self, name: str) -> bytes:
        return self.sealer.open(self.path(name).read_bytes(), name)

    def delete(self, name: str) -> None:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            logger.warning("stored photo %s was already gone", name)

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
