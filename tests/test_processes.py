"""The production shape on one machine: two real ``homeward serve`` processes and a
``homeward worker`` on one PostgreSQL database, rate limits in Redis. Each sees the other's
enrollments and deletions within a second or two, and a key's limit holds across both."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import REPO
from tests.databases import fresh_postgres_database
from tests.faces_of_t1 import altered_probe, face_crop
from tests.images import encode
from tests.server_process import HUGE_RATE_LIMITS, ServerProcess
from tests.test_ratelimit import REDIS_URL

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

JPEG = "image/jpeg"
VOLUNTEER_LIMIT = 5  # a minute


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two API processes without background loops and one worker, sharing the database,
    the data dir (as a shared volume) and Redis."""
    limits = {**json.loads(HUGE_RATE_LIMITS), "volunteer": VOLUNTEER_LIMIT}
    with fresh_postgres_database() as url:
        env = {
            "HOMEWARD_DATABASE_URL": url,
            "HOMEWARD_REDIS_URL": REDIS_URL,
            "HOMEWARD_RATE_LIMITS": json.dumps(limits),
            "HOMEWARD_WITH_WORKER": "false",
        }
        data = tmp_path / "data"
        servers = [ServerProcess(data, tmp_path / f"server-{n}.log", env) for n in (1, 2)]
        servers[0].start()  # the first migrates and registers the admin key
        servers[1].start()
        worker = start_worker(servers[0].env, tmp_path / "worker.log")
        try:
            yield servers[0], servers[1]
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        finally:
            worker.terminate()
            worker.wait(timeout=60)
            for server in servers:
                server.stop()


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


def top_case(client: httpx.Client, face: int) -> str | None:
    r = client.post("/v1/match", files={"file": ("p.jpg", altered_probe(face), JPEG)})
    assert r.status_code == 200, r.text
    candidates = r.json()["faces"][0]["candidates"]
    return candidates[0]["case_id"] if candidates else None


def seconds_until(check: object, limit: float = 10.0) -> float:
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < limit, "not seen in time"
        time.sleep(0.05)
    return time.monotonic() - started


def test_two_api_processes_and_a_worker_converge(
    deployment: tuple[ServerProcess, ServerProcess],
) -> None:
    first, second = deployment
    with first.client() as a, second.client() as b:
        cases = []
        for face in range(3):
            case_id = a.post("/v1/cases", json={"display_name": f"c{face}"}).json()["id"]
            r = a.post(
                f"/v1/cases/{case_id}/photos",
                files={"file": ("e.jpg", encode(face_crop(face)), JPEG)},
            )
            assert r.status_code == 201, r.text
            cases.append(case_id)
        seen = seconds_until(lambda: top_case(b, 2) == cases[2])
        assert seen < 2.0
        assert b.delete(f"/v1/cases/{cases[2]}").status_code == 204
        forgotten = seconds_until(lambda: top_case(a, 2) != cases[2])
        assert forgotten < 2.0
        assert a.get("/v1/info").json()["index_size"] == b.get("/v1/info").json()["index_size"]


def test_a_keys_rate_limit_holds_across_processes(
    deployment: tuple[ServerProcess, ServerProcess],
) -> None:
    first, second = deployment
    with first.client() as admin:
        org = admin.post("/v1/admin/orgs", json={"name": "volunteers"}).json()["id"]
        key = admin.post(
            "/v1/admin/keys", json={"name": "phone", "org_id": org, "roles": ["volunteer"]}
        ).json()["key"]
    headers = {"X-API-Key": key}
    with (
        httpx.Client(base_url=first.base_url, headers=headers) as a,
        httpx.Client(base_url=second.base_url, headers=headers) as b,
    ):
        codes = [c.get("/v1/sightings").status_code for c in (a, b) * VOLUNTEER_LIMIT]
    assert codes[:VOLUNTEER_LIMIT] == [200] * VOLUNTEER_LIMIT
    assert set(codes[VOLUNTEER_LIMIT:]) == {429}  # per process, each would allow 5 more
    connection = redis.Redis.from_url(REDIS_URL)
    for bucket in connection.scan_iter("homeward:rate:*"):
        connection.delete(bucket)
    connection.close()
