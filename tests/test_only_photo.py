"""Never refuse the only photo: a small or blurred face is enrolled with its quality issues
recorded (API, case page, review page) and is still found; only a photo with no face, or
with several faces and no choice among them, is refused, and then nothing is kept."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import cv2
from alembic import command
from alembic.config import Config
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import inspect

from service.cli import main
from service.matching.actors import SYSTEM
from service.registry.db import MIGRATIONS, make_engine
from service.settings import Settings
from tests.conftest import container_of
from tests.faces_of_t1 import altered_probe, blank_photo, face_crop
from tests.images import encode, t1_bgr
from tests.test_access import JPEG, make_world
from tests.test_cli import runner  # noqa: F401  (the CLI's environment fixture)
from tests.test_web_review import sign_in

PERSON = 2  # the child whose only photos are poor; t1's other people are other cases


def small_face() -> bytes:
    """A real face photo shrunk so that its face is under MIN_FACE_PX (40)."""
    return encode(cv2.resize(face_crop(PERSON), None, fx=0.3, fy=0.3))


def blurred_face() -> bytes:
    return encode(cv2.GaussianBlur(face_crop(PERSON), (0, 0), 5))


def new_case(client: TestClient, name: str) -> str:
    r = client.post("/v1/cases", json={"display_name": name})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def add_photo(client: TestClient, case_id: str, photo: bytes, **form: str) -> dict:
    files = {"file": ("p.jpg", photo, JPEG)}
    r = client.post(f"/v1/cases/{case_id}/photos", files=files, data=form)
    assert r.status_code == 201, r.text
    body: dict = r.json()
    return body


def refused(client: TestClient, case_id: str, photo: bytes) -> dict:
    """The refusal of ``photo``, after checking that nothing of it was kept."""
    before = client.get("/v1/info").json()["index_size"]
    r = client.post(f"/v1/cases/{case_id}/photos", files={"file": ("p.jpg", photo, JPEG)})
    assert r.status_code == 422, r.text
    assert client.get(f"/v1/cases/{case_id}").json()["photos"] == []
    assert client.get("/v1/info").json()["index_size"] == before
    assert container_of(client).photos.names() == set()
    body: dict = r.json()
    return body


def test_a_small_and_a_blurred_face_are_enrolled_with_their_issues_and_found(
    client: TestClient,
) -> None:
    for other in {0, 1, 3, 4, 5}:
        add_photo(client, new_case(client, f"Other {other}"), encode(face_crop(other)))
    small, blurred = new_case(client, "Small"), new_case(client, "Blurred")
    for case_id, photo, issue in [
        (small, small_face(), "face too small"),
        (blurred, blurred_face(), "face too blurry"),
    ]:
        enrolled = add_photo(client, case_id, photo)
        assert any(w.startswith(issue) for w in enrolled["warnings"])
        assert enrolled["face"]["quality"]["acceptable"] is False
        (shown,) = client.get(f"/v1/cases/{case_id}").json()["photos"]
        assert shown["id"] == enrolled["photo"]["id"]
        assert shown["quality_issues"] == enrolled["photo"]["quality_issues"]
        assert [i for i in shown["quality_issues"] if i.startswith(issue)], shown

    r = client.post("/v1/match", files={"file": ("p.jpg", altered_probe(PERSON), JPEG)})
    (face,) = r.json()["faces"]
    assert face["quality"]["acceptable"]  # a good photo of the same child
    assert {c["case_id"] for c in face["candidates"][:2]} == {small, blurred}
    good = new_case(client, "Good")
    assert add_photo(client, good, encode(face_crop(0)))["photo"]["quality_issues"] == []


def test_the_case_and_review_pages_show_the_issues(client: TestClient) -> None:
    world = make_world(client, {"A": ["registry", "reviewer", "volunteer"]})
    registry = world.as_("A:registry")
    case_id = new_case(registry, "Only a small photo")
    add_photo(registry, case_id, small_face())
    sighting = world.as_("A:volunteer").post(
        "/v1/sightings", files={"file": ("s.jpg", altered_probe(PERSON), JPEG)}
    )
    assert sighting.status_code == 201, sighting.text
    (candidate,) = world.as_("A:reviewer").get("/v1/review/queue").json()
    detail = world.as_("A:reviewer").get(f"/v1/review/{candidate['candidate_id']}").json()
    (photo,) = detail["case_photos"]
    assert photo["quality_issues"][0].startswith("face too small")

    reviewer = sign_in(client.app, world.as_("A:reviewer").headers["X-API-Key"])
    page = reviewer.get(f"/review/{candidate['candidate_id']}").text
    assert 'data-testid="case-photo-quality"' in page and "face too small" in page
    staff = sign_in(client.app, registry.headers["X-API-Key"])
    case_page = staff.get(f"/cases/{case_id}").text
    assert 'data-testid="photo-quality"' in case_page and "face too small" in case_page


def test_no_face_is_refused_and_nothing_is_kept(client: TestClient) -> None:
    case_id = new_case(client, "A")
    assert refused(client, case_id, blank_photo())["reason"] == "no_face"


def test_several_faces_need_a_choice(client: TestClient) -> None:
    case_id = new_case(client, "A")
    group = encode(t1_bgr())
    body = refused(client, case_id, group)
    assert body["reason"] == "several_faces"
    assert "6 faces were found" in body["detail"] and "face_index" in body["detail"]
    chosen = add_photo(client, case_id, group, face_index="2")
    assert chosen["warnings"] == [] and chosen["photo"]["quality_issues"] == []


def test_bulk_enrollment_takes_a_face_index_and_records_issues(
    runner: CliRunner,  # noqa: F811
    tmp_path: Path,
) -> None:
    (tmp_path / "small.jpg").write_bytes(small_face())
    (tmp_path / "group.jpg").write_bytes(encode(t1_bgr()))
    rows = [("R-1", "small.jpg", ""), ("R-2", "group.jpg", ""), ("R-3", "group.jpg", "1")]
    with (tmp_path / "cases.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["external_ref", "display_name", "photo", "face_index"])
        writer.writerows((ref, ref, photo, index) for ref, photo, index in rows)
    result = runner.invoke(main, ["enroll", str(tmp_path / "cases.csv")])
    assert result.exit_code == 0, result.output
    assert "enrolled 2 photo(s) (1 with quality issues); rejected 1" in result.output
    assert "line 3: group.jpg: 6 faces were found" in result.output


def test_reembed_records_the_issues_of_photos_enrolled_before(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    with start_app(make_settings(tta_flip=False)) as plain:
        case_id = new_case(plain, "Enrolled before issues were recorded")
        photo_id = add_photo(plain, case_id, small_face())["photo"]["id"]
        with container_of(plain).db.unit() as tx:
            stored = tx.cases.photo_by_id(photo_id)
            assert stored is not None
            stored.quality_issues = None  # as the migration leaves older photos
        assert plain.get(f"/v1/cases/{case_id}").json()["photos"][0]["quality_issues"] == []
    with start_app(make_settings(tta_flip=True)) as flipped:
        assert container_of(flipped).enrollment.reembed(SYSTEM) == 1
        (photo,) = flipped.get(f"/v1/cases/{case_id}").json()["photos"]
        assert photo["quality_issues"][0].startswith("face too small")


# -- the migration ---------------------------------------------------------------------------


def downgrade_to(url: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
    finally:
        engine.dispose()


def photo_columns(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        return [c["name"] for c in inspect(engine).get_columns("photos")]
    finally:
        engine.dispose()


def check_upgrade_from_0004(settings: Settings, start: Callable[[Settings], TestClient]) -> None:
    """A database at revision 0004 holding a photo is upgraded at start: the photo keeps its
    templates and shows no issues; new photos record theirs (also run on PostgreSQL by
    tests/test_postgres.py)."""
    url = settings.resolved_database_url
    with start(settings) as client:
        case_id = new_case(client, "Enrolled before 0005")
        add_photo(client, case_id, encode(face_crop(PERSON)))
    downgrade_to(url, "0004")
    assert "quality_issues" not in photo_columns(url)
    with start(settings) as client:
        assert "quality_issues" in photo_columns(url)
        (old,) = client.get(f"/v1/cases/{case_id}").json()["photos"]
        assert old["quality_issues"] == [] and old["template_kinds"] == ["original"]
        r = client.post("/v1/match", files={"file": ("p.jpg", altered_probe(PERSON), JPEG)})
        assert r.json()["faces"][0]["candidates"][0]["case_id"] == case_id
        new = add_photo(client, case_id, small_face())["photo"]
        assert new["quality_issues"][0].startswith("face too small")


def test_the_migration_upgrades_an_existing_database(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    check_upgrade_from_0004(make_settings(), start_app)
