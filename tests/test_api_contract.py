"""Auth, validation and bad uploads through the API: clear 4xx, nothing stored or lost."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import date, timedelta

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.matching.actors import SYSTEM
from service.settings import Settings
from tests.conftest import container_of, stored_key_hash, years_ago
from tests.faces_of_t1 import altered_probe, face_crop
from tests.images import encode

JPEG = "image/jpeg"


def new_case(client: TestClient, **fields: object) -> str:
    r = client.post("/v1/cases", json={"display_name": "A", **fields})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def enroll(client: TestClient, case_id: str, face: int) -> None:
    photo = encode(face_crop(face))
    r = client.post(f"/v1/cases/{case_id}/photos", files={"file": ("a.jpg", photo, JPEG)})
    assert r.status_code == 201, r.text


def stored_state(client: TestClient, settings: Settings) -> tuple[int, int, list[str]]:
    info = client.get("/v1/info").json()
    files = sorted(p.name for p in settings.photo_dir.glob("*/*"))
    return info["index_size"], info["index_generation"], files


# -- auth ------------------------------------------------------------------------------


def test_every_endpoint_but_health_needs_a_key(client: TestClient) -> None:
    anonymous = TestClient(client.app)
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/readyz").json() == {"status": "ready"}
    for method, path in [
        ("get", "/v1/info"),
        ("get", "/v1/cases"),
        ("post", "/v1/cases"),
        ("get", "/v1/cases/x"),
        ("patch", "/v1/cases/x"),
        ("delete", "/v1/cases/x"),
        ("post", "/v1/cases/x/photos"),
        ("delete", "/v1/cases/x/photos/y"),
        ("post", "/v1/match"),
    ]:
        r = getattr(anonymous, method)(path)
        assert r.status_code == 401, (method, path)
        r = getattr(anonymous, method)(path, headers={"X-API-Key": "hw_not-a-real-key-000000000"})
        assert r.status_code == 401, (method, path)


def test_created_key_works_until_revoked(client: TestClient) -> None:
    access = container_of(client).access
    org = access.create_org(SYSTEM, "Registry A")
    row, key = access.create_key(SYSTEM, "registry app", org.id, ["registry"])
    assert key.startswith("hw_") and key not in stored_key_hash(client, row.key_id)
    other = TestClient(client.app, headers={"X-API-Key": key})
    assert other.get("/v1/cases").status_code == 200
    access.revoke_key(SYSTEM, row.key_id)
    assert other.get("/v1/cases").status_code == 401


def test_first_start_creates_an_admin_key_once(
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(admin_key=None)
    with caplog.at_level("WARNING"), start_app(settings):
        pass
    shown = [r.getMessage() for r in caplog.records if "admin API key" in r.getMessage()]
    assert len(shown) == 1
    key = shown[0].split("store it now):")[1].split()[0]
    caplog.clear()
    with caplog.at_level("WARNING"), start_app(settings) as c:
        assert c.get("/v1/info", headers={"X-API-Key": key}).status_code == 200
    assert not [r for r in caplog.records if "admin API key" in r.getMessage()]


# -- case validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"display_name": ""},
        {"display_name": "A", "sex": "x"},
        {"display_name": "A", "age_at_disappearance": -1},
        {"display_name": "A", "birth_date": "not a date"},
        {"display_name": "A", "birth_date": str(date.today() + timedelta(days=2))},
        {"display_name": "A", "birth_date": "2015-01-01", "missing_since": "2014-01-01"},
        {"display_name": "A", "status": "matched"},
        {"display_name": "A", "unknown_field": 1},
        {"display_name": "A" * 201},
    ],
)
def test_bad_case_bodies_are_422(client: TestClient, body: dict) -> None:
    assert client.post("/v1/cases", json=body).status_code == 422


def test_case_crud_and_paging(client: TestClient) -> None:
    ids = [new_case(client, external_ref=f"E{i}", birth_date="2016-05-01") for i in range(5)]
    assert (
        client.post("/v1/cases", json={"display_name": "B", "external_ref": "E1"}).status_code
        == 409
    )
    page = client.get("/v1/cases", params={"offset": 1, "limit": 2}).json()
    assert page["total"] == 5 and [c["id"] for c in page["items"]] == ids[1:3]
    assert client.get("/v1/cases", params={"limit": 0}).status_code == 422
    assert client.get("/v1/cases", params={"status": "nonsense"}).status_code == 422
    r = client.patch(f"/v1/cases/{ids[0]}", json={"region": "North", "status": "found"})
    assert r.status_code == 200 and r.json()["region"] == "North" and r.json()["status"] == "found"
    assert r.json()["expected_age_today"] > 9
    assert client.patch(f"/v1/cases/{ids[0]}", json={"display_name": None}).status_code == 422
    assert client.patch(f"/v1/cases/{ids[0]}", json={"external_ref": "E2"}).status_code == 409
    assert client.patch("/v1/cases/nope", json={"region": "x"}).status_code == 404
    assert client.get("/v1/cases", params={"status": "found"}).json()["total"] == 1


# -- uploads ---------------------------------------------------------------------------


def test_bad_uploads_are_4xx_and_store_nothing(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    settings = make_settings(max_upload_bytes=200_000, max_pixels=1_000_000)
    with start_app(settings) as client:
        case_id = new_case(client)
        enroll(client, case_id, 0)
        before = stored_state(client, settings)
        good = encode(face_crop(1))
        gif = io.BytesIO()
        Image.new("RGB", (64, 64)).save(gif, "GIF")
        big_pixels = encode(__import__("numpy").zeros((1200, 1000, 3), "uint8"))
        cases = [
            (good[: len(good) // 2], 422, "image_rejected"),  # truncated
            (b"%PDF-1.4 not an image at all", 415, "unsupported_format"),
            (b"just some text", 422, "image_rejected"),
            (gif.getvalue(), 415, "unsupported_format"),
            (b"\xff\xd8\xff" + b"\x01" * 300_000, 413, "image_too_large"),
            (big_pixels, 413, "image_too_large"),
        ]
        for data, status, reason in cases:
            for url in (f"/v1/cases/{case_id}/photos", "/v1/match"):
                r = client.post(url, files={"file": ("x.jpg", data, JPEG)})
                assert r.status_code == status, (reason, url, r.text)
                assert r.json()["reason"] == reason and r.json()["detail"]
        assert client.post(f"/v1/cases/{case_id}/photos").status_code == 422  # no file
        r = client.post("/v1/cases/nope/photos", files={"file": ("x.jpg", good, JPEG)})
        assert r.status_code == 404
        assert stored_state(client, settings) == before
        assert len(client.get(f"/v1/cases/{case_id}").json()["photos"]) == 1


@pytest.mark.parametrize(
    "form",
    [
        {"top_k": "51"},
        {"top_k": "0"},
        {"top_k": "many"},
        {"sex": "robot"},
        {"min_age": "-1"},
        {"min_age": "12", "max_age": "8"},
        {"max_age": "1000"},
    ],
)
def test_bad_match_parameters_are_422(client: TestClient, form: dict) -> None:
    r = client.post("/v1/match", files={"file": ("x.jpg", altered_probe(0), JPEG)}, data=form)
    assert r.status_code == 422, r.text


def test_bad_photo_form_fields_are_422(client: TestClient) -> None:
    case_id = new_case(client)
    photo = encode(face_crop(0))
    tomorrow = str(date.today() + timedelta(days=1))
    for form in [{"age_at_photo": "-3"}, {"taken_on": tomorrow}, {"taken_on": "yesterday"}]:
        r = client.post(
            f"/v1/cases/{case_id}/photos", files={"file": ("a.jpg", photo, JPEG)}, data=form
        )
        assert r.status_code == 422, form


# -- filters ---------------------------------------------------------------------------


def test_sex_and_age_filters(client: TestClient) -> None:
    today = date.today()
    girl = new_case(client, sex="female", birth_date=str(years_ago(8, today)))
    boy = new_case(
        client,
        sex="male",
        age_at_disappearance=5,
        missing_since=str(years_ago(10, today)),
    )
    unknown_age = new_case(client, sex="female")
    for case_id, face in ((girl, 0), (boy, 1), (unknown_age, 2)):
        enroll(client, case_id, face)

    def found(**form: str) -> set[str]:
        r = client.post("/v1/match", files={"file": ("p.jpg", altered_probe(0), JPEG)}, data=form)
        assert r.status_code == 200, r.text
        return {c["case_id"] for c in r.json()["faces"][0]["candidates"]}

    assert found() == {girl, boy, unknown_age}
    assert found(sex="male") == {boy}
    assert found(sex="female") == {girl, unknown_age}
    assert found(min_age="14") == {boy, unknown_age}  # boy is about 15 now
    assert found(max_age="9") == {girl, unknown_age}
    assert found(sex="male", max_age="9") == set()
