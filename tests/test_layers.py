"""The layers and what the edges share: imports point down, every error has one shape, the
background loops run in a worker that claims its work, and what a new user met."""

from __future__ import annotations

import ast
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.container import Container
from service.errors import StorageUnavailable
from service.matching.actors import SYSTEM, Actor
from service.settings import Settings
from service.worker import Worker
from tests.conftest import REPO, container_of, years_ago
from tests.test_access import make_world
from tests.test_postgres import postgres_url  # noqa: F401  (a fixture)
from tests.test_review import wait_for
from tests.webhook_receiver import webhook_receiver

SERVICE = REPO / "service"


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [folder]


def test_imports_point_down() -> None:
    def offenders(where: Path, banned: tuple[str, ...]) -> list[str]:
        return [
            f"{p.relative_to(REPO)} imports {name}"
            for p in modules(where)
            for name in imports_of(p)
            if name.startswith(banned)
        ]

    outside_registry = [p for p in modules(SERVICE) if "registry" not in p.parts]
    sql = [
        f"{p.relative_to(REPO)}"
        for p in outside_registry
        if any(n.startswith("sqlalchemy") for n in imports_of(p))
    ]
    assert sql == [], "SQL lives in service/registry only"
    assert offenders(SERVICE / "api", ("service.registry", "service.search")) == []
    assert (
        offenders(SERVICE / "cli.py", ("service.api", "service.registry", "service.search")) == []
    )
    assert offenders(SERVICE / "search", ("service.registry", "service.matching")) == []
    assert offenders(SERVICE / "registry", ("service.matching", "service.api")) == []


def test_every_error_has_a_detail_and_a_reason(client: TestClient) -> None:
    anonymous = TestClient(client.app)
    volunteer = make_world(client, {"V": ["volunteer"]}).as_("V:volunteer")
    cases = [
        (anonymous.get("/v1/cases"), 401, "missing_key"),
        (anonymous.get("/v1/cases", headers={"X-API-Key": "hw_" + "x" * 30}), 401, "invalid_key"),
        (volunteer.get("/v1/cases"), 403, "forbidden"),
        (client.get("/v1/cases/nope"), 404, "not_found"),
        (client.get("/v1/no-such-route"), 404, "not_found"),
        (client.put("/v1/cases"), 405, "method_not_allowed"),
        (client.post("/v1/cases", json={"display_name": ""}), 422, "invalid_input"),
        (client.post("/v1/cases", content=b"{not json"), 422, "invalid_input"),
    ]
    for response, status, reason in cases:
        body = response.json()
        assert (response.status_code, body.get("reason")) == (status, reason), body
        assert isinstance(body["detail"], str) and body["detail"]
    assert cases[0][0].headers["WWW-Authenticate"] == "ApiKey"


def test_nulls_are_told_apart_from_duplicate_refs(client: TestClient) -> None:
    first = client.post("/v1/cases", json={"display_name": "A", "external_ref": "R-1"}).json()
    other = client.post("/v1/cases", json={"display_name": "B", "external_ref": "R-2"}).json()
    for field in ("sex", "status", "display_name"):
        r = client.patch(f"/v1/cases/{first['id']}", json={field: None})
        assert r.status_code == 422 and field in r.json()["detail"], r.text
    r = client.patch(f"/v1/cases/{other['id']}", json={"external_ref": "R-1"})
    assert r.status_code == 409 and "R-1" in r.json()["detail"]
    born = str(years_ago(9))
    r = client.patch(f"/v1/cases/{first['id']}", json={"missing_since": "2000-01-01"})
    assert r.status_code == 200
    r = client.patch(f"/v1/cases/{first['id']}", json={"birth_date": born})
    assert r.status_code == 422 and "before birth_date" in r.json()["detail"]  # merged rule


def test_key_expiry_without_a_time_zone_is_utc(client: TestClient) -> None:
    org = client.post("/v1/admin/orgs", json={"name": "Z"}).json()["id"]
    r = client.post(
        "/v1/admin/keys",
        json={"name": "k", "org_id": org, "roles": ["registry"], "expires_at": "2999-01-01T00:00"},
    )
    assert r.status_code == 201 and r.json()["expires_at"].startswith("2999-01-01T00:00:00")
    assert r.json()["expires_at"].endswith(("Z", "+00:00"))


def test_readyz_checks_the_database_and_the_index(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert client.get("/readyz").json() == {"status": "ready"}
    built = container_of(client)
    monkeypatch.setattr(built.index, "ready", False)
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["detail"] == "index not loaded"

    def unreachable() -> None:
        raise StorageUnavailable("the registry database is unavailable")

    monkeypatch.setattr(built.db, "ping", unreachable)
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["reason"] == "not_ready"
    assert r.json()["detail"] == "database unavailable; index not loaded"


def test_29_february_counts_back_to_the_28th() -> None:
    assert years_ago(1, date(2024, 2, 29)) == date(2023, 2, 28)
    assert years_ago(4, date(2024, 2, 29)) == date(2020, 2, 29)


# -- the worker ------------------------------------------------------------------------------


def webhook_org(built: Container, url: str, name: str = "Hooked") -> str:
    org = built.access.create_org(SYSTEM, name)
    built.access.set_webhook(Actor("test", org.id, frozenset({"registry"})), url)
    return org.id


def queue_events(built: Container, org_id: str, count: int) -> None:
    for n in range(count):
        with built.db.unit() as tx:
            tx.outbox.enqueue(org_id, "test.event", {"n": n})


def test_the_api_runs_no_loops_without_the_worker(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    with start_app(make_settings(with_worker=False)) as client, webhook_receiver() as receiver:
        built = container_of(client)
        queue_events(built, webhook_org(built, receiver.url), 1)
        time.sleep(1.5)
        assert receiver.calls == 0
        worker = Worker(built)
        worker.start()
        try:
            assert wait_for(lambda: len(receiver.received) == 1)
        finally:
            worker.stop()


def claim_from_two_workers(settings: Settings) -> tuple[int, int]:
    """Two workers (each its own container and connections) send 30 queued deliveries at
    once; returns (deliveries received, distinct deliveries received)."""
    with webhook_receiver() as receiver:
        first, second = Container(settings), Container(settings)
        try:
            queue_events(first, webhook_org(first, receiver.url), 30)

            def drain(built: Container) -> None:
                while built.webhooks.deliver_due():
                    pass

            threads = [threading.Thread(target=drain, args=(b,)) for b in (first, second)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            ids = [h["X-Homeward-Delivery"] for h, _ in receiver.received]
            return len(ids), len(set(ids))
        finally:
            first.close()
            second.close()


def test_two_workers_never_send_one_delivery_twice(make_settings: Callable[..., Settings]) -> None:
    assert claim_from_two_workers(make_settings()) == (30, 30)


@pytest.mark.postgres
def test_two_workers_claim_with_skip_locked_on_postgres(
    postgres_url: str,  # noqa: F811
    make_settings: Callable[..., Settings],
) -> None:
    assert claim_from_two_workers(make_settings(database_url=postgres_url)) == (30, 30)


def test_commands_build_only_what_they_use(make_settings: Callable[..., Settings]) -> None:
    built = Container(make_settings())
    try:
        built.access.orgs(SYSTEM)
        assert "pipeline" not in built.__dict__ and "index" not in built.__dict__
    finally:
        built.close()
