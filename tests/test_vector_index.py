"""The vector-search layer on its own: index filters, snapshots, and IndexKeeper sync,
against an in-memory TemplateSource and a brute-force numpy reference (no face models).

The backend-independent tests take the ``factory`` fixture and run once per index: FAISS
flat (the reference), FAISS HNSW (filters answered by an exact scan of the few passing
rows, and ``hnsw-walk``: always through the graph), FAISS PQ (``pq``: these galleries are
below its codebook's size, so exact scans; ``pq-codes``: a codebook from 100 rows and every
search through the codes, with a shortlist longer than the gallery, so results must still
be exact), and Milvus (Milvus Lite, flat and HNSW).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from service.search import pq
from service.search.backends import FaissFactory
from service.search.faiss_index import FaissIndex
from service.search.keeper import IndexKeeper
from service.search.port import (
    Change,
    IndexedTemplate,
    IndexFactory,
    SearchFilter,
    SnapshotMeta,
    TemplateAttributes,
    TemplateSource,
    VectorIndex,
)
from service.search.rows import RowIndex
from service.search.rwlock import ReadWriteLock
from service.search.transform import IDENTITY, TemplateTransform
from service.settings import IndexType

MODEL, DIM = "test-model", 32
TODAY = date(2024, 6, 1)
ORGS = ("north", "south", "east")
SEXES = ("female", "male", "unknown")

Search = Callable[[np.ndarray, int, SearchFilter | None], tuple[np.ndarray, np.ndarray]]


class FakeSource:
    """An in-memory registry: templates plus an append-only change log."""

    def __init__(self) -> None:
        self.templates: dict[int, IndexedTemplate] = {}
        self.log: list[tuple[int, str]] = []  # (template id, op); seq = position + 1
        self.next_id = 1

    def enroll(self, vector: np.ndarray, attributes: TemplateAttributes) -> int:
        template_id, self.next_id = self.next_id, self.next_id + 1
        self.put(template_id, vector, attributes)
        return template_id

    def put(self, template_id: int, vector: np.ndarray, attributes: TemplateAttributes) -> None:
        blob = np.asarray(vector, dtype="<f4").tobytes()
        self.templates[template_id] = IndexedTemplate(template_id, blob, attributes)
        self.log.append((template_id, "add"))

    def retag(self, template_id: int, attributes: TemplateAttributes) -> None:
        self.put(template_id, self.vector(template_id), attributes)

    def delete(self, template_id: int) -> None:
        del self.templates[template_id]
        self.log.append((template_id, "remove"))

    def vector(self, template_id: int) -> np.ndarray:
        return np.frombuffer(self.templates[template_id].vector, dtype="<f4")

    # -- TemplateSource ----------------------------------------------------------------

    def watermark(self, model_id: str) -> int:
        return len(self.log)

    def template_count(self, model_id: str) -> int:
        return len(self.templates)

    def changes_since(self, model_id: str, seq: int, limit: int = 10_000) -> list[Change]:
        return [
            Change(s, tid, op, self.templates.get(tid) if op == "add" else None)
            for s, (tid, op) in enumerate(self.log[seq : seq + limit], start=seq + 1)
        ]

    def iter_templates(self, model_id: str, block: int = 20_000) -> Iterator[list[IndexedTemplate]]:
        ordered = [self.templates[i] for i in sorted(self.templates)]
        for start in range(0, len(ordered), block):
            yield ordered[start : start + block]


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    unit_rows: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return unit_rows


def random_attributes(rng: np.random.Generator) -> TemplateAttributes:
    birth = None if rng.random() < 0.2 else float(TODAY.toordinal() - rng.integers(0, 20 * 365))
    return TemplateAttributes(str(rng.choice(ORGS)), str(rng.choice(SEXES)), birth)


def filled_source(n: int = 400, seed: int = 7) -> FakeSource:
    rng = np.random.default_rng(seed)
    source = FakeSource()
    for vector in unit(rng, n):
        source.enroll(vector, random_attributes(rng))
    return source


class WalkFactory(FaissFactory):
    """An approximate index that never falls back on an exact scan, however few templates a
    filter leaves."""

    def create(self, dimension: int, model_id: str, transform: str, size: int) -> VectorIndex:
        index = super().create(dimension, model_id, transform, size)
        assert isinstance(index, RowIndex)
        index.exact_below = 0
        return index

    def load(
        self, folder: Path, model_id: str, dimension: int, transform: str, size: int
    ) -> VectorIndex | None:
        index = super().load(folder, model_id, dimension, transform, size)
        if isinstance(index, RowIndex):
            index.exact_below = 0
        return index


BACKENDS = ["flat", "hnsw", "hnsw-walk", "pq", "pq-codes", "milvus", "milvus-hnsw"]
KINDS = {
    "flat": "faiss-flat",
    "hnsw": "faiss-hnsw",
    "hnsw-walk": "faiss-hnsw",
    "pq": "faiss-pq",
    "pq-codes": "faiss-pq",
    "milvus": "milvus-flat",
    "milvus-hnsw": "milvus-hnsw",
}


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One Milvus Lite database for the session; every index gets its own collection."""
    return str(tmp_path_factory.mktemp("milvus") / "lite.db")


