"""The base of the embedded approximate indexes (HNSW, PQ scan), which cannot drop a vector.

Rows are appended in order; ``_row_ids`` maps a row to its template id and ``_row_of`` a
template id to its live row. A removed or replaced template leaves a dead row (a
tombstone): its attributes are dropped, and every search passes FAISS a selector that only
lets live rows through, the organisation, sex and age filter folded into the same bitmap.
The filter is thus applied inside the search, never by fetching more and dropping. When
dead rows pile up the keeper rebuilds the index beside the live one (``stale``), from the
registry. A filter that leaves few templates (at most ``EXACT_BELOW``) is answered by an
exact scan of just those rows: an approximate search through a sparse selection visits many
rejected rows and loses recall.

A subclass keeps the vectors (``_append``, ``_vectors``), searches them approximately
(``_approximate``) and says what its snapshot holds beside the rows (``_payload``,
``_restore``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Self

import faiss
import numpy as np

from service.search.attributes import AttributeTable, Bitmap, popcount
from service.search.faiss_index import FaissIndex, checked_batch, checked_queries
from service.search.port import FloatArray, IdArray, SearchFilter, SnapshotMeta, TemplateAttributes

EXACT_BELOW = 20_000  # passing templates at or below which a filtered search scans them exactly
COMPACT_FRACTION = 0.2  # dead rows (of all rows) above which the keeper rebuilds
COMPACT_MIN = 1_000  # ... once there are at least this many


class RowIndex(FaissIndex):
    """A ``VectorIndex`` over appended rows with tombstones; same locking and snapshots as
    ``FaissIndex``."""

    def __init__(self, dimension: int, model_id: str, transform: str = "none") -> None:
        super().__init__(dimension, model_id, transform)
        self.exact_below = EXACT_BELOW
        self._row_ids: IdArray = np.zeros(0, np.int64)  # template id per row (dead rows too)
        self._row_of: IdArray = np.zeros(0, np.int64)  # live row per template id, -1 if none
        self._rows = 0
        self._live = 0

    def __len__(self) -> int:
        return self._live

    @property
    def dead(self) -> int:
        """Rows left by removed or replaced templates, still held."""
        return self._rows - self._live

    def add(
        self, ids: IdArray, vectors: FloatArray, attributes: Sequence[TemplateAttributes]
    ) -> None:
        """Append these vectors as new rows; a template already present loses its old row."""
        ids, vectors = checked_batch(ids, vectors, attributes, self.dimension)
        if not len(ids):
            return
        with self._lock.writing():
            self._remove_present(ids)
            first = self._rows
            rows = np.arange(first, first + len(ids), dtype=np.int64)
            self._row_ids = grown(self._row_ids, first + len(ids), 0)
            self._row_ids[rows] = ids
            self._row_of = grown(self._row_of, int(ids.max()) + 1, -1)
            self._row_of[ids] = rows
            self._attributes.put(rows, attributes)
            self._append(rows, vectors)
            self._rows += len(ids)
            self._live += len(ids)

    def _remove_present(self, ids: IdArray) -> int:
        inside = ids[(ids >= 0) & (ids < len(self._row_of))]
        rows = self._row_of[inside]
        present = rows >= 0
        if not present.any():
            return 0
        self._attributes.drop(rows[present])
        self._row_of[inside[present]] = -1
        self._live -= int(present.sum())
        return int(present.sum())

    def search(
        self, queries: FloatArray, k: int, where: SearchFilter | None = None
    ) -> tuple[FloatArray, IdArray]:
        """Top-k (scores, ids) per query row among live templates passing ``where``."""
        queries, k = checked_queries(queries, k, self.dimension)
        with self._lock.reading():
            active = where is not None and where.active
            selection, passing = None, self._live
            if active or self.dead:
                selection = self._selection(where if active else None)
                passing = popcount(selection)
            if selection is not None and passing <= self.exact_below:
                scores, rows = self._exact(queries, k, selection)
            else:
                scores, rows = self._approximate(queries, k, selection, passing, where)
            ids: IdArray = np.where(rows >= 0, self._row_ids[np.maximum(rows, 0)], -1)
            return scores, ids

    def _selection(self, where: SearchFilter | None) -> Bitmap:
        """The live rows passing ``where`` (all live rows for None)."""
        live = self._attributes.present()
        if where is None:
            return live
        selected = self._attributes.selection(where)
        size = min(len(selected), len(live))  # equal: both span the table's capacity
        both: Bitmap = selected[:size] & live[:size]
        return both

    def _exact(
        self, queries: FloatArray, k: int, selection: Bitmap | None
    ) -> tuple[FloatArray, IdArray]:
        """Exact top-k (scores, rows) over the rows ``selection`` passes; None: every row
        (none dead), scanned in place without a copy."""
        vectors, rows = self._vectors(), None
        if selection is not None:
            rows = np.flatnonzero(np.unpackbits(selection, bitorder="little")[: self._rows])
            vectors = vectors[rows]
        scores = np.full((len(queries), k), -np.inf, np.float32)
        found = np.full((len(queries), k), -1, np.int64)
        if len(vectors):
            top_scores, top = faiss.knn(
                queries, vectors, min(k, len(vectors)), faiss.METRIC_INNER_PRODUCT
            )
            scores[:, : top.shape[1]] = top_scores
            found[:, : top.shape[1]] = top if rows is None else np.where(top >= 0, rows[top], -1)
        return scores, found

    def stale(self) -> str:
        if self.dead >= COMPACT_MIN and self.dead > COMPACT_FRACTION * self._rows:
            return f"{self.dead} of {self._rows} rows are removed templates"
        return ""

    # -- what a subclass provides --------------------------------------------------------

    def _append(self, rows: IdArray, vectors: FloatArray) -> None:
        """Hold ``vectors`` as these new rows (their attributes are already recorded)."""
        raise NotImplementedError

    def _vectors(self) -> FloatArray:
        """The float32 vectors, one per row (dead rows too)."""
        raise NotImplementedError

    def _approximate(
        self,
        queries: FloatArray,
        k: int,
        selection: Bitmap | None,
        passing: int,
        where: SearchFilter | None,
    ) -> tuple[FloatArray, IdArray]:
        """Top-k (scores, rows) among the rows ``selection`` passes (None: every row, none
        dead); ``passing`` of them."""
        raise NotImplementedError

    def _payload(self) -> dict[str, Any]:
        """Arrays a snapshot holds beside the rows and attributes."""
        raise NotImplementedError

    def _restore(self, arrays: Any, rows: int) -> None:
        """Take back what ``_payload`` saved; ValueError unless it holds ``rows`` rows."""
        raise NotImplementedError

    # -- snapshots -----------------------------------------------------------------------

    def _snapshot_blob(self) -> bytes:
        present = np.flatnonzero(self._row_of >= 0)  # template ids present ...
        live = self._row_of[present]  # ... and their rows
        arrays: dict[str, Any] = self._attributes.export(live)
        buffer = io.BytesIO()
        np.savez(
            buffer,
            row_ids=self._row_ids[: self._rows],
            live_rows=live,
            **arrays,
            **self._payload(),
        )
        return buffer.getvalue()

    @classmethod
    def _from_blob(cls, blob: bytes, meta: SnapshotMeta) -> Self:
        index = cls(meta.dimension, meta.model_id, meta.transform)
        with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
            row_ids = arrays["row_ids"].astype(np.int64)
            live = arrays["live_rows"].astype(np.int64)
            if len(live) and live.max() >= len(row_ids):
                raise ValueError("snapshot rows do not match the stored vectors")
            table = AttributeTable.restore(live, {k: arrays[k] for k in arrays.files})
            index._row_ids, index._attributes = row_ids, table
            index._rows = len(row_ids)
            index._restore(arrays, len(row_ids))
        index._row_of = grown(index._row_of, int(row_ids.max()) + 1 if len(row_ids) else 0, -1)
        index._row_of[row_ids[live]] = live
        index._live = len(live)
        index.watermark = meta.watermark
        return index


def grown(array: IdArray, size: int, fill: int) -> IdArray:
    """``array`` with room for ``size`` entries, grown geometrically (new entries ``fill``)."""
    if size <= len(array):
        return array
    extra = np.full(max(size, 2 * len(array), 1024) - len(array), fill, np.int64)
    return np.concatenate([array, extra])
