"""The admin page (TestClient): status, rebuild, keys, organisations, audit, retention."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from service.settings import Settings
from tests.conftest import ADMIN_KEY

PAGE = {"accept": "text/html"}


def form_token(client: TestClient) -> str:
    """The sign-in form's own token (its double-submit cookie is set on the client)."""
    token = re.search(r'name="form_token" value="([^"]+)"', client.get("/signin").text)
    assert token
    return token[1]


def sign_in(client: TestClient, key: str) -> None:
    """Signs the client in through the form, like a browser."""
    answer = client.post(
        "/signin", data={"api_key": key, "form_token": form_token(client)}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text


def csrf_of(client: TestClient, path: str) -> str:
    """The session's CSRF token, as a page carries it."""
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', client.get(path, headers=PAGE).text)
    assert csrf
    return csrf[1]


@pytest.fixture
def admin_page(client: TestClient) -> tuple[TestClient, str]:
    client.headers.pop("X-API-Key")  # the browser has only its cookie
    sign_in(client, ADMIN_KEY)
    return client, csrf_of(client, "/admin")


def test_the_page_shows_the_model_and_index(admin_page: tuple[TestClient, str]) -> None:
    client, _ = admin_page
    page = client.get("/admin", headers=PAGE)
    assert page.status_code == 200
    assert "sface" in page.text and 'data-testid="index-generation"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_rebuild_is_a_job_the_page_follows(admin_page: tuple[TestClient, str]) -> None:
    client, csrf = admin_page
    assert "none recorded" in client.get("/admin", headers=PAGE).text
    started = client.post("/admin/index/rebuild", data={"csrf_token": csrf}, headers=PAGE)
    assert started.status_code == 200 and 'data-testid="job-state"' in started.text
    job_url = re.search(r'data-job-url="(/admin/jobs/[0-9a-f]+)"', started.text)
    assert job_url and 'src="/static/admin.js"' in started.text
    deadline = time.monotonic() + 30
    while (job := client.get(job_url[1], headers={"accept": "application/json"}).json())[
        "status"
    ] != "done":
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["state"].startswith("Rebuild done") and "sample searches found" in job["figures"]
    page = client.get("/admin?notice=rebuilt", headers=PAGE).text  # where the script goes
    assert "was rebuilt" in page and "none recorded" not in page  # the audit log's last rebuild
    assert "Rebuild done" in page and "Rebuild the index" in page
    rebuilds = client.get("/v1/admin/audit?action=index.rebuild", headers={"X-API-Key": ADMIN_KEY})
    assert len(rebuilds.json()) == 1


def test_a_queued_job_can_be_cancelled_from_the_page(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    with start_app(make_settings(with_worker=False)) as client:  # nobody runs the job
        client.headers.pop("X-API-Key")
        sign_in(client, ADMIN_KEY)
        csrf = csrf_of(client, "/admin")
        page = client.post("/admin/index/rebuild", data={"csrf_token": csrf}, headers=PAGE).text
        assert "Rebuild queued" in page and "Rebuild the index" not in page
        job_id = re.search(r'data-job-url="/admin/jobs/([0-9a-f]+)"', page)
        assert job_id and 'aria-live="polite"' in page and "<progress" in page
        forged = client.post(f"/admin/jobs/{job_id[1]}/cancel", data={"csrf_token": "x"})
        assert forged.status_code == 403
        page = client.post(
            f"/admin/jobs/{job_id[1]}/cancel", data={"csrf_token": csrf}, headers=PAGE
        ).text
        assert "Rebuild cancelled" in page and "Rebuild the index" in page


def test_a_new_key_is_shown_once_and_can_be_revoked(admin_page: tuple[TestClient, str]) -> None:
    client, csrf = admin_page
    client.post("/admin/orgs", data={"csrf_token": csrf, "name": "Shelter"}, headers=PAGE)
    page = client.get("/admin", headers=PAGE).text
    org_id = re.search(r'<option value="([0-9a-f]+)">Shelter</option>', page)
    assert org_id
    form = {"csrf_token": csrf, "name": "street team", "org_id": org_id[1], "roles": "volunteer"}
    created = client.post("/admin/keys", data=form, headers=PAGE)
    assert created.status_code == 201
    plaintext = re.search(r'value="(hw_[^"]+)" data-testid="new-key"', created.text)
    assert plaintext
    headers = {"X-API-Key": plaintext[1]}
    assert client.get("/v1/info", headers=headers).status_code == 200
    assert plaintext[1] not in client.get("/admin", headers=PAGE).text  # never shown again

    key_id = next(k["key_id"] for k in _keys(client) if k["name"] == "street team")
    revoked = client.post(f"/admin/keys/{key_id}/revoke", data={"csrf_token": csrf}, headers=PAGE)
    assert "was revoked" in revoked.text
    assert client.get("/v1/info", headers=headers).status_code == 401


def test_the_admin_role_outside_the_admin_org_is_refused_on_the_page(
    admin_page: tuple[TestClient, str],
) -> None:
    client, csrf = admin_page
    client.post("/admin/orgs", data={"csrf_token": csrf, "name": "Police"}, headers=PAGE)
    org_id = re.search(r'<option value="([0-9a-f]+)">Police</option>', client.get("/admin").text)
    assert org_id
    form = {"csrf_token": csrf, "name": "x", "org_id": org_id[1], "roles": "admin"}
    refused = client.post("/admin/keys", data=form, headers=PAGE)
    assert refused.status_code == 422 and "text/html" in refused.headers["content-type"]
    assert "only keys of" in refused.text


def test_audit_check_and_retention(admin_page: tuple[TestClient, str]) -> None:
    client, csrf = admin_page
    checked = client.post("/admin/audit/verify", data={"csrf_token": csrf}, headers=PAGE)
    assert 'data-testid="audit-ok"' in checked.text
    purged = client.post("/admin/retention", data={"csrf_token": csrf}, headers=PAGE)
    assert "Purged 0 closed case(s)" in purged.text


def test_every_form_needs_the_csrf_token(admin_page: tuple[TestClient, str]) -> None:
    client, _ = admin_page
    for path in ("/admin/index/rebuild", "/admin/jobs/x/cancel", "/admin/audit/verify"):
        refused = client.post(path, data={"csrf_token": "forged"}, headers=PAGE)
        assert refused.status_code == 403, path
    assert client.post("/admin/orgs", data={"name": "Nope"}, headers=PAGE).status_code == 403


def test_other_roles_cannot_open_the_page(client: TestClient) -> None:
    org = client.post("/v1/admin/orgs", json={"name": "Family association"}).json()
    body = {"name": "r", "org_id": org["id"], "roles": ["registry"]}
    key = client.post("/v1/admin/keys", json=body).json()["key"]
    client.headers.pop("X-API-Key")
    sign_in(client, key)
    assert client.get("/admin", headers=PAGE).status_code == 403


def _keys(client: TestClient) -> list[dict[str, str]]:
    answer = client.get("/v1/admin/keys", headers={"X-API-Key": ADMIN_KEY})
    keys: list[dict[str, str]] = answer.json()
    return keys