def make_factory(name: str, request: pytest.FixtureRequest) -> IndexFactory:
    if name.startswith("milvus"):
        from service.search.milvus_index import MilvusFactory

        index_type: IndexType = "hnsw" if name == "milvus-hnsw" else "flat"
        return MilvusFactory(request.getfixturevalue("milvus_uri"), index_type)
    if name == "pq-codes":
        request.getfixturevalue("monkeypatch").setattr(pq, "TRAIN_FROM", 100)
    kind: IndexType = "flat" if name == "flat" else "hnsw" if name.startswith("hnsw") else "pq"
    return WalkFactory(kind) if name.endswith(("-walk", "-codes")) else FaissFactory(kind)


@pytest.fixture(params=BACKENDS)
def factory(request: pytest.FixtureRequest) -> IndexFactory:
    """Each index backend and type in turn."""
    return make_factory(request.param, request)


def index_of(source: FakeSource, factory: IndexFactory | None = None) -> VectorIndex:
    index = (factory or FaissFactory()).create(DIM, MODEL, "none", len(source.templates))
    templates = list(source.templates.values())
    ids = np.array([t.id for t in templates], dtype=np.int64)
    vectors = np.stack([source.vector(t.id) for t in templates])
    index.add(ids, vectors, [t.attributes for t in templates])
    index.watermark = source.watermark(MODEL)
    return index


def passes(attributes: TemplateAttributes, where: SearchFilter | None) -> bool:
    """The filter rule written out plainly, independent of the bitmap code."""
    if where is None:
        return True
    if where.org_id is not None and attributes.org_id != where.org_id:
        return False
    if where.sex is not None and attributes.sex not in (where.sex, "unknown"):
        return False
    if attributes.birth_day is None:
        return True
    age = (where.today.toordinal() - attributes.birth_day) / 365.25
    low = -np.inf if where.min_age is None else where.min_age
    high = np.inf if where.max_age is None else where.max_age
    return bool(low <= age <= high)


def brute_force(
    source: FakeSource, query: np.ndarray, k: int, where: SearchFilter | None
) -> tuple[np.ndarray, np.ndarray]:
    allowed = [t for t in source.templates.values() if passes(t.attributes, where)]
    ids = np.array([t.id for t in allowed], dtype=np.int64)
    scores = np.array([source.vector(t.id) @ query for t in allowed], dtype=np.float32)
    top = np.argsort(-scores, kind="stable")[:k]
    padded = np.full(k, -1, dtype=np.int64)
    padded[: len(top)] = ids[top]
    return scores[top], padded


def assert_matches(
    source: FakeSource, search: Search, where: SearchFilter | None, k: int = 10, n: int = 5
) -> None:
    """``search(query, k, where) -> (scores, ids)`` equals the brute-force reference."""
    for query in unit(np.random.default_rng(99), n):
        scores, ids = search(query, k, where)
        want_scores, want_ids = brute_force(source, query, k, where)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores[: len(want_scores)], want_scores, atol=1e-5)


