"""Every repository of the registry, called directly through ``Database.unit()``, on SQLite
and on PostgreSQL (production's database), with the models and migrations the service uses.

Where the two databases differ underneath (time zones, case folding, LIKE wildcards, NULL
ordering, enforced lengths, row locks), the tests say what the service promises on both."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select, text, update

from service.errors import AuditUnavailable, Conflict, InvalidInput, NotFound, StorageUnavailable
from service.matching.actors import Actor
from service.registry.db import Database, UnitOfWork
from service.registry.links import MAX_ID
from service.registry.models import (
    ApiKey,
    AuditRecord,
    Base,
    Candidate,
    Case,
    Photo,
    Review,
    Sighting,
    WebhookDelivery,
    WebSession,
    new_id,
)
from service.registry.templates import NewTemplate
from tests.databases import fresh_postgres_database

POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)
ONLY_POSTGRES = pytest.mark.parametrize("database", [POSTGRES], indirect=True)
MODEL = "sface-test"
ADMIN = Actor("admin-key", None, frozenset({"admin"}))


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite registry at the newest schema, copied for each test."""
    path = tmp_path_factory.mktemp("registry") / "migrated.db"
    Database.open(f"sqlite:///{path}").close()  # closing checkpoints the WAL into the file
    return path


@pytest.fixture(scope="session")
def postgres_registry() -> Iterator[Database]:
    """A PostgreSQL registry migrated once, emptied for each test (a database per test
    costs over a second to create, migrate and drop)."""
    with fresh_postgres_database() as url:
        db = Database.open(url)
        try:
            yield db
        finally:
            db.close()


@pytest.fixture(params=["sqlite", POSTGRES])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty registry at the newest schema, on SQLite or on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "registry.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), path)
        db = Database.open(f"sqlite:///{path}")
        yield db
        db.close()
        return
    db = request.getfixturevalue("postgres_registry")
    with db.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
        sequences = connection.scalars(text("SELECT sequencename FROM pg_sequences"))
        for sequence in list(sequences):
            connection.execute(text(f'ALTER SEQUENCE "{sequence}" RESTART'))
    yield db


# -- rows ------------------------------------------------------------------------------------


def add_org(db: Database, name: str = "Org A") -> str:
    with db.unit() as tx:
        return tx.keys.add_org(name).id


def add_case(tx: UnitOfWork, org_id: str, name: str = "Child", **fields: Any) -> Case:
    return tx.cases.add(org_id, {"display_name": name, **fields})


def add_photo(
    tx: UnitOfWork, case: Case, n: int = 0, age: float | None = None, *, sha: int | None = None
) -> Photo:
    photo = Photo(
        upload_sha256=f"{n if sha is None else sha:064x}",
        stored_name=f"case-{case.id}-{n}.jpg",
        width=112,
        height=112,
        age_at_photo=age,
        face_box="[0, 0, 112, 112]",
    )
    return tx.cases.add_photo(case, photo)


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(4).astype(np.float32)


def enroll(tx: UnitOfWork, case: Case, n: int = 0, *, aged: int = 0) -> Photo:
    """A photo with one original template and ``aged`` aged ones."""
    photo = add_photo(tx, case, n, age=6.0 if aged else None)
    templates = [NewTemplate(MODEL, vector(n))]
    templates += [NewTemplate(MODEL, vector(100 + i), "aged", 8.0 + i, "g1") for i in range(aged)]
    tx.templates.add(photo, templates)
    return photo


def add_sighting(
    tx: UnitOfWork,
    org_id: str,
    proposals: Sequence[tuple[Case, float, float | None]],
    *,
    by: str = "vol-1",
    **fields: Any,
) -> tuple[Sighting, list[Candidate]]:
    """A sighting and one candidate per (case, score, false-match rate)."""
    sighting = Sighting(id=new_id(), submitted_by=by, org_id=org_id, upload_sha256="0" * 64)
    sighting.stored_name = f"sighting-{sighting.id}.jpg"
    for key, value in fields.items():
        setattr(sighting, key, value)
    candidates = [
        Candidate(
            sighting_id=sighting.id,
            face_index=0,
            face_box="[0, 0, 10, 10]",
            face_quality="{}",
            case_id=case.id,
            org_id=case.org_id,
            photo_id="p" * 32,
            template_kind="original",
            rank=rank,
            score=score,
            false_match_rate=rate,
        )
        for rank, (case, score, rate) in enumerate(proposals, 1)
    ]
    tx.sightings.add(sighting, candidates)
    tx.session.flush()
    return sighting, candidates


