"""Keeps the in-memory index equal to the registry's templates for one model.

The registry's append-only template-change log drives it: at start the snapshot is loaded
if it is intact and not ahead of the registry, then every change after its watermark is
replayed (so several workers or replicas all converge), otherwise it is rebuilt.

Searches never wait for a rebuild or a snapshot: a rebuild fills a new index beside the
live one, checks it (``service.search.verify``) and swaps the reference; a snapshot only
shares the index's read lock; and the search path's ``catch_up(wait=False)`` gives way to
any sync or snapshot in progress.

The index itself comes from an ``IndexFactory`` (FAISS flat or HNSW, Milvus), so the keeper
works the same for every backend; a snapshot first rebuilds an index the factory calls
stale (deletions piled up in an HNSW graph, or ``auto`` now calling for another type).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from service.search.backends import FaissFactory
from service.search.faiss_index import FaissIndex, sweep_partial
from service.search.port import (
    Change,
    FloatArray,
    IdArray,
    IndexedTemplate,
    IndexFactory,
    SearchFilter,
    SnapshotMeta,
    TemplateSource,
    VectorIndex,
)
from service.search.transform import IDENTITY, TemplateTransform
from service.search.verify import CheckReport, ExactSample, IndexCheckFailed

logger = logging.getLogger(__name__)

# Called with (templates indexed, templates to index) after each block of a rebuild; it may
# raise to stop the rebuild (the new index is then discarded, the live one kept).
Progress = Callable[[int, int], None]
BLOCK = 20_000  # templates read and added at a time
MIN_BLOCK = 1_000  # smaller galleries report progress every block of this many
COUNT_TRIES = 3  # count checks before giving up on a registry that keeps changing


class IndexKeeper:
    def __init__(
        self,
        source: TemplateSource,
        model_id: str,
        dimension: int,
        folder: Path,
        transform: TemplateTransform = IDENTITY,
        factory: IndexFactory | None = None,
    ) -> None:
        self.source = source
        self.model_id = model_id
        self.dimension = dimension
        self.folder = folder
        self.transform = transform  # for the next open() or rebuild()
        self.factory = factory or FaissFactory()
        # The live index and the transform it was built with, swapped as one reference.
        # Until open(): an empty in-memory placeholder (never a Milvus collection).
        empty = FaissIndex(dimension, model_id, transform.version)
        self._live: tuple[VectorIndex, TemplateTransform] = (empty, transform)
        self._sync_lock = threading.Lock()  # one thread applies changes or swaps at a time
        self._save_lock = threading.Lock()  # one snapshot at a time
        self._saving = 0  # snapshots in progress, guarded by _sync_lock
        self.last_open = "new"
        self.ready = False

    @property
    def index(self) -> VectorIndex:
        return self._live[0]

    @property
    def generation(self) -> int:
        return self.index.watermark

    @property
    def size(self) -> int:
        return len(self.index)

    @property
    def kind(self) -> str:
        return self.index.kind

    @property
    def backend(self) -> str:
        """The index backend in use: "faiss" or "milvus"."""
        return self.kind.split("-", 1)[0]

    @property
    def index_type(self) -> str:
        """The live index's type: "flat" or "hnsw" (what ``auto`` chose)."""
        return self.kind.split("-", 1)[-1]

    # -- opening -------------------------------------------------------------------------

    def open(self) -> str:
        """Load, replay or rebuild; returns how ('loaded', 'replayed', 'rebuilt')."""
        snapshot = self._usable_snapshot()
        if snapshot is None:
            self._rebuild()
            self.last_open = "rebuilt"
        else:
            self._swap(snapshot, self.transform)
            replayed = self.catch_up()
            self.last_open = "replayed" if replayed else "loaded"
            if len(snapshot) != self.source.template_count(self.model_id):
                logger.warning("index count differs from the registry after replay; rebuilding")
                self._rebuild()
                self.last_open = "rebuilt"
        self.ready = True
        logger.info(
            "index %s: %d templates, generation %d", self.last_open, self.size, self.generation
        )
        return self.last_open

    def _usable_snapshot(self) -> VectorIndex | None:
        sweep_partial(self.folder)  # what a crash left of a snapshot being written
        snapshot = self.factory.load(
            self.folder, self.model_id, self.dimension, self.transform.version, self._count()
        )
        source_mark = self.source.watermark(self.model_id)
        if snapshot is not None and snapshot.watermark > source_mark:
            logger.warning(
                "index snapshot is at generation %d, ahead of the registry's %d; will rebuild",
                snapshot.watermark,
                source_mark,
            )
            snapshot.discard()
            return None
        return snapshot

    def _count(self) -> int:
        return self.source.template_count(self.model_id)

    # -- keeping up ------------------------------------------------------------------------

    def catch_up(self, wait: bool = True) -> int:
        """Apply the registry's changes after the index's watermark; returns how many.
        ``wait=False`` (the search path) returns 0 at once if another thread is syncing or a
        snapshot is being taken, since applying would then block on the index's lock."""
        if not self._sync_lock.acquire(blocking=wait):
            return 0
        try:
            if not wait and self._saving:
                return 0
            index, transform = self._live
            return self._replay(index, transform)
        finally:
            self._sync_lock.release()

    def rebuild(self, progress: Progress | None = None) -> CheckReport:
        """A new index built from the registry beside the live one, checked, then swapped
        in. ``progress`` is called after each block and may raise to stop; a failed check
        raises IndexCheckFailed. Either way the new index is discarded and the live one
        kept."""
        report = self._rebuild(progress, check=True)
        logger.info("index rebuilt from the registry: %d templates", self.size)
        return report

    def _rebuild(self, progress: Progress | None = None, check: bool = False) -> CheckReport:
        """Build without any lock searches or writers take; then, under the sync lock, replay
        what changed meanwhile and swap, so a writer that caught up before the swap still
        finds its change in the new index.

        With ``check``: the sample of searches is compared with exact search before the
        changes made meanwhile are replayed (the exact answers are of the blocks read), and
        the count with the registry's after them, under the sync lock."""
        transform = self.transform
        total = self._count()
        fresh = self._new_index(transform, total)
        sample = ExactSample() if check else None
        try:
            fresh.watermark = self.source.watermark(self.model_id)  # before reading templates
            done = 0
            block_size = min(BLOCK, max(MIN_BLOCK, total // 50))
            for block in self.source.iter_templates(self.model_id, block_size):
                ids, vectors = self._prepared(transform, block)
                fresh.add(ids, vectors, [t.attributes for t in block])
                if sample is not None:
                    sample.add(ids, vectors)
                done += len(block)
                if progress is not None:
                    progress(done, max(done, total))
            exact = fresh.kind.endswith("-flat")
            queries, neighbours, found, depth = sample.check(fresh, exact) if sample else (0,) * 4
            self._replay(fresh, transform)  # the bulk of the changes made while building
            with self._sync_lock:
                if check:
                    registry = self._caught_up_count(fresh, transform)
                else:
                    self._replay(fresh, transform)
                    registry = len(fresh)
                if len(fresh) != registry:
                    raise IndexCheckFailed(
                        f"the rebuilt index holds {len(fresh)} templates, the registry "
                        f"{registry}; it was discarded and the live index kept"
                    )
                self._swap(fresh, transform)
        except BaseException:
            fresh.discard()
            raise
        return CheckReport(len(fresh), registry, queries, neighbours, found, depth)

    def _caught_up_count(self, index: VectorIndex, transform: TemplateTransform) -> int:
        """The registry's template count once ``index`` has every change up to it: a write
        committed between the count and the replay shows as a difference, so try again."""
        registry = self._count()
        for _ in range(COUNT_TRIES):
            self._replay(index, transform)
            if len(index) == registry:
                break
            registry = self._count()
        return registry

    def _swap(self, index: VectorIndex, transform: TemplateTransform) -> None:
        """Make ``index`` the live one and release the one it replaces (a search still in
        it finishes on a FAISS index; a Milvus collection is dropped)."""
        old = self._live[0]
        self._live = (index, transform)
        if old is not index:
            old.discard()

    def _replay(self, index: VectorIndex, transform: TemplateTransform) -> int:
        applied = 0
        while changes := self.source.changes_since(self.model_id, index.watermark):
            self._apply(index, transform, changes)
            applied += len(changes)
        return applied

    def _apply(
        self, index: VectorIndex, transform: TemplateTransform, changes: Sequence[Change]
    ) -> None:
        """A batch of changes, by each template's last change in it: a live add is indexed
        (replacing the id), anything else (a removal, an add whose template is gone) removes
        it. Idempotent, so replaying changes the index already has is harmless."""
        last = {change.template_id: change for change in changes}
        adds = [c.template for c in last.values() if c.op == "add" and c.template is not None]
        gone = [tid for tid, c in last.items() if c.op != "add" or c.template is None]
        if gone:
            index.remove(np.array(gone, dtype=np.int64))
        self._add(index, transform, adds)
        index.watermark = changes[-1].seq  # after the writes: a snapshot never overclaims

    def _add(
        self, index: VectorIndex, transform: TemplateTransform, block: Sequence[IndexedTemplate]
    ) -> None:
        if not block:
            return
        ids, vectors = self._prepared(transform, block)
        index.add(ids, vectors, [t.attributes for t in block])

    def _prepared(
        self, transform: TemplateTransform, block: Sequence[IndexedTemplate]
    ) -> tuple[IdArray, FloatArray]:
        """A block's ids and its vectors as the index holds them (transformed)."""
        ids = np.array([t.id for t in block], dtype=np.int64)
        return ids, transform.apply(self._raw(block))

    def _raw(self, block: Sequence[IndexedTemplate]) -> FloatArray:
        size = self.dimension * 4
        if any(len(t.vector) != size for t in block):
            raise ValueError(f"a template vector is not {self.dimension} float32 values")
        raw: FloatArray = np.frombuffer(b"".join(t.vector for t in block), dtype="<f4")
        return raw.reshape(len(block), self.dimension).astype(np.float32)

    def _new_index(self, transform: TemplateTransform, size: int = 0) -> VectorIndex:
        return self.factory.create(self.dimension, self.model_id, transform.version, size)

    # -- searching and snapshots -------------------------------------------------------------

    def query(self, template: FloatArray) -> FloatArray:
        """A query template as the live index holds templates: transformed, one row."""
        return self._live[1].apply(np.asarray(template, dtype=np.float32).reshape(1, -1))

    def search(
        self, template: FloatArray, k: int, where: SearchFilter | None = None
    ) -> tuple[FloatArray, IdArray]:
        """The live index's top-k (scores, ids) for one raw template, as 1-D arrays."""
        index, transform = self._live
        query = transform.apply(np.asarray(template, dtype=np.float32).reshape(1, -1))
        scores, ids = index.search(query, k, where)
        return scores[0], ids[0]

    def save(self) -> SnapshotMeta:
        """Snapshot the live index, first rebuilt beside if the factory calls it stale.
        Searches go on meanwhile (they share its read lock); writers' catch-ups wait only
        for the serialisation."""
        reason = self.factory.stale(self.index, self._count())
        if reason:
            logger.info("index rebuilt before its snapshot: %s", reason)
            self._rebuild()
        with self._save_lock:
            with self._sync_lock:
                self._saving += 1
                index = self.index
            try:
                meta = index.save(self.folder)
            finally:
                with self._sync_lock:
                    self._saving -= 1
        logger.info(
            "index snapshot written: %d templates, generation %d", meta.count, meta.watermark
        )
        return meta
