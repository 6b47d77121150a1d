"""A full disk and a read-only data dir, under a real server: writes fail with a clear 507
(``insufficient_storage``) or 503 (``storage_unavailable``), never a 500; reads go on; nothing
half-written stays behind; and once space is freed, writes work again without a restart.

The data dir lives on a small ext4 filesystem in a loop-mounted file (root only): filling it
gives a real ENOSPC, and ext4's ``trigger_fs_error`` with ``errors=remount-ro`` turns it
read-only under the running server exactly as a failing disk would (open files included).
Where no loop device can be set up, the full-disk test runs on a small tmpfs instead and
the read-only test is skipped.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.faces_of_t1 import altered_probe, distinct_photo
from tests.server_process import ServerProcess, photo_files, registry_rows

pytestmark = pytest.mark.slow

JPEG = "image/jpeg"
FS_MEGABYTES = 24


class SmallFilesystem:
    def __init__(self, mountpoint: Path, kind: str, device: str | None) -> None:
        self.mountpoint = mountpoint
        self.kind = kind  # "ext4" (loop) or "tmpfs"
        self.device = device
        self.filler = mountpoint / "filler"

    def fill(self) -> int:
        """Write until the disk refuses (ENOSPC), in MiB blocks then in 4 KiB ones; returns
        the bytes written."""
        written = 0
        with self.filler.open("ab", buffering=0) as handle:
            for size in (1 << 20, 4096):
                block = b"\0" * size
                while True:
                    try:
                        written += handle.write(block) or 0
                    except OSError as err:
                        assert err.errno == errno.ENOSPC, err
                        break
        return written

    def free(self) -> None:
        self.filler.unlink()

    def make_read_only(self) -> None:
        """What ext4 does on an I/O error with errors=remount-ro: read-only at once, open
        files included, reads going on."""
        assert self.device is not None
        trigger = Path("/sys/fs/ext4") / Path(self.device).name / "trigger_fs_error"
        trigger.write_text("1")


def _run(*args: str) -> bool:
    return subprocess.run(args, capture_output=True).returncode == 0


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[SmallFilesystem]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mountpoint = tmp_path / "fs"
    mountpoint.mkdir()
    image = tmp_path / "fs.img"
    fs: SmallFilesystem | None = None
    if shutil.which("mkfs.ext4"):
        with image.open("wb") as handle:
            handle.truncate(FS_MEGABYTES << 20)
        if _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image)) and _run(
            "mount", "-o", "loop,errors=remount-ro", str(image), str(mountpoint)
        ):
            source = subprocess.run(
                ["findmnt", "-n", "-o", "SOURCE", str(mountpoint)], capture_output=True, text=True
            ).stdout.strip()
            fs = SmallFilesystem(mountpoint, "ext4", source)
    if fs is None and _run("mount", "-t", "tmpfs", "-o", f"size={FS_MEGABYTES}m", "tmpfs",
                           str(mountpoint)):  # fmt: skip
        fs = SmallFilesystem(mountpoint, "tmpfs", None)
    if fs is None:
        pytest.skip("neither a loop device nor tmpfs can be mounted here")
    try:
        yield fs
    finally:
        if not _run("umount", str(mountpoint)):
            _run("umount", "-l", str(mountpoint))
        image.unlink(missing_ok=True)


def new_case(api: httpx.Client, name: str) -> httpx.Response:
    return api.post("/v1/cases", json={"display_name": name})


def add_photo(api: httpx.Client, case: str, k: int) -> httpx.Response:
    return api.post(f"/v1/cases/{case}/photos", files={"file": ("p.jpg", distinct_photo(k), JPEG)})


def top_case(api: httpx.Client, photo: bytes) -> str:
    r = api.post("/v1/match", files={"file": ("p.jpg", photo, JPEG)})
    assert r.status_code == 200, r.text
    return str(r.json()["faces"][0]["candidates"][0]["case_id"])


def wait_for_jobs(api: httpx.Client, timeout: float = 60) -> str:
    """The latest index job's status once it has ended."""
    deadline = time.monotonic() + timeout
    while (job := api.get("/v1/admin/jobs?limit=1").json()[0])["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return str(job["status"])


def assert_refused(r: httpx.Response, allowed: dict[int, str], seen: list[str], what: str) -> None:
    """A write that could not be done: one of the allowed (status, reason), or done."""
    seen.append(f"{what} {r.status_code}")
    if r.status_code < 300:
        return
    assert r.status_code in allowed, f"{what}: {r.status_code} {r.text}"
    assert r.json()["reason"] == allowed[r.status_code], r.text


def assert_reads_go_on(api: httpx.Client, case: str, seen: list[str]) -> None:
    for url in ("/healthz", "/readyz", "/v1/info", "/v1/cases", f"/v1/cases/{case}"):
        r = api.get(url)
        seen.append(f"GET {url.replace(case, '{id}')} {r.status_code}")
        assert r.status_code == 200, (url, r.text)


def no_server_errors(server: ServerProcess) -> None:
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log and " 500 " not in log, server.tail(80)


def test_a_full_disk_refuses_writes_with_507_and_recovers(
    tmp_path: Path, small_fs: SmallFilesystem, closing_note: Callable[[str], None]
) -> None:
    data_dir = small_fs.mountpoint / "data"
    server = ServerProcess(data_dir, tmp_path / "server.log")
    server.start()
    seen: list[str] = []
    full = {507: "insufficient_storage"}
    try:
        with server.client() as api:
            first = new_case(api, "before").json()["id"]
            assert add_photo(api, first, 0).status_code == 201
            assert api.post("/v1/admin/index/rebuild").status_code == 202  # a job
            wait_for_jobs(api)
            filled = small_fs.fill()

            r = add_photo(api, first, 1)  # a new photo file: there is no room for it
            seen.append(f"POST photo {r.status_code}")
            assert r.status_code == 507 and r.json()["reason"] == "insufficient_storage", r.text
            assert_refused(api.post("/v1/admin/index/rebuild"), full, seen, "POST rebuild")
            for i in range(40):  # the registry's own writes fill what SQLite had in hand
                r = new_case(api, f"during {i}")
                assert_refused(r, full, seen, "POST case")
                if r.status_code == 507:
                    break
            assert seen[-1] == "POST case 507", seen
            assert_refused(
                api.patch(f"/v1/cases/{first}", json={"region": "North"}), full, seen, "PATCH case"
            )
            r = api.post("/v1/match", files={"file": ("p.jpg", distinct_photo(0), JPEG)})
            assert_refused(r, full, seen, "POST match")  # its audit record is a write
            assert_reads_go_on(api, first, seen)
            assert api.get(f"/v1/cases/{first}").json()["photos"], "the first photo is kept"

            small_fs.free()
            second = new_case(api, "after")
            assert second.status_code == 201, second.text
            assert add_photo(api, second.json()["id"], 2).status_code == 201
            assert top_case(api, distinct_photo(2)) == second.json()["id"]
            assert top_case(api, distinct_photo(0)) == first
            wait_for_jobs(api, 150)  # a job started on the full disk ended (or its lease did)
            assert api.post("/v1/admin/index/rebuild").status_code == 202
            assert wait_for_jobs(api) == "done"
            stats = api.get("/v1/admin/index").json()
            assert stats["templates"] == stats["registry_templates"] == 2
            assert api.get("/v1/admin/audit/verify").json()["ok"]
            model_id = api.get("/v1/info").json()["model_id"]
        _, names = registry_rows(data_dir, model_id)
        assert photo_files(data_dir) == names, "a refused photo left a file behind"
        server.stop()
        no_server_errors(server)
    finally:
        server.kill()
    closing_note(f"disk full ({small_fs.kind}, {filled >> 10} KiB of filler): {', '.join(seen)}")


def test_a_read_only_data_dir_refuses_writes_with_503_and_reads_go_on(
    tmp_path: Path, small_fs: SmallFilesystem, closing_note: Callable[[str], None]
) -> None:
    if small_fs.device is None:
        pytest.skip("needs a loop-mounted ext4 (errors=remount-ro) to turn read-only in use")
    data_dir = small_fs.mountpoint / "data"
    server = ServerProcess(data_dir, tmp_path / "server.log")
    server.start()
    seen: list[str] = []
    gone = {503: "storage_unavailable", 507: "insufficient_storage"}
    try:
        with server.client() as api:
            first = new_case(api, "before").json()["id"]
            assert add_photo(api, first, 3).status_code == 201
            small_fs.make_read_only()

            r = add_photo(api, first, 4)
            seen.append(f"POST photo {r.status_code}")
            assert r.status_code == 503 and r.json()["reason"] == "storage_unavailable", r.text
            r = new_case(api, "during")
            seen.append(f"POST case {r.status_code}")
            assert r.status_code == 503 and r.json()["reason"] == "storage_unavailable", r.text
            assert_refused(api.delete(f"/v1/cases/{first}"), gone, seen, "DELETE case")
            assert_refused(api.post("/v1/admin/index/rebuild"), gone, seen, "POST rebuild")
            r = api.post("/v1/match", files={"file": ("p.jpg", altered_probe(3), JPEG)})
            assert_refused(r, {503: "audit_unavailable", **gone}, seen, "POST match")
            assert_reads_go_on(api, first, seen)
            assert api.get(f"/v1/cases/{first}").json()["photos"], "the photo is kept"
        server.stop()  # its snapshot cannot be written: logged, and the database is closed
        assert "index snapshot not written at shutdown" in server.log.read_text()
    finally:
        server.kill()
    closing_note(f"read-only data dir: {', '.join(seen)}")