def index_search(index: VectorIndex) -> Search:
    def search(
        query: np.ndarray, k: int, where: SearchFilter | None
    ) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = index.search(query, k, where)
        return scores[0], ids[0]

    return search


def keeper_for(
    source: TemplateSource,
    folder: Path,
    transform: TemplateTransform = IDENTITY,
    factory: IndexFactory | None = None,
) -> IndexKeeper:
    return IndexKeeper(source, MODEL, DIM, folder, transform, factory)


FILTERS = {
    "none": None,
    "inactive": SearchFilter(today=TODAY),
    "org": SearchFilter(org_id="north", today=TODAY),
    "female": SearchFilter(sex="female", today=TODAY),
    "male": SearchFilter(sex="male", today=TODAY),
    "min-age": SearchFilter(min_age=12, today=TODAY),
    "max-age": SearchFilter(max_age=4.5, today=TODAY),
    "age-range": SearchFilter(min_age=5, max_age=9, today=TODAY),
    "org-sex-age": SearchFilter(org_id="south", sex="male", min_age=3, max_age=15, today=TODAY),
    "unknown-org": SearchFilter(org_id="nowhere", today=TODAY),
    "empty-range": SearchFilter(min_age=30, max_age=40, today=TODAY),
}


# -- the filter and the index ----------------------------------------------------------


def test_birth_day_range() -> None:
    today = float(TODAY.toordinal())
    assert SearchFilter(today=TODAY).birth_day_range() is None
    assert SearchFilter(min_age=2, max_age=4, today=TODAY).birth_day_range() == (
        today - 4 * 365.25,
        today - 2 * 365.25,
    )
    assert SearchFilter(min_age=2, today=TODAY).birth_day_range() == (-np.inf, today - 730.5)
    assert SearchFilter(max_age=1, today=TODAY).birth_day_range() == (today - 365.25, np.inf)
    assert not SearchFilter().active and SearchFilter(max_age=1).active
    with pytest.raises(ValueError):
        SearchFilter(sex="unknown")


@pytest.mark.parametrize("name", FILTERS)
@pytest.mark.parametrize("k", [1, 10, 400])
def test_search_equals_brute_force(name: str, k: int, factory: IndexFactory) -> None:
    source = filled_source()
    assert_matches(source, index_search(index_of(source, factory)), FILTERS[name], k=k, n=3)


def test_unknown_sex_and_missing_dates_always_pass(factory: IndexFactory) -> None:
    source = filled_source(50)
    rng = np.random.default_rng(3)
    [unknown, undated] = unit(rng, 2)
    a = source.enroll(unknown, TemplateAttributes("north", "unknown", TODAY.toordinal() - 2000.0))
    b = source.enroll(undated, TemplateAttributes("north", "female", None))
    index = index_of(source, factory)
    for sex in ("female", "male"):
        assert index.search(unknown, 1, SearchFilter(sex=sex, today=TODAY))[1][0, 0] == a
    for ages in ((0, 1), (50, 60), (None, 0.5)):
        where = SearchFilter(sex="female", min_age=ages[0], max_age=ages[1], today=TODAY)
        assert index.search(undated, 1, where)[1][0, 0] == b


def test_k_is_at_least_one_and_short_results_are_padded(factory: IndexFactory) -> None:
    source = filled_source(20)
    index = index_of(source, factory)
    scores, ids = index.search(unit(np.random.default_rng(1), 1), 0)
    assert ids.shape == (1, 1) and ids[0, 0] > 0
    _, ids = index.search(unit(np.random.default_rng(1), 2), 30)
    assert ids.shape == (2, 30) and (ids[:, 20:] == -1).all() and (ids[:, :20] > 0).all()


def test_removed_templates_are_not_findable(factory: IndexFactory) -> None:
    source = filled_source(200)
    index = index_of(source, factory)
    gone = np.array(sorted(source.templates)[::2], dtype=np.int64)
    vectors = np.stack([source.vector(int(i)) for i in gone])
    for i in gone:
        source.delete(int(i))
    assert index.remove(gone) == len(gone)
    assert index.remove(gone) == 0
    assert len(index) == 100
    for where in FILTERS.values():
        _, ids = index.search(vectors, 200, where)
        assert not np.isin(ids, gone).any()
        assert_matches(source, index_search(index), where, n=2)


