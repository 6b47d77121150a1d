"""The cases pages (TestClient): list and search, a new case, photos with their aged
previews and poster, confirmed sightings, closing and deleting with a confirmation."""

from __future__ import annotations

import re
from datetime import date, timedelta

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import years_ago
from tests.faces_of_t1 import altered_probe, blank_photo, face_boxes
from tests.images import astronaut_bgr, encode, t1_bgr
from tests.test_access import JPEG, World, enroll, make_world
from tests.test_web_admin import PAGE, csrf_of, sign_in


@pytest.fixture
def world(client: TestClient) -> World:
    return make_world(
        client,
        {"A": ["registry", "reviewer"], "B": ["registry"], "V": ["volunteer"]},
    )


def browser(world: World, who: str) -> TestClient:
    """A browser signed in with the key of ``who`` ("<org>:<role>"), asking for pages."""
    page = TestClient(world.admin.app, headers=PAGE)
    sign_in(page, world.as_(who).headers["X-API-Key"])
    return page


def new_case(page: TestClient, **fields: str) -> str:
    form = {"csrf_token": csrf_of(page, "/cases/new"), **fields}
    made = page.post("/cases/new", data=form, follow_redirects=False)
    assert made.status_code == 303, made.text
    found = re.fullmatch(r"/cases/([0-9a-f]{32})\?done=created", made.headers["location"])
    assert found
    return found[1]


def add_photo(page: TestClient, case_id: str, photo: bytes, **fields: str) -> httpx.Response:
    form = {"csrf_token": csrf_of(page, f"/cases/{case_id}"), **fields}
    files = {"file": ("photo.jpg", photo, JPEG)}
    return page.post(f"/cases/{case_id}/photos", data=form, files=files)


def photo_ids(page: TestClient, case_id: str) -> list[str]:
    return re.findall(
        rf"/cases/{case_id}/photos/([0-9a-f]{{32}})\.jpg", page.get(f"/cases/{case_id}").text
    )


def is_jpeg(answer: httpx.Response) -> bool:
    return (
        answer.status_code == 200
        and answer.headers["content-type"] == "image/jpeg"
        and answer.content[:3] == b"\xff\xd8\xff"
    )


def test_list_search_and_a_new_case(world: World) -> None:
    page = browser(world, "A:registry")
    listed = page.get("/cases")
    assert listed.status_code == 200 and "No cases." in listed.text
    assert "script-src 'self'" in listed.headers["content-security-policy"]
    first = new_case(page, display_name="Amira Haddad", external_ref="A-100", sex="female")
    new_case(page, display_name="Ben Okafor", external_ref="A-101", missing_since="2020-05-01")
    shown = page.get(f"/cases/{first}?done=created")
    assert "The case was created" in shown.text and "Amira Haddad" in shown.text

    everything = page.get("/cases").text
    assert "Amira Haddad" in everything and "Ben Okafor" in everything and "2 cases" in everything
    by_ref = page.get("/cases", params={"q": "a-101"}).text
    assert "Ben Okafor" in by_ref and "Amira Haddad" not in by_ref
    by_name = page.get("/cases", params={"q": "amira"}).text
    assert "Amira Haddad" in by_name and "Ben Okafor" not in by_name
    assert "No cases match" in page.get("/cases", params={"status": "closed"}).text
    assert page.get("/cases", params={"status": "lost"}).status_code == 422
    bad_page = page.get("/cases", params={"page": "0"})
    assert bad_page.status_code == 422 and "<html" in bad_page.text  # an error page, not JSON

    csrf = csrf_of(page, "/cases/new")
    tomorrow = str(date.today() + timedelta(days=1))
    for form, status, message in [
        ({"display_name": "", "region": "North"}, 422, "Name: Field required"),
        ({"display_name": "C", "age_at_disappearance": "30"}, 422, "Age when missing"),
        ({"display_name": "C", "birth_date": tomorrow}, 422, "birth_date is in the future"),
        ({"display_name": "C", "external_ref": "A-100"}, 409, "has a case with external_ref"),
    ]:
        refused = page.post("/cases/new", data={"csrf_token": csrf, **form})
        assert refused.status_code == status and message in refused.text, refused.text
        assert 'class="alert"' in refused.text
        assert 'value="C"' in refused.text or not form["display_name"]  # kept for fixing
    assert "2 cases" in page.get("/cases").text

    assert page.post("/cases/new", data={"display_name": "No token"}).status_code == 403
    for n in range(25):  # 27 cases: two pages of 25
        world.as_("A:registry").post("/v1/cases", json={"display_name": f"Extra {n}"})
    first_page = page.get("/cases").text
    assert "page 1 of 2" in first_page and "page=2" in first_page and "Extra 24" not in first_page
    second_page = page.get("/cases", params={"page": "2"}).text
    assert "Extra 24" in second_page and "Next page" not in second_page
    other = browser(world, "B:registry")
    assert "No cases." in other.get("/cases").text
    assert other.get(f"/cases/{first}").status_code == 404
    assert browser(world, "V:volunteer").get("/cases").status_code == 403


