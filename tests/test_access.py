"""Roles, organisations and ownership: the full permission matrix and the denial cases."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from service.matching.actors import GRANTS, SYSTEM, Permission
from service.settings import Settings
from tests.conftest import container_of, stored_key_hash
from tests.faces_of_t1 import altered_probe, face_crop
from tests.images import encode

JPEG = "image/jpeg"


@dataclass
class World:
    admin: TestClient
    clients: dict[str, TestClient]  # "<org>:<role>" -> client
    orgs: dict[str, str]

    def as_(self, who: str) -> TestClient:
        return self.clients[who]


def make_world(admin: TestClient, spec: dict[str, list[str]]) -> World:
    """Organisations with one key per listed role, made through the admin API."""
    clients, orgs = {}, {}
    for org_name, roles in spec.items():
        org = admin.post("/v1/admin/orgs", json={"name": org_name})
        assert org.status_code == 201, org.text
        orgs[org_name] = org.json()["id"]
        for role in roles:
            r = admin.post(
                "/v1/admin/keys",
                json={"name": f"{org_name} {role}", "org_id": orgs[org_name], "roles": [role]},
            )
            assert r.status_code == 201, r.text
            clients[f"{org_name}:{role}"] = TestClient(
                admin.app, headers={"X-API-Key": r.json()["key"]}
            )
    return World(admin, clients, orgs)


@pytest.fixture
def world(client: TestClient) -> Iterator[World]:
    yield make_world(
        client, {"A": ["registry", "reviewer", "volunteer"], "B": ["registry", "reviewer"]}
    )


def enroll(client: TestClient, face: int, **fields: object) -> str:
    case_id = client.post("/v1/cases", json={"display_name": f"c{face}", **fields}).json()["id"]
    r = client.post(
        f"/v1/cases/{case_id}/photos", files={"file": ("a.jpg", encode(face_crop(face)), JPEG)}
    )
    assert r.status_code == 201, r.text
    return str(case_id)


# Every route with the permission it needs and a request that reaches the permission check.
ROUTES: list[tuple[str, str, Permission, dict]] = [
    ("get", "/v1/info", Permission.INFO, {}),
    ("post", "/v1/cases", Permission.CASES, {"json": {"display_name": "x"}}),
    ("get", "/v1/cases", Permission.CASES, {}),
    ("get", "/v1/cases/none", Permission.CASES, {}),
    ("patch", "/v1/cases/none", Permission.CASES, {"json": {"region": "r"}}),
    ("delete", "/v1/cases/none", Permission.CASES, {}),
    ("post", "/v1/cases/none/photos", Permission.CASES, {}),
    ("get", "/v1/cases/none/photos/p/image", Permission.CASES, {}),
    ("delete", "/v1/cases/none/photos/p", Permission.CASES, {}),
    ("post", "/v1/match", Permission.MATCH, {}),
    ("post", "/v1/ageing", Permission.AGEING, {}),
    ("post", "/v1/admin/ageing/refresh", Permission.ADMIN, {}),
    ("post", "/v1/sightings", Permission.SIGHTINGS, {}),
    ("get", "/v1/sightings", Permission.SIGHTINGS, {}),
    ("get", "/v1/sightings/none", Permission.SIGHTINGS, {}),
    ("get", "/v1/review/queue", Permission.REVIEW, {}),
    ("get", "/v1/review/none", Permission.REVIEW, {}),
    ("get", "/v1/review/none/probe", Permission.REVIEW, {}),
    ("get", "/v1/review/none/photos/p", Permission.REVIEW, {}),
    ("post", "/v1/review/none", Permission.REVIEW, {"json": {"decision": "confirm"}}),
    ("put", "/v1/org/webhook", Permission.WEBHOOK, {"json": {"url": None}}),
    ("get", "/v1/org/webhook/deliveries", Permission.WEBHOOK, {}),
    ("post", "/v1/admin/orgs", Permission.ADMIN, {"json": {"name": ""}}),
    ("get", "/v1/admin/orgs", Permission.ADMIN, {}),
    ("post", "/v1/admin/keys", Permission.ADMIN, {"json": {}}),
    ("get", "/v1/admin/keys", Permission.ADMIN, {}),
    ("delete", "/v1/admin/keys/none", Permission.ADMIN, {}),
    ("get", "/v1/admin/index", Permission.ADMIN, {}),
    ("post", "/v1/admin/index/rebuild", Permission.ADMIN, {}),
    ("get", "/v1/admin/jobs", Permission.ADMIN, {}),
    ("get", "/v1/admin/jobs/none", Permission.ADMIN, {}),
    ("post", "/v1/admin/jobs/none/cancel", Permission.ADMIN, {}),
    ("get", "/v1/admin/export", Permission.ADMIN, {}),
    ("get", "/v1/admin/audit", Permission.ADMIN, {}),
    ("get", "/v1/admin/audit/verify", Permission.ADMIN, {}),
    ("post", "/v1/admin/retention/run", Permission.ADMIN, {}),
    ("get", "/v1/admin/webhooks/deliveries", Permission.ADMIN, {}),
    ("get", "/v1/admin/duplicates", Permission.ADMIN, {}),
    ("post", "/v1/admin/duplicates/links", Permission.ADMIN, {"json": {}}),
    ("get", "/v1/admin/duplicates/links", Permission.ADMIN, {}),
    ("delete", "/v1/admin/duplicates/links/1", Permission.ADMIN, {}),
]


def test_routes_table_covers_every_route(client: TestClient) -> None:
    listed = {(m, p) for m, p, _, _ in ROUTES}
    names = {
        "{case_id}": "none",
        "{photo_id}": "p",
        "{sighting_id}": "none",
        "{candidate_id}": "none",
        "{key_id}": "none",
        "{link_id}": "1",
        "{job_id}": "none",
    }
    for path, methods in client.app.openapi()["paths"].items():
        if path in ("/healthz", "/readyz"):
            continue
        for name, value in names.items():
            path = path.replace(name, value)
        for method in methods:
            assert (method, path) in listed, f"{method} {path} missing from ROUTES"


@pytest.mark.parametrize("role", ["volunteer", "reviewer", "registry", "admin"])
def test_permission_matrix(world: World, role: str) -> None:
    caller = world.admin if role == "admin" else world.as_(f"A:{role}")
    for method, path, permission, kwargs in ROUTES:
        status = getattr(caller, method)(path, **kwargs).status_code
        if permission in GRANTS[role]:
            assert status not in (401, 403), (role, method, path, status)
        else:
            assert status == 403, (role, method, path, status)


def test_other_organisations_cases_are_not_found(world: World) -> None:
    a, b = world.as_("A:registry"), world.as_("B:registry")
    case_a = enroll(a, 0, external_ref="A-1")
    photo = a.get(f"/v1/cases/{case_a}").json()["photos"][0]["id"]
    assert b.get(f"/v1/cases/{case_a}").status_code == 404
    assert b.patch(f"/v1/cases/{case_a}", json={"region": "x"}).status_code == 404
    assert b.delete(f"/v1/cases/{case_a}").status_code == 404
    assert b.get(f"/v1/cases/{case_a}/photos/{photo}/image").status_code == 404
    assert b.delete(f"/v1/cases/{case_a}/photos/{photo}").status_code == 404
    r = b.post(f"/v1/cases/{case_a}/photos", files={"file": ("a.jpg", encode(face_crop(1)), JPEG)})
    assert r.status_code == 404
    assert b.get("/v1/cases").json()["total"] == 0
    # B's searches cover B's cases only; A's registry finds its own case.
    r = b.post("/v1/match", files={"file": ("p.jpg", altered_probe(0), JPEG)})
    assert case_a not in {c["case_id"] for c in r.json()["faces"][0]["candidates"]}
    r = a.post("/v1/match", files={"file": ("p.jpg", altered_probe(0), JPEG)})
    assert r.json()["faces"][0]["candidates"][0]["case_id"] == case_a
    assert a.get(f"/v1/cases/{case_a}/photos/{photo}/image").content[:3] == b"\xff\xd8\xff"


def test_volunteers_see_only_their_own_sightings(world: World, client: TestClient) -> None:
    enroll(world.as_("A:registry"), 2)
    other = make_world(client, {"C": ["volunteer"]}).as_("C:volunteer")
    mine = world.as_("A:volunteer")
    r = mine.post(
        "/v1/sightings",
        files={"file": ("s.jpg", altered_probe(2), JPEG)},
        data={"place": "Station", "estimated_age": "9"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"id", "status", "place", "seen_at", "estimated_age", "created_at"}
    assert mine.get(f"/v1/sightings/{body['id']}").json()["status"] == "received"
    assert other.get(f"/v1/sightings/{body['id']}").status_code == 404
    assert [s["id"] for s in mine.get("/v1/sightings").json()] == [body["id"]]
    assert other.get("/v1/sightings").json() == []


def test_keys_expire_and_are_stored_only_as_hmacs(world: World, client: TestClient) -> None:
    from datetime import UTC, datetime, timedelta

    row, key = container_of(client).access.create_key(
        SYSTEM,
        "short",
        world.orgs["A"],
        ["registry"],
        expires_at=datetime.now(UTC) + timedelta(seconds=1),
    )
    stored = stored_key_hash(client, row.key_id)
    assert key not in stored and len(stored) == 64
    assert TestClient(client.app, headers={"X-API-Key": key}).get("/v1/cases").status_code == 200
    import time

    time.sleep(1.2)
    assert TestClient(client.app, headers={"X-API-Key": key}).get("/v1/cases").status_code == 401
    r = client.post(
        "/v1/admin/keys",
        json={
            "name": "x",
            "org_id": world.orgs["A"],
            "roles": ["registry"],
            "expires_at": "2000-01-01T00:00:00Z",
        },
    )
    assert r.status_code == 422
    r = client.post("/v1/admin/keys", json={"name": "x", "org_id": "nope", "roles": ["registry"]})
    assert r.status_code == 404
    listed = client.get("/v1/admin/keys").json()
    assert all("key" not in k and "secret_hash" not in k for k in listed)


def test_rate_limit_answers_429_with_retry_after(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    settings = make_settings(rate_limits={"volunteer": 2, "admin": 1000})
    with start_app(settings) as admin:
        volunteer = make_world(admin, {"V": ["volunteer"]}).as_("V:volunteer")
        assert [volunteer.get("/v1/sightings").status_code for _ in range(2)] == [200, 200]
        r = volunteer.get("/v1/sightings")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert admin.get("/v1/cases").status_code == 200  # other keys are not affected