def count(db: Database, model: type[Any]) -> int:
    with db.unit() as tx:
        return len(tx.session.scalars(select(model)).all())


# -- cases -----------------------------------------------------------------------------------


def test_case_get_is_scoped_to_its_organisation(database: Database) -> None:
    a, b = add_org(database, "A"), add_org(database, "B")
    with database.unit() as tx:
        case_id = add_case(tx, a, sex="female", birth_date=date(2015, 3, 1)).id
        enroll(tx, tx.cases.get(case_id), aged=1)
    with database.unit() as tx:
        case = tx.cases.get(case_id, a, with_photos=True)
        with pytest.raises(NotFound):
            tx.cases.get(case_id, b)
        with pytest.raises(NotFound):
            tx.cases.get("0" * 32)
    # photos and templates were loaded inside the unit: readable after it ended
    assert case.birth_date == date(2015, 3, 1) and case.sex == "female"
    assert [len(p.templates) for p in case.photos] == [2]


def test_external_ref_is_unique_per_organisation(database: Database) -> None:
    a, b = add_org(database, "A"), add_org(database, "B")
    with database.unit() as tx:
        first = add_case(tx, a, external_ref="R-1")
        add_case(tx, b, external_ref="R-1")  # another organisation may use the same ref
        add_case(tx, a), add_case(tx, a)  # cases without a ref never collide
        assert tx.cases.by_ref(a, "R-1") == first and tx.cases.by_ref(a, "r-1") is None
        assert tx.cases.ref_taken(a, "R-1") and not tx.cases.ref_taken(a, "R-1", first.id)
        assert not tx.cases.ref_taken(a, "R-2")
    with pytest.raises(Conflict), database.unit() as tx:
        add_case(tx, a, external_ref="R-1")
    assert count(database, Case) == 4  # the failed unit left nothing behind


def test_case_page_filters_counts_and_pages(database: Database) -> None:
    a, b = add_org(database, "A"), add_org(database, "B")
    with database.unit() as tx:
        for i, name in enumerate(["Anna Berg", "Bo Lind", "Cleo ANNAS", "Dan"]):
            add_case(tx, a, name, external_ref=f"A-{i}", status="found" if i == 3 else "missing")
        add_case(tx, b, "Anna Other", external_ref="B-0")
    with database.unit() as tx:
        rows, total = tx.cases.page(0, 10, None, a, "anna")
        assert [c.display_name for c in rows] == ["Anna Berg", "Cleo ANNAS"] and total == 2
        rows, total = tx.cases.page(1, 2, None, None, None)  # every organisation, in order
        assert [c.display_name for c in rows] == ["Bo Lind", "Cleo ANNAS"] and total == 5
        assert [c.display_name for c in tx.cases.page(0, 10, "found", a, None)[0]] == ["Dan"]
        assert tx.cases.page(0, 10, None, a, "a-2")[1] == 1  # the external ref is searched too


def test_case_search_takes_wildcards_literally(database: Database) -> None:
    org = add_org(database)
    with database.unit() as tx:
        for name in ["100% sure", "a_b", "axb", "back\\slash", "plain"]:
            add_case(tx, org, name)
    with database.unit() as tx:

        def found(text: str) -> list[str]:
            return sorted(c.display_name for c in tx.cases.page(0, 10, None, org, text)[0])

        assert found("%") == ["100% sure"]
        assert found("_") == ["a_b"]
        assert found("\\") == ["back\\slash"]
        assert found("A_B") == ["a_b"]