def test_a_photo_its_aged_preview_and_the_poster(world: World) -> None:
    page = browser(world, "A:registry")
    case_id = new_case(
        page, display_name="Lina Park", external_ref="A-7", birth_date=str(years_ago(12))
    )
    no_face = add_photo(page, case_id, blank_photo(), age_at_photo="6")
    assert no_face.status_code == 422 and "no face" in no_face.text.lower()
    assert 'value="6"' in no_face.text  # the form comes back as it was sent
    too_old = add_photo(page, case_id, encode(astronaut_bgr()), age_at_photo="200")
    assert too_old.status_code == 422 and "Age in the photo" in too_old.text
    assert photo_ids(page, case_id) == []

    added = add_photo(
        page, case_id, encode(astronaut_bgr()), age_at_photo="6", taken_on="2019-06-01"
    )
    assert added.status_code == 200 and "The photo was added" in added.text
    (photo,) = photo_ids(page, case_id)
    assert f"/cases/{case_id}/photos/{photo}/aged.jpg" in added.text
    assert "Aged to 12" in added.text

    assert is_jpeg(page.get(f"/cases/{case_id}/photos/{photo}.jpg"))
    aged = page.get(f"/cases/{case_id}/photos/{photo}/aged.jpg")
    sheet = page.get(f"/cases/{case_id}/photos/{photo}/sheet.jpg")
    assert is_jpeg(aged) and is_jpeg(sheet)
    contact = cv2.imdecode(np.frombuffer(sheet.content, np.uint8), cv2.IMREAD_COLOR)
    assert contact.shape[1] > 4 * 320  # the photo and three aged faces, 320 px high each

    poster = page.get(f"/cases/{case_id}/poster")
    assert poster.status_code == 200
    assert f"/cases/{case_id}/photos/{photo}/sheet.jpg" in poster.text
    assert "Lina Park" in poster.text and "A-7" in poster.text and "data-print" in poster.text
    assert "12, 15, 18" in poster.text
    assert page.get(f"/cases/{case_id}/poster?photo=nope").status_code == 404

    other = browser(world, "B:registry")
    for path in ("", f"/photos/{photo}.jpg", f"/photos/{photo}/aged.jpg", "/poster"):
        assert other.get(f"/cases/{case_id}{path}").status_code == 404
    no_csrf = page.post(
        f"/cases/{case_id}/photos",
        data={"age_at_photo": "6"},
        files={"file": ("p.jpg", encode(astronaut_bgr()), JPEG)},
    )
    assert no_csrf.status_code == 403 and len(photo_ids(page, case_id)) == 1


def test_a_face_chosen_in_a_group_photo_is_enrolled_and_aged(world: World) -> None:
    page = browser(world, "A:registry")
    case_id = new_case(page, display_name="Group", birth_date=str(years_ago(14)))
    out_of_range = add_photo(page, case_id, encode(t1_bgr()), face_number="9")
    assert out_of_range.status_code == 422 and "out of range" in out_of_range.text

    # the page's script, after the face picker: the chosen face's box, JSON back
    script = {"accept": "application/json", "x-csrf-token": csrf_of(page, f"/cases/{case_id}")}
    group = {"file": ("group.jpg", encode(t1_bgr()), JPEG)}
    x, y, w, h = face_boxes()[1]
    missed = page.post(
        f"/cases/{case_id}/photos", data={"face_box": "[1, 1, 5, 5]"}, files=group, headers=script
    )
    assert missed.status_code == 422 and missed.json()["reason"] == "face_rejected"
    sent = page.post(
        f"/cases/{case_id}/photos",
        data={"face_box": f"[{x}, {y}, {w}, {h}]", "age_at_photo": "10"},
        files=group,
        headers=script,
    )
    assert sent.status_code == 201 and sent.json()["url"] == f"/cases/{case_id}?done=photo"
    registry = world.as_("A:registry")
    (picked,) = registry.get(f"/v1/cases/{case_id}").json()["photos"]
    assert picked["id"] == sent.json()["photo_id"] and abs(picked["face_box"][0] - x) < w / 4
    # the aged preview ages the enrolled face (the photo has six: none is taken by default)
    assert is_jpeg(page.get(f"/cases/{case_id}/photos/{picked['id']}/aged.jpg"))

    # without the script: a face number (1 = the largest); none is guessed in a group photo
    flipped = encode(cv2.flip(t1_bgr(), 1))
    assert add_photo(page, case_id, flipped, face_number="3").status_code == 200
    unchosen = add_photo(page, case_id, encode(t1_bgr(), quality=80))
    assert unchosen.status_code == 422 and "shows 6 faces" in unchosen.text
    assert "enter the child&#39;s face number" in unchosen.text
    chosen = add_photo(page, case_id, encode(t1_bgr(), quality=80), face_number="1")
    assert chosen.status_code == 200
    _, third, largest = registry.get(f"/v1/cases/{case_id}").json()["photos"]
    assert third["face_box"] != largest["face_box"]
    assert page.get(f"/cases/{case_id}/photos/{largest['id']}/aged.jpg").status_code == 404


