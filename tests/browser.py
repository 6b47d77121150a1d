"""Browser tests' equipment: Debian's Chromium driven by Playwright (never Playwright's own
browser download), a real ``homeward serve`` with keys made through the API, a fresh
browser context per person, signing in like a person, axe-core accessibility checks and
full-page screenshots.

The fixtures are registered for every test module by ``pytest_plugins`` in
``tests/conftest.py``:

- ``chromium_path`` (session): ``/usr/bin/chromium``, installed with apt-get when missing.
- ``browser`` (session): a headless Chromium (``playwright.sync_api.Browser``).
- ``web_server`` (module): a ``WebServer`` (a real server, its admin client, ``make_key``);
  a module sets the server's environment by overriding ``web_server_env``.
- ``new_page`` (function): ``new_page(viewport=DESKTOP, **context_options) -> Page``, each
  in its own context (own cookies), closed after the test.

and the helpers ``page_for``, ``sign_in``, ``check_accessibility``, ``assert_accessible``,
``screenshot`` and ``serve`` (a second server with its own environment)."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    Page,
    Playwright,
    Response,
    ViewportSize,
    sync_playwright,
)

from service.matching.access import ADMIN_ORG
from tests.conftest import NOTES, REPO
from tests.server_process import ServerProcess

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling home, and this machine's
# closed network refuses those connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}

AXE_VERSION = "4.10.3"
AXE_DIR = REPO / ".cache" / "axe"  # git-ignored; npm fills it once
# WCAG 2.0, 2.1 and 2.2, levels A and AA
WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa")
BLOCKING_IMPACTS = ("serious", "critical")

SCREENSHOTS = REPO / "tests" / ".artifacts" / "screenshots"  # git-ignored
SESSION_COOKIE = "homeward_session"


# -- Chromium and Playwright -----------------------------------------------------------------


def ensure_chromium(path: Path = CHROMIUM) -> Path:
    """Debian's Chromium, installed with ``apt-get install -y chromium`` when it is missing;
    the tests fail (never skip) with the reason when it cannot be installed."""
    if path.exists():
        return path
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.fail(f"{path} is missing and there is no apt-get to install it", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail(
            f"{path} is missing; install it as root: apt-get install -y chromium", pytrace=False
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update"], [apt, "install", "-y", "chromium"]):
        try:
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=1800, check=False
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(command)} took over 30 minutes", pytrace=False)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            pytest.fail(
                f"{path} is missing and `{' '.join(command)}` failed "
                f"(exit {done.returncode}):\n{tail}",
                pytrace=False,
            )
    if not path.exists():
        pytest.fail(f"apt-get installed chromium but {path} is still missing", pytrace=False)
    return path


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    return ensure_chromium()


@pytest.fixture(scope="session")
def playwright_driver(request: pytest.FixtureRequest) -> Iterator[Playwright]:
    started = time.monotonic()
    with sync_playwright() as driver:
        seconds = time.monotonic() - started
        request.config.stash.setdefault(NOTES, []).append(
            f"browser: Playwright's driver started in {seconds:.2f} s"
        )
        yield driver


@pytest.fixture(scope="session")
def browser(
    chromium_path: Path, playwright_driver: Playwright, request: pytest.FixtureRequest
) -> Iterator[Browser]:
    """One headless Chromium for the whole run; each person gets a context of their own."""
    started = time.monotonic()
    launched = playwright_driver.chromium.launch(
        executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS
    )
    seconds = time.monotonic() - started
    request.config.stash.setdefault(NOTES, []).append(
        f"browser: Chromium {launched.version} started in {seconds:.2f} s"
    )
    yield launched
    launched.close()


def page_for(browser: Browser, viewport: ViewportSize | None = DESKTOP, **options: Any) -> Page:
    """A page in a fresh context: its own cookies and storage, as a separate person's
    browser. Close it with ``page.context.close()`` (the ``new_page`` fixture does)."""
    context = browser.new_context(viewport=viewport, locale="en-GB", **options)
    return context.new_page()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """``new_page(viewport=DESKTOP, **context_options)``: a page per person, closed after
    the test."""
    made: list[Page] = []

    def make(viewport: ViewportSize | None = DESKTOP, **options: Any) -> Page:
        page = page_for(browser, viewport, **options)
        made.append(page)
        return page

    yield make
    for page in made:
        page.context.close()


def sign_in(page: Page, base_url: str, key: str, next: str | None = None) -> Response | None:
    """Open the sign-in form, type the key and press "Sign in", as a person would; the
    answer of the page it lands on (after the redirect when the key is accepted, the form
    again with its error otherwise). Whether it worked is for the caller to check."""
    target = f"{base_url}/signin" + (f"?next={quote(next)}" if next else "")
    page.goto(target)
    page.get_by_label("API key").fill(key)
    with page.expect_navigation() as landed:
        page.get_by_role("button", name="Sign in").click()
    return landed.value


def session_cookie(page: Page) -> dict[str, Any] | None:
    """The session cookie as the browser keeps it (None when there is none)."""
    for cookie in page.context.cookies():
        if cookie.get("name") == SESSION_COOKIE:
            return dict(cookie)
    return None


# -- the server ------------------------------------------------------------------------------


class WebServer:
    """A running ``homeward serve`` and an admin client to set up organisations and keys."""

    def __init__(self, process: ServerProcess) -> None:
        self.process = process
        self.base_url = process.base_url
        self.api: httpx.Client = process.client()
        self._orgs: dict[str, str] = {}
        self._count = 0

    def url(self, path: str) -> str:
        return self.base_url + path

    def make_org(self, name: str) -> str:
        """The id of the organisation called ``name``, created unless it exists."""
        if name not in self._orgs:
            listed = self.api.get("/v1/admin/orgs")
            assert listed.status_code == 200, listed.text
            self._orgs.update({org["name"]: org["id"] for org in listed.json()})
        if name not in self._orgs:
            answer = self.api.post("/v1/admin/orgs", json={"name": name})
            assert answer.status_code == 201, answer.text
            self._orgs[name] = answer.json()["id"]
        return self._orgs[name]

    def make_key(self, org_name: str, roles: Sequence[str], name: str | None = None) -> str:
        """A new API key of ``org_name`` (created unless it exists) with ``roles``; only
        keys of ``ADMIN_ORG`` ("Homeward administrators") may hold the admin role."""
        assert "admin" not in roles or org_name == ADMIN_ORG, f"admin keys are {ADMIN_ORG!r}'s"
        self._count += 1
        body = {
            "name": name or f"{'+'.join(roles)} {self._count}",
            "org_id": self.make_org(org_name),
            "roles": list(roles),
        }
        answer = self.api.post("/v1/admin/keys", json=body)
        assert answer.status_code == 201, answer.text
        key: str = answer.json()["key"]
        return key

    def close(self) -> None:
        self.api.close()


@contextmanager
def serve(
    tmp_path_factory: pytest.TempPathFactory,
    env: Mapping[str, str] | None = None,
    name: str = "web",
) -> Iterator[WebServer]:
    """A real server in a fresh data dir, ready, stopped afterwards; ``env`` adds or
    overrides ``HOMEWARD_*`` settings (e.g. ``HOMEWARD_SIGN_IN_ATTEMPTS``)."""
    root = tmp_path_factory.mktemp(name)
    (root / "data").mkdir()
    process = ServerProcess(root / "data", root / "server.log", env)
    process.start()
    server = WebServer(process)
    try:
        yield server
    finally:
        server.close()
        try:
            process.stop()
        finally:
            process.kill()


@pytest.fixture(scope="module")
def web_server_env() -> dict[str, str]:
    """The server's extra environment; override it in a module to change its settings."""
    return {}


