"""Index jobs: a rebuild or a re-embedding started through the API, run by a worker,
followed (API, CLI), cancelled or failed without touching the live index, and claimed by one
worker at a time (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import insert, update

from service.cli import main
from service.container import Container
from service.errors import StorageUnavailable
from service.matching import jobs as jobs_module
from service.matching.actors import SYSTEM
from service.matching.index_source import RegistryTemplates
from service.matching.jobs import JobView
from service.registry.db import Database
from service.registry.models import Case, Job, Photo, Template, TemplateChange, new_id
from service.search.port import IndexedTemplate
from service.search.verify import ExactSample
from service.settings import Settings
from tests.conftest import ADMIN_KEY, PHOTO_KEY, REPO, SECRET_KEY, container_of
from tests.databases import fresh_postgres_database
from tests.faces_of_t1 import altered_probe, distinct_photo

JPEG = "image/jpeg"
GALLERY = 5_000  # synthetic templates: a rebuild of several blocks


def fill_gallery(built: Container, count: int, seed: int = 0) -> None:
    """Synthetic templates of the live model, written straight into the registry (as
    scripts/bench_match.py's fill_gallery does), each with its case and photo."""
    model_id, dimension = built.index.model_id, built.index.dimension
    org = built.access.administrators(SYSTEM)
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(count, dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    now = datetime.now(UTC)
    cases = [new_id() for _ in range(count)]
    photos = [new_id() for _ in range(count)]
    with built.db.unit() as tx:
        s = tx.session
        s.execute(
            insert(Case),
            [
                {"id": c, "org_id": org.id, "display_name": "synthetic", "sex": "unknown"}
                | {"status": "missing", "created_at": now, "updated_at": now}
                for c in cases
            ],
        )
        s.execute(
            insert(Photo),
            [
                {"id": p, "case_id": c, "upload_sha256": p * 2, "stored_name": f"{p}.jpg"}
                | {"width": 112, "height": 112, "face_box": "[0, 0, 112, 112]", "created_at": now}
                for p, c in zip(photos, cases, strict=True)
            ],
        )
        rows = s.execute(
            insert(Template).returning(Template.id),
            [
                {"case_id": c, "photo_id": p, "model_id": model_id, "kind": "original"}
                | {"vector": v.tobytes(), "created_at": now}
                for c, p, v in zip(cases, photos, vectors, strict=True)
            ],
        )
        ids = [r[0] for r in rows]
        s.execute(
            insert(TemplateChange),
            [{"model_id": model_id, "template_id": t, "op": "add"} for t in ids],
        )
    built.index.catch_up()


def wait_for(client: TestClient, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/v1/admin/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def enroll(client: TestClient, k: int) -> str:
    case = client.post("/v1/cases", json={"display_name": f"child {k}"}).json()["id"]
    r = client.post(f"/v1/cases/{case}/photos", files={"file": ("p.jpg", distinct_photo(k), JPEG)})
    assert r.status_code == 201, r.text
    return str(case)


def top_case(client: TestClient, photo: bytes) -> str:
    r = client.post("/v1/match", files={"file": ("p.jpg", photo, JPEG)})
    assert r.status_code == 200, r.text
    return str(r.json()["faces"][0]["candidates"][0]["case_id"])


@pytest.fixture
def slow_progress(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Make each progress report of a job take this long (the build then lasts a while)."""

    def slow(seconds: float) -> None:
        report = jobs_module._Reporter.report

        def slowed(self: Any, stage: str, done: int, total: int) -> None:
            time.sleep(seconds)
            report(self, stage, done, total)

        monkeypatch.setattr(jobs_module._Reporter, "report", slowed)

    return slow


@pytest.fixture
def idle_app(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> Iterator[TestClient]:
    """An app without its worker: the tests run the jobs themselves."""
    with start_app(make_settings(with_worker=False)) as c:
        yield c


# -- through the API ---------------------------------------------------------------------------


def test_a_rebuild_job_is_queued_run_and_reported(
    client: TestClient, slow_progress: Callable[[float], None]
) -> None:
    built = container_of(client)
    fill_gallery(built, GALLERY)
    slow_progress(0.1)
    started = client.post("/v1/admin/index/rebuild")
    assert started.status_code == 202, started.text
    job = started.json()
    assert (
        job["status"] == "queued" and job["kind"] == "index.rebuild" and job["eta_seconds"] is None
    )
    seen: list[dict[str, Any]] = []
    while job["status"] not in ("done", "failed", "cancelled"):
        job = client.get(f"/v1/admin/jobs/{job['id']}").json()
        seen.append(job)
        time.sleep(0.05)
    running = [j for j in seen if j["status"] == "running" and j["done"]]
    assert running, "the job was never seen running"
    assert any(j["rate"] and j["eta_seconds"] is not None for j in running)
    assert job["status"] == "done", job
    assert job["done"] == job["total"] == GALLERY == built.index.size
    assert job["rate"] > 0 and job["eta_seconds"] is None and job["finished_at"]
    detail = job["detail"]
    assert detail["templates"] == detail["registry_templates"] == GALLERY
    assert detail["sample_queries"] == 20 and detail["found"] == detail["exact_neighbours"] == 200
    assert client.get("/v1/admin/jobs").json()[0]["id"] == job["id"]
    audit = client.get("/v1/admin/audit?action=index.rebuild").json()
    assert len(audit) == 1
    assert client.get("/v1/admin/jobs/nope").status_code == 404


def test_searches_go_on_during_a_rebuild(
    client: TestClient, slow_progress: Callable[[float], None]
) -> None:
    built = container_of(client)
    case = enroll(client, 1)
    fill_gallery(built, GALLERY)
    slow_progress(0.5)  # 5 blocks: the build lasts 2.5 s or more
    generation = built.index.generation
    job = client.post("/v1/admin/index/rebuild").json()
    started = time.monotonic()
    latencies: list[float] = []
    while client.get(f"/v1/admin/jobs/{job['id']}").json()["status"] != "done":
        assert time.monotonic() - started < 60
        t0 = time.monotonic()
        assert top_case(client, altered_probe(1)) == case  # 200, and the right case
        latencies.append(time.monotonic() - t0)
    build = time.monotonic() - started
    assert len(latencies) >= 3 and build > 2.5
    assert max(latencies) < build / 2, (max(latencies), build)
    assert built.index.generation == generation and built.index.size == GALLERY + 1
    assert top_case(client, altered_probe(1)) == case


def test_a_second_index_job_is_refused_while_one_is_queued(idle_app: TestClient) -> None:
    first = idle_app.post("/v1/admin/index/rebuild").json()
    second = idle_app.post("/v1/admin/index/rebuild", json={"reembed": True})
    assert second.status_code == 409 and first["id"] in second.json()["detail"]
    assert idle_app.post(f"/v1/admin/jobs/{first['id']}/cancel").json()["status"] == "cancelled"
    assert idle_app.post("/v1/admin/index/rebuild").status_code == 202


def run_in_thread(built: Container) -> tuple[threading.Thread, list[JobView | None]]:
    results: list[JobView | None] = []
    thread = threading.Thread(target=lambda: results.append(built.jobs.run_next()), daemon=True)
    thread.start()
    return thread, results


def test_a_cancelled_job_leaves_the_live_index_untouched(
    idle_app: TestClient, slow_progress: Callable[[float], None]
) -> None:
    built = container_of(idle_app)
    case = enroll(idle_app, 2)
    fill_gallery(built, GALLERY)
    live, generation = built.index.index, built.index.generation
    before = top_case(idle_app, altered_probe(2))
    slow_progress(0.3)
    job = idle_app.post("/v1/admin/index/rebuild").json()
    thread, results = run_in_thread(built)
    deadline = time.monotonic() + 30
    while idle_app.get(f"/v1/admin/jobs/{job['id']}").json()["done"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelling = idle_app.post(f"/v1/admin/jobs/{job['id']}/cancel").json()
    assert cancelling["status"] == "running" and cancelling["cancel_requested"]
    thread.join(30)
    ended = wait_for(idle_app, job["id"])
    assert ended["status"] == "cancelled" and "cancelled on request" in ended["error"]
    assert ended["done"] < GALLERY
    assert results[0] is not None and results[0].status == "cancelled"
    assert built.index.index is live and built.index.generation == generation
    assert top_case(idle_app, altered_probe(2)) == before == case
    assert not idle_app.get("/v1/admin/audit?action=index.rebuild").json()


def test_a_failed_check_leaves_the_live_index_untouched(
    idle_app: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = container_of(idle_app)
    fill_gallery(built, 2_000)
    live, generation = built.index.index, built.index.generation
    add = ExactSample.add

    def wrong(self: ExactSample, ids: np.ndarray, vectors: np.ndarray) -> None:
        add(self, ids + 1_000_000, vectors)  # the exact answers name templates nobody has

    monkeypatch.setattr(ExactSample, "add", wrong)
    job = idle_app.post("/v1/admin/index/rebuild").json()
    assert built.jobs.run_next() is not None
    failed = wait_for(idle_app, job["id"])
    assert failed["status"] == "failed" and "of the 200 exact top-10" in failed["error"]
    assert built.index.index is live and built.index.generation == generation
    assert built.index.size == 2_000


def test_a_failing_block_leaves_the_live_index_untouched(
    idle_app: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = container_of(idle_app)
    fill_gallery(built, 3_000)
    live = built.index.index
    blocks = RegistryTemplates.iter_templates

    def failing(self: RegistryTemplates, model_id: str, block: int = 20_000) -> Iterator[Any]:
        source: Iterator[list[IndexedTemplate]] = blocks(self, model_id, block)
        yield next(source)
        raise StorageUnavailable("the registry database is unavailable")

    monkeypatch.setattr(RegistryTemplates, "iter_templates", failing)
    job = idle_app.post("/v1/admin/index/rebuild").json()
    built.jobs.run_next()
    failed = wait_for(idle_app, job["id"])
    assert failed["status"] == "failed" and "unavailable" in failed["error"]
    assert built.index.index is live and built.index.size == 3_000
    assert idle_app.post("/v1/admin/index/rebuild").status_code == 202  # the slot is free


# -- re-embedding after a model change ----------------------------------------------------------


def test_a_reembed_job_embeds_the_stored_photos_in_two_processes(
    make_settings: Callable[..., Settings], start_app: Callable[[Settings], TestClient]
) -> None:
    with start_app(make_settings(tta_flip=False)) as before:
        cases = {k: enroll(before, k) for k in (3, 4, 5)}
        old_model = before.get("/v1/info").json()["model_id"]
    settings = make_settings(tta_flip=True, reembed_processes=2)
    with start_app(settings) as after:
        info = after.get("/v1/info").json()
        assert info["model_id"] != old_model and info["index_size"] == 0
        job = after.post("/v1/admin/index/rebuild", json={"reembed": True})
        assert job.status_code == 202 and job.json()["kind"] == "index.reembed"
        done = wait_for(after, job.json()["id"], timeout=180)
        assert done["status"] == "done", done
        assert done["detail"]["photos_embedded"] == 3 and done["detail"]["templates"] == 3
        for k, case in cases.items():
            assert top_case(after, altered_probe(k)) == case
        assert after.get("/v1/admin/index").json()["registry_templates"] == 3


# -- following from the command line -------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("HOMEWARD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HOMEWARD_MODEL_DIR", str(REPO / "models"))
    monkeypatch.setenv("HOMEWARD_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("HOMEWARD_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("HOMEWARD_PHOTO_KEY", PHOTO_KEY)
    monkeypatch.setenv("HOMEWARD_SECRETS_FILE", str(tmp_path / "secrets.json"))
    monkeypatch.setenv("HOMEWARD_LOG_LEVEL", "WARNING")
    return CliRunner()


def test_the_cli_follows_a_job_started_through_the_api(
    cli_env: CliRunner, start_app: Callable[[Settings], TestClient]
) -> None:
    with start_app(Settings()) as client:  # the same data dir as the CLI's
        enroll(client, 6)
        job = client.post("/v1/admin/index/rebuild").json()
        followed = cli_env.invoke(main, ["index", "rebuild", "--follow", job["id"]])
        assert followed.exit_code == 0, followed.output
        assert f"following job {job['id']}" in followed.output
        assert "rebuilt: 1 templates" in followed.output
        assert wait_for(client, job["id"])["status"] == "done"


def test_the_cli_follows_a_cancelled_job_and_fails(
    cli_env: CliRunner, start_app: Callable[[Settings], TestClient]
) -> None:
    with start_app(Settings(with_worker=False)) as client:
        job = client.post("/v1/admin/index/rebuild").json()
        client.post(f"/v1/admin/jobs/{job['id']}/cancel")
    followed = cli_env.invoke(main, ["index", "rebuild", "--follow", job["id"]])
    assert followed.exit_code == 1 and "cancelled" in followed.output


def test_the_cli_runs_a_rebuild_with_a_bar(cli_env: CliRunner) -> None:
    result = cli_env.invoke(main, ["index", "rebuild"])
    assert result.exit_code == 0, result.output
    assert "rebuilt: 0 templates" in result.output
    again = cli_env.invoke(main, ["index", "rebuild", "--follow", "nope"])
    assert again.exit_code == 1 and "not found" in again.output


# -- claiming -----------------------------------------------------------------------------------


def claims_once(db: Database) -> None:
    """A claimed job is not claimed again while its lease holds; a lease that ran out is
    (the job restarts), and the old claim's reports are refused."""
    with db.unit() as tx:
        first = tx.jobs.add("index.rebuild", "k1", None).id
    with db.unit() as tx:
        claimed = tx.jobs.claim_next(60)
    assert claimed is not None and claimed.id == first and claimed.attempt == 1
    with db.unit() as tx:
        assert tx.jobs.claim_next(60) is None  # held by its lease
        assert tx.jobs.progress(first, 1, "indexing", 5, 10, 60) is False
        tx.session.execute(
            update(Job)
            .where(Job.id == first)
            .values(lease_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    with db.unit() as tx:
        again = tx.jobs.claim_next(60)
        assert again is not None and again.id == first and again.attempt == 2
        assert again.done == 0 and again.total is None
    with db.unit() as tx:
        assert tx.jobs.progress(first, 1, "indexing", 6, 10, 60) is None  # the dead claim
        assert tx.jobs.finish(first, 1, "done") is False
        assert tx.jobs.finish(first, 2, "done") is True
    with db.unit() as tx:
        assert tx.jobs.get(first).slot is None and tx.jobs.active() is None


def test_claims_on_sqlite(tmp_path: Path) -> None:
    db = Database.open(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        claims_once(db)
    finally:
        db.close()


@pytest.mark.postgres
def test_claims_on_postgres_skip_a_job_another_worker_holds() -> None:
    with fresh_postgres_database() as url:
        db = Database.open(url)
        try:
            claims_once(db)
            with db.unit() as tx:
                one = tx.jobs.add("index.rebuild", "k", None).id  # two queued jobs: the
                tx.session.execute(update(Job).where(Job.id == one).values(slot=None))  # slot aside
                two = tx.jobs.add("index.rebuild", "k", None).id
            with db.unit() as a:
                held = a.jobs.claim_next(60)
                with db.unit() as b:  # a's row is locked until a commits: b takes the other
                    other = b.jobs.claim_next(60)
            assert held is not None and other is not None
            assert {held.id, other.id} == {one, two}
        finally:
            db.close()


def test_job_view_rate_and_eta() -> None:
    now = datetime.now(UTC)
    job = Job(
        id="j",
        kind="index.rebuild",
        status="running",
        requested_by="k",
        stage="indexing",
        done=300,
        total=1000,
        detail="{}",
        cancel_requested=False,
        created_at=now,
        stage_started_at=now - timedelta(seconds=3),
        updated_at=now,
    )
    view = JobView.of(job)
    assert view.rate == pytest.approx(100) and view.eta_seconds == pytest.approx(7)
    job.done = 0
    assert JobView.of(job).rate is None and JobView.of(job).eta_seconds is None
