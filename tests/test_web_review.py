"""The reviewer pages: the queue and its filters, one candidate with the faces side by side
(original and aged), and the two-person decision through the browser's session."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from tests.conftest import years_ago
from tests.faces_of_t1 import altered_probe, face_crop
from tests.images import encode
from tests.test_access import JPEG, make_world
from tests.test_web_admin import sign_in as signed_in_through_the_form

HTML = {"Accept": "text/html"}


def sign_in(app: object, key: str) -> TestClient:
    """A browser signed in with ``key`` through the sign-in form."""
    browser = TestClient(app, headers=HTML)  # type: ignore[arg-type]
    signed_in_through_the_form(browser, key)
    return browser


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert found is not None
    return found[1]


@dataclass
class Desk:
    """Org A's enrolled case, two sightings of its child, and the browsers involved."""

    admin: TestClient
    first: TestClient  # A's reviewers
    second: TestClient
    other_org: TestClient  # B's reviewer
    volunteer: TestClient
    case_id: str
    candidates: list[str]  # the API's queue order


@pytest.fixture
def desk(client: TestClient) -> Desk:
    w = make_world(client, {"A": ["registry", "reviewer"], "B": ["reviewer"], "V": ["volunteer"]})
    second_key = client.post(
        "/v1/admin/keys",
        json={"name": "Second Reviewer", "org_id": w.orgs["A"], "roles": ["reviewer"]},
    ).json()["key"]
    registry = w.as_("A:registry")
    case = registry.post(
        "/v1/cases",
        json={
            "display_name": "Ada Example",
            "external_ref": "A-4",
            "sex": "female",
            "birth_date": years_ago(12).isoformat(),
            "region": "North",
        },
    )
    assert case.status_code == 201, case.text
    case_id = case.json()["id"]
    photo = registry.post(
        f"/v1/cases/{case_id}/photos",
        files={"file": ("a.jpg", encode(face_crop(4)), JPEG)},
        data={"age_at_photo": "6"},
    )
    assert photo.status_code == 201, photo.text
    for place in ("Bus station", "Market"):  # the same photo twice: equal scores
        sent = w.as_("V:volunteer").post(
            "/v1/sightings",
            files={"file": ("s.jpg", altered_probe(4), JPEG)},
            data={"place": place, "estimated_age": "11"},
        )
        assert sent.status_code == 201, sent.text
    queue = w.as_("A:reviewer").get("/v1/review/queue").json()
    return Desk(
        admin=client,
        first=sign_in(client.app, w.as_("A:reviewer").headers["X-API-Key"]),
        second=sign_in(client.app, second_key),
        other_org=sign_in(client.app, w.as_("B:reviewer").headers["X-API-Key"]),
        volunteer=sign_in(client.app, w.as_("V:volunteer").headers["X-API-Key"]),
        case_id=case_id,
        candidates=[q["candidate_id"] for q in queue],
    )


def queue_links(page: str) -> list[str]:
    return re.findall(r'href="/review/([A-Za-z0-9_-]+)(?:\?[^"]*)?"', page)


def test_the_queue_strongest_then_newest_first_with_filters(desk: Desk) -> None:
    api = desk.admin.get("/v1/review/queue").json()
    assert len(api) == 2 and api[0]["score"] == api[1]["score"]  # the same face twice
    assert api[0]["created_at"] > api[1]["created_at"]  # newest first among equal scores
    assert {q["rank"] for q in api} == {1} and api[0]["confirmations"] == 0

    page = desk.first.get("/review")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert queue_links(page.text) == desk.candidates
    assert "A-4" in page.text and "0 of 2" in page.text
    assert f"{api[0]['score']:.3f}" in page.text

    score = api[0]["score"]
    assert queue_links(desk.first.get(f"/review?min_score={score - 0.01:.3f}").text)
    excluded = desk.first.get(f"/review?min_score={min(score + 0.01, 1):.3f}")
    assert queue_links(excluded.text) == [] and "matches these filters" in excluded.text
    assert queue_links(desk.first.get("/review?case_ref=a-").text) == desk.candidates
    assert queue_links(desk.first.get("/review?case_ref=B-").text) == []
    blank = desk.first.get("/review?min_score=&case_ref=")  # an emptied filter form
    assert queue_links(blank.text) == desk.candidates
    assert desk.first.get("/review?min_score=2").status_code == 422
    assert desk.admin.get("/v1/review/queue", params={"case_ref": "zz"}).json() == []