def test_readd_with_new_attributes_is_filtered_by_them(factory: IndexFactory) -> None:
    source = filled_source(100)
    index = index_of(source, factory)
    template_id = 42
    vector = source.vector(template_id)
    old = TemplateAttributes("north", "female", TODAY.toordinal() - 3000.0)
    new = TemplateAttributes("east", "male", TODAY.toordinal() - 100.0)
    for attributes in (old, new):
        source.retag(template_id, attributes)
        index.add(np.array([template_id]), vector[None], [attributes])
    assert len(index) == 100

    def top(where: SearchFilter) -> int:
        return int(index.search(vector, 1, where)[1][0, 0])

    assert top(SearchFilter(org_id="east", sex="male", max_age=1, today=TODAY)) == template_id
    assert top(SearchFilter(org_id="north", today=TODAY)) != template_id
    assert top(SearchFilter(sex="female", today=TODAY)) != template_id
    assert top(SearchFilter(min_age=5, today=TODAY)) != template_id
    for where in FILTERS.values():
        assert_matches(source, index_search(index), where, n=2)


def test_ids_grow_the_bitmaps(factory: IndexFactory) -> None:
    index = factory.create(DIM, MODEL, "none", 0)
    vectors = unit(np.random.default_rng(5), 3)
    attributes = [TemplateAttributes("north", "female", None)] * 3
    index.add(np.array([5, 70_000, 2_000_000]), vectors, attributes)
    _, ids = index.search(vectors, 3, SearchFilter(org_id="north"))
    assert ids[:, 0].tolist() == [5, 70_000, 2_000_000]
    with pytest.raises(ValueError):
        index.add(np.array([1, 1]), vectors[:2], attributes[:2])
    with pytest.raises(ValueError):
        index.add(np.array([-3]), vectors[:1], attributes[:1])
    assert index.remove(np.array([-1, 7, 3_000_000])) == 0 and len(index) == 3


# -- snapshots -------------------------------------------------------------------------


def test_snapshot_round_trip_keeps_attributes(tmp_path: Path, factory: IndexFactory) -> None:
    source = filled_source()
    index = index_of(source, factory)
    index.remove(np.array([1, 2, 3]))
    for i in (1, 2, 3):
        source.delete(i)
    meta = index.save(tmp_path)
    assert (meta.count, meta.watermark, meta.index_type) == (397, 400, index.kind)
    loaded = factory.load(tmp_path, MODEL, DIM, "none", 397)
    assert loaded is not None and len(loaded) == 397 and loaded.watermark == 400
    for where in FILTERS.values():
        assert_matches(source, index_search(loaded), where, n=2)


def test_snapshot_for_something_else_is_rejected(tmp_path: Path) -> None:
    index_of(filled_source(20)).save(tmp_path)
    assert FaissIndex.load(tmp_path, MODEL, DIM + 1) is None
    assert FaissIndex.load(tmp_path, MODEL, DIM, transform="other") is None
    assert FaissIndex.load(tmp_path, "other-model", DIM) is None
    meta = tmp_path / f"{MODEL}.json"
    meta.write_text(meta.read_text().replace('"format_version": 2', '"format_version": 1'))
    assert FaissIndex.load(tmp_path, MODEL, DIM) is None


def test_damaged_snapshot_is_rebuilt(tmp_path: Path) -> None:
    source = filled_source()
    keeper = keeper_for(source, tmp_path)
    keeper.open()
    keeper.save()
    data = tmp_path / f"{MODEL}.snapshot.npz"
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    data.write_bytes(bytes(blob))
    assert FaissIndex.load(tmp_path, MODEL, DIM) is None
    keeper = keeper_for(source, tmp_path)
    assert keeper.open() == "rebuilt" and keeper.ready
    assert_matches(source, keeper.search, FILTERS["org-sex-age"])


