"""The distributed vector index: a Milvus collection through ``pymilvus``.

``HOMEWARD_MILVUS_URI`` is a Milvus Lite file (the default, ``<data dir>/milvus.db``,
embedded, one process) or a standalone or cluster server (``http://host:19530``). One
collection per index generation holds the template id (primary key), the transformed
vector and the attributes a filter sees as scalar fields; ``SearchFilter`` becomes a
boolean expression Milvus applies inside the search (never over-fetching):

- organisation: ``org == "<id>"``;
- sex: ``sex in [<code>, 0]``, the code of unknown sex (0) always passing;
- age: ``(dated == false or (birth_day >= a and birth_day <= b))``, undated always passing.

Collections are created with ``Strong`` consistency, so a template removed is never found
by the next search. The collection persists by itself, so a "snapshot" flushes it and
records, beside the FAISS snapshots, which collection holds the index and the registry
watermark it includes: a restart opens that collection and replays only the change log
since. A rebuild fills a new collection and drops the one it replaces.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from service.errors import storage_error
from service.search.attributes import SEX_CODES, UNKNOWN_SEX
from service.search.backends import chosen_type
from service.search.faiss_index import _ids, _write_atomically, checked_batch, checked_queries
from service.search.hnsw import EF_CONSTRUCTION, EF_SEARCH, M
from service.search.port import (
    FloatArray,
    IdArray,
    SearchFilter,
    SnapshotMeta,
    TemplateAttributes,
    VectorIndex,
)
from service.settings import IndexType

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAX_TOP_K = 16_384  # Milvus's limit on a search's top k
ORG_MAX_LENGTH = 256


class MilvusIndex:
    """A ``VectorIndex`` over one Milvus collection. Thread-safe: pymilvus's client is;
    writes are serialised so the count kept here stays the collection's."""

    def __init__(
        self,
        client: MilvusClient,
        collection: str,
        dimension: int,
        model_id: str,
        transform: str,
        index_type: str,
    ) -> None:
        self.client = client
        self.collection = collection
        self.dimension = dimension
        self.model_id = model_id
        self.transform = transform
        self.index_type = index_type  # "flat" | "hnsw"
        self.kind = f"milvus-{index_type}"
        self.watermark = 0
        self._write_lock = threading.Lock()
        self._count = self._query_count()

    def __len__(self) -> int:
        return self._count

    def add(
        self, ids: IdArray, vectors: FloatArray, attributes: Sequence[TemplateAttributes]
    ) -> None:
        """Upsert: an id already present is replaced (vector and attributes)."""
        ids, vectors = checked_batch(ids, vectors, attributes, self.dimension)
        if not len(ids):
            return
        rows = [
            {
                "id": int(template_id),
                "vector": vector.tolist(),
                "org": a.org_id,
                "sex": SEX_CODES.get(a.sex, UNKNOWN_SEX),
                "dated": a.birth_day is not None,
                "birth_day": 0.0 if a.birth_day is None else float(a.birth_day),
            }
            for template_id, vector, a in zip(ids, vectors, attributes, strict=True)
        ]
        with self._write_lock:
            self.client.upsert(self.collection, rows)
            self._count = self._query_count()

    def remove(self, ids: IdArray) -> int:
        ids = _ids(ids)
        if not len(ids):
            return 0
        with self._write_lock:
            rows = self.client.query(
                self.collection,
                filter=f"id in {ids.tolist()}",
                output_fields=["id"],
                consistency_level="Strong",
            )
            present = [int(r["id"]) for r in rows]
            if present:
                self.client.delete(self.collection, ids=present)
                self._count = self._query_count()
        return len(present)

    def search(
        self, queries: FloatArray, k: int, where: SearchFilter | None = None
    ) -> tuple[FloatArray, IdArray]:
        """Top-k (scores, ids) per query row; ids -1 where fewer than k pass ``where`` (or
        beyond Milvus's top-k limit of 16384)."""
        queries, k = checked_queries(queries, k, self.dimension)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        found = np.full((len(queries), k), -1, np.int64)
        if not self._count:
            return scores, found
        limit = min(k, MAX_TOP_K)
        params: dict[str, Any] = {"metric_type": "IP", "params": {}}
        if self.index_type == "hnsw":
            params["params"]["ef"] = max(EF_SEARCH, limit)
        hits = self.client.search(
            self.collection,
            data=queries.tolist(),
            limit=limit,
            filter=expression(where) if where is not None and where.active else "",
            search_params=params,
            output_fields=[],
            consistency_level="Strong",
        )
        for row, row_hits in enumerate(hits):
            ranked = sorted(row_hits, key=lambda h: -float(h["distance"]))[:limit]
            found[row, : len(ranked)] = [int(h["id"]) for h in ranked]
            scores[row, : len(ranked)] = [float(h["distance"]) for h in ranked]
        return scores, found

    def save(self, folder: Path) -> SnapshotMeta:
        """Flush the collection, then record which collection holds the index and the
        registry watermark it includes (a JSON file beside the FAISS snapshots)."""
        watermark = self.watermark  # read first: never claim a change not flushed
        self.client.flush(self.collection)
        meta = SnapshotMeta(
            model_id=self.model_id,
            dimension=self.dimension,
            count=len(self),
            watermark=watermark,
            index_sha256=hashlib.sha256(self.collection.encode()).hexdigest(),
            index_type=self.kind,
            transform=self.transform,
            format_version=FORMAT_VERSION,
            written_at=datetime.now(UTC).isoformat(timespec="seconds"),
            location=self.collection,
        )
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_atomically(_meta_path(folder, self.model_id), _encode(meta))
        except OSError as err:
            raise storage_error(err, "the index snapshot") from err
        return meta

    def discard(self) -> None:
        """Drop the collection (this index has been replaced)."""
        try:
            self.client.drop_collection(self.collection)
        except MilvusException as err:
            logger.warning("Milvus collection %s not dropped: %s", self.collection, err)

    def _query_count(self) -> int:
        rows = self.client.query(
            self.collection, filter="", output_fields=["count(*)"], consistency_level="Strong"
        )
        return int(rows[0]["count(*)"])


