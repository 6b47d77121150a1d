"""The web sign-in's guarantees, checked in a real Chromium: wrong keys get nowhere and are
rate-limited, roles close pages, forms need the session's CSRF token (and a cross-site form
does not even carry the cookie), signing out ends the session for good, the cookie is out of
scripts' reach, the key never lands in a URL or in storage, and every page sends the strict
CSP. The sign-in page passes axe-core's WCAG 2 A/AA checks."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Route, expect

from service.matching.access import ADMIN_ORG
from tests.browser import (
    PHONE,
    WebServer,
    assert_accessible,
    check_accessibility,
    screenshot,
    serve,
    session_cookie,
    sign_in,
)

pytestmark = pytest.mark.browser

NewPage = Callable[..., Page]
OTHER_PAGES = ("/review", "/cases", "/admin")
CSP_NOTICE = re.compile("Content Security Policy", re.IGNORECASE)


@dataclass(frozen=True)
class Keys:
    volunteer: str
    everything: str  # all four roles: every page opens


@pytest.fixture(scope="module")
def keys(web_server: WebServer) -> Keys:
    return Keys(
        volunteer=web_server.make_key("Search Volunteers", ["volunteer"], "Vera Volunteer"),
        everything=web_server.make_key(
            ADMIN_ORG, ["volunteer", "reviewer", "registry", "admin"], "Ada Admin"
        ),
    )


def path_of(page: Page) -> str:
    return urlsplit(page.url).path


def signed_in_volunteer(new_page: NewPage, web_server: WebServer, keys: Keys) -> Page:
    page = new_page()
    landed = sign_in(page, web_server.base_url, keys.volunteer)
    assert landed is not None and landed.status == 200, landed and landed.status
    assert path_of(page) == "/"
    assert session_cookie(page) is not None
    return page


def csrf_token_of(page: Page) -> str:
    token = page.locator('form[action="/signout"] input[name="csrf_token"]').get_attribute("value")
    assert token
    return token


# -- signing in ------------------------------------------------------------------------------


def test_sign_in_page_is_accessible_and_pictured(
    new_page: NewPage, web_server: WebServer, keys: Keys
) -> None:
    page = new_page()
    page.goto(web_server.url("/signin"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert_accessible(page)
    screenshot(page, "signin")

    sign_in(page, web_server.base_url, keys.volunteer + "x")
    expect(page.get_by_role("alert")).to_have_text("That key was not accepted.")
    assert_accessible(page)
    screenshot(page, "signin-refused")

    phone = new_page(PHONE, is_mobile=True, has_touch=True)
    phone.goto(web_server.url("/signin"))
    assert_accessible(phone)
    screenshot(phone, "signin-phone")

    # the check is not vacuous: a nameless button and an unlabelled field are caught
    page.evaluate(
        """() => {
            document.querySelector("main").append(
                document.createElement("button"), document.createElement("input"));
        }"""
    )
    found = {v.rule: v.impact for v in check_accessibility(page)}
    assert found.get("button-name") == "critical", found
    assert "label" in found, found


def test_a_wrong_key_does_not_sign_in(new_page: NewPage, web_server: WebServer, keys: Keys) -> None:
    page = new_page()
    wrong = keys.volunteer[:-4] + "abcd"
    landed = sign_in(page, web_server.base_url, wrong)

    assert landed is not None and landed.status == 401
    assert path_of(page) == "/signin"
    expect(page.get_by_role("alert")).to_have_text("That key was not accepted.")
    assert session_cookie(page) is None
    assert page.get_by_label("API key").input_value() == ""
    assert wrong not in page.content() and wrong not in page.url
    # still not signed in: the start page sends back to the form
    page.goto(web_server.url("/"))
    assert path_of(page) == "/signin"


def test_repeated_wrong_keys_are_rate_limited(
    new_page: NewPage, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Past HOMEWARD_SIGN_IN_ATTEMPTS failures from an address, even the right key is
    refused (429) until the window has passed."""
    with serve(tmp_path_factory, {"HOMEWARD_SIGN_IN_ATTEMPTS": "3"}, "limited") as server:
        right = server.make_key("Search Volunteers", ["volunteer"])
        page = new_page()
        for attempt in range(3):
            landed = sign_in(page, server.base_url, f"hw_wrong_{attempt}_" + right[-12:])
            assert landed is not None and landed.status == 401, attempt
            expect(page.get_by_role("alert")).to_have_text("That key was not accepted.")

        landed = sign_in(page, server.base_url, "hw_wrong_again_" + right[-12:])
        assert landed is not None and landed.status == 429
        expect(page.get_by_role("heading", name="Too many attempts")).to_be_visible()
        assert int(landed.headers["retry-after"]) > 0

        other = new_page()  # another browser from the same address: the same limit
        landed = sign_in(other, server.base_url, right)
        assert landed is not None and landed.status == 429
        assert session_cookie(other) is None


