"""Duplicate cases: the same child registered by two organisations, found by the admin list
(real SFace, the shipped template transform and calibrated threshold), linked, unlinked."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from service.cli import main
from service.errors import ModelUnavailable
from service.matching.duplicates import SHIPPED, calibrated_threshold
from service.search.transform import resolve_transform
from service.settings import Settings
from tests.conftest import container_of
from tests.faces_of_t1 import altered_probe, face_crop
from tests.images import encode
from tests.test_access import World, make_world
from tests.test_cli import runner  # noqa: F401  (the CLI on a fresh data dir)
from tests.test_postgres import postgres_url  # noqa: F401  (a fresh database)

JPEG = "image/jpeg"


def enroll(client: TestClient, ref: str, photo: bytes) -> str:
    r = client.post("/v1/cases", json={"display_name": f"Child {ref}", "external_ref": ref})
    assert r.status_code == 201, r.text
    case_id = str(r.json()["id"])
    r = client.post(f"/v1/cases/{case_id}/photos", files={"file": ("p.jpg", photo, JPEG)})
    assert r.status_code == 201, r.text
    return case_id


@dataclass
class Registered:
    world: World
    ids: dict[str, str]  # external ref -> case id

    @property
    def admin(self) -> TestClient:
        return self.world.admin

    def registry(self, org: str) -> TestClient:
        return self.world.as_(f"{org}:registry")


@pytest.fixture
def reg(client: TestClient) -> Registered:
    """Two organisations, each with a registry key, that both registered t1's first person
    (one from a photo, the other from an altered copy), and each one unrelated person."""
    w = make_world(client, {"Family association": ["registry"], "Police": ["registry"]})
    family, police = w.as_("Family association:registry"), w.as_("Police:registry")
    ids = {
        "FA-1": enroll(family, "FA-1", encode(face_crop(0))),
        "FA-2": enroll(family, "FA-2", encode(face_crop(3))),
        "P-7": enroll(police, "P-7", altered_probe(0)),
        "P-8": enroll(police, "P-8", encode(face_crop(2))),
    }
    return Registered(w, ids)


def audit(client: TestClient, action: str) -> list[dict]:
    r = client.get("/v1/admin/audit", params={"action": action})
    assert r.status_code == 200, r.text
    return list(r.json())


def test_the_admin_list_shows_exactly_the_cross_organisation_pair(reg: Registered) -> None:
    admin, ids = reg.admin, reg.ids
    r = admin.get("/v1/admin/duplicates")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["threshold"] == calibrated_threshold(None, body["model_id"], "sface-flip-wccn-v1")
    assert body["total"] == 1 and len(body["pairs"]) == 1
    (pair,) = body["pairs"]
    sides = {
        pair["case_a"]["external_ref"]: pair["case_a"],
        pair["case_b"]["external_ref"]: pair["case_b"],
    }
    assert set(sides) == {"FA-1", "P-7"}
    assert sides["FA-1"]["case_id"] == ids["FA-1"] and sides["P-7"]["case_id"] == ids["P-7"]
    assert sides["FA-1"]["org_name"] == "Family association"
    assert sides["P-7"]["org_name"] == "Police"
    assert pair["case_a"]["case_id"] < pair["case_b"]["case_id"]
    assert pair["score"] >= body["threshold"] + 0.2  # the same face: far above it
    assert pair["same_org"] is False and pair["linked"] is False and pair["link_id"] is None
    assert {pair["photo_a"], pair["photo_b"]} == {
        admin.get(f"/v1/cases/{ids[ref]}").json()["photos"][0]["id"] for ref in ("FA-1", "P-7")
    }
    (record,) = audit(admin, "duplicates.list")
    assert json.loads(record["result_ids"]) == sorted([ids["FA-1"], ids["P-7"]])

    # min_score only raises the threshold
    lower = admin.get("/v1/admin/duplicates", params={"min_score": -1}).json()
    assert lower["threshold"] == body["threshold"] and lower["total"] == 1
    higher = admin.get("/v1/admin/duplicates", params={"min_score": 0.999}).json()
    assert higher["threshold"] == 0.999 and higher["pairs"] == []
    assert admin.get("/v1/admin/duplicates", params={"limit": 101}).status_code == 422


def test_pairs_within_one_organisation_only_when_asked(reg: Registered) -> None:
    again = enroll(reg.registry("Police"), "P-9", altered_probe(2))  # P-8's, registered twice
    plain = reg.admin.get("/v1/admin/duplicates").json()
    assert plain["total"] == 1 and plain["pairs"][0]["same_org"] is False  # FA-1 and P-7
    both = reg.admin.get("/v1/admin/duplicates", params={"same_org": True}).json()
    assert both["total"] == 2
    inside = next(p for p in both["pairs"] if p["same_org"])
    assert {inside["case_a"]["case_id"], inside["case_b"]["case_id"]} == {reg.ids["P-8"], again}


def test_registry_keys_may_not_list_or_link(reg: Registered) -> None:
    for org in ("Family association", "Police"):
        caller = reg.registry(org)
        assert caller.get("/v1/admin/duplicates").status_code == 403
        assert caller.get("/v1/admin/duplicates/links").status_code == 403
        body = {"case_a": reg.ids["FA-1"], "case_b": reg.ids["P-7"]}
        assert caller.post("/v1/admin/duplicates/links", json=body).status_code == 403
        assert caller.delete("/v1/admin/duplicates/links/1").status_code == 403
    # a registry still sees only its own case, and nothing of the other's
    family = reg.registry("Family association")
    assert family.get(f"/v1/cases/{reg.ids['P-7']}").status_code == 404
    assert [c["external_ref"] for c in family.get("/v1/cases").json()["items"]] == ["FA-1", "FA-2"]


def test_linking_is_recorded_audited_and_shown(reg: Registered) -> None:
    admin, ids = reg.admin, reg.ids
    body = {"case_a": ids["P-7"], "case_b": ids["FA-1"], "note": "same child, checked by phone"}
    r = admin.post("/v1/admin/duplicates/links", json=body)
    assert r.status_code == 201, r.text
    link = r.json()
    assert {link["case_a"]["external_ref"], link["case_b"]["external_ref"]} == {"FA-1", "P-7"}
    assert link["case_a"]["case_id"] < link["case_b"]["case_id"]
    assert link["note"] == "same child, checked by phone"
    (record,) = audit(admin, "case.link")
    assert record["target"] == str(link["id"])
    assert json.loads(record["result_ids"]) == sorted([ids["FA-1"], ids["P-7"]])
    assert "checked by phone" not in json.dumps(record)  # free text stays out of the log

    (pair,) = admin.get("/v1/admin/duplicates").json()["pairs"]
    assert pair["linked"] is True and pair["link_id"] == link["id"]
    links = admin.get("/v1/admin/duplicates/links").json()
    assert links["total"] == 1 and links["items"][0]["id"] == link["id"]
    assert (
        links["items"][0]["linked_by"]
        == container_of(admin).access.authenticate(admin.headers["X-API-Key"]).key_id
    )

    # the same pair again (either order), a case with itself, an unknown case
    again = admin.post(
        "/v1/admin/duplicates/links", json={"case_a": ids["FA-1"], "case_b": ids["P-7"]}
    )
    assert again.status_code == 409 and again.json()["reason"] == "conflict"
    itself = admin.post(
        "/v1/admin/duplicates/links", json={"case_a": ids["FA-1"], "case_b": ids["FA-1"]}
    )
    assert itself.status_code == 422 and itself.json()["reason"] == "invalid_input"
    unknown = admin.post(
        "/v1/admin/duplicates/links", json={"case_a": ids["FA-1"], "case_b": "f" * 32}
    )
    assert unknown.status_code == 404 and unknown.json()["reason"] == "not_found"
    assert admin.post("/v1/admin/duplicates/links", json={"case_a": ids["FA-1"]}).status_code == 422

    # unlinking
    assert admin.delete(f"/v1/admin/duplicates/links/{link['id']}").status_code == 204
    assert admin.delete(f"/v1/admin/duplicates/links/{link['id']}").status_code == 404
    assert admin.delete(f"/v1/admin/duplicates/links/{2**63}").status_code == 422
    (record,) = audit(admin, "case.unlink")
    assert json.loads(record["result_ids"]) == sorted([ids["FA-1"], ids["P-7"]])
    assert admin.get("/v1/admin/duplicates").json()["pairs"][0]["linked"] is False
    assert admin.get("/v1/admin/audit/verify").json()["ok"] is True


def test_deleting_a_case_deletes_its_links(reg: Registered) -> None:
    admin, ids = reg.admin, reg.ids
    r = admin.post("/v1/admin/duplicates/links", json={"case_a": ids["FA-1"], "case_b": ids["P-7"]})
    assert r.status_code == 201, r.text
    assert reg.registry("Police").delete(f"/v1/cases/{ids['P-7']}").status_code == 204
    assert admin.get("/v1/admin/duplicates/links").json()["total"] == 0
    assert admin.get("/v1/admin/duplicates").json()["total"] == 0
    assert admin.delete(f"/v1/admin/duplicates/links/{r.json()['id']}").status_code == 404


def test_a_model_without_a_calibrated_threshold_needs_the_setting(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    with start_app(make_settings(template_transform="none")) as client:  # not calibrated
        r = client.get("/v1/admin/duplicates")
        assert r.status_code == 503 and r.json()["reason"] == "duplicate_threshold_unset"
        assert "HOMEWARD_DUPLICATE_THRESHOLD" in r.json()["detail"]
        assert audit(client, "duplicates.list") == []
    with start_app(make_settings(template_transform="none", duplicate_threshold=0.5)) as client:
        r = client.get("/v1/admin/duplicates")
        assert r.status_code == 200 and r.json()["threshold"] == 0.5


def test_the_calibrated_thresholds(tmp_path: Path) -> None:
    shipped = json.loads(SHIPPED.read_text())["thresholds"]
    settings = Settings(model_backend="sface")
    sface = "sface:face_recognition_sface_2021dec:0ba9fbfa01b5"
    for model_id in (sface + "+flip", sface):
        entry = shipped[model_id]
        transform = resolve_transform(settings.template_transform, model_id, 128)
        assert entry["transform"] == transform.version
        assert 0.2 < entry["threshold"] < 0.6
        assert entry["fmr_target"] == 1e-3 and entry["figures"]["fmr"] <= 1e-3
        for check in entry["leave_subjects_out"]:  # measured on people it was not fitted on
            assert check["fmr"] < 2e-3 and check["tmr_gap_0_2"] > 0.7
        assert calibrated_threshold(None, model_id, transform.version) == entry["threshold"]
        assert calibrated_threshold(0.42, model_id, transform.version) == 0.42
    with pytest.raises(ModelUnavailable, match="HOMEWARD_DUPLICATE_THRESHOLD"):
        calibrated_threshold(None, "dlib:unknown", "none")
    with pytest.raises(ModelUnavailable, match="template transform"):
        calibrated_threshold(None, sface, "none")
    with pytest.raises(ModelUnavailable):
        calibrated_threshold(None, sface, "sface-wccn-v1", tmp_path / "absent.json")


def test_the_cli_lists_and_links_the_pair(runner: CliRunner, tmp_path: Path) -> None:  # noqa: F811
    for org, rows in {
        "Family association": [("FA-1", encode(face_crop(0))), ("FA-2", encode(face_crop(3)))],
        "Police": [("P-7", altered_probe(0)), ("P-8", encode(face_crop(2)))],
    }.items():
        folder = tmp_path / org.split()[0]
        folder.mkdir()
        lines = ["external_ref,display_name,photo"]
        for ref, photo in rows:
            (folder / f"{ref}.jpg").write_bytes(photo)
            lines.append(f"{ref},Child {ref},{ref}.jpg")
        (folder / "cases.csv").write_text("\n".join(lines) + "\n")
        result = runner.invoke(
            main, ["enroll", str(folder / "cases.csv"), "--org", org, "--create-org"]
        )
        assert result.exit_code == 0 and "enrolled 2 photo(s)" in result.output, result.output

    listed = runner.invoke(main, ["duplicates"])
    assert listed.exit_code == 0, listed.output
    assert "1 pair(s)" in listed.output
    row = next(line for line in listed.output.splitlines() if "FA-1" in line)
    assert "(Family association)" in row and "P-7 (Police)" in row and row.endswith("no")
    assert "FA-2" not in listed.output and "P-8" not in listed.output
    case_a, case_b = re.findall(r"\b[0-9a-f]{32}\b", listed.output)
    assert runner.invoke(main, ["duplicates", "--min-score", "0.999"]).output.count("0 pair(s)")

    linked = runner.invoke(main, ["duplicates", "link", case_a, case_b, "--note", "checked"])
    assert linked.exit_code == 0 and "link 1" in linked.output, linked.output
    again = runner.invoke(main, ["duplicates", "link", case_b, case_a])
    assert again.exit_code == 1 and "already linked" in again.output
    assert "yes (link 1)" in runner.invoke(main, ["duplicates"]).output
    links = runner.invoke(main, ["duplicates", "links"])
    assert "1 link(s)" in links.output and "by cli" in links.output and "checked" in links.output
    assert "removed link 1" in runner.invoke(main, ["duplicates", "unlink", "1"]).output
    gone = runner.invoke(main, ["duplicates", "unlink", str(2**64)])
    assert gone.exit_code == 1 and "not found" in gone.output


@pytest.mark.postgres
def test_links_on_postgres(
    postgres_url: str,  # noqa: F811
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
) -> None:
    with start_app(make_settings(database_url=postgres_url)) as client:
        w = make_world(client, {"Family association": ["registry"], "Police": ["registry"]})
        a = enroll(w.as_("Family association:registry"), "FA-1", encode(face_crop(0)))
        b = enroll(w.as_("Police:registry"), "P-7", altered_probe(0))
        (pair,) = client.get("/v1/admin/duplicates").json()["pairs"]
        assert {pair["case_a"]["case_id"], pair["case_b"]["case_id"]} == {a, b}
        r = client.post("/v1/admin/duplicates/links", json={"case_a": b, "case_b": a})
        assert r.status_code == 201, r.text
        assert client.get("/v1/admin/duplicates").json()["pairs"][0]["linked"] is True
        assert w.as_("Police:registry").delete(f"/v1/cases/{b}").status_code == 204
        assert client.get("/v1/admin/duplicates/links").json()["total"] == 0
