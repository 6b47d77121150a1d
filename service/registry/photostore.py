"""The photo store: re-encoded (metadata-free) JPEGs on local disk, written atomically."""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


class PhotoStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad stored photo name {name!r}")
        return self.root / name[:2] / name

    def put(self, name: str, data: bytes) -> None:
        target = self.path(name)
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(f".{name}.tmp")
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)

    def read(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def delete(self, name: str) -> None:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            logger.warning("stored photo %s was already gone", name)

    def names(self) -> set[str]:
        return {p.name for p in self.root.glob("*/*") if not p.name.startswith(".")}

    def sweep(self, keep: set[str]) -> int:
        """Delete files the registry no longer references (left by a crash between the
        database commit and the file removal); returns how many."""
        orphans = self.names() - keep
        for name in orphans:
            self.delete(name)
        if orphans:
            logger.warning("removed %d orphaned photo file(s)", len(orphans))
        return len(orphans)