def test_the_key_never_leaves_the_form(
    new_page: NewPage, web_server: WebServer, keys: Keys, closing_note: Callable[[str], None]
) -> None:
    """Not in any URL the browser asked for, nor its storage, nor the page, nor the form
    shown again when going back."""
    page = new_page()
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    key = keys.volunteer

    started = time.monotonic()
    landed = sign_in(page, web_server.base_url, key)
    closing_note(
        f"browser: one sign-in (form, key typed, redirect) {time.monotonic() - started:.2f} s"
    )
    assert landed is not None and landed.status == 200 and path_of(page) == "/"

    assert all(key not in url for url in asked), asked
    stored = page.evaluate(
        """() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage),
                                 document.cookie])"""
    )
    assert key not in stored
    assert key not in page.content()

    page.go_back()
    assert path_of(page) == "/signin"
    assert page.get_by_label("API key").input_value() == ""
    assert key not in page.content()


def test_the_session_cookie_is_out_of_scripts_reach(
    new_page: NewPage, web_server: WebServer, keys: Keys
) -> None:
    page = signed_in_volunteer(new_page, web_server, keys)
    cookie = session_cookie(page)
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/"
    # a session, not a forever cookie: it lasts HOMEWARD_SESSION_MINUTES (480 by default)
    lasts = datetime.fromtimestamp(cookie["expires"], UTC) - datetime.now(UTC)
    assert timedelta(minutes=470) < lasts <= timedelta(minutes=481)
    assert "homeward_session" not in page.evaluate("() => document.cookie")
    # the sign-in form's own token is gone once it has served
    assert {c.get("name") for c in page.context.cookies()} == {"homeward_session"}


# -- once signed in ------------------------------------------------------------------------


def test_a_volunteer_cannot_open_other_roles_pages(
    new_page: NewPage, web_server: WebServer, keys: Keys
) -> None:
    page = signed_in_volunteer(new_page, web_server, keys)
    nav = page.get_by_role("navigation", name="Pages")
    for path in OTHER_PAGES:
        expect(nav.locator(f'a[href="{path}"]')).to_have_count(0)

    answers = {}
    for path in OTHER_PAGES:
        answer = page.goto(web_server.url(path))
        assert answer is not None
        answers[path] = answer.status
        if answer.status == 403:
            expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    assert answers == dict.fromkeys(OTHER_PAGES, 403)