def test_snapshot_ahead_of_the_source_is_rebuilt(tmp_path: Path, factory: IndexFactory) -> None:
    keeper = keeper_for(filled_source(), tmp_path, factory=factory)
    keeper.open()
    keeper.save()
    smaller = filled_source(300, seed=8)
    keeper = keeper_for(smaller, tmp_path, factory=factory)
    assert keeper.open() == "rebuilt"
    assert keeper.generation == 300 and keeper.size == 300
    assert_matches(smaller, keeper.search, FILTERS["female"])


# -- the keeper ------------------------------------------------------------------------


def test_keeper_opens_loads_and_replays(
    tmp_path: Path, factory: IndexFactory, request: pytest.FixtureRequest
) -> None:
    source = filled_source()
    first = keeper_for(source, tmp_path, factory=factory)
    assert not first.ready
    assert first.open() == "rebuilt" and first.kind == KINDS[request.node.callspec.id]
    assert (first.backend, first.index_type) == tuple(first.kind.split("-"))
    first.save()
    assert keeper_for(source, tmp_path, factory=factory).open() == "loaded"

    rng = np.random.default_rng(11)
    for vector in unit(rng, 30):
        source.enroll(vector, random_attributes(rng))
    for template_id in (5, 6, 7, 405):
        source.delete(template_id)
    source.retag(8, TemplateAttributes("east", "male", None))
    again = keeper_for(source, tmp_path, factory=factory)
    assert again.open() == "replayed"
    assert again.generation == source.watermark(MODEL) and again.size == 426
    for where in FILTERS.values():
        assert_matches(source, again.search, where, n=2)


def test_keeper_rebuilds_when_the_count_disagrees(tmp_path: Path, factory: IndexFactory) -> None:
    source = filled_source(50)
    keeper = keeper_for(source, tmp_path, factory=factory)
    keeper.open()
    keeper.save()
    del source.templates[10]  # gone without a logged change
    keeper = keeper_for(source, tmp_path, factory=factory)
    assert keeper.open() == "rebuilt" and keeper.size == 49


def test_catch_up_applies_changes_in_order(tmp_path: Path, factory: IndexFactory) -> None:
    source = filled_source(50)
    keeper = keeper_for(source, tmp_path, factory=factory)
    keeper.open()
    rng = np.random.default_rng(12)
    new = source.enroll(unit(rng, 1)[0], random_attributes(rng))
    source.retag(new, TemplateAttributes("south", "female", None))
    source.delete(3)
    gone = source.enroll(unit(rng, 1)[0], random_attributes(rng))
    source.delete(gone)  # its add now carries no template
    assert keeper.catch_up() == 5 and keeper.catch_up() == 0
    assert keeper.size == 50 and keeper.generation == 55
    for where in FILTERS.values():
        assert_matches(source, keeper.search, where, n=2)


def test_keeper_search_applies_the_transform(tmp_path: Path, factory: IndexFactory) -> None:
    """An orthogonal map keeps inner products, so results match the raw reference only if
    queries and templates are both transformed."""
    q, _ = np.linalg.qr(np.random.default_rng(4).standard_normal((DIM, DIM)))
    transform = TemplateTransform("ortho-1", MODEL, q.astype(np.float32))
    source = filled_source(100)
    keeper = keeper_for(source, tmp_path, transform=transform, factory=factory)
    keeper.open()
    assert_matches(source, keeper.search, FILTERS["org"])
    keeper.save()
    other = keeper_for(source, tmp_path, factory=factory)
    assert other.open() == "rebuilt"  # other transform: not loaded


class BlockingSource(FakeSource):
    """changes_since or iter_templates wait for ``release`` once ``armed``."""

    def __init__(self, base: FakeSource) -> None:
        super().__init__()
        self.templates, self.log, self.next_id = base.templates, base.log, base.next_id
        self.armed = ""
        self.entered = threading.Event()
        self.release = threading.Event()

    def _block(self, where: str) -> None:
        if self.armed == where:
            self.armed = ""
            self.entered.set()
            assert self.release.wait(5)

    def changes_since(self, model_id: str, seq: int, limit: int = 10_000) -> list[Change]:
        self._block("changes")
        return super().changes_since(model_id, seq, limit)

    def iter_templates(self, model_id: str, block: int = 20_000) -> Iterator[list[IndexedTemplate]]:
        self._block("templates")
        yield from super().iter_templates(model_id, block)


