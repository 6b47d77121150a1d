"""Migrations keep what is stored: down to an old schema and back up, on SQLite, no photo,
template or case is lost (a table rebuilt with foreign keys on would cascade deletes)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import text

from service.registry.db import make_engine, migrate
from service.settings import Settings
from tests.faces_of_t1 import face_crop
from tests.images import encode

TABLES = ("cases", "photos", "templates", "template_changes")


def _counts(engine_url: str) -> dict[str, int]:
    engine = make_engine(engine_url)
    with engine.connect() as connection:
        count = "SELECT count(*) FROM {}".format
        counts = {t: connection.execute(text(count(t))).scalar_one() for t in TABLES}
    engine.dispose()
    return counts


def test_down_to_0002_and_up_again_loses_nothing(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    settings = make_settings()
    with start_app(settings) as client:
        case = client.post("/v1/cases", json={"display_name": "Kept", "external_ref": "K-1"})
        files = {"file": ("face.jpg", encode(face_crop(0)), "image/jpeg")}
        added = client.post(f"/v1/cases/{case.json()['id']}/photos", files=files)
        assert added.status_code == 201, added.text
        url = settings.resolved_database_url
    before = _counts(url)
    assert before["photos"] == 1 and before["templates"] >= 1

    engine = make_engine(url)
    migrate(engine, "0002")  # before external refs became unique per organisation (0003)
    assert _counts(url) == before
    migrate(engine)
    engine.dispose()
    assert _counts(url) == before

    with start_app(settings) as client:  # the service opens it and still finds the child
        files = {"file": ("face.jpg", encode(face_crop(0)), "image/jpeg")}
        found = client.post("/v1/match", files=files).json()
        assert found["faces"][0]["candidates"][0]["external_ref"] == "K-1"
