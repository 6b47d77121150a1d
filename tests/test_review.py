"""Sightings -> candidates routed by organisation -> two-person review -> signed webhook."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from fastapi.testclient import TestClient

from service.matching.webhooks import signature
from service.settings import Settings
from tests.faces_of_t1 import altered_probe
from tests.test_access import JPEG, enroll, make_world
from tests.webhook_receiver import webhook_receiver


def wait_for(predicate: Callable[[], bool], seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sighting_review_and_webhook(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    settings = make_settings(webhook_backoff_seconds=0.05, score_floor=0.3)
    with start_app(settings) as admin, webhook_receiver(fail_first=2) as receiver:
        w = make_world(
            admin,
            {"A": ["registry", "reviewer"], "B": ["registry", "reviewer"], "V": ["volunteer"]},
        )
        r = admin.post(
            "/v1/admin/keys",
            json={"name": "second reviewer", "org_id": w.orgs["A"], "roles": ["reviewer"]},
        )
        reviewer_a2 = TestClient(admin.app, headers={"X-API-Key": r.json()["key"]})
        reg_a, rev_a, rev_b = w.as_("A:registry"), w.as_("A:reviewer"), w.as_("B:reviewer")
        case_a = enroll(reg_a, 4, external_ref="A-4", birth_date="2015-03-01")
        enroll(w.as_("B:registry"), 1)
        hook = reg_a.put("/v1/org/webhook", json={"url": receiver.url})
        assert hook.status_code == 200 and hook.json()["secret"].startswith("whsec_")
        secret = hook.json()["secret"].encode()

        sent = w.as_("V:volunteer").post(
            "/v1/sightings",
            files={"file": ("s.jpg", altered_probe(4), JPEG)},
            data={
                "place": "Bus station",
                "seen_at": "2026-11-01T10:00:00Z",
                "estimated_age": "11",
                "note": "with an adult",
            },
        )
        assert sent.status_code == 201, sent.text
        sighting = sent.json()["id"]

        queue = rev_a.get("/v1/review/queue").json()
        assert [(q["case_id"], q["external_ref"]) for q in queue] == [(case_a, "A-4")]
        candidate = queue[0]["candidate_id"]
        assert rev_b.get("/v1/review/queue").json() == []  # routed to A only
        assert rev_b.get(f"/v1/review/{candidate}").status_code == 404
        assert (
            rev_b.post(f"/v1/review/{candidate}", json={"decision": "confirm"}).status_code == 404
        )

        detail = rev_a.get(f"/v1/review/{candidate}").json()
        assert detail["score"] > 0.5 and detail["case"]["id"] == case_a
        assert detail["probe"]["estimated_age"] == 11 and detail["age_gap"] is not None
        assert detail["probe"]["quality"]["size_px"] > 50
        (photo,) = detail["case_photos"]
        assert (
            photo["template_kinds"] == ["original"]
            and photo["photo_id"] == detail["matched_photo_id"]
        )
        assert rev_a.get(detail["probe"]["url"]).content[:3] == b"\xff\xd8\xff"
        assert rev_a.get(photo["url"]).content[:3] == b"\xff\xd8\xff"
        assert rev_b.get(photo["url"]).status_code == 404
        assert "vector" not in json.dumps(detail)

        first = rev_a.post(f"/v1/review/{candidate}", json={"decision": "confirm", "note": "eyes"})
        assert first.json() == {"candidate_id": candidate, "status": "pending", "confirmations": 1}
        again = rev_a.post(f"/v1/review/{candidate}", json={"decision": "confirm"})
        assert again.json()["status"] == "pending"  # the same reviewer twice is one reviewer
        volunteer_view = w.as_("V:volunteer").get(f"/v1/sightings/{sighting}").json()
        assert volunteer_view["status"] == "in_review"
        assert (
            reviewer_a2.post(f"/v1/review/{candidate}", json={"decision": "maybe"}).status_code
            == 422
        )
        second = reviewer_a2.post(f"/v1/review/{candidate}", json={"decision": "confirm"})
        assert second.json()["status"] == "confirmed" and second.json()["confirmations"] == 2
        assert rev_a.post(f"/v1/review/{candidate}", json={"decision": "reject"}).status_code == 409
        assert w.as_("V:volunteer").get(f"/v1/sightings/{sighting}").json()["status"] == "confirmed"

        assert wait_for(lambda: len(receiver.received) == 1)
        headers, body = receiver.received[0]
        assert headers["X-Homeward-Signature"] == signature(
            secret, headers["X-Homeward-Timestamp"], body
        )
        event = json.loads(body)
        assert event["event"] == "candidate.confirmed"
        assert event["data"]["case_id"] == case_a and event["data"]["place"] == "Bus station"
        assert receiver.calls == 3  # two failures, retried with backoff
        log = reg_a.get("/v1/org/webhook/deliveries").json()
        assert log[0]["status"] == "delivered" and log[0]["attempts"] == 3
        assert w.as_("B:registry").get("/v1/org/webhook/deliveries").json() == []


def test_two_rejections_close_the_sighting(client: TestClient) -> None:
    w = make_world(client, {"A": ["registry", "reviewer"], "V": ["volunteer"]})
    r = client.post(
        "/v1/admin/keys", json={"name": "r2", "org_id": w.orgs["A"], "roles": ["reviewer"]}
    )
    second = TestClient(client.app, headers={"X-API-Key": r.json()["key"]})
    enroll(w.as_("A:registry"), 3)
    sighting = (
        w.as_("V:volunteer")
        .post("/v1/sightings", files={"file": ("s.jpg", altered_probe(3), JPEG)})
        .json()["id"]
    )
    candidates = w.as_("A:reviewer").get("/v1/review/queue").json()
    for c in candidates:
        for reviewer in (w.as_("A:reviewer"), second):
            reviewer.post(f"/v1/review/{c['candidate_id']}", json={"decision": "reject"})
    assert w.as_("V:volunteer").get(f"/v1/sightings/{sighting}").json()["status"] == "closed"
    assert w.as_("A:reviewer").get("/v1/review/queue").json() == []


def test_bad_sightings_are_422(client: TestClient) -> None:
    w = make_world(client, {"V": ["volunteer"]})
    bad = w.as_("V:volunteer").post(
        "/v1/sightings", files={"file": ("s.jpg", b"nope", JPEG)}, data={"estimated_age": "40"}
    )
    assert bad.status_code == 422
    future = w.as_("V:volunteer").post(
        "/v1/sightings",
        files={"file": ("s.jpg", altered_probe(0), JPEG)},
        data={"seen_at": "2999-01-01T00:00:00Z"},
    )
    assert future.status_code == 422