def in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(target()), daemon=True)
    thread.start()
    return thread, results


def test_catch_up_without_waiting_gives_way_to_a_sync(
    tmp_path: Path, factory: IndexFactory
) -> None:
    source = BlockingSource(filled_source(50))
    keeper = keeper_for(source, tmp_path, factory=factory)
    keeper.open()
    rng = np.random.default_rng(13)
    source.enroll(unit(rng, 1)[0], random_attributes(rng))
    source.armed = "changes"
    thread, results = in_thread(keeper.catch_up)
    assert source.entered.wait(5)
    started = time.monotonic()
    assert keeper.catch_up(wait=False) == 0
    assert time.monotonic() - started < 0.5
    assert keeper.search(source.vector(1), 1)[1][0] == 1
    source.release.set()
    thread.join(5)
    assert results == [1] and keeper.size == 51


def test_search_proceeds_while_a_snapshot_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = filled_source(100)
    keeper = keeper_for(source, tmp_path)
    keeper.open()
    entered, release = threading.Event(), threading.Event()
    serialise = FaissIndex._snapshot_blob

    def slow_blob(index: FaissIndex) -> bytes:
        entered.set()
        assert release.wait(5)
        return serialise(index)

    monkeypatch.setattr(FaissIndex, "_snapshot_blob", slow_blob)
    thread, results = in_thread(keeper.save)
    assert entered.wait(5)
    rng = np.random.default_rng(14)
    source.enroll(unit(rng, 1)[0], random_attributes(rng))
    started = time.monotonic()
    assert keeper.catch_up(wait=False) == 0  # applying would wait for the snapshot
    assert_matches(filled_source(100), keeper.search, FILTERS["org-sex-age"])
    assert time.monotonic() - started < 1
    release.set()
    thread.join(5)
    assert isinstance(results[0], SnapshotMeta) and results[0].watermark == 100
    assert keeper.catch_up() == 1 and keeper.size == 101


def test_search_proceeds_while_rebuilding(tmp_path: Path, factory: IndexFactory) -> None:
    source = BlockingSource(filled_source(100))
    keeper = keeper_for(source, tmp_path, factory=factory)
    keeper.open()
    source.armed = "templates"
    thread, _ = in_thread(keeper.rebuild)
    assert source.entered.wait(5)
    rng = np.random.default_rng(15)
    source.enroll(unit(rng, 1)[0], random_attributes(rng))
    source.delete(4)
    started = time.monotonic()
    assert keeper.catch_up() == 2  # writers are not held up by the build either
    assert_matches(source, keeper.search, FILTERS["male"])
    assert time.monotonic() - started < 1
    source.delete(5)  # after the build read the watermark: replayed before the swap
    source.release.set()
    thread.join(5)
    assert not thread.is_alive()
    assert keeper.size == 99 and keeper.generation == 103
    assert_matches(source, keeper.search, FILTERS["org"])


def test_lock_prefers_readers_but_writers_exclude_them() -> None:
    lock = ReadWriteLock()
    events: list[str] = []
    with lock.reading():
        writer, _ = in_thread(lambda: _write(lock, events))
        time.sleep(0.05)  # the writer is now waiting
        reader, _ = in_thread(lambda: _read(lock, events))
        reader.join(1)
        assert events == ["read"]  # a new reader got in past the waiting writer
    writer.join(1)
    assert events == ["read", "write"]
    with lock.writing():
        reader, _ = in_thread(lambda: _read(lock, events))
        reader.join(0.05)
        assert reader.is_alive()
    reader.join(1)
    assert events[-1] == "read"


def _write(lock: ReadWriteLock, events: list[str]) -> None:
    with lock.writing():
        events.append("write")


def _read(lock: ReadWriteLock, events: list[str]) -> None:
    with lock.reading():
        events.append("read")