def test_case_search_folds_letters_beyond_ascii(database: Database) -> None:
    org = add_org(database)
    with database.unit() as tx:
        add_case(tx, org, "Élodie Øster")
    with database.unit() as tx:
        assert tx.cases.page(0, 10, None, org, "élodie øster")[1] == 1


def test_closing_a_case_stamps_closed_at(database: Database) -> None:
    org = add_org(database)
    with database.unit() as tx:
        case = add_case(tx, org)
        born_closed = add_case(tx, org, status="closed")
        assert born_closed.closed_at is not None
        tx.cases.update(case, {"status": "closed", "region": "North", "org_id": "ignored"})
        assert case.closed_at is not None and case.region == "North" and case.org_id == org
    later = datetime.now(UTC) + timedelta(seconds=1)
    with database.unit() as tx:
        assert sorted(tx.cases.closed_before(later)) == sorted([case.id, born_closed.id])
        assert tx.cases.closed_before(later - timedelta(days=1)) == []
        tx.cases.update(tx.cases.get(case.id), {"status": "found"})
    with database.unit() as tx:
        assert tx.cases.get(case.id).closed_at is None
        assert tx.cases.closed_before(later) == [born_closed.id]


def test_case_lookups_and_export(database: Database) -> None:
    org = add_org(database)
    with database.unit() as tx:
        cases = [add_case(tx, org, f"C{i}") for i in range(3)]
        enroll(tx, cases[0])
        add_sighting(tx, org, [])
    with database.unit() as tx:
        assert set(tx.cases.by_ids([cases[0].id, cases[2].id, "nope"])) == {
            cases[0].id,
            cases[2].id,
        }
        exported = tx.cases.for_export()
        names = tx.cases.stored_names()
    assert [c.display_name for c in exported] == ["C0", "C1", "C2"]
    assert len(exported[0].photos[0].templates) == 1  # loaded for use after the unit
    assert len(names) == 2 and any(n.startswith("sighting-") for n in names)


def test_photos_of_a_case(database: Database) -> None:
    a, b = add_org(database, "A"), add_org(database, "B")
    with database.unit() as tx:
        case, other = add_case(tx, a), add_case(tx, a)
        photo = enroll(tx, case, aged=2)
        assert tx.cases.has_photo(case.id, photo.upload_sha256)
        assert not tx.cases.has_photo(other.id, photo.upload_sha256)
        assert tx.cases.photo(case.id, photo.id, a) == tx.cases.photo_by_id(photo.id) == photo
        for wrong in [(other.id, photo.id, None), (case.id, photo.id, b), (case.id, "x", None)]:
            with pytest.raises(NotFound):
                tx.cases.photo(*wrong)
    with pytest.raises(Conflict), database.unit() as tx:  # the same upload twice in a case
        add_photo(tx, tx.cases.get(case.id), 1, sha=0)
    with database.unit() as tx:
        assert tx.cases.delete_photo(tx.cases.get(case.id).photos[0]) == photo.stored_name
    with database.unit() as tx:
        assert tx.cases.photo_by_id(photo.id) is None and tx.templates.count(MODEL) == 0
        ops = [c.op for c in tx.templates.changes_since(MODEL, 0)]
    assert ops == ["add"] * 3 + ["remove"] * 3


def test_photos_needing_ageing_or_another_model(database: Database) -> None:
    org = add_org(database)
    with database.unit() as tx:
        case = add_case(tx, org)
        young = enroll(tx, case, 0, aged=2)
        plain = add_photo(tx, case, 1)  # no template of MODEL yet (enrolled under another)
        tx.templates.add(plain, [NewTemplate("other-model", vector(1))])
    with database.unit() as tx:
        [(photo, owner, aged)] = tx.cases.photos_with_age()
        assert photo.id == young.id and owner.id == case.id
        assert sorted(aged) == [(8.0, "g1"), (9.0, "g1")]
        assert [p.id for p, _ in tx.cases.photos_without_model(MODEL)] == [plain.id]
        assert tx.cases.count_photos_without_model(MODEL) == 1
        assert tx.cases.count_photos_without_model("other-model") == 1


