"""Keeps the in-memory index equal to the registry's templates for one model.

The registry's append-only template-change log drives it: at start the snapshot is loaded
if it is intact and not ahead of the registry, then every change after its watermark is
replayed (so several workers or replicas all converge), otherwise it is rebuilt.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from service.registry.repository import Registry
from service.search.faiss_index import FaissIndex
from service.search.transform import IDENTITY, TemplateTransform

logger = logging.getLogger(__name__)


class IndexKeeper:
    def __init__(
        self,
        registry: Registry,
        model_id: str,
        dimension: int,
        folder: Path,
        transform: TemplateTransform = IDENTITY,
    ) -> None:
        self.registry = registry
        self.model_id = model_id
        self.dimension = dimension
        self.folder = folder
        self.transform = transform  # applied to templates entering the index and to queries
        self.index = FaissIndex(dimension, model_id, transform.version)
        self._sync_lock = threading.Lock()
        self.last_open = "new"

    @property
    def generation(self) -> int:
        return self.index.watermark

    def open(self) -> str:
        """Load or rebuild; returns how ('loaded', 'replayed', 'rebuilt')."""
        snapshot = FaissIndex.load(
            self.folder, self.model_id, self.dimension, self.transform.version
        )
        registry_mark = self.registry.watermark(self.model_id)
        if snapshot is None or snapshot.watermark > registry_mark:
            self.last_open = "rebuilt"
            self.rebuild()
            return self.last_open
        self.index = snapshot
        replayed = self.catch_up()
        if len(self.index) != self.registry.template_count(self.model_id):
            logger.warning("index count differs from the registry after replay; rebuilding")
            self.rebuild()
            self.last_open = "rebuilt"
        else:
            self.last_open = "replayed" if replayed else "loaded"
        logger.info(
            "index %s: %d templates, generation %d",
            self.last_open,
            len(self.index),
            self.generation,
        )
        return self.last_open

    def rebuild(self) -> None:
        """A new index built from the registry beside the live one, then swapped in."""
        with self._sync_lock:
            fresh = FaissIndex(self.dimension, self.model_id, self.transform.version)
            fresh.watermark = self.registry.watermark(self.model_id)
            for ids, blob in self.registry.iter_templates(self.model_id):
                fresh.add(np.asarray(ids, dtype=np.int64), self._vectors(blob))
            self.index = fresh
        logger.info("index rebuilt from the registry: %d templates", len(fresh))

    def catch_up(self) -> int:
        """Apply the registry's changes after the index's watermark; returns how many."""
        with self._sync_lock:
            applied = 0
            while changes := self.registry.changes_since(self.model_id, self.index.watermark):
                for change in changes:
                    ids = np.array([change.template_id], dtype=np.int64)
                    if change.op == "remove":
                        self.index.remove(ids)
                    elif change.vector is not None:
                        self.index.remove(ids)  # replay is idempotent
                        self.index.add(ids, self._vectors(change.vector))
                    self.index.watermark = change.seq
                applied += len(changes)
            return applied

    def _vectors(self, blob: bytes) -> np.ndarray:
        raw = np.frombuffer(blob, dtype="<f4").reshape(-1, self.dimension)
        return self.transform.apply(raw)

    def query(self, template: np.ndarray) -> np.ndarray:
        """A query template as the index holds templates: transformed, one row."""
        return self.transform.apply(np.asarray(template, dtype=np.float32).reshape(1, -1))

    def save(self) -> None:
        with self._sync_lock:
            meta = self.index.save(self.folder)
        logger.info(
            "index snapshot written: %d templates, generation %d", meta.count, meta.watermark
        )
