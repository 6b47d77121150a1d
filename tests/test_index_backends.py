"""What only some index backends have: HNSW's and the PQ scan's tombstones and compaction,
their approximate search under a filter, the PQ codes made again at load, ``auto``'s choice
of type, Milvus's filter expressions; and each backend end to end through
the real app (enroll, match at rank 1, delete, gone, restart). The behaviour every backend
shares is tested once per backend in tests/test_vector_index.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.search import backends, pq
from service.search.backends import FaissFactory, chosen_type, index_factory
from service.search.faiss_index import FaissIndex
from service.search.milvus_index import MilvusFactory, expression
from service.search.port import SearchFilter, TemplateAttributes
from service.search.pq import PqIndex
from service.search.rows import RowIndex
from service.settings import IndexType, Settings
from tests.conftest import container_of
from tests.faces_of_t1 import altered_probe
from tests.test_matching_api import enroll_six, match, top_case
from tests.test_vector_index import (
    DIM,
    FILTERS,
    MODEL,
    TODAY,
    FakeSource,
    WalkFactory,
    assert_matches,
    brute_force,
    filled_source,
    index_of,
    index_search,
    keeper_for,
    milvus_uri,  # noqa: F401 (a fixture)
    unit,
)

# -- HNSW ------------------------------------------------------------------------------


def test_hnsw_scores_are_exact_inner_products() -> None:
    source = filled_source(300)
    index = index_of(source, FaissFactory("hnsw"))
    query = unit(np.random.default_rng(2), 1)[0]
    scores, ids = index.search(query, 20)
    exact = [float(source.vector(int(i)) @ query) for i in ids[0]]
    np.testing.assert_allclose(scores[0], exact, atol=1e-6)


def clustered_source(rng: np.random.Generator) -> tuple[FakeSource, np.ndarray]:
    """6000 structured templates (1500 people of 4) in organisations a, b and c."""
    basis = rng.standard_normal((8, DIM))
    centers = rng.standard_normal((1500, 8))
    vectors = np.repeat(centers, 4, axis=0) @ basis + 0.3 * rng.standard_normal((6000, DIM))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    source = filled_source(0)
    for v in vectors:
        source.enroll(v, TemplateAttributes(str(rng.choice(["a", "b", "c"])), "unknown", None))
    return source, vectors


@pytest.mark.parametrize("index_type", ["hnsw", "pq"])
def test_approximate_search_keeps_the_exact_top_ten(
    index_type: IndexType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the graph or the codes (no exact fallback), unfiltered and with a filter
    passing ~1/3 of 6000 structured templates: the exact top 10 are always within the top
    50 found. The PQ shortlist is cut to 150 (of 6000) so the codes must do the sieving."""
    monkeypatch.setattr(pq, "TRAIN_FROM", 1000)
    monkeypatch.setattr(pq, "SHORTLIST", 150)
    rng = np.random.default_rng(21)
    source, vectors = clustered_source(rng)
    index = index_of(source, WalkFactory(index_type))
    assert isinstance(index, RowIndex)
    if isinstance(index, PqIndex):
        assert index.shortlist == 150 and sum(s.ntotal for s in index._shards) == 6000
    for where in (None, SearchFilter(org_id="b", today=TODAY)):
        for query in vectors[rng.integers(0, 6000, 30)]:
            scores, found = index.search(query, 50, where)
            _, want = brute_force(source, query, 10, where)
            assert set(want) <= set(found[0].tolist())
            exact = [float(source.vector(int(i)) @ query) for i in found[0]]
            np.testing.assert_allclose(scores[0], exact, atol=1e-6)  # re-scored exactly