def test_deleting_a_case_cascades_to_everything_of_it(database: Database) -> None:
    org = add_org(database)
    with database.unit() as tx:
        case, kept = add_case(tx, org, "Gone"), add_case(tx, org, "Kept")
        photos = [enroll(tx, case, 0, aged=1), enroll(tx, case, 1), enroll(tx, kept, 2)]
        _, [candidate, _] = add_sighting(tx, org, [(case, 0.9, None), (kept, 0.8, None)])
        tx.sightings.add_review(candidate, Review(reviewer="rev-1", decision="confirm"))
        low, high = sorted([case.id, kept.id])
        tx.links.add(low, high, None, "admin-key")
        before = tx.templates.watermark(MODEL)
    with database.unit() as tx:
        assert sorted(tx.cases.delete(case.id)) == sorted(p.stored_name for p in photos[:2])
    with database.unit() as tx:
        assert [p.id for p in tx.cases.get(kept.id, with_photos=True).photos] == [photos[2].id]
        assert tx.templates.count(MODEL) == 1
        removed = tx.templates.changes_since(MODEL, before)
        assert [c.op for c in removed] == ["remove"] * 3
        assert tx.sightings.pending_count(None) == 1  # the kept case's candidate
        assert tx.links.pairs() == {}
    assert count(database, Review) == 0


# -- time, lengths, characters ---------------------------------------------------------------


def test_datetimes_with_an_offset_come_back_as_the_same_instant_in_utc(
    database: Database,
) -> None:
    org = add_org(database)
    seen = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    with database.unit() as tx:
        sighting, _ = add_sighting(tx, org, [], seen_at=seen)
    with database.unit() as tx:
        stored = tx.sightings.get(sighting.id)
        assert stored is not None and stored.seen_at is not None
        assert stored.seen_at.utcoffset() == timedelta(0)
        assert stored.seen_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_datetimes_come_back_aware_in_utc(database: Database) -> None:
    org = add_org(database)
    before = datetime.now(UTC)
    with database.unit() as tx:
        case_id = add_case(tx, org).id
    with database.unit() as tx:
        created = tx.session.get(Case, case_id, populate_existing=True)
        assert created is not None
    assert created.created_at.utcoffset() == timedelta(0)
    assert before <= created.created_at <= datetime.now(UTC)


def test_values_postgres_refuses_leave_as_invalid_input(database: Database) -> None:
    """PostgreSQL enforces a VARCHAR's length and refuses NUL characters; SQLite stores both.
    The API validates lengths before the registry; what reaches PostgreSQL is InvalidInput."""
    org = add_org(database)
    for name in ["x" * 201, "nul\x00char"]:
        if database.is_sqlite:
            with database.unit() as tx:
                assert add_case(tx, org, name).display_name == name
        else:
            with pytest.raises(InvalidInput), database.unit() as tx:
                add_case(tx, org, name)


# -- templates and the change log ------------------------------------------------------------


def test_templates_owners_blocks_and_vectors(database: Database) -> None:
    org = add_org(database)
    with database.unit() as tx:
        case = add_case(tx, org, external_ref="T-1", sex="male")
        photo = enroll(tx, case, aged=1)
        tx.templates.add(photo, [NewTemplate("other-model", vector(9))])
    with database.unit() as tx:
        ids = [t for t, *_ in tx.templates.vectors(MODEL)]
        owners = tx.templates.owners(ids)
        block = tx.templates.block(MODEL, ids[0], 10)
        detailed = list(tx.templates.vectors(MODEL, details=True))
        assert tx.templates.count(MODEL) == 2 and tx.templates.count("other-model") == 1
    assert [owners[i].kind for i in ids] == ["original", "aged"]
    assert {(o.case_id, o.photo_id, o.org_id, o.external_ref) for o in owners.values()} == {
        (case.id, photo.id, org, "T-1")
    }
    assert [r.id for r in block] == ids[1:] and block[0].sex == "male"
    assert np.array_equal(np.frombuffer(detailed[0][1], "<f4"), vector(0))
    assert [d[4:] for d in detailed] == [(photo.id, None), (photo.id, 8.0)]


