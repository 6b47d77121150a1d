"""The check a rebuilt index passes before it replaces the live one: a sample of searches
agrees with an exact search.

While the blocks go in, a few of the first block's vectors are kept as queries, and their
exact top-10 over every block is kept up to date (a matrix product per block, so nothing but
the queries and their top-10 is held). Then the new index is searched with them: an exact
index must return every exact top-10 template in its own top-10, an approximate one (HNSW)
in its top-50. A template of the same score as the last one returned counts as found (two
equal scores may come in either order)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.errors import HomewardError
from service.search.port import FloatArray, IdArray, VectorIndex

SAMPLE_QUERIES = 20
TOP = 10
APPROXIMATE_DEPTH = 50
TIE = 1e-5


class IndexCheckFailed(HomewardError):
    """A rebuilt index disagreed with the registry or with exact search: it was discarded
    and the live index kept."""

    reason = "index_check_failed"


@dataclass(frozen=True)
class CheckReport:
    """What a rebuilt index was checked against."""

    templates: int  # in the new index, once caught up
    registry_templates: int  # the registry's count for the model, at the same moment
    queries: int  # sample searches
    neighbours: int  # exact top-10 templates of those searches
    found: int  # of them, in the new index's results
    depth: int  # how deep in the new index's results (10 exact, 50 approximate)

    def figures(self) -> dict[str, int]:
        return {
            "templates": self.templates,
            "registry_templates": self.registry_templates,
            "sample_queries": self.queries,
            "exact_neighbours": self.neighbours,
            "found": self.found,
            "depth": self.depth,
        }


class ExactSample:
    """Sample queries and their exact top-``k``, kept block by block."""

    def __init__(self, size: int = SAMPLE_QUERIES, k: int = TOP, seed: int | None = None) -> None:
        self.size = size
        self.k = k
        self._rng = np.random.default_rng(seed)
        self.queries: FloatArray | None = None
        self._scores: FloatArray = np.empty((0, 0), dtype=np.float32)
        self._ids: IdArray = np.empty((0, 0), dtype=np.int64)

    def add(self, ids: IdArray, vectors: FloatArray) -> None:
        """One block of (transformed) vectors, as they go into the new index."""
        if not len(ids):
            return
        if self.queries is None:
            picked = self._rng.choice(len(ids), size=min(self.size, len(ids)), replace=False)
            self.queries = np.ascontiguousarray(vectors[np.sort(picked)], dtype=np.float32)
            rows = len(self.queries)
            self._scores = np.empty((rows, 0), dtype=np.float32)
            self._ids = np.empty((rows, 0), dtype=np.int64)
        scores = np.concatenate([self._scores, self.queries @ vectors.T], axis=1)
        every = np.concatenate([self._ids, np.broadcast_to(ids, (len(scores), len(ids)))], axis=1)
        best = np.argsort(-scores, axis=1, kind="stable")[:, : self.k]
        self._scores = np.take_along_axis(scores, best, axis=1)
        self._ids = np.take_along_axis(every, best, axis=1)

    def check(self, index: VectorIndex, exact: bool) -> tuple[int, int, int, int]:
        """Search ``index`` with the sample: (queries, exact neighbours, found, depth).
        Raises IndexCheckFailed when any exact neighbour is missing."""
        depth = self.k if exact else APPROXIMATE_DEPTH
        if self.queries is None:
            return 0, 0, 0, depth
        scores, ids = index.search(self.queries, depth)
        neighbours = found = 0
        for row in range(len(self.queries)):
            returned = set(ids[row][ids[row] >= 0].tolist())
            floor = float(scores[row][ids[row] >= 0].min()) if returned else np.inf
            for tid, score in zip(self._ids[row], self._scores[row], strict=True):
                neighbours += 1
                found += int(tid) in returned or (
                    len(returned) == depth and abs(score - floor) <= TIE
                )
        if found < neighbours:
            raise IndexCheckFailed(
                f"the rebuilt index missed {neighbours - found} of the {neighbours} exact "
                f"top-{self.k} templates of {len(self.queries)} sample searches (looking in "
                f"its top {depth}); it was discarded and the live index kept"
            )
        return len(self.queries), neighbours, found, depth
