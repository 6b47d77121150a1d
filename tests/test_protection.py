"""Audit log, retention, encryption at rest, export and the score floor."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.container import Container
from service.matching.actors import SYSTEM
from service.settings import Settings
from tests.conftest import container_of
from tests.faces_of_t1 import altered_probe, face_crop
from tests.images import encode
from tests.test_access import JPEG, enroll, make_world


def services(client: TestClient) -> Container:
    return container_of(client)


def actions(client: TestClient) -> list[str]:
    return [r["action"] for r in client.get("/v1/admin/audit", params={"limit": 1000}).json()]


# -- audit ---------------------------------------------------------------------------------


def test_every_sensitive_action_is_audited_and_the_chain_verifies(client: TestClient) -> None:
    w = make_world(client, {"A": ["registry", "reviewer"], "V": ["volunteer"]})
    reg = w.as_("A:registry")
    case_id = enroll(reg, 0)
    photo = reg.get(f"/v1/cases/{case_id}").json()["photos"][0]["id"]
    reg.get(f"/v1/cases/{case_id}/photos/{photo}/image")
    probe = altered_probe(0)
    reg.post("/v1/match", files={"file": ("p.jpg", probe, JPEG)})
    w.as_("V:volunteer").post("/v1/sightings", files={"file": ("s.jpg", probe, JPEG)})
    candidate = w.as_("A:reviewer").get("/v1/review/queue").json()[0]["candidate_id"]
    w.as_("A:reviewer").get(f"/v1/review/{candidate}")
    w.as_("A:reviewer").post(f"/v1/review/{candidate}", json={"decision": "unsure"})
    client.get("/v1/admin/export")
    key_id = client.get("/v1/admin/keys").json()[-1]["key_id"]
    client.delete(f"/v1/admin/keys/{key_id}")
    reg.delete(f"/v1/cases/{case_id}")
    done = set(actions(client))
    for action in (
        "org.create",
        "key.create",
        "case.create",
        "photo.enroll",
        "photo.view",
        "match",
        "sighting.create",
        "candidate.view",
        "review.decide",
        "export",
        "key.revoke",
        "case.delete",
    ):
        assert action in done, action
    match = next(r for r in client.get("/v1/admin/audit", params={"action": "match"}).json())
    assert match["input_sha256"] == __import__("hashlib").sha256(probe).hexdigest()
    assert case_id in json.loads(match["result_ids"])
    assert match["key_id"] == services(client).access.authenticate(reg.headers["X-API-Key"]).key_id
    assert client.get("/v1/admin/audit/verify").json()["ok"] is True


def test_edited_or_removed_audit_records_are_detected(client: TestClient) -> None:
    enroll(client, 1)
    client.post("/v1/match", files={"file": ("p.jpg", altered_probe(1), JPEG)})
    enroll(client, 2)  # so the match record sits inside the chain
    engine = services(client).db.engine
    assert services(client).admin.audit_verify(SYSTEM).ok
    with engine.begin() as c:
        c.execute(text("UPDATE audit_log SET result_ids = '[]' WHERE action = 'match'"))
    report = services(client).admin.audit_verify(SYSTEM)
    assert not report.ok and any("altered" in p for p in report.problems)
    with engine.begin() as c:
        c.execute(text("DELETE FROM audit_log WHERE action = 'match'"))
    problems = services(client).admin.audit_verify(SYSTEM).problems
    assert any("missing" in p for p in problems) and any("follow" in p for p in problems)
    with engine.begin() as c:
        c.execute(text("DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)"))
        c.execute(text("DELETE FROM audit_log WHERE seq < (SELECT MAX(seq) FROM audit_log) - 1"))
    assert any("removed" in p for p in services(client).admin.audit_verify(SYSTEM).problems)


def test_audit_verify_command_fails_on_a_damaged_log(
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from service.cli import main

    settings = make_settings()
    with start_app(settings) as client:
        enroll(client, 2)
    for name in ("data_dir", "secret_key", "photo_key", "admin_key", "model_dir"):
        value = getattr(settings, name)
        value = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        monkeypatch.setenv(f"HOMEWARD_{name.upper()}", str(value))
    runner = CliRunner()
    ok = runner.invoke(main, ["audit", "verify"])
    assert ok.exit_code == 0 and "audit log intact" in ok.output
    from sqlalchemy import create_engine

    engine = create_engine(settings.resolved_database_url)
    with engine.begin() as c:
        c.execute(text("DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)"))
    engine.dispose()
    bad = runner.invoke(main, ["audit", "verify"])
    assert bad.exit_code == 1 and "damaged" in bad.output


def test_a_search_fails_when_its_audit_record_cannot_be_written(client: TestClient) -> None:
    enroll(client, 3)
    with services(client).db.engine.begin() as c:
        c.execute(
            text(
                "CREATE TRIGGER audit_full BEFORE INSERT ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        )
    r = client.post("/v1/match", files={"file": ("p.jpg", altered_probe(3), JPEG)})
    assert r.status_code == 503 and r.json()["reason"] == "audit_unavailable"
    assert "candidates" not in r.text


# -- retention -----------------------------------------------------------------------------


def test_closed_cases_are_purged_after_the_retention_period(client: TestClient) -> None:
    svc = services(client)
    case_id = enroll(client, 5)
    enroll(client, 0)  # an open case, which stays
    photo_files = list(svc.settings.photo_dir.glob("*/*.jpg"))
    assert len(photo_files) == 2
    assert client.patch(f"/v1/cases/{case_id}", json={"status": "closed"}).status_code == 200
    assert svc.maintenance.run_retention(SYSTEM).cases_purged == 0  # not yet 30 days
    later = datetime.now(UTC) + timedelta(days=31)
    report = svc.maintenance.run_retention(SYSTEM, now=later)
    assert report.cases_purged == 1
    assert client.get(f"/v1/cases/{case_id}").status_code == 404
    assert len(list(svc.settings.photo_dir.glob("*/*.jpg"))) == 1
    with svc.db.engine.connect() as c:
        for table in ("photos", "templates"):
            n = c.execute(
                text(f"SELECT COUNT(*) FROM {table} WHERE case_id = :c"), {"c": case_id}
            ).scalar()
            assert n == 0, table
    assert svc.index.size == 1
    r = client.post(
        "/v1/match", files={"file": ("p.jpg", altered_probe(5), JPEG)}, data={"top_k": "50"}
    )
    assert case_id not in {c["case_id"] for c in r.json()["faces"][0]["candidates"]}
    purge = client.get("/v1/admin/audit", params={"action": "retention.purge_case"}).json()
    assert [p["target"] for p in purge] == [case_id]


def test_unconfirmed_sightings_are_purged_after_their_period(client: TestClient) -> None:
    svc = services(client)
    w = make_world(client, {"A": ["registry"], "V": ["volunteer"]})
    enroll(w.as_("A:registry"), 2)
    volunteer = w.as_("V:volunteer")
    sighting = volunteer.post(
        "/v1/sightings", files={"file": ("s.jpg", altered_probe(2), JPEG)}
    ).json()["id"]
    files_before = len(list(svc.settings.photo_dir.glob("*/*")))
    assert (
        svc.maintenance.run_retention(
            SYSTEM, now=datetime.now(UTC) + timedelta(days=89)
        ).sightings_purged
        == 0
    )
    report = svc.maintenance.run_retention(SYSTEM, now=datetime.now(UTC) + timedelta(days=91))
    assert report.sightings_purged == 1
    assert volunteer.get(f"/v1/sightings/{sighting}").status_code == 404
    assert len(list(svc.settings.photo_dir.glob("*/*"))) == files_before - 1
    with svc.db.engine.connect() as c:
        assert c.execute(text("SELECT COUNT(*) FROM candidates")).scalar() == 0
    assert (
        client.get("/v1/admin/audit", params={"action": "retention.purge_sighting"}).json()[0][
            "target"
        ]
        == sighting
    )


# -- encryption at rest ----------------------------------------------------------------------


def test_photos_are_encrypted_on_disk(client: TestClient) -> None:
    case_id = enroll(client, 1)
    (stored,) = services(client).settings.photo_dir.glob("*/*.jpg")
    blob = stored.read_bytes()
    assert b"\xff\xd8\xff" not in blob[:64] and b"JFIF" not in blob
    photo = client.get(f"/v1/cases/{case_id}").json()["photos"][0]["id"]
    image = client.get(f"/v1/cases/{case_id}/photos/{photo}/image")
    assert image.status_code == 200 and image.content[:3] == b"\xff\xd8\xff"


def test_a_lost_photo_key_makes_photos_unreadable_not_the_service(
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings()
    with start_app(settings) as first:
        case_id = enroll(first, 2)
        photo = first.get(f"/v1/cases/{case_id}").json()["photos"][0]["id"]
    other_key = base64.b64encode(b"x" * 32).decode()
    with caplog.at_level("ERROR"), start_app(make_settings(photo_key=other_key)) as second:
        assert any("photos are unreadable" in r.getMessage() for r in caplog.records)
        info = second.get("/v1/info").json()
        assert info["photos_readable"] is False
        r = second.get(f"/v1/cases/{case_id}/photos/{photo}/image")
        assert r.status_code == 503 and r.json()["reason"] == "photo_key_mismatch"
        r = second.post(
            f"/v1/cases/{case_id}/photos", files={"file": ("a.jpg", encode(face_crop(3)), JPEG)}
        )
        assert r.status_code == 503
        r = second.post("/v1/match", files={"file": ("p.jpg", altered_probe(2), JPEG)})
        assert r.json()["faces"][0]["candidates"][0]["case_id"] == case_id


def test_secrets_file_is_created_outside_the_data_dir(
    make_settings: Callable[..., Settings],
    tmp_path,
    start_app,  # type: ignore[no-untyped-def]
) -> None:
    from service.errors import InvalidInput
    from service.security import resolve_secrets

    settings = make_settings(secret_key=None, photo_key=None)
    first = resolve_secrets(settings)
    assert settings.secrets_file.stat().st_mode & 0o777 == 0o600
    assert resolve_secrets(settings) == first
    inside = make_settings(
        secret_key=None, photo_key=None, secrets_file=settings.data_dir / "secrets.json"
    )
    with pytest.raises(InvalidInput, match="must not lie inside the data dir"):
        resolve_secrets(inside)


# -- export and floor ------------------------------------------------------------------------


def test_only_the_admin_export_returns_embeddings(client: TestClient) -> None:
    w = make_world(client, {"A": ["registry"]})
    case_id = enroll(w.as_("A:registry"), 4)
    body = client.get("/v1/admin/export").json()
    (case,) = [c for c in body["cases"] if c["id"] == case_id]
    (template,) = case["templates"]
    vector = np.frombuffer(base64.b64decode(template["vector_f32_b64"]), dtype="<f4")
    assert vector.shape == (128,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-4
    reg = w.as_("A:registry")
    for response in (
        reg.get(f"/v1/cases/{case_id}"),
        reg.get("/v1/cases"),
        reg.post("/v1/match", files={"file": ("p.jpg", altered_probe(4), JPEG)}),
    ):
        assert "vector" not in response.text and "embedding" not in response.text
    assert reg.get("/v1/admin/export").status_code == 403


def test_score_floor_cannot_be_lowered(client: TestClient) -> None:
    for face in range(6):
        enroll(client, face)
    floor = services(client).settings.score_floor
    r = client.post(
        "/v1/match",
        files={"file": ("p.jpg", altered_probe(0), JPEG)},
        data={"min_score": "-1", "top_k": "50"},
    )
    body = r.json()
    assert body["score_floor"] == floor
    scores = [c["score"] for c in body["faces"][0]["candidates"]]
    assert scores and min(scores) >= floor
    raised = client.post(
        "/v1/match", files={"file": ("p.jpg", altered_probe(0), JPEG)}, data={"min_score": "0.5"}
    ).json()
    assert raised["score_floor"] == 0.5
    assert all(c["score"] >= 0.5 for c in raised["faces"][0]["candidates"])
    assert len(raised["faces"][0]["candidates"]) == 1