def test_change_log_watermark_and_paging(database: Database) -> None:
    org = add_org(database)
    with database.unit() as tx:
        case = add_case(tx, org)
        photo = enroll(tx, case, aged=2)  # seq 1..3: adds
        tx.templates.add(photo, [NewTemplate("other-model", vector(7))])  # another model's log
    with database.unit() as tx:
        tx.templates.replace_aged(tx.cases.get(case.id).photos[0], [NewTemplate(MODEL, vector(8))])
        tx.templates.case_changed(case.id)  # every template of the case again
    with database.unit() as tx:
        mark = tx.templates.watermark(MODEL)
        pages, seq = [], 0
        while page := tx.templates.changes_since(MODEL, seq, limit=3):
            pages.append([c.op for c in page])
            seq = page[-1].seq
        assert seq == mark and tx.templates.watermark("unknown") == 0
        everything = tx.templates.changes_since(MODEL, 0)
    # adds x3, removes of the two aged, the new one's add, then the case's 3 (2 models) again
    assert sum(pages, []) == ["add"] * 3 + ["remove"] * 2 + ["add"] * 3
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [c.seq for c in everything] == sorted(c.seq for c in everything)
    # a removed template's earlier add has no row left; live ones carry their case's fields
    assert [c.template is None for c in everything[:3]] == [False, True, True]
    assert everything[0].template is not None and everything[0].template.org_id == org


def test_change_log_seq_is_never_reused(database: Database) -> None:
    """The index trusts that ``seq`` only grows, even after the newest entries are gone."""
    org = add_org(database)
    with database.unit() as tx:
        enroll(tx, add_case(tx, org))
        top = tx.templates.watermark(MODEL)
        tx.session.execute(text("DELETE FROM template_changes"))
    with database.unit() as tx:
        enroll(tx, add_case(tx, org), 1)
        assert tx.templates.watermark(MODEL) > top


# -- sightings, candidates, reviews ----------------------------------------------------------


def test_sightings_of_a_volunteer_and_purging(database: Database) -> None:
    org = add_org(database)
    with database.unit() as tx:
        case = add_case(tx, org)
        enroll(tx, case)
        old, [candidate] = add_sighting(tx, org, [(case, 0.9, None)], place="Park")
        confirmed, _ = add_sighting(tx, org, [], status="confirmed")
        other, _ = add_sighting(tx, org, [], by="vol-2")
        tx.sightings.add_review(candidate, Review(reviewer="rev-1", decision="unsure"))
    cutoff = datetime.now(UTC) + timedelta(seconds=1)
    with database.unit() as tx:
        mine = tx.sightings.sent_by("vol-1", 10)
        assert {s.id for s in mine} == {old.id, confirmed.id}
        assert len(tx.sightings.sent_by("vol-1", 1)) == 1
        assert sorted(tx.sightings.purgeable(cutoff)) == sorted(
            [(old.id, old.stored_name), (other.id, other.stored_name)]
        )
        assert tx.sightings.purgeable(cutoff - timedelta(days=1)) == []
        tx.sightings.delete(old.id)
    with database.unit() as tx:
        assert tx.sightings.get(old.id) is None and tx.sightings.get(other.id) is not None
    assert count(database, Candidate) == count(database, Review) == 0


def test_queue_puts_the_least_likely_by_chance_first_and_unrated_last(database: Database) -> None:
    org = add_org(database)
    with database.unit() as tx:
        case = add_case(tx, org)
        proposals = [(case, 0.95, None), (case, 0.5, 1e-3), (case, 0.6, 1e-6), (case, 0.7, None)]
        _, candidates = add_sighting(tx, org, proposals)
    with database.unit() as tx:
        queue = tx.sightings.queue(None, 10)
    assert [c.id for c, _ in queue] == [candidates[i].id for i in (2, 1, 0, 3)]


