"""The embedded approximate index: FAISS ``IndexHNSWFlat`` over inner product.

Rows are HNSW's own sequential ids; ``_row_ids`` maps a row to its template id and
``_row_of`` a template id to its live row. HNSW cannot remove a vector, so a removed or
replaced template leaves a dead row (a tombstone): its attributes are dropped, and every
search passes FAISS a selector that only lets live rows through, the organisation, sex and
age filter folded into the same bitmap. The filter is thus applied inside the graph walk,
never by fetching more and dropping. When dead rows pile up the keeper rebuilds the index
beside the live one (``stale``), from the registry.

Scores are exact: ``IndexHNSWFlat`` keeps the float32 vectors and ranks the efSearch
candidates it visits by their true inner product, so only which templates are visited is
approximate, never a score or the order of those found. A filter that leaves few templates
(at most ``EXACT_BELOW``) is answered by an exact scan of just those rows instead: a graph
walk through a sparse selection visits many rejected nodes and loses recall.

Parameters, measured on 100k synthetic 128-D unit vectors with a 16-D intrinsic structure
(identities, 4 templates each, queries a fresh view of one), one thread, against exact
search (the script and all figures are in the issue-11 report):

    M/efC   efSearch  recall@50 unfiltered  recall@50 org 10%  p50 (ms)
    16/100    256          0.9999              0.968            0.5
    16/100    512          1.0000              0.997            1.0
    32/200    256          1.0000              0.990            0.6
    32/200    512          1.0000              0.9997           1.4

so M=32, efConstruction=200 (build 118 s for 100k on one loaded core), efSearch=256, and
twice that when a filter passes under half the templates (never below k). On isotropic
random vectors (no structure, all neighbours near-ties) no setting here reaches 0.99: the
1M benchmark must use real templates. Memory: the float32 vectors (4*d bytes each) plus
about 2*M*4 bytes of links each, e.g. 0.5 GB + 0.26 GB for 1M 128-D templates.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from typing import Any, Self, cast

import faiss
import numpy as np

from service.search.attributes import AttributeTable, Bitmap, popcount
from service.search.faiss_index import FaissIndex, checked_batch, checked_queries
from service.search.port import FloatArray, IdArray, SearchFilter, SnapshotMeta, TemplateAttributes

logger = logging.getLogger(__name__)

M = 32
EF_CONSTRUCTION = 200
EF_SEARCH = 256
FILTERED_EF_FACTOR = 2  # efSearch multiplier when a filter passes under half the templates
EXACT_BELOW = 20_000  # passing templates at or below which a filtered search scans them exactly
COMPACT_FRACTION = 0.2  # dead rows (of all rows) above which the keeper rebuilds
COMPACT_MIN = 1_000  # ... once there are at least this many


class HnswIndex(FaissIndex):
    """A ``VectorIndex`` over an HNSW graph; same locking and snapshots as ``FaissIndex``."""

    KIND = "faiss-hnsw"

    def __init__(
        self,
        dimension: int,
        model_id: str,
        transform: str = "none",
        ef_search: int = EF_SEARCH,
    ) -> None:
        super().__init__(dimension, model_id, transform)
        self.ef_search = ef_search
        self.exact_below = EXACT_BELOW
        self._graph = _new_graph(dimension)
        self._row_ids: IdArray = np.zeros(0, np.int64)  # template id per row (dead rows too)
        self._row_of: IdArray = np.zeros(0, np.int64)  # live row per template id, -1 if none
        self._live = 0

    def __len__(self) -> int:
        return self._live

    @property
    def dead(self) -> int:
        """Rows left by removed or replaced templates, still in the graph."""
        return int(self._graph.ntotal) - self._live

    def add(
        self, ids: IdArray, vectors: FloatArray, attributes: Sequence[TemplateAttributes]
    ) -> None:
        """Append these vectors as new rows; a template already present loses its old row."""
        ids, vectors = checked_batch(ids, vectors, attributes, self.dimension)
        if not len(ids):
            return
        with self._lock.writing():
            self._remove_present(ids)
            first = int(self._graph.ntotal)
            rows = np.arange(first, first + len(ids), dtype=np.int64)
            self._graph.add(vectors)
            self._row_ids = _grown(self._row_ids, first + len(ids), 0)
            self._row_ids[rows] = ids
            self._row_of = _grown(self._row_of, int(ids.max()) + 1, -1)
            self._row_of[ids] = rows
            self._attributes.put(rows, attributes)
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
            ef = max(self.ef_search, k)
            if not active and not self.dead:
                selection = None
            else:
                selection = self._selection(where if active else None)
                passing = popcount(selection)
                if passing <= self.exact_below:
                    return self._exact(queries, k, selection)
                if 2 * passing < self._live:  # a walk through a sparse selection needs more
                    ef = max(FILTERED_EF_FACTOR * self.ef_search, k)
            scores, rows = self._walk(queries, ef, k, selection)
            return scores, self._template_ids(rows)

    def _selection(self, where: SearchFilter | None) -> Bitmap:
        """The live rows passing ``where`` (all live rows for None)."""
        live = self._attributes.present()
        if where is None:
            return live
        selected = self._attributes.selection(where)
        size = min(len(selected), len(live))  # equal: both span the table's capacity
        both: Bitmap = selected[:size] & live[:size]
        return both

    def _walk(
        self, queries: FloatArray, ef: int, k: int, selection: Bitmap | None
    ) -> tuple[FloatArray, IdArray]:
        """The graph search; the selector points into ``selection``, alive in this frame."""
        # one per search: FAISS swaps its selector (not in faiss's type stubs)
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        params.efSearch = ef
        if selection is not None:
            bitmap = np.ascontiguousarray(selection)
            params.sel = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
        scores, rows = self._graph.search(queries, k, params=params)
        return scores, rows

    def _exact(self, queries: FloatArray, k: int, selection: Bitmap) -> tuple[FloatArray, IdArray]:
        """Exact top-k over the few rows a selective filter leaves."""
        bits = np.unpackbits(selection, bitorder="little")[: self._graph.ntotal]
        rows = np.flatnonzero(bits)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        found = np.full((len(queries), k), -1, np.int64)
        if len(rows):
            vectors = self._vectors()[rows]
            top_scores, top = faiss.knn(
                queries, vectors, min(k, len(rows)), faiss.METRIC_INNER_PRODUCT
            )
            scores[:, : top.shape[1]] = top_scores
            found[:, : top.shape[1]] = np.where(top >= 0, self._row_ids[rows][top], -1)
        return scores, found

    def _vectors(self) -> FloatArray:
        """The graph's stored float32 vectors, one row per graph row (a view, no copy)."""
        storage = cast(faiss.IndexFlat, faiss.downcast_index(self._graph.storage))
        flat: FloatArray = faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * self.dimension)
        return flat.reshape(-1, self.dimension)

    def _template_ids(self, rows: IdArray) -> IdArray:
        ids: IdArray = np.where(rows >= 0, self._row_ids[np.maximum(rows, 0)], -1)
        return ids

    # -- snapshots -----------------------------------------------------------------------

    def _snapshot_blob(self) -> bytes:
        rows = np.flatnonzero(self._row_of >= 0)  # template ids present ...
        live = self._row_of[rows]  # ... and their rows
        arrays: dict[str, Any] = self._attributes.export(live)
        buffer = io.BytesIO()
        np.savez(
            buffer,
            index=faiss.serialize_index(self._graph),
            row_ids=self._row_ids[: self._graph.ntotal],
            live_rows=live,
            **arrays,
        )
        return buffer.getvalue()

    @classmethod
    def _from_blob(cls, blob: bytes, meta: SnapshotMeta) -> Self:
        index = cls(meta.dimension, meta.model_id, meta.transform)
        with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
            graph = faiss.deserialize_index(arrays["index"])
            if not isinstance(graph, faiss.IndexHNSWFlat) or graph.d != meta.dimension:
                raise ValueError("not an HNSW index of the recorded dimension")
            row_ids = arrays["row_ids"].astype(np.int64)
            live = arrays["live_rows"].astype(np.int64)
            if len(row_ids) != graph.ntotal or (len(live) and live.max() >= len(row_ids)):
                raise ValueError("snapshot rows do not match the graph")
            table = AttributeTable.restore(live, {k: arrays[k] for k in arrays.files})
        index._graph, index._row_ids, index._attributes = graph, row_ids, table
        index._row_of = _grown(index._row_of, int(row_ids.max()) + 1 if len(row_ids) else 0, -1)
        index._row_of[row_ids[live]] = live
        index._live = len(live)
        index.watermark = meta.watermark
        return index

    def stale(self) -> str:
        if self.dead >= COMPACT_MIN and self.dead > COMPACT_FRACTION * self._graph.ntotal:
            return f"{self.dead} of {self._graph.ntotal} graph rows are removed templates"
        return ""


def _grown(array: IdArray, size: int, fill: int) -> IdArray:
    """``array`` with room for ``size`` entries, grown geometrically (new entries ``fill``)."""
    if size <= len(array):
        return array
    extra = np.full(max(size, 2 * len(array), 1024) - len(array), fill, np.int64)
    return np.concatenate([array, extra])


def _new_graph(dimension: int) -> faiss.IndexHNSWFlat:
    graph = faiss.IndexHNSWFlat(dimension, M, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = EF_CONSTRUCTION
    return graph
