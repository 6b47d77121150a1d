"""Shared fixtures: the real SFace backend (loaded once), isolated data dirs, API clients."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.container import Container
from service.faces.base import FaceBackend
from service.faces.factory import load_backend
from service.settings import Settings

REPO = Path(__file__).resolve().parent.parent
ADMIN_KEY = "test-admin-key-0123456789abcdef"
SECRET_KEY = base64.b64encode(b"k" * 32).decode()
PHOTO_KEY = base64.b64encode(b"p" * 32).decode()
HEADERS = {"X-API-Key": ADMIN_KEY}


@pytest.fixture(scope="session")
def sface_backend() -> FaceBackend:
    return load_backend(Settings(model_dir=REPO / "models", model_backend="sface"))


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "model_dir": REPO / "models",
            "model_backend": "sface",
            "admin_key": ADMIN_KEY,
            "secret_key": SECRET_KEY,
            "photo_key": PHOTO_KEY,
            "secrets_file": tmp_path / "secrets.json",
            # the tests make many requests per key; test_access checks the limits themselves
            "rate_limits": dict.fromkeys(("volunteer", "reviewer", "registry", "admin"), 100_000),
            # the tests' webhook receivers listen on loopback (test_hardening checks refusals)
            "webhook_allowed_targets": ["127.0.0.1"],
        }
        values.update(overrides)
        return Settings(**values)

    return make


class ReadyClient(TestClient):
    """A TestClient whose ``with`` returns once the app has loaded (the index loads in the
    background; until then the app answers 503). It calls from loopback."""

    def __init__(self, app: Any) -> None:
        super().__init__(app, client=("127.0.0.1", 50000))

    def __enter__(self) -> ReadyClient:
        super().__enter__()
        state = self.app.state.homeward  # type: ignore[attr-defined]
        deadline = time.monotonic() + 120
        while not state.ready.wait(0.02) and state.failure is None:
            assert time.monotonic() < deadline, "the app did not load"
        return self


@pytest.fixture
def start_app(sface_backend: FaceBackend) -> Callable[[Settings], TestClient]:
    """A TestClient for a real app on the given settings; enter it with ``with``."""

    def start(settings: Settings) -> TestClient:
        app = create_app(settings, container=lambda s: Container(s, sface_backend))
        client = ReadyClient(app)
        client.headers.update(HEADERS)
        return client

    return start


@pytest.fixture
def client(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> Iterator[TestClient]:
    with start_app(make_settings()) as c:
        yield c


def container_of(client: TestClient) -> Container:
    """The parts behind a started test app (to look underneath the API)."""
    built: Container = client.app.state.homeward.container  # type: ignore[attr-defined]
    return built


def stored_key_hash(client: TestClient, key_id: str) -> str:
    with container_of(client).db.unit() as tx:
        row = tx.keys.by_key_id(key_id)
        assert row is not None
        return row.secret_hash


def years_ago(years: int, today: date | None = None) -> date:
    """The same day ``years`` years earlier; 29 February becomes the 28th in a common year."""
    today = today or date.today()
    try:
        return today.replace(year=today.year - years)
    except ValueError:
        return today.replace(year=today.year - years, day=28)


# -- closing notes: the figures the long suites report (crash, load, disk, fuzz) -------------

NOTES = pytest.StashKey[list[str]]()


@pytest.fixture
def closing_note(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Adds a line to the notes shown after the run's summary."""
    return request.config.stash.setdefault(NOTES, []).append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    notes = terminalreporter.config.stash.get(NOTES, [])
    if notes:
        terminalreporter.section("closing notes")
        for note in notes:
            terminalreporter.write_line(note)


# the browser tests' fixtures (Chromium, a real server, sign-in, axe): tests/browser.py
pytest_plugins = ["tests.browser"]
