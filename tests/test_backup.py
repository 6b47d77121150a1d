"""Backups that restore: taken from a live service under writes, checked, restored only into
an empty data dir, and the restored service finds every case it had at rank 1."""

from __future__ import annotations

import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from service.cli import main
from service.settings import Settings
from tests.conftest import ADMIN_KEY, PHOTO_KEY, REPO, SECRET_KEY
from tests.faces_of_t1 import altered_probe
from tests.test_access import JPEG, enroll
from tests.test_postgres import postgres_url  # noqa: F401  (a fixture)


def cli(data_dir: Path, *args: str, database_url: str | None = None) -> tuple[int, str]:
    env = {
        "HOMEWARD_DATA_DIR": str(data_dir),
        "HOMEWARD_MODEL_DIR": str(REPO / "models"),
        "HOMEWARD_ADMIN_KEY": ADMIN_KEY,
        "HOMEWARD_SECRET_KEY": SECRET_KEY,
        "HOMEWARD_PHOTO_KEY": PHOTO_KEY,
    }
    if database_url:
        env["HOMEWARD_DATABASE_URL"] = database_url
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def keep_writing(client: TestClient, stop: threading.Event, done: list[str]) -> None:
    """Enroll and delete cases until told to stop (the backup runs meanwhile)."""
    while not stop.is_set():
        case_id = enroll(client, 5, external_ref=f"W-{len(done)}")
        done.append(case_id)
        if len(done) % 2:
            client.delete(f"/v1/cases/{case_id}")


def test_a_backup_of_a_live_service_restores_and_finds_every_case(
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
    tmp_path: Path,
) -> None:
    settings = make_settings()
    archive = tmp_path / "homeward.tar"
    with start_app(settings) as client:
        before = {face: enroll(client, face, external_ref=f"B-{face}") for face in range(5)}
        stop, written = threading.Event(), []
        writer = threading.Thread(target=keep_writing, args=(client, stop, written))
        writer.start()
        try:
            code, out = cli(settings.data_dir, "backup", str(archive))
        finally:
            stop.set()
            writer.join(60)
        assert code == 0 and "registry included" in out, out
        assert written, "the service was written to while the backup ran"

    restored = tmp_path / "restored"
    code, out = cli(restored, "restore", str(archive))
    assert code == 0 and "restored" in out, out
    with start_app(make_settings(data_dir=restored)) as again:
        for face, case_id in before.items():
            r = again.post("/v1/match", files={"file": ("p.jpg", altered_probe(face), JPEG)})
            assert r.json()["faces"][0]["candidates"][0]["case_id"] == case_id
        verified = again.get("/v1/admin/audit/verify").json()
        assert verified["ok"], verified
        actions = {e["action"] for e in again.get("/v1/admin/audit?limit=1000").json()}
        assert {"backup", "restore"} <= actions
        photo = again.get(f"/v1/cases/{before[0]}").json()["photos"][0]["id"]
        image = again.get(f"/v1/cases/{before[0]}/photos/{photo}/image")
        assert image.content[:3] == b"\xff\xd8\xff"


def test_a_damaged_archive_or_a_used_data_dir_is_refused(
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
    tmp_path: Path,
) -> None:
    settings = make_settings()
    with start_app(settings) as client:
        enroll(client, 1)
    archive = tmp_path / "b.tar"
    assert cli(settings.data_dir, "backup", str(archive))[0] == 0
    code, out = cli(settings.data_dir, "restore", str(archive))
    assert code == 1 and "not empty" in out

    with tarfile.open(archive) as tar:
        names = tar.getnames()
    damaged = tmp_path / "damaged.tar"
    data = bytearray(archive.read_bytes())
    offset = data.find(b"SQLite format 3")
    data[offset + 200] ^= 0xFF  # a byte of the registry, inside the archive
    damaged.write_bytes(bytes(data))
    target = tmp_path / "fresh"
    code, out = cli(target, "restore", str(damaged))
    assert code == 1 and "damaged" in out, out
    assert not target.exists() or not any(target.iterdir())
    assert "manifest.json" in names and "registry.db" in names
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(archive.read_bytes()[:4000])
    assert cli(target, "restore", str(truncated))[0] == 1


@pytest.mark.postgres
def test_on_postgres_the_backup_says_pg_dump_and_keeps_the_rest(
    postgres_url: str,  # noqa: F811
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
    tmp_path: Path,
) -> None:
    settings = make_settings(database_url=postgres_url)
    with start_app(settings) as client:
        enroll(client, 2)
    code, out = cli(settings.data_dir, "backup", str(tmp_path), database_url=postgres_url)
    assert code == 0 and "pg_dump" in out and "1 photo(s)" in out, out
    (archive,) = tmp_path.glob("homeward-backup-*.tar")
    with tarfile.open(archive) as tar:
        assert "registry.db" not in tar.getnames()
