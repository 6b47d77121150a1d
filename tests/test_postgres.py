"""The registry and the whole service on the local PostgreSQL server (production's database)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from service.settings import Settings
from tests.databases import fresh_postgres_database
from tests.faces_of_t1 import altered_probe, face_crop
from tests.images import encode
from tests.test_only_photo import check_upgrade_from_0004

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database for one test, dropped afterwards."""
    with fresh_postgres_database() as url:
        yield url


def test_service_on_postgres(
    postgres_url: str,
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
) -> None:
    settings = make_settings(database_url=postgres_url)
    with start_app(settings) as client:
        ids = []
        for i in range(3):
            case_id = client.post(
                "/v1/cases", json={"display_name": f"C{i}", "external_ref": f"P-{i}"}
            ).json()["id"]
            r = client.post(
                f"/v1/cases/{case_id}/photos",
                files={"file": ("a.jpg", encode(face_crop(i)), "image/jpeg")},
            )
            assert r.status_code == 201, r.text
            ids.append(case_id)
        r = client.post("/v1/match", files={"file": ("p.jpg", altered_probe(1), "image/jpeg")})
        assert r.json()["faces"][0]["candidates"][0]["case_id"] == ids[1]
        assert (
            client.post("/v1/cases", json={"display_name": "D", "external_ref": "P-0"}).status_code
            == 409
        )
        assert client.delete(f"/v1/cases/{ids[1]}").status_code == 204
        created = client.get(f"/v1/cases/{ids[0]}").json()["created_at"]
        assert created.endswith(("Z", "+00:00"))
    with start_app(settings) as again:
        info = again.get("/v1/info").json()
        assert info["index_opened"] == "loaded" and info["index_size"] == 2


def test_photo_quality_migration_on_postgres(
    postgres_url: str,
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
) -> None:
    check_upgrade_from_0004(make_settings(database_url=postgres_url), start_app)


def test_two_processes_on_one_registry_converge(
    postgres_url: str,
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
) -> None:
    """Like two API processes on PostgreSQL: what one enrolls or deletes, the other finds or
    forgets (on SQLite a second process is refused: tests/test_writer_lock.py)."""
    from tests.test_matching_api import enroll_six, match, top_case

    settings = make_settings(database_url=postgres_url)
    with start_app(settings) as a, start_app(settings) as b:
        case_ids = enroll_six(a)
        assert top_case(b, altered_probe(4)) == case_ids[4]
        b.delete(f"/v1/cases/{case_ids[4]}")
        (face,) = match(a, altered_probe(4))["faces"]
        assert case_ids[4] not in {c["case_id"] for c in face["candidates"]}