def test_pq_codes_are_made_again_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pq, "TRAIN_FROM", 1000)
    monkeypatch.setattr(pq, "SHORTLIST", 150)
    rng = np.random.default_rng(5)
    source, vectors = clustered_source(rng)
    index = index_of(source, WalkFactory("pq"))
    index.remove(np.arange(1, 501))
    index.save(tmp_path)
    loaded = WalkFactory("pq").load(tmp_path, MODEL, DIM, "none", 5500)
    assert isinstance(loaded, PqIndex) and (len(loaded), loaded.dead) == (5500, 500)
    assert sum(s.ntotal for s in loaded._shards) == 5500  # live rows only are coded
    for where in (None, SearchFilter(org_id="c", today=TODAY)):
        queries = vectors[rng.integers(0, 6000, 10)]
        assert np.array_equal(
            loaded.search(queries, 50, where)[1], index.search(queries, 50, where)[1]
        )


@pytest.mark.parametrize("index_type", ["hnsw", "pq"])
def test_removals_are_tombstones_until_compaction(
    index_type: IndexType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PQ with a codebook from 100 rows and no exact fallback, so the codes' selector must
    drop the dead rows."""
    monkeypatch.setattr(pq, "TRAIN_FROM", 100)
    source = filled_source(2500)
    factory = FaissFactory("hnsw") if index_type == "hnsw" else WalkFactory("pq")
    keeper = keeper_for(source, tmp_path, factory=factory)
    keeper.open()
    for template_id in range(1, 1301):
        source.delete(template_id)
    source.retag(2000, TemplateAttributes("east", "male", None))  # replaced: one more dead row
    keeper.catch_up()
    index = keeper.index
    assert isinstance(index, RowIndex) and index.kind == f"faiss-{index_type}"
    assert (len(index), index.dead) == (1200, 1301)
    for where in (None, FILTERS["org"], FILTERS["male"]):
        _, ids = index.search(unit(np.random.default_rng(3), 5), 100, where)
        assert not np.isin(ids, np.arange(1, 1301)).any()
        assert_matches(source, keeper.search, where, n=2)
    index.save(tmp_path)  # a snapshot keeps the tombstones
    loaded = factory.load(tmp_path, MODEL, DIM, "none", 1200)
    assert isinstance(loaded, RowIndex) and (len(loaded), loaded.dead) == (1200, 1301)
    assert_matches(source, index_search(loaded), FILTERS["org-sex-age"], n=2)

    assert "removed templates" in factory.stale(index, 1200)
    keeper.save()  # compacts first: rebuilt beside, from the registry
    fresh = keeper.index
    assert isinstance(fresh, RowIndex) and fresh is not index
    assert (len(fresh), fresh.dead) == (1200, 0) and factory.stale(fresh, 1200) == ""
    assert_matches(source, keeper.search, FILTERS["female"], n=2)


def test_a_flat_snapshot_is_not_loaded_as_hnsw(tmp_path: Path) -> None:
    source = filled_source(50)
    index_of(source).save(tmp_path)
    assert FaissFactory("hnsw").load(tmp_path, MODEL, DIM, "none", 50) is None
    assert FaissFactory("flat").load(tmp_path, MODEL, DIM, "none", 50) is not None


# -- auto --------------------------------------------------------------------------------


def test_auto_is_flat_below_the_measured_size_and_approximate_above() -> None:
    line = backends.AUTO_APPROXIMATE_FROM
    assert chosen_type("auto", line // 128 - 1, 128) == "flat"
    assert chosen_type("auto", line // 128, 128) == "pq"
    assert chosen_type("auto", line // 512, 512) == "pq"
    assert chosen_type("auto", line // 128, 128, "hnsw") == "hnsw"  # Milvus's
    assert chosen_type("flat", 10**7, 512) == "flat" and chosen_type("hnsw", 0, 128) == "hnsw"


def test_auto_switches_type_at_the_next_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "AUTO_APPROXIMATE_FROM", 100 * DIM)
    source = filled_source(80)
    keeper = keeper_for(source, tmp_path, factory=FaissFactory("auto"))
    keeper.open()
    assert keeper.kind == "faiss-flat"
    rng = np.random.default_rng(8)
    for vector in unit(rng, 40):
        source.enroll(vector, TemplateAttributes("north", "female", None))
    keeper.catch_up()
    assert keeper.kind == "faiss-flat"  # searches never wait for the switch
    keeper.save()
    assert (keeper.kind, keeper.size) == ("faiss-pq", 120)
    assert keeper_for(source, tmp_path, factory=FaissFactory("auto")).open() == "loaded"
    assert_matches(source, keeper.search, FILTERS["org"])


# -- Milvus ------------------------------------------------------------------------------


def test_milvus_expression_has_the_filter_semantics() -> None:
    today = float(TODAY.toordinal())
    assert expression(SearchFilter(org_id="north", today=TODAY)) == 'org == "north"'
    assert expression(SearchFilter(org_id='a"b\\c', today=TODAY)) == 'org == "a\\"b\\\\c"'
    assert expression(SearchFilter(sex="male", today=TODAY)) == "sex in [2, 0]"
    assert expression(SearchFilter(min_age=2, today=TODAY)) == (
        f"(dated == false or (birth_day <= {today - 730.5!r}))"
    )
    both = expression(SearchFilter("x", "female", 1, 3, date(2024, 6, 1)))
    assert both.startswith('org == "x" and sex in [1, 0] and (dated == false or (birth_day >=')


def test_milvus_quotes_in_an_organisation_cannot_widen_the_filter(milvus_uri: str) -> None:  # noqa: F811
    index = MilvusFactory(milvus_uri).create(DIM, MODEL, "none", 0)
    vectors = unit(np.random.default_rng(4), 2)
    attributes = [TemplateAttributes('x" or org != "', "unknown", None)]
    index.add(np.array([1, 2]), vectors, attributes + [TemplateAttributes("y", "unknown", None)])
    _, ids = index.search(vectors, 2, SearchFilter(org_id='x" or org != "'))
    assert ids.tolist() == [[1, -1], [1, -1]]
    index.discard()


def test_settings_choose_the_backend(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, index_backend="milvus", index_type="auto")
    assert settings.resolved_milvus_uri == str(tmp_path / "milvus.db")
    factory = index_factory(settings.index_backend, settings.index_type, "http://m:19530")
    assert isinstance(factory, MilvusFactory) and factory.uri == "http://m:19530"
    assert isinstance(index_factory("faiss", "hnsw", ""), FaissFactory)
    with pytest.raises(ValueError):
        Settings(index_type="ivf")
    with pytest.raises(ValueError, match="FAISS"):
        index_factory("milvus", "pq", "http://m:19530")
    with pytest.raises(ValueError):
        Settings(index_backend="qdrant")


def test_the_default_is_exact_faiss(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert (settings.index_backend, settings.index_type) == ("faiss", "flat")
    keeper = keeper_for(filled_source(10), tmp_path)
    keeper.open()
    assert isinstance(keeper.index, FaissIndex) and keeper.kind == "faiss-flat"


# -- end to end, per backend ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "index_type"),
    [("faiss", "flat"), ("faiss", "hnsw"), ("faiss", "pq"), ("milvus", "hnsw")],
)
def test_enroll_match_delete_restart_through_the_app(
    backend: str,
    index_type: str,
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
) -> None:
    settings = make_settings(index_backend=backend, index_type=index_type)
    with start_app(settings) as client:
        keeper = container_of(client).index
        assert (keeper.backend, keeper.index_type) == (backend, index_type)
        case_ids = enroll_six(client)
        for i in (0, 3):
            assert top_case(client, altered_probe(i)) == case_ids[i]
        assert client.delete(f"/v1/cases/{case_ids[3]}").status_code == 204
        (face,) = match(client, altered_probe(3), top_k="50")["faces"]
        assert case_ids[3] not in {c["case_id"] for c in face["candidates"]}
        assert keeper.size == 5
    with start_app(settings) as again:
        info = again.get("/v1/info").json()
        assert info["index_opened"] == "loaded" and info["index_size"] == 5
        assert (info["index_backend"], info["index_type"]) == (backend, index_type)
        assert top_case(again, altered_probe(0)) == case_ids[0]
        (face,) = match(again, altered_probe(3), top_k="50")["faces"]
        assert case_ids[3] not in {c["case_id"] for c in face["candidates"]}
