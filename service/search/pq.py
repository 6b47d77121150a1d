"""The embedded index for large galleries: a scan of every template's 4-bit product-quantised
code (FAISS fast scan), then exact re-scoring of the best ``SHORTLIST``.

Face templates after the shipped transform are spread almost evenly over the sphere, so a
query's 50 nearest are near-ties among many: graphs (HNSW) and partitions (IVF) must visit
a large share of the gallery to find them. Measured at 1M SFace-shaped templates, one
thread (``scripts/bench.py``; the README has the table): IVF probing 6% of the gallery
found 64% of the top 50, HNSW needed efSearch 1024 and 4 ms at 200k, while this scan of
1M 32-byte codes and the exact re-scoring of a shortlist of 2500 took 2.7-2.9 ms, kept
99.8% of the exact top 50 and every query's exact top 10. The codes are only a sieve:
every score returned is the exact inner product of the float32 vectors kept beside them,
so a shortlist never reorders what it found.

Every code is held twice (32 bytes a 128-D template): in one list of all rows, which an
unfiltered search scans, and in one of ``SHARDS`` lists by organisation (its number in the
attribute table modulo ``SHARDS``), so a search filtered to one organisation scans that
organisation's list only; the filter bitmap, passed to FAISS as a selector, drops the few
rows of other organisations sharing it. (A filter that rejects most rows of the list it
scans costs twice the time: the selector is asked about every row that beats the current
threshold, and the threshold rises slowly.) Below ``TRAIN_FROM`` rows there is no
codebook and searches are exact scans. The codebook is trained once, on a sample of the
rows held then; a snapshot keeps the float32 vectors only and the codes are made again at
load (about 6 s for 1M).
"""

from __future__ import annotations

from typing import Any, cast

import faiss
import numpy as np

from service.search.attributes import Bitmap
from service.search.port import FloatArray, IdArray, SearchFilter
from service.search.rows import RowIndex

SHORTLIST = 2500  # codes per query re-scored exactly (more when k is larger)
TRAIN_FROM = 20_000  # rows from which there is a codebook (exact scans before)
TRAIN_SAMPLE = 100_000  # rows the codebook is trained on, at most
SHARDS = 16  # code lists, by organisation
BITS = 4  # per sub-quantiser: FAISS fast scan's SIMD lookup tables need 4


class PqIndex(RowIndex):
    """A ``VectorIndex``: product-quantised scan, exact re-scoring."""

    KIND = "faiss-pq"

    def __init__(self, dimension: int, model_id: str, transform: str = "none") -> None:
        if dimension % 2:
            raise ValueError(f"a PQ index needs an even dimension, not {dimension}")
        super().__init__(dimension, model_id, transform)
        self.shortlist = SHORTLIST
        self.train_from = TRAIN_FROM
        self._store: FloatArray = np.zeros((0, dimension), np.float32)
        self._everyone: faiss.IndexIVFPQFastScan | None = None  # every row's code
        self._shards: list[faiss.IndexIVFPQFastScan] = []  # the same codes by organisation

    def _append(self, rows: IdArray, vectors: FloatArray) -> None:
        if len(self._store) < self._rows + len(rows):
            self._store = _grown_rows(self._store, self._rows + len(rows))
        self._store[rows] = vectors
        if self._everyone is not None:
            self._encode(rows)
        elif self._rows + len(rows) >= self.train_from:
            self._train(self._rows + len(rows))

    def _vectors(self) -> FloatArray:
        return self._store[: self._rows]

    def _train(self, rows: int) -> None:
        """A codebook from a sample of the first ``rows`` rows, then every live row coded."""
        rng = np.random.default_rng(0)  # the same rows give the same codes
        sample = self._store[np.sort(rng.permutation(rows)[:TRAIN_SAMPLE])]
        # 2 dimensions per 4-bit sub-quantiser: coarser codes need a far longer shortlist
        empty = faiss.IndexIVFPQFastScan(
            faiss.IndexFlatIP(self.dimension),
            self.dimension,
            1,
            self.dimension // 2,
            BITS,
            faiss.METRIC_INNER_PRODUCT,
        )
        empty.train(sample)
        blank = faiss.serialize_index(empty)
        self._everyone, *self._shards = [
            cast(faiss.IndexIVFPQFastScan, faiss.deserialize_index(blank))
            for _ in range(1 + SHARDS)
        ]
        live = np.flatnonzero(np.unpackbits(self._attributes.present(), bitorder="little"))
        self._encode(live[live < rows])

    def _encode(self, rows: IdArray) -> None:
        assert self._everyone is not None
        self._everyone.add_with_ids(self._store[rows], rows)
        shard_of = self._attributes.org_codes(rows) % SHARDS
        for shard in np.unique(shard_of):
            mine = rows[shard_of == shard]
            self._shards[int(shard)].add_with_ids(self._store[mine], mine)

    def _approximate(
        self,
        queries: FloatArray,
        k: int,
        selection: Bitmap | None,
        passing: int,
        where: SearchFilter | None,
    ) -> tuple[FloatArray, IdArray]:
        """The shortlist from the codes ``where`` can reach, re-scored exactly; the selector
        points into ``selection``, alive in this frame."""
        if self._everyone is None:  # no codebook yet: few rows, scanned exactly
            return self._exact(queries, k, selection)
        codes = self._codes_for(where)
        params = faiss.SearchParametersIVF()  # one per search: FAISS swaps its selector
        params.nprobe = 1
        if selection is not None:
            bitmap = np.ascontiguousarray(selection)
            params.sel = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
        shortlist = max(self.shortlist, k)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        found = np.full((len(queries), k), -1, np.int64)
        _, listed = codes.search(queries, shortlist, params=params)
        for i, query in enumerate(queries):
            rows = listed[i][listed[i] >= 0]
            exact = self._store[rows] @ query
            best = _top(exact, k)
            scores[i, : len(best)], found[i, : len(best)] = exact[best], rows[best]
        return scores, found

    def _codes_for(self, where: SearchFilter | None) -> faiss.IndexIVFPQFastScan:
        """The organisation's list when ``where`` names one, else the list of all rows."""
        assert self._everyone is not None
        code = None if where is None else self._attributes.org_code(where.org_id)
        return self._everyone if code is None else self._shards[code % SHARDS]

    def _payload(self) -> dict[str, Any]:
        return {"vectors": self._store[: self._rows]}

    def _restore(self, arrays: Any, rows: int) -> None:
        vectors = arrays["vectors"]
        if vectors.dtype != np.float32 or vectors.shape != (rows, self.dimension):
            raise ValueError("snapshot vectors do not match the rows")
        self._store = np.ascontiguousarray(vectors)
        if rows >= self.train_from:
            self._train(rows)


def _top(scores: FloatArray, k: int) -> IdArray:
    """Positions of the ``k`` highest scores, highest first."""
    if len(scores) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        ordered: IdArray = part[np.argsort(-scores[part], kind="stable")]
        return ordered
    everything: IdArray = np.argsort(-scores, kind="stable")
    return everything


def _grown_rows(store: FloatArray, size: int) -> FloatArray:
    """``store`` with room for ``size`` rows, grown by half again (pages untouched until
    written, so the spare rows cost address space, not memory)."""
    grown: FloatArray = np.empty((max(size, len(store) * 3 // 2, 1024), store.shape[1]), np.float32)
    grown[: len(store)] = store
    return grown
