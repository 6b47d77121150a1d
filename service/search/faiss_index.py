"""The embedded vector index: FAISS ``IndexIDMap2`` over exact inner product.

Vectors are unit length, so inner product is cosine similarity. Snapshots are written as a
new generation (temp file, fsync, ``os.replace``) with a metadata file that records what
they were built from, so a stale or damaged snapshot is never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

from service.search.rwlock import ReadWriteLock

logger = logging.getLogger(__name__)

IdArray = npt.NDArray[np.int64]
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SnapshotMeta:
    model_id: str
    dimension: int
    count: int
    watermark: int  # the registry's template-change seq this snapshot includes
    index_sha256: str
    index_type: str = "flat"
    transform: str = "none"  # the template transform's version the vectors went through
    format_version: int = FORMAT_VERSION
    written_at: str = ""


class FaissIndex:
    """Thread-safe: adds and removes take the write lock, searches share the read lock."""

    index_type = "flat"

    def __init__(self, dimension: int, model_id: str, transform: str = "none") -> None:
        self.dimension = dimension
        self.model_id = model_id
        self.transform = transform
        self.watermark = 0
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
        self._lock = ReadWriteLock()

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: IdArray, vectors: npt.NDArray[np.float32]) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dimension)
        with self._lock.writing():
            self._index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))

    def remove(self, ids: IdArray) -> int:
        with self._lock.writing():
            removed = self._index.remove_ids(np.asarray(ids, dtype=np.int64))  # type: ignore[arg-type]
        return int(removed)

    def search(
        self, queries: npt.NDArray[np.float32], k: int, allowed: IdArray | None = None
    ) -> tuple[npt.NDArray[np.float32], IdArray]:
        """Top-k (scores, ids) per query row; ids are -1 where fewer than k exist.
        ``allowed`` restricts the search to those ids (exactly, not by post-filtering)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dimension)
        params = None
        if allowed is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed.astype(np.int64)))  # type: ignore[call-arg]
        with self._lock.reading():
            k = max(1, min(k, len(self)))
            scores, ids = self._index.search(queries, k, params=params)
        return scores, ids

    # -- snapshots ---------------------------------------------------------------------

    def save(self, folder: Path) -> SnapshotMeta:
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock.reading():
            blob = faiss.serialize_index(self._index).tobytes()
            meta = SnapshotMeta(
                model_id=self.model_id,
                dimension=self.dimension,
                count=len(self),
                watermark=self.watermark,
                index_sha256=hashlib.sha256(blob).hexdigest(),
                transform=self.transform,
                written_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
        stem = _stem(self.model_id)
        _write_atomically(folder / f"{stem}.faiss", blob)
        _write_atomically(folder / f"{stem}.json", json.dumps(asdict(meta), indent=2).encode())
        return meta

    @classmethod
    def load(
        cls, folder: Path, model_id: str, dimension: int, transform: str = "none"
    ) -> FaissIndex | None:
        """The saved snapshot for this model, or None (with the reason logged) if it is
        missing, damaged, or was built for another model, dimension or transform."""
        stem = _stem(model_id)
        try:
            meta = SnapshotMeta(**json.loads((folder / f"{stem}.json").read_text()))
            blob = (folder / f"{stem}.faiss").read_bytes()
        except FileNotFoundError:
            logger.info("no index snapshot for %s in %s", model_id, folder)
            return None
        except (ValueError, TypeError) as err:
            logger.warning("index snapshot metadata unreadable (%s); will rebuild", err)
            return None
        problem = _snapshot_problem(meta, blob, model_id, dimension)
        if not problem and meta.transform != transform:
            problem = f"built with template transform {meta.transform}, not {transform}"
        if problem:
            logger.warning("index snapshot rejected: %s; will rebuild", problem)
            return None
        index = cls(dimension, model_id, transform)
        index._index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))  # type: ignore[assignment]
        index.watermark = meta.watermark
        return index


def _snapshot_problem(meta: SnapshotMeta, blob: bytes, model_id: str, dimension: int) -> str:
    if meta.format_version != FORMAT_VERSION:
        return f"format version {meta.format_version}, expected {FORMAT_VERSION}"
    if meta.model_id != model_id or meta.dimension != dimension:
        return f"built for {meta.model_id} ({meta.dimension}-D), not {model_id} ({dimension}-D)"
    if hashlib.sha256(blob).hexdigest() != meta.index_sha256:
        return "index file checksum does not match its metadata (damaged or partly written)"
    return ""


def _stem(model_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in model_id)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
