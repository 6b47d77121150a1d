"""The volunteer page (TestClient): the form and one's own sightings, the face preview, a
sighting sent through the page routed like the API's, a picked face, who sees what."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.faces.pipeline import iou
from service.settings import Settings
from tests.faces_of_t1 import altered_probe, blank_photo, face_boxes
from tests.images import encode, t1_bgr
from tests.test_access import JPEG, World, enroll, make_world
from tests.test_web_admin import PAGE, csrf_of, sign_in

FACES_JS = Path(__file__).resolve().parent.parent / "service" / "web" / "static" / "faces.js"
SCRIPT = {"accept": "application/json"}  # what the page's script asks for


@pytest.fixture
def world(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> Iterator[World]:
    with start_app(make_settings(score_floor=0.3)) as admin:
        yield make_world(
            admin, {"A": ["registry", "reviewer"], "V": ["volunteer"], "W": ["volunteer"]}
        )


def browser(world: World, who: str) -> tuple[TestClient, str]:
    """A browser signed in with ``who``'s key, and its session's CSRF token."""
    client = TestClient(world.admin.app, client=("127.0.0.1", 50001))
    sign_in(client, world.as_(who).headers["X-API-Key"])
    return client, csrf_of(client, "/")


def send(
    client: TestClient, csrf: str, photo: bytes, headers: dict[str, str], **fields: str
) -> httpx.Response:
    answer: httpx.Response = client.post(
        "/sightings",
        files={"file": ("s.jpg", photo, JPEG)},
        data={"csrf_token": csrf, **fields},
        headers=headers,
        follow_redirects=False,
    )
    return answer


def queued(world: World, sighting_id: str) -> list[dict[str, object]]:
    """The candidates of one sighting in org A's review queue (the API's), best first."""
    queue = world.as_("A:reviewer").get("/v1/review/queue").json()
    return sorted((q for q in queue if q["sighting_id"] == sighting_id), key=lambda q: q["rank"])


def test_the_page_shows_the_form_and_only_ones_own_sightings(world: World) -> None:
    mine = world.as_("V:volunteer").post(
        "/v1/sightings", files={"file": ("s.jpg", altered_probe(2), JPEG)}, data={"place": "Park"}
    )
    theirs = world.as_("W:volunteer").post(
        "/v1/sightings", files={"file": ("s.jpg", altered_probe(3), JPEG)}
    )
    client, _ = browser(world, "V:volunteer")
    page = client.get("/", headers=PAGE)
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    form = re.search(r'<form id="sighting-form".*?</form>', page.text, re.S)
    assert form and 'data-max-side="1600"' in form[0] and 'data-preview-url="/faces"' in form[0]
    for field in ('capture="environment"', 'name="file"', 'name="place"', 'name="seen_at"'):
        assert field in form[0]
    assert 'name="estimated_age" type="text" inputmode="numeric"' in form[0]
    assert f'href="/sightings/{mine.json()["id"]}"' in page.text and "Park" in page.text
    assert theirs.json()["id"] not in page.text
    assert "<img" not in page.text  # never a gallery photo
    assert re.search(r"<[^>]*\s(on[a-z]+|style)=", page.text) is None  # the CSP allows none
    assert re.search(r"<script(?![^>]*\ssrc=)", page.text) is None

    status = client.get(f"/sightings/{mine.json()['id']}", headers=PAGE)
    assert status.status_code == 200 and mine.json()["id"] in status.text
    assert 'class="badge closed"' in status.text  # no case in the gallery: nothing to review
    other = client.get(f"/sightings/{theirs.json()['id']}", headers=PAGE)
    assert other.status_code == 404 and "Not found" in other.text


def test_who_is_not_a_volunteer_goes_to_their_own_page(world: World) -> None:
    for who, page in (("A:reviewer", "/review"), ("A:registry", "/cases")):
        client, _ = browser(world, who)
        answer = client.get("/", headers=PAGE, follow_redirects=False)
        assert (answer.status_code, answer.headers["location"]) == (303, page)
        assert client.get("/sightings/x", headers=PAGE).status_code == 403
    signed_out = TestClient(world.admin.app).get("/", headers=PAGE, follow_redirects=False)
    assert signed_out.headers["location"] == "/signin?next=/"


def preview(client: TestClient, csrf: str, photo: bytes) -> httpx.Response:
    """The page's script asking for a photo's faces."""
    files = {"file": ("p.jpg", photo, JPEG)}
    answer: httpx.Response = client.post(
        "/faces", files=files, headers={**SCRIPT, "X-CSRF-Token": csrf}
    )
    return answer


def test_the_preview_finds_every_face_with_its_box_and_quality(world: World) -> None:
    client, csrf = browser(world, "V:volunteer")
    answer = preview(client, csrf, encode(t1_bgr()))
    assert answer.status_code == 200, answer.text
    assert (answer.json()["width"], answer.json()["height"]) == (1280, 886)
    faces = answer.json()["faces"]
    assert len(faces) == 6
    areas = [f["box"][2] * f["box"][3] for f in faces]
    assert areas == sorted(areas, reverse=True)  # largest first: face_index 0 is faces[0]
    for face in faces:
        assert max(iou(tuple(face["box"]), b) for b in face_boxes()) > 0.9
        assert face["sharpness"] > 10 and face["issues"] == []

    small = cv2.resize(t1_bgr(), None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
    tiny = preview(client, csrf, encode(small)).json()["faces"]
    assert tiny and all(any("too small" in i for i in f["issues"]) for f in tiny)
    none = preview(client, csrf, blank_photo())
    assert none.status_code == 200 and none.json()["faces"] == []

    registry, registry_csrf = browser(world, "A:registry")  # adds case photos: may preview
    assert preview(registry, registry_csrf, altered_probe(1)).status_code == 200
    reviewer, reviewer_csrf = browser(world, "A:reviewer")
    refused = preview(reviewer, reviewer_csrf, altered_probe(1))
    assert refused.status_code == 403 and refused.json()["reason"] == "forbidden"


def test_posts_without_the_sessions_csrf_token_are_refused(world: World) -> None:
    client, csrf = browser(world, "V:volunteer")
    photo = {"file": ("s.jpg", altered_probe(1), JPEG)}
    for token in ({}, {"csrf_token": "x" * 30}):
        assert client.post("/faces", files=photo, data=token, headers=SCRIPT).status_code == 403
        refused = client.post("/sightings", files=photo, data=token, headers=SCRIPT)
        assert refused.status_code == 403 and "reload the page" in refused.json()["detail"]
    assert world.as_("V:volunteer").get("/v1/sightings").json() == []
    assert client.post("/faces", files=photo, data={"csrf_token": csrf}).status_code == 200


def test_a_sighting_sent_through_the_page_is_routed_like_the_apis(world: World) -> None:
    case = enroll(world.as_("A:registry"), 4, external_ref="A-4")
    client, csrf = browser(world, "V:volunteer")
    fields = {"place": "Bus station", "seen_at": "2025-05-01T10:30", "estimated_age": "11"}
    posted = send(client, csrf, altered_probe(4), PAGE, note="with an adult", **fields)
    assert posted.status_code == 303, posted.text
    sighting = posted.headers["location"].removeprefix("/sightings/")
    (candidate,) = queued(world, sighting)
    assert (candidate["case_id"], candidate["rank"]) == (case, 1)
    detail = world.as_("A:reviewer").get(f"/v1/review/{candidate['candidate_id']}").json()
    assert detail["probe"]["place"] == "Bus station" and detail["probe"]["estimated_age"] == 11

    page = client.get(f"/sightings/{sighting}", headers=PAGE)
    assert sighting in page.text and 'class="badge received"' in page.text
    assert case not in page.text and "A-4" not in page.text  # never the candidates
    assert f'href="/sightings/{sighting}"' in client.get("/", headers=PAGE).text

    scripted = send(client, csrf, altered_probe(4), {**SCRIPT, "X-CSRF-Token": csrf})
    assert scripted.status_code == 201, scripted.text
    body = scripted.json()
    assert body == {"id": body["id"], "status": "received", "url": f"/sightings/{body['id']}"}
    assert [q["case_id"] for q in queued(world, body["id"])] == [case]


def test_a_picked_face_is_the_only_one_matched(world: World) -> None:
    registry = world.as_("A:registry")
    first, fourth = enroll(registry, 1), enroll(registry, 4)
    client, csrf = browser(world, "V:volunteer")
    group = encode(t1_bgr())
    every = send(client, csrf, group, SCRIPT)
    assert {q["case_id"] for q in queued(world, every.json()["id"]) if q["rank"] == 1} == {
        first,
        fourth,
    }
    box = json.dumps(list(face_boxes()[4]))
    picked = send(client, csrf, group, SCRIPT, face_box=box)
    assert [q["case_id"] for q in queued(world, picked.json()["id"])] == [fourth]

    nowhere = send(client, csrf, group, SCRIPT, face_box="[1, 1, 5, 5]")
    assert nowhere.status_code == 422 and "face_box" in nowhere.json()["detail"]
    assert send(client, csrf, group, SCRIPT, face_box="1, 2").status_code == 422


def test_the_apis_face_box_matches_only_that_face(world: World) -> None:
    registry, volunteer = world.as_("A:registry"), world.as_("V:volunteer")
    first, _ = enroll(registry, 1), enroll(registry, 4)
    group = {"file": ("t1.jpg", encode(t1_bgr()), JPEG)}
    box = ", ".join(str(v) for v in face_boxes()[1])
    sent = volunteer.post("/v1/sightings", files=group, data={"face_box": box})
    assert sent.status_code == 201, sent.text
    assert [q["case_id"] for q in queued(world, sent.json()["id"])] == [first]
    wrong = volunteer.post("/v1/sightings", files=group, data={"face_box": "[0, 0, 0, 5]"})
    assert wrong.status_code == 422 and wrong.json()["reason"] == "invalid_input"
    missed = volunteer.post("/v1/sightings", files=group, data={"face_box": "[1, 1, 5, 5]"})
    assert missed.status_code == 422 and missed.json()["reason"] == "face_rejected"
    assert len(volunteer.get("/v1/sightings").json()) == 1  # a refused photo is not kept


def test_errors_come_back_as_the_services_explanation(world: World) -> None:
    client, csrf = browser(world, "V:volunteer")
    scripted = send(client, csrf, blank_photo(), SCRIPT)
    assert scripted.status_code == 422 and "no face was found" in scripted.json()["detail"]
    page = send(client, csrf, blank_photo(), PAGE)
    assert page.status_code == 422 and "no face was found" in page.text
    late = send(client, csrf, altered_probe(1), SCRIPT, seen_at="2999-01-01T00:00")
    assert late.status_code == 422 and "future" in late.json()["detail"]
    old = send(client, csrf, altered_probe(1), SCRIPT, estimated_age="40")
    assert old.status_code == 422 and "estimated_age" in old.json()["detail"]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run faces.js")
def test_the_phones_warnings_flag_dark_and_blurred_photos_only(tmp_path: Path) -> None:
    """faces.js's own measure, run by Node on a real photo: sharp, blurred, darkened."""
    photo = np.ascontiguousarray(t1_bgr()[:, :, ::-1])
    height, width = photo.shape[:2]
    variants = {
        "sharp": photo,
        "blurred": cv2.GaussianBlur(photo, (0, 0), 6),  # 2 px at the size it is measured at
        "dark": (photo * 0.25).astype(np.uint8),
    }
    for name, pixels in variants.items():
        rgba = np.dstack([pixels, np.full((height, width), 255, np.uint8)])
        (tmp_path / f"{name}.rgba").write_bytes(rgba.tobytes())
    script = f"""
        const fs = require("fs");
        window = {{}};
        eval(fs.readFileSync({json.dumps(str(FACES_JS))}, "utf8"));
        const flags = {{}};
        for (const name of {json.dumps(list(variants))}) {{
          const pixels = fs.readFileSync({json.dumps(str(tmp_path))} + "/" + name + ".rgba");
          const m = window.FacePicker.measurePixels(pixels, {width}, {height});
          const limits = window.FacePicker.limits;
          flags[name] = [m.luminance < limits.darkLuminance, m.sharpness < limits.blurSharpness];
        }}
        console.log(JSON.stringify(flags));
    """
    done = subprocess.run(["node", "-e", script], capture_output=True, check=True, timeout=60)
    flags = json.loads(done.stdout)
    assert flags["sharp"] == [False, False]
    assert flags["blurred"] == [False, True]
    assert flags["dark"][0]