def test_the_candidate_page_and_its_images(desk: Desk) -> None:
    candidate = desk.candidates[0]
    page = desk.first.get(f"/review/{candidate}")
    assert page.status_code == 200
    text = page.text
    detail = desk.admin.get(f"/v1/review/{candidate}").json()
    assert f"{detail['score']:.3f}" in text and 'data-testid="rank">1 ' in text
    assert "Ada Example" in text and "North" in text and "female" in text
    assert "estimated age 11" in text and "age 6 at the photo" in text
    assert "0 of 2 confirmations; 2 different reviewers must confirm" in text
    assert 'value="confirm"' in text and "Keyboard shortcuts" in text
    assert "<script>" not in text and " style=" not in text and "onclick" not in text  # CSP
    assert f'href="/review/{desk.candidates[1]}"' in text  # the next candidate (n)

    (photo,) = detail["case_photos"]
    images = [
        f"/review/{candidate}/probe.jpg",
        f"/review/{candidate}/photos/{photo['photo_id']}.jpg",
        f"/review/{candidate}/photos/{photo['photo_id']}/aged.jpg",
    ]
    for url in images:
        assert f'src="{url}"' in text
        r = desk.first.get(url)
        assert r.status_code == 200, (url, r.text)
        assert r.headers["content-type"] == "image/jpeg" and r.content[:3] == b"\xff\xd8\xff"
        assert r.headers["cache-control"] == "no-store"
    expected = detail["case"]["expected_age_today"]
    assert f"to age {expected:g}, the expected age today" in text
    assert desk.first.get(f"/review/{candidate}/photos/nope.jpg").status_code == 404

    for url in [f"/review/{candidate}", *images]:  # another organisation's reviewer
        assert desk.other_org.get(url).status_code == 404
    assert desk.volunteer.get("/review").status_code == 403
    assert desk.volunteer.get(f"/review/{candidate}").status_code == 403


def test_two_reviewers_confirm_through_the_pages(desk: Desk) -> None:
    first, other = desk.candidates
    page = desk.first.get(f"/review/{first}")
    token = csrf_of(page.text)
    no_csrf = desk.first.post(f"/review/{first}", data={"decision": "confirm"})
    assert no_csrf.status_code == 403
    assert (
        desk.first.post(
            f"/review/{first}", data={"decision": "maybe", "csrf_token": token}
        ).status_code
        == 422
    )

    sent = desk.first.post(
        f"/review/{first}?mine=true",
        data={"decision": "confirm", "note": "same ears", "csrf_token": token},
        follow_redirects=False,
    )
    assert sent.status_code == 303
    assert sent.headers["location"] == f"/review/{other}?mine=true&recorded=confirm&prev={first}"

    again = desk.first.get(f"/review/{first}").text
    assert "1 of 2 confirmations; a second reviewer is needed (yours is counted)" in again
    assert 'value="confirm"' not in again and 'data-testid="confirm-counted"' in again
    assert 'value="reject"' in again and "same ears" in again and "A reviewer" in again
    assert queue_links(desk.first.get("/review?mine=true").text) == [other]
    queue = desk.first.get("/review").text  # still pending: it stays, with my decision
    assert queue_links(queue) == desk.candidates and "1 of 2" in queue
    assert '<span class="badge confirm">confirm</span>' in queue

    seen_by_second = desk.second.get(f"/review/{first}").text
    assert "a second reviewer is needed" in seen_by_second and 'value="confirm"' in seen_by_second
    assert "(yours is counted)" not in seen_by_second
    done = desk.second.post(
        f"/review/{first}",
        data={"decision": "confirm", "csrf_token": csrf_of(seen_by_second)},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"].startswith(f"/review/{other}?")
    assert desk.admin.get(f"/v1/review/{first}").json()["status"] == "confirmed"
    closed = desk.second.get(f"/review/{first}").text
    assert "2 of 2 confirmations" in closed and "it takes no more decisions" in closed
    assert 'name="decision"' not in closed and "Second Reviewer" in closed
    assert queue_links(desk.second.get("/review").text) == [other]

    # the last one waiting: back to the queue, which says so
    last = desk.second.post(
        f"/review/{other}",
        data={"decision": "unsure", "note": "blurred", "csrf_token": csrf_of(closed)},
        follow_redirects=False,
    )
    assert last.headers["location"] == f"/review?done=true&prev={other}"
    queue = desk.second.get(last.headers["location"]).text
    assert "No other candidate is waiting for your decision" in queue
