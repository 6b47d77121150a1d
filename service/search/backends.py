"""Which index backend and type serve the search: chosen once, from the settings, by
``index_factory`` (``HOMEWARD_INDEX_BACKEND``, ``HOMEWARD_INDEX_TYPE``).

``auto`` means exact search (flat) below ``AUTO_APPROXIMATE_FROM`` templates and an
approximate index from there on: FAISS's PQ scan (``service.search.pq``; its shortlist
keeps more of the exact top 50 than HNSW at the same speed on face templates, see the
README's benchmark), Milvus's HNSW. Measured on one core, a flat search costs about
0.4-0.6 ns per template and dimension, so 100k 128-D templates take 3-7 ms, well above a
PQ scan; at 20k they take about 1 ms, which exact search is worth (it can never miss). The
threshold is in templates x dimension so a 512-D model switches at a quarter of the count.
The type is chosen when the index is built (start, rebuild); a gallery that crosses the
line is rebuilt as the other type at the next snapshot.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from service.search.faiss_index import FaissIndex
from service.search.hnsw import HnswIndex
from service.search.port import IndexFactory, VectorIndex
from service.search.pq import PqIndex
from service.search.rows import RowIndex
from service.settings import IndexBackend, IndexType

logger = logging.getLogger(__name__)

AUTO_APPROXIMATE_FROM = 20_000 * 128  # templates x dimension from which ``auto`` approximates
Concrete = Literal["flat", "hnsw", "pq"]
CLASSES: dict[Concrete, type[FaissIndex]] = {"flat": FaissIndex, "hnsw": HnswIndex, "pq": PqIndex}


def chosen_type(
    index_type: IndexType, size: int, dimension: int, approximate: Concrete = "pq"
) -> Concrete:
    """The concrete type for a gallery of ``size`` templates (``approximate`` above the line)."""
    if index_type == "auto":
        return approximate if size * dimension >= AUTO_APPROXIMATE_FROM else "flat"
    return index_type


class FaissFactory:
    """Embedded FAISS indexes (flat, HNSW, PQ scan), snapshotted to the index folder."""

    backend = "faiss"

    def __init__(self, index_type: IndexType = "flat") -> None:
        self.index_type = index_type

    def _class(self, size: int, dimension: int) -> type[FaissIndex]:
        return CLASSES[chosen_type(self.index_type, size, dimension)]

    def create(self, dimension: int, model_id: str, transform: str, size: int) -> VectorIndex:
        return self._class(size, dimension)(dimension, model_id, transform)

    def load(
        self, folder: Path, model_id: str, dimension: int, transform: str, size: int
    ) -> VectorIndex | None:
        return self._class(size, dimension).load(folder, model_id, dimension, transform)

    def stale(self, index: VectorIndex, size: int) -> str:
        wanted = self._class(size, index.dimension).KIND
        if index.kind != wanted:
            return f"{size} templates call for a {wanted} index, not {index.kind}"
        return index.stale() if isinstance(index, RowIndex) else ""


def index_factory(backend: IndexBackend, index_type: IndexType, milvus_uri: str) -> IndexFactory:
    """The factory the settings name; Milvus (and pymilvus) only when chosen."""
    match backend:
        case "faiss":
            return FaissFactory(index_type)
        case "milvus":
            try:
                from service.search.milvus_index import MilvusFactory
            except ImportError as err:
                raise ValueError(
                    f"HOMEWARD_INDEX_BACKEND=milvus needs pymilvus ({err}): install the "
                    "'milvus' extra, e.g. pip install '.[milvus]'"
                ) from err

            milvus: IndexFactory = MilvusFactory(milvus_uri, index_type)
            return milvus
    raise ValueError(f"unknown index backend {backend!r}")