def test_posts_without_the_sessions_csrf_token_are_refused(
    new_page: NewPage, web_server: WebServer, keys: Keys
) -> None:
    page = signed_in_volunteer(new_page, web_server, keys)
    cookie = session_cookie(page)
    signout = web_server.url("/signout")

    # with the session cookie (the page's own request context), without the right token
    for refused in (
        page.request.post(signout, max_redirects=0),
        page.request.post(signout, form={"csrf_token": "forged"}, max_redirects=0),
        page.request.post(signout, headers={"X-CSRF-Token": "forged"}, max_redirects=0),
        page.request.post(signout, form={"csrf_token": csrf_token_of(page)[:-1]}, max_redirects=0),
    ):
        assert refused.status == 403, refused.text()
        assert "not sent by this site" in refused.json()["detail"]

    # a form on another site: SameSite=Strict keeps the cookie home, so nobody is signed in
    def other_site(route: Route) -> None:
        route.fulfill(
            content_type="text/html",
            body=f"""<!doctype html><title>Win a prize</title>
                <form method="post" action="{signout}">
                <input type="hidden" name="csrf_token" value="guessed">
                <button>Claim</button></form>""",
        )

    page.context.route("http://other-site.test/**", other_site)
    page.goto("http://other-site.test/prize")
    with page.expect_navigation() as landed:
        page.get_by_role("button", name="Claim").click()
    assert landed.value is not None and landed.value.status == 401

    # the session goes on as before
    assert session_cookie(page) == cookie
    answer = page.goto(web_server.url("/"))
    assert answer is not None and answer.status == 200 and path_of(page) == "/"
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_signing_out_ends_the_session_for_good(
    new_page: NewPage, web_server: WebServer, keys: Keys
) -> None:
    page = signed_in_volunteer(new_page, web_server, keys)
    cookie = session_cookie(page)
    assert cookie is not None
    csrf = csrf_token_of(page)

    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    assert path_of(page) == "/signin"
    assert session_cookie(page) is None

    # the old cookie, put back into another browser, opens nothing
    thief = new_page()
    thief.context.add_cookies(
        [{"name": "homeward_session", "value": cookie["value"], "url": web_server.base_url}]
    )
    thief.goto(web_server.url("/"))
    assert path_of(thief) == "/signin"
    assert urlsplit(thief.url).query == "next=/"

    again = thief.request.get(web_server.url("/"), headers={"Accept": "text/html"}, max_redirects=0)
    assert again.status == 303 and again.headers["location"].startswith("/signin")
    # nor does it, with its CSRF token, reach a form or a script's POST
    posted = thief.request.post(
        web_server.url("/signout"), form={"csrf_token": csrf}, max_redirects=0
    )
    assert posted.status == 401, posted.text()
    posted = thief.request.post(
        web_server.url("/signout"), headers={"X-CSRF-Token": csrf}, max_redirects=0
    )
    assert posted.status == 401, posted.text()


def test_the_api_does_not_take_the_session_cookie(
    new_page: NewPage, web_server: WebServer, keys: Keys
) -> None:
    """The API answers API keys only: a signed-in browser cannot be ridden into it."""
    page = new_page()
    sign_in(page, web_server.base_url, keys.everything)
    assert session_cookie(page) is not None
    answer = page.request.get(web_server.url("/v1/admin/orgs"))
    assert answer.status == 401, answer.text()


def test_every_page_sends_the_strict_csp(
    new_page: NewPage, web_server: WebServer, keys: Keys
) -> None:
    """The policy's header on every page, signed in or not, errors included, and nothing on
    them breaks it (the browser reports each blocked inline script or style)."""
    page = new_page()
    blocked: list[str] = []
    page.on(
        "console",
        lambda message: (
            blocked.append(f"{page.url}: {message.text}")
            if CSP_NOTICE.search(message.text)
            else None
        ),
    )
    policies: dict[str, tuple[int, str]] = {}

    def visit(path: str) -> None:
        answer = page.goto(web_server.url(path))
        assert answer is not None
        page.wait_for_load_state("networkidle")
        policies[path] = (answer.status, answer.headers.get("content-security-policy", ""))

    visit("/signin")
    visit("/no-such-page")
    sign_in(page, web_server.base_url, keys.everything)
    for path in ("/", *OTHER_PAGES, "/no-such-page"):
        visit(path)

    for path, (status, policy) in policies.items():
        directives = dict(
            (part.split(" ", 1) + [""])[:2] for part in (p.strip() for p in policy.split(";"))
        )
        assert "'self'" in directives.get("script-src", "").split(), (path, policy)
        assert "unsafe" not in directives.get("script-src", ""), (path, policy)
        assert directives.get("frame-ancestors") == "'none'", (path, policy)
        expected = 404 if path == "/no-such-page" else 200
        assert status == expected, (path, status)
    assert blocked == []