def test_queue_filters(database: Database) -> None:
    a, b = add_org(database, "A"), add_org(database, "B")
    with database.unit() as tx:
        plain, odd = add_case(tx, a, external_ref="REF-1"), add_case(tx, a, external_ref="50%_x")
        theirs = add_case(tx, b, external_ref="REF-2")
        proposals = [(plain, 0.9, None), (odd, 0.5, None), (theirs, 0.7, None)]
        _, [first, *_] = add_sighting(tx, a, proposals)
        tx.sightings.add_review(first, Review(reviewer="rev-1", decision="unsure"))

    def refs(tx: UnitOfWork, scope: str | None = a, **filters: Any) -> list[str | None]:
        return [ref for _, ref in tx.sightings.queue(scope, 10, **filters)]

    with database.unit() as tx:
        assert refs(tx) == ["REF-1", "50%_x"] and refs(tx, None) == ["REF-1", "REF-2", "50%_x"]
        assert refs(tx, min_score=0.6) == ["REF-1"]
        assert refs(tx, None, case_ref="ref") == ["REF-1", "REF-2"]  # any case
        assert refs(tx, None, case_ref="%") == refs(tx, None, case_ref="0%_") == ["50%_x"]
        assert refs(tx, not_reviewed_by="rev-1") == ["50%_x"]
        assert refs(tx, not_reviewed_by="rev-2") == ["REF-1", "50%_x"]
        assert tx.sightings.pending_count(a) == 2 and tx.sightings.pending_count(None) == 3
        assert [len(c.reviews) for c, _ in tx.sightings.queue(a, 1)] == [1]


def test_candidates_reviews_and_confirmations(database: Database) -> None:
    a, b = add_org(database, "A"), add_org(database, "B")
    with database.unit() as tx:
        case = add_case(tx, a)
        photo = enroll(tx, case)
        sighting, [candidate] = add_sighting(tx, a, [(case, 0.9, 1e-5)], place="Station")
    with database.unit() as tx:
        locked = tx.sightings.candidate(candidate.id, a, lock=True)  # SELECT ... FOR UPDATE
        assert locked.sighting.place == "Station" and locked.reviews == []
        assert tx.sightings.case_photo(locked, photo.id).id == photo.id
        with pytest.raises(NotFound):
            tx.sightings.case_photo(locked, "elsewhere")
        with pytest.raises(NotFound):
            tx.sightings.candidate(candidate.id, b)
        for reviewer in ["rev-1", "rev-2"]:
            tx.sightings.add_review(locked, Review(reviewer=reviewer, decision="confirm"))
        locked.status = "confirmed"
    with pytest.raises(Conflict), database.unit() as tx:  # one decision per reviewer
        again = tx.sightings.candidate(candidate.id, None)
        tx.sightings.add_review(again, Review(reviewer="rev-1", decision="reject"))
    with database.unit() as tx:
        assert tx.sightings.statuses_of_sighting(sighting.id) == ["confirmed"]
        [confirmed] = tx.sightings.confirmed_for_case(case.id, a)
        assert tx.sightings.confirmed_for_case(case.id, b) == []
    assert [r.reviewer for r in confirmed.reviews] == ["rev-1", "rev-2"]
    assert confirmed.sighting.id == sighting.id and confirmed.false_match_rate == 1e-5


@ONLY_POSTGRES
def test_a_locked_candidate_waits_for_the_first_decision(database: Database) -> None:
    """Two reviewers deciding at once: the second's FOR UPDATE waits for the first's commit
    (here it gives up after 100 ms), so neither decides on a stale candidate. SQLite needs
    no row lock: a writing transaction excludes every other writer."""
    org = add_org(database)
    with database.unit() as tx:
        _, [candidate] = add_sighting(tx, org, [(add_case(tx, org), 0.9, None)])
    with database.unit() as first:
        first.sightings.candidate(candidate.id, None, lock=True)
        with pytest.raises(StorageUnavailable) as waited, database.unit() as second:
            second.session.execute(text("SET LOCAL lock_timeout = '100ms'"))
            second.sightings.candidate(candidate.id, None, lock=True)
    assert "lock timeout" in str(waited.value.__cause__)


# -- organisations, keys and web sessions ----------------------------------------------------


