"""Web sign-in (TestClient): the session cookie, its end, CSRF, failed sign-ins, errors."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from service.registry.models import WebSession
from service.settings import Settings
from tests.conftest import ADMIN_KEY, container_of
from tests.test_web_admin import PAGE, csrf_of, form_token, sign_in


@pytest.fixture
def browser(client: TestClient) -> TestClient:
    client.headers.pop("X-API-Key")  # a browser has only its cookie
    return client


def test_the_session_cookie_is_http_only_and_strict(browser: TestClient) -> None:
    answer = browser.post(
        "/signin",
        data={"api_key": ADMIN_KEY, "form_token": form_token(browser)},
        follow_redirects=False,
    )
    cookie = next(v for k, v in answer.headers.multi_items() if k == "set-cookie")
    assert cookie.startswith("homeward_session=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=28800" in cookie
    assert "Secure" not in cookie  # plain http here; over https the cookie is Secure
    assert ADMIN_KEY not in answer.headers["location"]


def test_sign_in_needs_the_forms_own_token(browser: TestClient) -> None:
    form_token(browser)
    forged = browser.post("/signin", data={"api_key": ADMIN_KEY, "form_token": "x" * 20})
    assert forged.status_code == 403 and "homeward_session" not in browser.cookies


def test_a_wrong_key_is_refused_and_failures_are_limited(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    with start_app(make_settings(sign_in_attempts=3)) as client:
        for _ in range(3):
            wrong = {"api_key": "hw_not-a-key-xxxxxxxxxxxxxxxx", "form_token": form_token(client)}
            refused = client.post("/signin", data=wrong, headers=PAGE)
            assert refused.status_code == 401 and "was not accepted" in refused.text
        right = {"api_key": ADMIN_KEY, "form_token": form_token(client)}
        limited = client.post("/signin", data=right, headers=PAGE)
        assert limited.status_code == 429 and "Retry-After" in limited.headers


def test_sign_out_ends_the_session_on_the_server(browser: TestClient) -> None:
    sign_in(browser, ADMIN_KEY)
    old_cookie = browser.cookies["homeward_session"]
    csrf = csrf_of(browser, "/admin")
    assert browser.post("/signout", data={"csrf_token": csrf}, follow_redirects=False).is_redirect
    browser.cookies.set("homeward_session", old_cookie)  # a copy kept by someone
    again = browser.get("/admin", headers=PAGE, follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == "/signin?next=/admin"


def test_a_revoked_key_ends_its_sessions(client: TestClient) -> None:
    org = client.post("/v1/admin/orgs", json={"name": "Shelter"}).json()
    body = {"name": "reviewer", "org_id": org["id"], "roles": ["reviewer"]}
    created = client.post("/v1/admin/keys", json=body).json()
    admin_key = client.headers.pop("X-API-Key")
    sign_in(client, created["key"])
    assert client.get("/admin", headers=PAGE).status_code == 403  # signed in, not an admin
    client.delete(f"/v1/admin/keys/{created['key_id']}", headers={"X-API-Key": admin_key})
    assert client.get("/admin", headers=PAGE, follow_redirects=False).status_code == 303


def test_an_expired_session_is_refused(browser: TestClient) -> None:
    sign_in(browser, ADMIN_KEY)
    with container_of(browser).db.unit() as tx:
        for row in tx.session.query(WebSession):
            row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    answer = browser.get("/admin", headers=PAGE, follow_redirects=False)
    assert answer.status_code == 303
    with container_of(browser).db.unit() as tx:
        assert tx.session.query(WebSession).count() == 0  # ended on the server too


def test_sign_in_only_returns_to_this_site(browser: TestClient) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        data = {"api_key": ADMIN_KEY, "form_token": form_token(browser), "next": target}
        answer = browser.post("/signin", data=data, follow_redirects=False)
        assert answer.headers["location"] == "/"
    data = {"api_key": ADMIN_KEY, "form_token": form_token(browser), "next": "/admin"}
    assert (
        browser.post("/signin", data=data, follow_redirects=False).headers["location"] == "/admin"
    )


def test_sessions_are_audited(browser: TestClient) -> None:
    sign_in(browser, ADMIN_KEY)
    browser.post("/signout", data={"csrf_token": csrf_of(browser, "/admin")})
    sign_in(browser, ADMIN_KEY)
    actions = browser.get("/v1/admin/audit?limit=10", headers={"X-API-Key": ADMIN_KEY}).json()
    names = [a["action"] for a in actions]
    assert names.count("session.start") == 2 and names.count("session.end") == 1


def test_scripts_get_json_errors_and_browsers_get_pages(browser: TestClient) -> None:
    sign_in(browser, ADMIN_KEY)
    as_script = browser.post("/admin/retention", headers={"accept": "application/json"})
    assert as_script.status_code == 403 and as_script.json()["reason"] == "forbidden"
    as_page = browser.post("/admin/retention", headers=PAGE)
    assert as_page.status_code == 403 and "<h1>Not allowed</h1>" in as_page.text
    assert "Sign out" in as_page.text  # the error page keeps the signed-in header
    assert browser.get("/v1/info", headers=PAGE).json()["reason"] == "missing_key"  # the API