@pytest.fixture(scope="module")
def web_server(
    tmp_path_factory: pytest.TempPathFactory, web_server_env: dict[str, str]
) -> Iterator[WebServer]:
    with serve(tmp_path_factory, web_server_env) as server:
        yield server


# -- accessibility (axe-core) -----------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One axe-core rule the page breaks, and where."""

    rule: str
    impact: str
    help: str
    help_url: str
    nodes: tuple[str, ...]  # "selector: what is wrong"

    def __str__(self) -> str:
        where = "".join(f"\n    - {node}" for node in self.nodes)
        return f"[{self.impact}] {self.rule}: {self.help} <{self.help_url}>{where}"


@functools.cache
def axe_source() -> str:
    """axe-core's script, from the npm registry once into ``.cache/axe`` (pinned version)."""
    script = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
    AXE_DIR.mkdir(parents=True, exist_ok=True)
    with (AXE_DIR / ".lock").open("w") as lock:  # parallel runs install it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed_axe(script) != AXE_VERSION:
            npm = shutil.which("npm")
            if npm is None:
                pytest.fail("npm is needed to fetch axe-core (install nodejs and npm)")
            command = [npm, "install", "--prefix", str(AXE_DIR), "--no-save", "--no-audit"]
            command += ["--no-fund", "--no-package-lock", f"axe-core@{AXE_VERSION}"]
            done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
            if done.returncode != 0 or _installed_axe(script) != AXE_VERSION:
                tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
                pytest.fail(f"`{' '.join(command)}` failed (exit {done.returncode}):\n{tail}")
    return script.read_text()