def test_organisations(database: Database) -> None:
    with database.unit() as tx:
        first, second = tx.keys.add_org("Zeta"), tx.keys.add_org("Alpha")
        assert tx.keys.org(first.id) == tx.keys.org_with_id(first.id) == first
        assert tx.keys.org_named("Alpha") == second and tx.keys.org_named("alpha") is None
        assert tx.keys.org_with_id("nope") is None
        with pytest.raises(NotFound):
            tx.keys.org("nope")
        assert [o.name for o in tx.keys.orgs()] == ["Zeta", "Alpha"]  # by creation
    with pytest.raises(Conflict), database.unit() as tx:
        tx.keys.add_org("Zeta")


def api_key(org_id: str, key_id: str, roles: str) -> ApiKey:
    name = f"{key_id} name"
    return ApiKey(key_id=key_id, org_id=org_id, name=name, roles=roles, secret_hash="h" * 64)


def test_api_keys(database: Database) -> None:
    org = add_org(database)
    with database.unit() as tx:
        assert not tx.keys.active_admin_exists()
        tx.keys.add(api_key(org, "rev-1", "reviewer"))
        admin = tx.keys.add(api_key(org, "adm-1", "admin,registry"))
        assert tx.keys.active_admin_exists()
        admin.revoked_at = datetime.now(UTC)
        tx.session.flush()
        assert not tx.keys.active_admin_exists()
        assert tx.keys.by_key_id("rev-1") is not None and tx.keys.by_key_id("x") is None
        assert [k.key_id for k in tx.keys.all()] == ["rev-1", "adm-1"]
        assert tx.keys.names(["adm-1", "gone"]) == {"adm-1": "adm-1 name"}
        assert tx.keys.names([]) == {}
    with pytest.raises(Conflict), database.unit() as tx:
        tx.keys.add(api_key(org, "rev-1", "volunteer"))


def test_web_sessions(database: Database) -> None:
    org = add_org(database)
    now = datetime.now(UTC)
    with database.unit() as tx:
        tx.keys.add(api_key(org, "rev-1", "reviewer"))
        for sid, minutes in [("live", 30), ("stale", -1), ("older", -60)]:
            row = WebSession(
                id=sid, key_id="rev-1", csrf_token="c", expires_at=now + timedelta(minutes=minutes)
            )
            tx.keys.add_session(row)
    with database.unit() as tx:
        found = tx.keys.session("live")
        assert found is not None and found[1].key_id == "rev-1"
        assert found[0].expires_at == now + timedelta(minutes=30)  # microseconds kept, in UTC
        assert tx.keys.session("nope") is None
        assert tx.keys.end_expired_sessions(now) == 2
        assert tx.keys.end_session("live") and not tx.keys.end_session("live")


# -- case links ------------------------------------------------------------------------------


def test_case_links(database: Database) -> None:
    org = add_org(database)
    with database.unit() as tx:
        x, y, z = sorted(add_case(tx, org).id for _ in range(3))
        first = tx.links.add(x, y, "same birthmark", "adm-1")
        second = tx.links.add(y, z, None, "adm-1")
        assert tx.links.get(first.id) == first and tx.links.between(x, y) == first
        assert tx.links.between(y, x) is None  # a pair is stored in one order
        for missing in [0, -1, MAX_ID, MAX_ID + 1, 2**63]:
            with pytest.raises(NotFound):
                tx.links.get(missing)
        assert tx.links.pairs() == {(x, y): first.id, (y, z): second.id}
        rows, total = tx.links.page(1, 1)
        assert [r.id for r in rows] == [second.id] and total == 2
        tx.links.delete(first)
        assert tx.links.pairs() == {(y, z): second.id}
    for pair in [(y, z), (z, y), (x, "0" * 32)]:  # twice, out of order, to nothing
        with pytest.raises(Conflict), database.unit() as tx:
            tx.links.add(*pair, None, "adm-1")


# -- meta ------------------------------------------------------------------------------------


def test_meta(database: Database) -> None:
    with database.unit() as tx:
        assert tx.meta.get("photo_key") is None
        assert tx.meta.set_default("photo_key", "abc") == "abc"
        assert tx.meta.set_default("photo_key", "other") == "abc"
    with database.unit() as tx:
        assert tx.meta.get("photo_key") == "abc"