def expression(where: SearchFilter) -> str:
    """``where`` as a Milvus boolean expression, with exactly ``SearchFilter``'s meaning."""
    parts = []
    if where.org_id is not None:
        parts.append(f"org == {_string(where.org_id)}")
    if where.sex is not None:
        parts.append(f"sex in [{SEX_CODES[where.sex]}, {UNKNOWN_SEX}]")
    window = where.birth_day_range()
    if window is not None:
        bounds = []
        if np.isfinite(window[0]):
            bounds.append(f"birth_day >= {window[0]!r}")
        if np.isfinite(window[1]):
            bounds.append(f"birth_day <= {window[1]!r}")
        parts.append(f"(dated == false or ({' and '.join(bounds)}))")
    return " and ".join(parts)


def _string(value: str) -> str:
    """A double-quoted Milvus string literal (backslash and quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class MilvusFactory:
    """Milvus collections on one server (or Milvus Lite file), one client for all."""

    backend = "milvus"

    def __init__(self, uri: str, index_type: IndexType = "flat") -> None:
        if index_type == "pq":
            raise ValueError(
                "HOMEWARD_INDEX_TYPE=pq is a FAISS index; with Milvus use flat, hnsw or auto"
            )
        self.uri = uri
        self.index_type = index_type
        self._client: MilvusClient | None = None

    def _type(self, size: int, dimension: int) -> str:
        """The type ``auto`` comes to for this gallery (Milvus's approximate one: HNSW)."""
        return chosen_type(self.index_type, size, dimension, "hnsw")

    @property
    def client(self) -> MilvusClient:
        if self._client is None:
            if self.uri.endswith(".db"):
                Path(self.uri).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._client = MilvusClient(uri=self.uri)
        return self._client

    def create(self, dimension: int, model_id: str, transform: str, size: int) -> VectorIndex:
        index_type = self._type(size, dimension)
        name = f"hw_{_stem(model_id)}_{secrets.token_hex(4)}"
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
        schema.add_field("org", DataType.VARCHAR, max_length=ORG_MAX_LENGTH)
        schema.add_field("sex", DataType.INT8)
        schema.add_field("dated", DataType.BOOL)
        schema.add_field("birth_day", DataType.DOUBLE)
        index_params = self.client.prepare_index_params()
        if index_type == "hnsw":
            graph = {"M": M, "efConstruction": EF_CONSTRUCTION}
            index_params.add_index("vector", index_type="HNSW", metric_type="IP", params=graph)
        else:
            index_params.add_index("vector", index_type="FLAT", metric_type="IP")
        self.client.create_collection(
            name, schema=schema, index_params=index_params, consistency_level="Strong"
        )
        logger.info("Milvus collection %s created (%s, %d-D)", name, index_type, dimension)
        return MilvusIndex(self.client, name, dimension, model_id, transform, index_type)

    def load(
        self, folder: Path, model_id: str, dimension: int, transform: str, size: int
    ) -> VectorIndex | None:
        """The collection the last save recorded, if it still exists and was built for this
        model, transform and type; a recorded collection not fit to use is dropped."""
        path = _meta_path(folder, model_id)
        try:
            meta = SnapshotMeta(**json.loads(path.read_text()))
        except FileNotFoundError:
            logger.info("no Milvus index recorded for %s in %s", model_id, folder)
            return None
        except (ValueError, TypeError) as err:
            logger.warning("Milvus index record unreadable (%s); will rebuild", err)
            return None
        if not self.client.has_collection(meta.location):
            logger.warning("Milvus collection %s is gone; will rebuild", meta.location)
            return None
        self.client.load_collection(meta.location)  # released after a restart
        kind = f"milvus-{self._type(size, dimension)}"
        problem = _problem(meta, model_id, dimension, transform, kind)
        index = MilvusIndex(
            self.client,
            meta.location,
            meta.dimension,
            model_id,
            transform,
            meta.index_type.removeprefix("milvus-"),
        )
        if problem:
            logger.warning("Milvus index rejected: %s; will rebuild", problem)
            index.discard()
            return None
        index.watermark = meta.watermark
        return index

    def stale(self, index: VectorIndex, size: int) -> str:
        wanted = f"milvus-{self._type(size, index.dimension)}"
        if index.kind != wanted:
            return f"{size} templates call for a {wanted} index, not {index.kind}"
        return ""  # Milvus compacts deletions itself


def _problem(meta: SnapshotMeta, model_id: str, dimension: int, transform: str, kind: str) -> str:
    if meta.format_version != FORMAT_VERSION:
        return f"format version {meta.format_version}, expected {FORMAT_VERSION}"
    if meta.model_id != model_id or meta.dimension != dimension:
        return f"built for {meta.model_id} ({meta.dimension}-D), not {model_id} ({dimension}-D)"
    if meta.transform != transform:
        return f"built with template transform {meta.transform}, not {transform}"
    if meta.index_type != kind:
        return f"a {meta.index_type} index, not {kind}"
    return ""


def _meta_path(folder: Path, model_id: str) -> Path:
    return folder / f"{_stem(model_id)}.milvus.json"


def _stem(model_id: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in model_id)


def _encode(meta: SnapshotMeta) -> bytes:
    return json.dumps(asdict(meta), indent=2).encode()