def _installed_axe(script: Path) -> str | None:
    manifest = script.with_name("package.json")
    if not (script.exists() and manifest.exists()):
        return None
    version: str = json.loads(manifest.read_text()).get("version", "")
    return version


def check_accessibility(
    page: Page, tags: Sequence[str] = WCAG_TAGS, disable: Sequence[str] = ()
) -> list[Violation]:
    """axe-core's violations of the WCAG 2 A/AA rules on the page as it is now.

    axe is evaluated through the DevTools protocol, which the pages' CSP (``script-src
    'self'``, no inline scripts) does not restrict; it stays in the page until it
    navigates."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source())
    options = {
        "runOnly": {"type": "tag", "values": list(tags)},
        "rules": {rule: {"enabled": False} for rule in disable},
        "resultTypes": ["violations"],
    }
    found = page.evaluate(
        """async (options) => {
            const results = await window.axe.run(document, options);
            return results.violations.map((v) => ({
                rule: v.id, impact: v.impact || "unknown", help: v.help, url: v.helpUrl,
                nodes: v.nodes.map((n) => `${n.target.join(" ")}: ${
                    (n.failureSummary || "").replace(/\\s+/g, " ")}`),
            }));
        }""",
        options,
    )
    return [
        Violation(v["rule"], v["impact"], v["help"], v["url"], tuple(v["nodes"])) for v in found
    ]


def assert_accessible(
    page: Page, impacts: Sequence[str] = BLOCKING_IMPACTS, **options: Any
) -> list[Violation]:
    """Fails on any violation of ``impacts`` (serious, critical), listing them all; returns
    every violation (the minor and moderate ones too, to report)."""
    violations = check_accessibility(page, **options)
    blocking = [v for v in violations if v.impact in impacts]
    if blocking:
        listed = "\n".join(str(v) for v in blocking)
        pytest.fail(
            f"{page.url}: {len(blocking)} accessibility violation(s) "
            f"(axe-core {AXE_VERSION}, WCAG 2 A/AA):\n{listed}",
            pytrace=False,
        )
    return violations


# -- screenshots ----------------------------------------------------------------------------


def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG in ``tests/.artifacts/screenshots/<name>.png``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "page"
    path = SCREENSHOTS / f"{safe}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path
