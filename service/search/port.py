"""The vector-search port: what the index is fed from, what it can filter on, and what
any backend (FAISS flat or HNSW embedded, Milvus) offers the application layer.

Nothing here knows about the registry's storage: the registry implements
``TemplateSource``, and the search layer depends only on this module.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

IdArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]

DAYS_PER_YEAR = 365.25
SEXES = ("female", "male")


@dataclass(frozen=True)
class TemplateAttributes:
    """What a search filter can see of a template: its case's organisation, sex and
    estimated birth (days, as date.toordinal(); None when the case has no dates)."""

    org_id: str
    sex: str  # "female" | "male" | "unknown"
    birth_day: float | None


@dataclass(frozen=True)
class IndexedTemplate:
    id: int
    vector: bytes  # float32 little-endian, raw (untransformed)
    attributes: TemplateAttributes


@dataclass(frozen=True)
class Change:
    seq: int
    template_id: int
    op: str  # "add" | "remove"; an "add" of an existing id replaces it (attributes may change)
    template: IndexedTemplate | None  # None for removals, and for adds whose template is gone


class TemplateSource(Protocol):
    """The system of record the index is derived from, through an append-only change log."""

    def watermark(self, model_id: str) -> int: ...

    def template_count(self, model_id: str) -> int: ...

    def changes_since(self, model_id: str, seq: int, limit: int = 10_000) -> list[Change]: ...

    def iter_templates(
        self, model_id: str, block: int = 20_000
    ) -> Iterator[list[IndexedTemplate]]: ...


@dataclass(frozen=True)
class SearchFilter:
    """Restricts a search to one organisation's cases, a sex and an expected-age range today.
    A case of unknown sex or with no dates is never hidden by the sex or age filter."""

    org_id: str | None = None
    sex: str | None = None  # "female" | "male"; "unknown"-sex templates always pass
    min_age: float | None = None
    max_age: float | None = None
    today: date = field(default_factory=date.today)

    def __post_init__(self) -> None:
        if self.sex is not None and self.sex not in SEXES:
            raise ValueError(f"sex filter must be one of {SEXES}, not {self.sex!r}")

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.org_id, self.sex, self.min_age, self.max_age))

    def birth_day_range(self) -> tuple[float, float] | None:
        """(earliest, latest) birth_day that fits the age range: expected age is
        (today.toordinal() - birth_day) / 365.25, so the range is
        [today - max_age*365.25, today - min_age*365.25] (open ends -> +-inf); None when
        no age bound."""
        if self.min_age is None and self.max_age is None:
            return None
        today = float(self.today.toordinal())
        earliest = -np.inf if self.max_age is None else today - self.max_age * DAYS_PER_YEAR
        latest = np.inf if self.min_age is None else today - self.min_age * DAYS_PER_YEAR
        return earliest, latest


@dataclass(frozen=True)
class SnapshotMeta:
    """What a saved index was built from, so a stale or damaged one is never loaded."""

    model_id: str
    dimension: int
    count: int
    watermark: int  # the registry's template-change seq this snapshot includes
    index_sha256: str
    index_type: str = "flat"
    transform: str = "none"  # the template transform's version the vectors went through
    format_version: int = 0  # set by the backend that wrote it
    written_at: str = ""
    location: str = ""  # where the index lives when not in a snapshot file (a Milvus collection)


class VectorIndex(Protocol):
    """add, remove, search with a filter, count, snapshot; FAISS (flat, HNSW) and Milvus."""

    model_id: str
    dimension: int
    watermark: int  # the registry change seq the index includes
    kind: str  # "<backend>-<type>", e.g. "faiss-flat", "faiss-hnsw", "milvus-hnsw"

    def __len__(self) -> int: ...

    def add(
        self, ids: IdArray, vectors: FloatArray, attributes: Sequence[TemplateAttributes]
    ) -> None:
        """Index these (transformed) vectors; an id already present is replaced."""

    def remove(self, ids: IdArray) -> int:
        """Forget these ids; returns how many were present."""

    def search(
        self, queries: FloatArray, k: int, where: SearchFilter | None = None
    ) -> tuple[FloatArray, IdArray]:
        """Top-k (scores, ids) per query row among templates passing ``where``; ids are -1
        where fewer than k pass."""

    def save(self, folder: Path) -> SnapshotMeta:
        """Write a snapshot that a later start can load instead of rebuilding."""

    def discard(self) -> None:
        """Release what the index holds outside this process once it has been replaced
        (a Milvus collection); nothing for an in-memory index."""


class IndexFactory(Protocol):
    """Makes, reopens and judges one backend's indexes, so the keeper knows none of them."""

    backend: str  # "faiss" | "milvus"

    def create(self, dimension: int, model_id: str, transform: str, size: int) -> VectorIndex:
        """An empty index for about ``size`` templates (``auto`` picks its type by it)."""

    def load(
        self, folder: Path, model_id: str, dimension: int, transform: str, size: int
    ) -> VectorIndex | None:
        """The index saved in ``folder`` if it is intact and of the type ``size`` calls for;
        None (the reason logged) means: build a new one."""

    def stale(self, index: VectorIndex, size: int) -> str:
        """Why the live index should be rebuilt beside ("" when it should not): deletions
        piled up in a graph that cannot drop them, or ``auto`` now calls for another type."""
