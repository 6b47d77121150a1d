"""Age progression through the API, the CLI and enrollment (aged templates)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from service.ageing.templates import target_ages
from service.evaluation.folds import use_growth_model
from service.settings import Settings
from tests.conftest import container_of, years_ago
from tests.faces_of_t1 import blank_photo
from tests.images import astronaut_bgr, encode, t1_bgr
from tests.test_access import make_world

JPEG = "image/jpeg"


def born_years_ago(years: float) -> str:
    today = date.today()
    return str(years_ago(int(years), today))


def case_with_aged_photo(client: TestClient) -> str:
    """A case of a child born 12 years ago with a photo at 6: three aged templates."""
    case_id: str = client.post(
        "/v1/cases", json={"display_name": "A", "birth_date": born_years_ago(12)}
    ).json()["id"]
    client.post(
        f"/v1/cases/{case_id}/photos",
        data={"age_at_photo": "6"},
        files={"file": ("a.jpg", encode(astronaut_bgr()), JPEG)},
    )
    return case_id


def post_ageing(client: TestClient, photo: bytes, **form: object) -> object:
    return client.post("/v1/ageing", files={"file": ("a.jpg", photo, JPEG)}, data=form)


def test_target_ages() -> None:
    assert target_ages(6, 12) == [10, 12, 14]
    assert target_ages(6, 7.5) == [7.5, 9.5]  # at least a year above the photo
    assert target_ages(10, 30) == [25]  # the growth model stops at 25
    assert target_ages(None, 12) == [] and target_ages(6, None) == [] and target_ages(21, 25) == []


def test_ageing_one_age_returns_an_image_of_the_same_size(client: TestClient) -> None:
    r = post_ageing(client, encode(astronaut_bgr()), age_at_photo=6, target_age=12)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    aged = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert aged.shape == astronaut_bgr().shape


def test_several_ages_as_a_sheet_or_a_zip(client: TestClient) -> None:
    photo = encode(astronaut_bgr())
    sheet = post_ageing(client, photo, age_at_photo=6, target_age=[10, 14], format="png")
    assert sheet.status_code == 200 and sheet.content[:4] == b"\x89PNG"
    image = cv2.imdecode(np.frombuffer(sheet.content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[1] > 2.5 * image.shape[0]  # three panels side by side
    packed = post_ageing(client, photo, age_at_photo=6, target_age=[10, 14], layout="zip")
    names = zipfile.ZipFile(io.BytesIO(packed.content)).namelist()
    assert packed.headers["content-type"] == "application/zip"
    assert names == ["aged-10.jpg", "aged-14.jpg"]


@pytest.mark.parametrize(
    ("form", "reason"),
    [
        ({"age_at_photo": 8, "target_age": 8}, "above the age at photo"),
        ({"age_at_photo": 8, "target_age": 30}, "at most 25"),
        ({"age_at_photo": 21, "target_age": 24}, None),
        ({"age_at_photo": 4}, None),
        ({"age_at_photo": 4, "target_age": "x"}, None),
    ],
)
def test_bad_ageing_requests_are_422(client: TestClient, form: dict, reason: str | None) -> None:
    r = post_ageing(client, encode(astronaut_bgr()), **form)
    assert r.status_code == 422, r.text
    if reason:
        assert reason in r.json()["detail"]


def test_ageing_needs_one_face(client: TestClient) -> None:
    r = post_ageing(client, blank_photo(), age_at_photo=4, target_age=9)
    assert r.status_code == 422 and r.json()["reason"] == "no_face"
    r = post_ageing(client, encode(t1_bgr()), age_at_photo=4, target_age=9)
    assert r.status_code == 422 and r.json()["reason"] == "several_faces"
    r = post_ageing(client, encode(t1_bgr()), age_at_photo=4, target_age=9, face_index=0)
    assert r.status_code == 200


def test_volunteers_cannot_age_photos(client: TestClient) -> None:
    volunteer = make_world(client, {"V": ["volunteer"]}).as_("V:volunteer")
    r = post_ageing(volunteer, encode(astronaut_bgr()), age_at_photo=6, target_age=9)
    assert r.status_code == 403


def test_enrollment_adds_aged_templates_and_deleting_the_photo_removes_them(
    client: TestClient,
) -> None:
    case = client.post(
        "/v1/cases", json={"display_name": "A", "sex": "female", "birth_date": born_years_ago(12)}
    ).json()
    r = client.post(
        f"/v1/cases/{case['id']}/photos",
        data={"age_at_photo": "6"},
        files={"file": ("a.jpg", encode(astronaut_bgr()), JPEG)},
    )
    assert r.status_code == 201, r.text
    ages = r.json()["aged_templates"]
    assert len(ages) == 3 and ages[1] == pytest.approx(case["expected_age_today"], abs=0.1)
    assert client.get("/v1/info").json()["index_size"] == 4
    with container_of(client).db.unit() as tx:
        owners = tx.templates.owners(list(range(1, 5)))
    assert sorted(o.kind for o in owners.values()) == ["aged", "aged", "aged", "original"]
    photo_id = r.json()["photo"]["id"]
    assert client.delete(f"/v1/cases/{case['id']}/photos/{photo_id}").status_code == 204
    assert client.get("/v1/info").json()["index_size"] == 0


def test_no_aged_templates_without_ages(client: TestClient) -> None:
    case_id = client.post("/v1/cases", json={"display_name": "A"}).json()["id"]
    r = client.post(
        f"/v1/cases/{case_id}/photos",
        data={"age_at_photo": "6"},
        files={"file": ("a.jpg", encode(astronaut_bgr()), JPEG)},
    )
    assert r.json()["aged_templates"] == []
    assert client.get("/v1/info").json()["index_size"] == 1


def test_refresh_re_ages_when_the_expected_age_changes(client: TestClient) -> None:
    case_id = case_with_aged_photo(client)
    assert client.post("/v1/admin/ageing/refresh").json() == {"photos_refreshed": 0}
    client.patch(f"/v1/cases/{case_id}", json={"birth_date": born_years_ago(15)})
    assert client.post("/v1/admin/ageing/refresh").json() == {"photos_refreshed": 1}
    ((_, _, existing),) = photos_with_age(client)
    assert sorted(a for a, _ in existing) == pytest.approx([13, 15, 17], abs=0.1)
    assert client.get("/v1/info").json()["index_size"] == 4
    assert client.post("/v1/admin/ageing/refresh").json() == {"photos_refreshed": 0}


def test_age_command_writes_images_and_a_sheet(
    tmp_path: Path, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.cli import main

    photo = tmp_path / "child.jpg"
    photo.write_bytes(encode(astronaut_bgr()))

    def age(*args: str) -> Result:
        return CliRunner().invoke(main, ["age", str(photo), *args])

    one = age("--from", "5", "--to", "11", "-o", str(tmp_path / "aged.jpg"))
    assert one.exit_code == 0, one.output
    assert cv2.imread(str(tmp_path / "aged.jpg")).shape == astronaut_bgr().shape
    several = age("--from", "5", "--to", "9", "--to", "13", "-o", str(tmp_path / "out.png"))
    assert several.exit_code == 0
    assert (tmp_path / "out-age9.png").exists() and (tmp_path / "out-age13.png").exists()
    sheet = age(
        "--from", "5", "--to", "9", "--to", "13", "--sheet", "-o", str(tmp_path / "sheet.jpg")
    )
    height, width = cv2.imread(str(tmp_path / "sheet.jpg")).shape[:2]
    assert sheet.exit_code == 0 and width > 2.5 * height  # three panels side by side
    bad = age("--from", "9", "--to", "5", "-o", str(tmp_path / "x.jpg"))
    assert bad.exit_code == 1 and "above the age at photo" in bad.output


def test_a_new_growth_model_re_ages_every_photo(client: TestClient) -> None:
    case_with_aged_photo(client)
    built = container_of(client)
    shipped = built.enrollment.aged.progressor.model
    use_growth_model(built, replace(shipped, version="growth_test"))
    ((_, _, existing),) = photos_with_age(client)
    assert [generator for _, generator in existing] == ["growth_test"] * 3
    assert client.get("/v1/info").json()["index_size"] == 4


def photos_with_age(
    client: TestClient,
) -> list[tuple[object, object, list[tuple[float | None, str | None]]]]:
    with container_of(client).db.unit() as tx:
        return [(p.id, c.id, aged) for p, c, aged in tx.cases.photos_with_age()]
