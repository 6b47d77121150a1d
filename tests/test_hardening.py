"""Issue 10's findings, each refused with a clear 4xx (or guarded) now: chunked bodies over
the cap, hostile JSON and form fields, NUL on PostgreSQL, the admin-key lock-out, the
cross-organisation ref oracle, webhook SSRF, file modes, security headers, and the smaller
ones."""

from __future__ import annotations

import select
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.container import Container
from service.faces.base import FaceBackend
from service.settings import Settings
from tests.conftest import ADMIN_KEY, container_of
from tests.faces_of_t1 import altered_probe, blank_photo, face_crop
from tests.images import encode
from tests.test_access import JPEG, enroll, make_world
from tests.test_postgres import postgres_url  # noqa: F401  (a fixture)
from tests.test_review import wait_for

# -- bodies over the cap, whatever their framing ---------------------------------------------


@contextmanager
def real_server(app: FastAPI) -> Iterator[int]:
    """The app behind a real uvicorn on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started and app.state.homeward.ready.is_set(), 60)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def send_chunked(port: int, path: str, content_type: str, total: int) -> tuple[str, int]:
    """POST ``total`` bytes with chunked framing (no Content-Length), stopping as soon as the
    server answers; returns (the response's head and body, bytes sent). A multipart body is
    one endless, well-formed file part."""
    chunk = b"x" * 65536
    start = b""
    if content_type.startswith("multipart/"):
        start = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n"
        )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {ADMIN_KEY}\r\n"
        f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        first = f"{len(start):x}\r\n".encode() + start + b"\r\n" if start else b""
        s.sendall(head.encode() + first)
        try:
            while sent < total and not select.select([s], [], [], 0)[0]:
                s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_response(s), sent


def read_response(s: socket.socket) -> str:
    """One whole response: its head, then as many body bytes as Content-Length says."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        select.select([s], [], [], 10)
        more = s.recv(65536)
        if not more:
            break
        data += more
    return data.decode(errors="replace")


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_a_chunked_body_is_refused_once_it_passes_the_cap(
    make_settings: Callable[..., Settings], sface_backend: FaceBackend
) -> None:
    settings = make_settings(max_upload_bytes=1024 * 1024)
    app = create_app(settings, container=lambda s: Container(s, sface_backend))
    with real_server(app) as port:
        for path, kind, reason in (
            ("/v1/match", "multipart/form-data; boundary=b", "image_too_large"),
            ("/v1/cases", "application/json", "request_too_large"),
        ):
            response, sent = send_chunked(port, path, kind, 100 * 1024 * 1024)
            assert response.startswith("HTTP/1.1 413"), response[:200]
            assert f'"reason": "{reason}"' in response or f'"reason":"{reason}"' in response
            assert sent < 8 * 1024 * 1024, f"{sent} bytes were taken before the refusal"


def test_a_large_json_body_is_not_called_an_image(client: TestClient) -> None:
    r = client.post("/v1/cases", content=b"[" * (20 * 1024 * 1024))
    assert r.status_code == 413 and r.json()["reason"] == "request_too_large"


# -- hostile input -----------------------------------------------------------------------


def test_deeply_nested_face_box_and_non_numbers_are_422(client: TestClient) -> None:
    case_id = client.post("/v1/cases", json={"display_name": "x"}).json()["id"]
    for box in ("[" * 10_000 + "]" * 10_000, "[" * 90 + "]" * 90, "[1, 2, 3]", "[1,2,3,NaN]"):
        r = client.post(
            f"/v1/cases/{case_id}/photos",
            files={"file": ("a.jpg", encode(face_crop(0)), JPEG)},
            data={"face_box": box},
        )
        assert r.status_code == 422 and r.json()["reason"] == "invalid_input", r.text


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999999"])
def test_json_numbers_json_cannot_hold_are_422(client: TestClient, number: str) -> None:
    body = '{"display_name": "x", "age_at_disappearance": ' + number + "}"
    r = client.post("/v1/cases", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["reason"] == "invalid_input"
    r = client.post(
        "/v1/ageing",
        files={"file": ("a.jpg", encode(face_crop(0)), JPEG)},
        data={"age_at_photo": "4", "target_age": number},
    )
    assert r.status_code == 422, r.text


def test_form_fields_that_are_not_utf8_are_refused(client: TestClient) -> None:
    volunteer = make_world(client, {"V": ["volunteer"]}).as_("V:volunteer")
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="place"\r\n\r\n'.encode()
        + b"Gare du Nord \xe9\xff\r\n"
        + f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
        + altered_probe(1)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    r = volunteer.post(
        "/v1/sightings",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 400 and "utf-8" in r.json()["detail"], r.text
    assert volunteer.get("/v1/sightings").json() == []


@pytest.mark.postgres
def test_nul_characters_are_4xx_on_postgres(
    postgres_url: str,  # noqa: F811
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
) -> None:
    with start_app(make_settings(database_url=postgres_url)) as client:
        case_id = client.post("/v1/cases", json={"display_name": "x"}).json()["id"]
        responses = [
            client.post("/v1/cases", json={"display_name": "a\u0000b"}),
            client.post("/v1/cases", json={"display_name": "a", "external_ref": "r\u0000"}),
            client.patch(f"/v1/cases/{case_id}", json={"region": "\u0000"}),
            client.get("/v1/cases/a%00b"),
            client.delete("/v1/cases/a%00b"),
            client.get(f"/v1/cases/{case_id}/photos/x%00y/image"),
            client.delete("/v1/admin/keys/k%00"),
            client.post("/v1/admin/orgs", json={"name": "o\u0000"}),
            client.get("/v1/review/c%00"),
            client.get("/v1/sightings/s%00"),
            client.get("/v1/cases", params={"q": "a\u0000"}),
            client.get("/v1/admin/audit", params={"action": "a\u0000"}),
        ]
        for r in responses:
            assert 400 <= r.status_code < 500 and r.json()["reason"], (r.request.url, r.text)
        assert client.get(f"/v1/cases/{case_id}").status_code == 200


# -- no way in where none belongs ----------------------------------------------------------


def test_revoking_the_configured_admin_key_is_final_and_never_locks_out_start(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    settings = make_settings()
    with start_app(settings) as client:
        (mine,) = [k for k in client.get("/v1/admin/keys").json() if "admin" in k["roles"]]
        assert client.delete(f"/v1/admin/keys/{mine['key_id']}").status_code == 200
    for _ in range(2):
        with start_app(settings) as again:  # starts, and the key stays revoked
            assert again.get("/v1/info").status_code == 401


def test_external_refs_are_per_organisation_and_tell_nothing_across(client: TestClient) -> None:
    w = make_world(client, {"A": ["registry"], "B": ["registry"]})
    a, b = w.as_("A:registry"), w.as_("B:registry")
    assert a.post("/v1/cases", json={"display_name": "a", "external_ref": "X-1"}).status_code == 201
    assert b.post("/v1/cases", json={"display_name": "b", "external_ref": "X-1"}).status_code == 201
    again = a.post("/v1/cases", json={"display_name": "a2", "external_ref": "X-1"})
    assert again.status_code == 409 and "your organisation" in again.json()["detail"]


def test_the_admin_role_stays_in_the_administrators_organisation(client: TestClient) -> None:
    org = client.post("/v1/admin/orgs", json={"name": "Registry"}).json()["id"]
    r = client.post("/v1/admin/keys", json={"name": "x", "org_id": org, "roles": ["admin"]})
    assert r.status_code == 422 and "admin role" in r.json()["detail"]
    registry = make_world(client, {"R": ["registry"]}).as_("R:registry")
    info = registry.get("/v1/info").json()
    assert info["index_size"] is None and info["index_generation"] is None
    assert isinstance(client.get("/v1/info").json()["index_size"], int)


# -- webhooks reach the public internet only -------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://172.16.5.4/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://224.0.0.1/hook",
        "http://0.0.0.0/hook",
    ],
)
def test_webhooks_to_private_addresses_are_refused(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient], url: str
) -> None:
    with start_app(make_settings(webhook_allowed_targets=[])) as client:
        registry = make_world(client, {"A": ["registry"]}).as_("A:registry")
        r = registry.put("/v1/org/webhook", json={"url": url})
        assert r.status_code == 422 and "address" in r.json()["detail"], r.text


@pytest.mark.parametrize("url", ["http://[", "http://[::1", "http://host:99999/", "http://:80/"])
def test_malformed_webhook_urls_are_422(client: TestClient, url: str) -> None:
    registry = make_world(client, {"A": ["registry"]}).as_("A:registry")
    r = registry.put("/v1/org/webhook", json={"url": url})
    assert r.status_code == 422 and r.json()["reason"] == "invalid_input", r.text


def test_a_public_webhook_address_is_accepted(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    with start_app(make_settings(webhook_allowed_targets=[])) as client:
        registry = make_world(client, {"A": ["registry"]}).as_("A:registry")
        r = registry.put("/v1/org/webhook", json={"url": "https://93.184.216.34/hook"})
        assert r.status_code == 200  # checked, not called


@contextmanager
def redirecting_server(to: str) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.send_response(307)
            self.send_header("Location", to)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook"
    finally:
        server.shutdown()
        server.server_close()


def test_redirects_are_not_followed_and_errors_say_nothing_of_the_network(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    from tests.webhook_receiver import webhook_receiver

    settings = make_settings(webhook_backoff_seconds=0.05, webhook_max_attempts=1)
    with start_app(settings) as client, webhook_receiver() as target:
        built = container_of(client)
        with redirecting_server(target.url) as redirector:
            for url, expected in ((redirector, "HTTP 307"), ("http://127.0.0.1:9/closed", None)):
                org = client.post("/v1/admin/orgs", json={"name": url}).json()["id"]
                from service.matching.actors import Actor

                built.access.set_webhook(Actor("t", org, frozenset({"registry"})), url)
                with built.db.unit() as tx:
                    tx.outbox.enqueue(org, "test", {})

                def done(org: str = org) -> bool:
                    log = client.get("/v1/admin/webhooks/deliveries").json()
                    return any(d["org_id"] == org and d["status"] == "failed" for d in log)

                assert wait_for(done)
                (row,) = [
                    d
                    for d in client.get("/v1/admin/webhooks/deliveries").json()
                    if d["org_id"] == org
                ]
                if expected:
                    assert row["last_error"] == expected
                else:
                    assert row["last_error"] == "the webhook could not be reached"
        assert target.calls == 0


# -- the data dir is private ------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_dir_and_files_are_private_and_checked_at_start(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    settings = make_settings()
    with start_app(settings) as client:
        enroll(client, 1)
    data = settings.data_dir
    files = [p for p in data.rglob("*") if p.is_file()]
    assert {mode(p) for p in files} == {0o600}, {str(p): oct(mode(p)) for p in files}
    dirs = [data, *[p for p in data.rglob("*") if p.is_dir()]]
    assert {mode(p) for p in dirs} == {0o700}
    data.chmod(0o755)
    settings.sqlite_path.chmod(0o644)
    (leftover,) = [p for p in (data / "photos").iterdir() if p.is_dir()][:1]
    (leftover / ".half-written.jpg.tmp").write_bytes(b"partial")
    with start_app(settings):
        pass
    assert mode(data) == 0o700 and mode(settings.sqlite_path) == 0o600
    assert not (leftover / ".half-written.jpg.tmp").exists()


# -- headers and docs --------------------------------------------------------------------------


def test_security_headers_and_offline_docs(client: TestClient) -> None:
    r = client.get("/v1/cases")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert TestClient(client.app).get("/v1/cases").headers["cache-control"] == "no-store"
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200 and "/docs-assets/" in html.text
        assert "https://" not in html.text and "http://" not in html.text
        assert "script-src 'self'" in html.headers["content-security-policy"]
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        assert client.get(f"/docs-assets/{asset}").status_code == 200


# -- smaller ones ------------------------------------------------------------------------------


def test_a_sighting_without_a_face_is_refused_and_nothing_kept(client: TestClient) -> None:
    volunteer = make_world(client, {"V": ["volunteer"]}).as_("V:volunteer")
    photos = container_of(client).settings.photo_dir
    before = sorted(photos.rglob("*"))
    r = volunteer.post("/v1/sightings", files={"file": ("s.jpg", blank_photo(), JPEG)})
    assert r.status_code == 422 and r.json()["reason"] == "no_face"
    assert "nothing was kept" in r.json()["detail"]
    assert volunteer.get("/v1/sightings").json() == [] and sorted(photos.rglob("*")) == before


def test_hostile_input_leaves_what_is_stored_intact(client: TestClient) -> None:
    case_id = enroll(client, 2, external_ref="KEEP-1")
    before = client.get(f"/v1/cases/{case_id}").json()
    for body in ('{"region": NaN}', '{"sex": null}', "[", '{"birth_date": "2999-01-01"}'):
        r = client.patch(
            f"/v1/cases/{case_id}", content=body, headers={"content-type": "application/json"}
        )
        assert 400 <= r.status_code < 500, r.text
    assert client.get(f"/v1/cases/{case_id}").json() == before
