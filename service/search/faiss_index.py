"""The embedded exact vector index: FAISS ``IndexIDMap2`` over exact inner product (the
reference every other index is tested against; HNSW is in ``service.search.hnsw``).

Vectors are unit length, so inner product is cosine similarity. Filters are applied inside
the FAISS scan through an ``IDSelectorBitmap`` built from the attribute table, so a
filtered search is as exact as an unfiltered one.

A snapshot is one data file (an ``.npz`` holding the serialised FAISS index and the
attributes aligned with its ids) plus a metadata file recording what it was built from
and the data file's sha256; both are written as a new generation (temp file, fsync,
``os.replace``), so a stale, damaged or half-written snapshot is never loaded.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import faiss
import numpy as np

from service.errors import storage_error
from service.search.attributes import AttributeTable
from service.search.port import (
    FloatArray,
    IdArray,
    SearchFilter,
    SnapshotMeta,
    TemplateAttributes,
)
from service.search.rwlock import ReadWriteLock

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: attributes saved beside the vectors


class FaissIndex:
    """A ``VectorIndex``: exact search. Thread-safe: adds and removes take the write lock;
    searches and snapshots share the read lock."""

    KIND = "faiss-flat"

    def __init__(self, dimension: int, model_id: str, transform: str = "none") -> None:
        self.dimension = dimension
        self.model_id = model_id
        self.transform = transform  # the template transform's version the vectors went through
        self.watermark = 0
        self.kind = self.KIND
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
        self._attributes = AttributeTable()
        self._lock = ReadWriteLock()

    def discard(self) -> None:
        """Nothing outside this process to release."""

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(
        self, ids: IdArray, vectors: FloatArray, attributes: Sequence[TemplateAttributes]
    ) -> None:
        """Index these vectors; an id already present is replaced (vector and attributes)."""
        ids, vectors = checked_batch(ids, vectors, attributes, self.dimension)
        with self._lock.writing():
            self._remove_present(ids)
            self._index.add_with_ids(vectors, ids)
            self._attributes.put(ids, attributes)

    def remove(self, ids: IdArray) -> int:
        with self._lock.writing():
            return self._remove_present(_ids(ids))

    def _remove_present(self, ids: IdArray) -> int:
        present = ids[self._attributes.contains(ids)]
        if not len(present):
            return 0
        removed = self._index.remove_ids(faiss.IDSelectorBatch(present))
        self._attributes.drop(present)
        return int(removed)

    def search(
        self, queries: FloatArray, k: int, where: SearchFilter | None = None
    ) -> tuple[FloatArray, IdArray]:
        """Top-k (scores, ids) per query row, ids -1 where fewer than k pass ``where``."""
        queries, k = checked_queries(queries, k, self.dimension)
        with self._lock.reading():
            if where is None or not where.active:
                scores, ids = self._index.search(queries, k)
            else:
                scores, ids = self._filtered_search(queries, k, where)
        return scores, ids

    def _filtered_search(
        self, queries: FloatArray, k: int, where: SearchFilter
    ) -> tuple[FloatArray, IdArray]:
        """The selector holds a raw pointer into ``bitmap``, which this frame keeps alive
        until FAISS returns; IndexIDMap2 translates it to external (template) ids."""
        bitmap = np.ascontiguousarray(self._attributes.selection(where))
        params = faiss.SearchParameters()  # one per search: FAISS swaps its selector in place
        params.sel = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
        scores, ids = self._index.search(queries, k, params=params)
        return scores, ids

    # -- snapshots ---------------------------------------------------------------------

    def save(self, folder: Path) -> SnapshotMeta:
        """Serialise under the read lock (searches go on), then write outside it. A failed
        write (disk full, read-only) raises a storage error; a snapshot left half-replaced
        fails its checksum at the next start and is rebuilt from the registry."""
        with self._lock.reading():
            watermark = self.watermark  # read first: never claim a change the blob lacks
            count = len(self)
            blob = self._snapshot_blob()
        meta = SnapshotMeta(
            model_id=self.model_id,
            dimension=self.dimension,
            count=count,
            watermark=watermark,
            index_sha256=hashlib.sha256(blob).hexdigest(),
            index_type=self.kind,
            transform=self.transform,
            format_version=FORMAT_VERSION,
            written_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        data, meta_path = _paths(folder, self.model_id)
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)  # the data dir's, private
            _write_atomically(data, blob)
            _write_atomically(meta_path, json.dumps(asdict(meta), indent=2).encode())
        except OSError as err:
            raise storage_error(err, "the index snapshot") from err
        return meta

    def _snapshot_blob(self) -> bytes:
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        arrays: dict[str, Any] = self._attributes.export(ids)
        buffer = io.BytesIO()
        np.savez(buffer, index=faiss.serialize_index(self._index), **arrays)
        return buffer.getvalue()

    @classmethod
    def load(
        cls, folder: Path, model_id: str, dimension: int, transform: str = "none"
    ) -> Self | None:
        """The saved snapshot for this model, or None (with the reason logged) if it is
        missing, damaged, or was built for another model, dimension, transform, format or
        index type (a flat snapshot is not loaded as HNSW, nor the other way round)."""
        data, meta_path = _paths(folder, model_id)
        try:
            meta = SnapshotMeta(**json.loads(meta_path.read_text()))
            blob = data.read_bytes()
        except FileNotFoundError:
            logger.info("no index snapshot for %s in %s", model_id, folder)
            return None
        except (ValueError, TypeError) as err:
            logger.warning("index snapshot metadata unreadable (%s); will rebuild", err)
            return None
        problem = _snapshot_problem(meta, blob, model_id, dimension, transform, cls.KIND)
        if problem:
            logger.warning("index snapshot rejected: %s; will rebuild", problem)
            return None
        try:
            return cls._from_blob(blob, meta)
        except (ValueError, KeyError, OSError, RuntimeError, zipfile.BadZipFile) as err:
            logger.warning("index snapshot unreadable (%s); will rebuild", err)
            return None

    @classmethod
    def _from_blob(cls, blob: bytes, meta: SnapshotMeta) -> Self:
        index = cls(meta.dimension, meta.model_id, meta.transform)
        with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
            inner = faiss.deserialize_index(arrays["index"])
            if not isinstance(inner, faiss.IndexIDMap2) or inner.d != meta.dimension:
                raise ValueError("not a flat id-mapped index of the recorded dimension")
            ids = faiss.vector_to_array(inner.id_map).astype(np.int64)
            table = AttributeTable.restore(ids, {k: arrays[k] for k in arrays.files})
        index._index, index._attributes = inner, table
        index.watermark = meta.watermark
        return index


def _ids(ids: IdArray) -> IdArray:
    return np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)


def checked_queries(queries: FloatArray, k: int, dimension: int) -> tuple[FloatArray, int]:
    """Query rows as contiguous float32, and k at least 1."""
    return np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, dimension), max(1, int(k))


def checked_batch(
    ids: IdArray, vectors: FloatArray, attributes: Sequence[object], dimension: int
) -> tuple[IdArray, FloatArray]:
    """A batch to add, as contiguous int64 ids and float32 rows. Ids index bitmaps, so they
    must be non-negative and unique within a batch."""
    ids = _ids(ids)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dimension)
    if not len(ids) == len(vectors) == len(attributes):
        raise ValueError(f"{len(ids)} ids, {len(vectors)} vectors and {len(attributes)} attributes")
    if len(ids) and (ids.min() < 0 or len(np.unique(ids)) != len(ids)):
        raise ValueError("template ids must be non-negative and unique within a batch")
    return ids, vectors


def _snapshot_problem(
    meta: SnapshotMeta, blob: bytes, model_id: str, dimension: int, transform: str, kind: str
) -> str:
    if meta.format_version != FORMAT_VERSION:
        return f"format version {meta.format_version}, expected {FORMAT_VERSION}"
    if meta.index_type != kind:
        return f"a {meta.index_type} index, not {kind}"
    if meta.model_id != model_id or meta.dimension != dimension:
        return f"built for {meta.model_id} ({meta.dimension}-D), not {model_id} ({dimension}-D)"
    if meta.transform != transform:
        return f"built with template transform {meta.transform}, not {transform}"
    if hashlib.sha256(blob).hexdigest() != meta.index_sha256:
        return "index file checksum does not match its metadata (damaged or partly written)"
    return ""


def _paths(folder: Path, model_id: str) -> tuple[Path, Path]:
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in model_id)
    return folder / f"{stem}.snapshot.npz", folder / f"{stem}.json"


def sweep_partial(folder: Path) -> int:
    """Delete the temp files of snapshots whose writing was cut (a crash, a kill); returns
    how many. Under the folder's lock, so another process's write in progress is spared."""
    try:
        with _folder_lock(folder):
            partial = [p for p in folder.glob(".*.tmp") if p.is_file()]
            for path in partial:
                path.unlink(missing_ok=True)
    except OSError as err:  # a read-only data dir: nothing to do about them now
        logger.warning("half-written index snapshots not swept: %s", err)
        return 0
    if partial:
        logger.warning("removed %d half-written index snapshot file(s)", len(partial))
    return len(partial)


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the snapshot folder (across processes), held while a snapshot
    file is written and while the leftovers of cut writes are swept."""
    if not folder.is_dir():
        yield
        return
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_atomically(path: Path, data: bytes) -> None:
    """A unique temp name, so two writers never share a half-written file."""
    with _folder_lock(path.parent):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
