"""The embedded approximate index: FAISS ``IndexHNSWFlat`` over inner product.

Rows are HNSW's own sequential ids. HNSW cannot remove a vector, so removals are
tombstones and filters a selector inside the graph walk (``service.search.rows``).

Scores are exact: ``IndexHNSWFlat`` keeps the float32 vectors and ranks the efSearch
candidates it visits by their true inner product, so only which templates are visited is
approximate, never a score or the order of those found.

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
random vectors (no structure, all neighbours near-ties) no setting here reaches 0.99, and
SFace's templates after the transform are nearly that: in ``scripts/bench.py`` this graph
found 0.96 of the top 50 at 100k and 0.77 at 1M, so ``auto`` chooses the PQ scan
(``service.search.pq``) instead. Memory: the float32 vectors (4*d bytes each) plus
about 2*M*4 bytes of links each, e.g. 0.5 GB + 0.26 GB for 1M 128-D templates.
"""

from __future__ import annotations

from typing import Any, cast

import faiss
import numpy as np

from service.search.attributes import Bitmap
from service.search.port import FloatArray, IdArray, SearchFilter
from service.search.rows import RowIndex

M = 32
EF_CONSTRUCTION = 200
EF_SEARCH = 256
FILTERED_EF_FACTOR = 2  # efSearch multiplier when a filter passes under half the templates


class HnswIndex(RowIndex):
    """A ``VectorIndex`` over an HNSW graph."""

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
        self._graph = _new_graph(dimension)

    def _append(self, rows: IdArray, vectors: FloatArray) -> None:
        self._graph.add(vectors)

    def _approximate(
        self,
        queries: FloatArray,
        k: int,
        selection: Bitmap | None,
        passing: int,
        where: SearchFilter | None,
    ) -> tuple[FloatArray, IdArray]:
        """The graph walk; the selector points into ``selection``, alive in this frame."""
        ef = max(self.ef_search, k)
        if 2 * passing < self._live:  # a walk through a sparse selection needs more
            ef = max(FILTERED_EF_FACTOR * self.ef_search, k)
        # one per search: FAISS swaps its selector (not in faiss's type stubs)
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        params.efSearch = ef
        if selection is not None:
            bitmap = np.ascontiguousarray(selection)
            params.sel = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
        scores, rows = self._graph.search(queries, k, params=params)
        return scores, rows

    def _vectors(self) -> FloatArray:
        """The graph's stored float32 vectors (a view, no copy)."""
        storage = cast(faiss.IndexFlat, faiss.downcast_index(self._graph.storage))
        flat: FloatArray = faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * self.dimension)
        return flat.reshape(-1, self.dimension)

    def _payload(self) -> dict[str, Any]:
        return {"index": faiss.serialize_index(self._graph)}

    def _restore(self, arrays: Any, rows: int) -> None:
        graph = faiss.deserialize_index(arrays["index"])
        if not isinstance(graph, faiss.IndexHNSWFlat) or graph.d != self.dimension:
            raise ValueError("not an HNSW index of the recorded dimension")
        if graph.ntotal != rows:
            raise ValueError("snapshot rows do not match the graph")
        self._graph = graph


def _new_graph(dimension: int) -> faiss.IndexHNSWFlat:
    graph = faiss.IndexHNSWFlat(dimension, M, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = EF_CONSTRUCTION
    return graph