def test_a_confirmed_sighting_shows_on_the_case(world: World) -> None:
    second = world.admin.post(
        "/v1/admin/keys",
        json={"name": "Second reviewer", "org_id": world.orgs["A"], "roles": ["reviewer"]},
    )
    reviewers = [
        world.as_("A:reviewer"),
        TestClient(world.admin.app, headers={"X-API-Key": second.json()["key"]}),
    ]
    case_id = enroll(world.as_("A:registry"), 4, external_ref="A-4")
    sent = world.as_("V:volunteer").post(
        "/v1/sightings",
        files={"file": ("s.jpg", altered_probe(4), JPEG)},
        data={"place": "Bus station", "seen_at": "2026-01-05T10:00:00Z", "estimated_age": "11"},
    )
    assert sent.status_code == 201, sent.text
    page = browser(world, "A:registry")
    assert "No sighting has been confirmed" in page.get(f"/cases/{case_id}").text
    (candidate,) = [
        c for c in reviewers[0].get("/v1/review/queue").json() if c["case_id"] == case_id
    ]
    for reviewer in reviewers:
        decided = reviewer.post(
            f"/v1/review/{candidate['candidate_id']}", json={"decision": "confirm"}
        )
        assert decided.status_code == 200, decided.text
    shown = page.get(f"/cases/{case_id}").text
    assert "Bus station" in shown and "2026-01-05 10:00 UTC" in shown
    assert "A reviewer" in shown and "Second reviewer" in shown


def test_close_and_delete_need_a_confirmation(world: World) -> None:
    page = browser(world, "A:registry")
    case_id = new_case(page, display_name="Noor Said", external_ref="A-55")
    csrf = csrf_of(page, f"/cases/{case_id}")

    unconfirmed = page.post(f"/cases/{case_id}/close", data={"csrf_token": csrf})
    assert unconfirmed.status_code == 422 and "to confirm closing" in unconfirmed.text
    assert page.post(f"/cases/{case_id}/close", data={"confirm": "yes"}).status_code == 403
    assert 'badge missing">missing' in page.get(f"/cases/{case_id}").text
    closed = page.post(f"/cases/{case_id}/close", data={"csrf_token": csrf, "confirm": "yes"})
    assert closed.status_code == 200 and "The case was closed" in closed.text
    assert 'badge closed">closed' in closed.text and "Close this case" not in closed.text

    form = page.get(f"/cases/{case_id}/delete")
    assert form.status_code == 200 and "A-55" in form.text
    wrong = page.post(f"/cases/{case_id}/delete", data={"csrf_token": csrf, "confirm": "A-56"})
    assert wrong.status_code == 422 and "nothing was deleted" in wrong.text
    assert page.post(f"/cases/{case_id}/delete", data={"confirm": "A-55"}).status_code == 403
    other = browser(world, "B:registry")
    other_csrf = csrf_of(other, "/cases")
    refused = other.post(
        f"/cases/{case_id}/delete", data={"csrf_token": other_csrf, "confirm": "A-55"}
    )
    assert refused.status_code == 404
    assert page.get(f"/cases/{case_id}").status_code == 200

    deleted = page.post(
        f"/cases/{case_id}/delete", data={"csrf_token": csrf, "confirm": "  noor  SAID "}
    )
    assert deleted.status_code == 200 and "The case was deleted" in deleted.text
    assert str(deleted.url).endswith("/cases?done=deleted")
    assert page.get(f"/cases/{case_id}").status_code == 404