# -- the webhook outbox ----------------------------------------------------------------------


def test_outbox_claims_due_deliveries_under_a_lease(database: Database) -> None:
    a, b = add_org(database, "A"), add_org(database, "B")
    with database.unit() as tx:
        for i, org in enumerate([a, a, b, a]):
            tx.outbox.enqueue(org, "candidate.confirmed", {"n": i})
        tx.session.flush()
        later = datetime.now(UTC) + timedelta(hours=1)
        tx.session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == 4).values(next_attempt_at=later)
        )
    with database.unit() as tx:
        assert tx.outbox.claim_due(60, limit=2) == [1, 2]
    with database.unit() as tx:
        assert tx.outbox.claim_due(60) == [3]  # the leased and the not yet due are skipped
        tx.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == 1)
            .values(lease_until=datetime.now(UTC) - timedelta(seconds=1))
        )
        tx.session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == 2).values(status="delivered")
        )
    with database.unit() as tx:
        assert tx.outbox.claim_due(60) == [1]  # its lease ran out
        delivery, owner = tx.outbox.delivery(1)
        assert owner is not None and owner.id == a
        assert json.loads(delivery.payload)["data"] == {"n": 0}
        assert delivery.lease_until is not None and delivery.lease_until > datetime.now(UTC)
        assert tx.outbox.count_by_state() == {"pending": 3, "delivered": 1}
        assert [d.id for d in tx.outbox.deliveries(a)] == [4, 2, 1]
        assert [d.id for d in tx.outbox.deliveries(None, limit=2)] == [4, 3]


@ONLY_POSTGRES
def test_outbox_skips_rows_another_worker_holds(database: Database) -> None:
    org = add_org(database)
    with database.unit() as tx:
        for i in range(4):
            tx.outbox.enqueue(org, "candidate.confirmed", {"n": i})
    with database.unit() as first:  # (on SQLite the second would wait for the first's commit)
        assert first.outbox.claim_due(60, limit=2) == [1, 2]
        with database.unit() as second:  # does not wait for the first: it takes the rest
            assert second.outbox.claim_due(60) == [3, 4]


# -- the audit log ---------------------------------------------------------------------------


def test_audit_chain_records_and_verifies(database: Database) -> None:
    actor = Actor("reg-1", "org-1", frozenset({"registry"}))
    with database.unit() as tx:
        tx.audit.record(actor, "match", input_sha256="a" * 64, results=["c2", "c1", "c2"])
        tx.audit.record(ADMIN, "export", results=["c1"], detail={"at": date(2024, 1, 2)})
        tx.audit.record(actor, "match")
    with database.unit() as tx:
        assert [r.seq for r in tx.audit.recent(2)] == [3, 2]
        first = tx.audit.recent(10, "match")[-1]
        assert first.seq == 1 and json.loads(first.result_ids) == ["c1", "c2"]
        assert tx.audit.verify().ok and tx.audit.verify().records == 3
        tx.session.execute(update(AuditRecord).where(AuditRecord.seq == 2).values(target="x"))
    with database.unit() as tx:
        assert tx.audit.verify().problems == ["record 2 was altered (its hash does not match)"]
        tx.session.execute(text("DELETE FROM audit_log WHERE seq = 3"))
    with database.unit() as tx:
        assert "records were removed or added" in tx.audit.verify().problems[-1]


def test_audit_record_of_a_long_result_list(database: Database) -> None:
    """An export or a many-face search names every case it returned: 2,000 case ids."""
    ids = [new_id() for _ in range(2000)]
    with database.unit() as tx:
        tx.audit.record(ADMIN, "export", results=ids)
    with database.unit() as tx:
        [stored] = tx.audit.recent(1)
        assert json.loads(stored.result_ids) == sorted(ids) and tx.audit.verify().ok


def test_an_audit_record_that_cannot_be_written_fails_its_unit(database: Database) -> None:
    with pytest.raises(AuditUnavailable), database.unit() as tx:
        tx.session.execute(text("DROP TABLE audit_log"))
        tx.audit.record(ADMIN, "export")
