"""Crash consistency: a real server is SIGKILLed at random moments, at least 30 times, while
clients enroll, delete and snapshot; after each restart what it acknowledged must hold.

- every acknowledged enrollment is in the registry and its photo finds its case at rank 1;
- every acknowledged deletion (case or photo) is gone from the registry and the index;
- the index holds what the registry holds (counts each round; the exact ids at the end,
  from the snapshot a graceful stop writes);
- the audit chain verifies;
- the photo store holds exactly the registry's files (no orphans, no temp files, none
  missing) once the start-up sweep has run.

An operation cut by the kill (no answer) may have happened or not; the registry is asked
which, and the answer must then be as consistent as an acknowledged one.

A second test kills the server in the middle of writing a large snapshot (60,000 templates)
and checks that the restart sweeps the half-written file away.
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import insert

from service.container import Container
from service.faces.base import FaceBackend
from service.matching.actors import SYSTEM
from service.registry.models import Case, Photo, Template, TemplateChange
from service.settings import Settings
from tests.faces_of_t1 import distinct_photo
from tests.server_process import ServerProcess, photo_files, registry_rows, snapshot_ids

pytestmark = pytest.mark.slow

KILLS = 30
CLIENTS = 3
WORKLOAD_SECONDS = (0.2, 1.3)  # the kill comes at a random moment in this window
MAX_GALLERY = 60  # above it, clients delete more than they enroll
JPEG = "image/jpeg"


@dataclass
class Ledger:
    """What the server acknowledged, and what a kill left open. A case a client works on is
    taken (no other client touches it meanwhile); one whose last operation got no answer is
    open until the registry, after the restart, says how it ended. ``k`` numbers photos
    (``distinct_photo(k)``)."""

    enrolled: dict[str, tuple[str, int]] = field(default_factory=dict)  # case -> photo id, k
    creating: set[int] = field(default_factory=set)  # photos whose case's creation was cut
    bare: set[str] = field(default_factory=set)  # case acknowledged without a photo
    deleted: dict[str, int | None] = field(default_factory=dict)  # case -> its photo's k
    photo_deleted: dict[str, int] = field(default_factory=dict)  # case -> deleted photo's k
    open: dict[str, int | None] = field(default_factory=dict)  # cut by a kill: case -> k
    taken: set[str] = field(default_factory=set)
    checked: set[str] = field(default_factory=set)  # matched since it last changed
    failures: list[str] = field(default_factory=list)
    acknowledged: dict[str, int] = field(default_factory=dict)  # operation -> count
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_photo: int = 0

    def count(self, operation: str) -> None:
        self.acknowledged[operation] = self.acknowledged.get(operation, 0) + 1

    def new_photo(self) -> int:
        with self.lock:
            self.next_photo += 1
            return self.next_photo - 1

    def take(self, pool: Callable[[], set[str]]) -> str | None:
        with self.lock:
            free = sorted(pool() - self.taken)
            if not free:
                return None
            case = random.choice(free)
            self.taken.add(case)
            return case


def run_client(api: httpx.Client, ledger: Ledger, stop: threading.Event) -> None:
    """Enroll, delete cases and photos, start rebuild jobs (which snapshot) until the kill."""
    while not stop.is_set():
        with ledger.lock:
            gallery = len(ledger.enrolled)
        roll = random.random()
        try:
            if roll < (0.35 if gallery > MAX_GALLERY else 0.6):
                enroll(api, ledger)
            elif roll < 0.8:
                delete_case(api, ledger)
            elif roll < 0.9:
                delete_photo(api, ledger)
            else:
                r = api.post("/v1/admin/index/rebuild")  # a job, run by the server's worker
                if r.status_code != 409:  # 409: another rebuild is queued or running
                    expect(ledger, r, 202, "rebuild job started")
        except httpx.TransportError:
            return  # the kill: whatever was in flight is open


def expect(ledger: Ledger, r: httpx.Response, status: int, operation: str) -> bool:
    with ledger.lock:
        if r.status_code == status:
            ledger.count(operation)
            return True
        ledger.failures.append(f"{operation}: {r.status_code} {r.text[:200]}")
        return False


def enroll(api: httpx.Client, ledger: Ledger) -> None:
    k = ledger.new_photo()
    with ledger.lock:
        ledger.creating.add(k)
    r = api.post("/v1/cases", json={"display_name": f"crash {k}", "external_ref": f"crash-{k}"})
    with ledger.lock:
        ledger.creating.discard(k)
    if not expect(ledger, r, 201, "case created"):
        return
    case = r.json()["id"]
    with ledger.lock:
        ledger.open[case] = k  # until the photo's answer arrives
        ledger.taken.add(case)
    r = api.post(f"/v1/cases/{case}/photos", files={"file": ("p.jpg", distinct_photo(k), JPEG)})
    with ledger.lock:
        del ledger.open[case]
        ledger.taken.discard(case)
        if r.status_code == 201:
            ledger.count("photo enrolled")
            ledger.enrolled[case] = (r.json()["photo"]["id"], k)
        else:
            ledger.failures.append(f"enroll: {r.status_code} {r.text[:200]}")


def delete_case(api: httpx.Client, ledger: Ledger) -> None:
    case = ledger.take(lambda: set(ledger.enrolled) | ledger.bare)
    if case is None:
        return
    with ledger.lock:
        k = ledger.enrolled[case][1] if case in ledger.enrolled else None
        ledger.open[case] = k
    r = api.delete(f"/v1/cases/{case}")
    with ledger.lock:
        del ledger.open[case]
        ledger.taken.discard(case)
        if r.status_code == 204:
            ledger.count("case deleted")
            ledger.enrolled.pop(case, None)
            ledger.bare.discard(case)
            ledger.deleted[case] = k
            ledger.checked.discard(case)
        else:
            ledger.failures.append(f"delete case: {r.status_code} {r.text[:200]}")


def delete_photo(api: httpx.Client, ledger: Ledger) -> None:
    case = ledger.take(lambda: set(ledger.enrolled))
    if case is None:
        return
    photo_id, k = ledger.enrolled[case]
    with ledger.lock:
        ledger.open[case] = k
    r = api.delete(f"/v1/cases/{case}/photos/{photo_id}")
    with ledger.lock:
        del ledger.open[case]
        ledger.taken.discard(case)
        if r.status_code == 204:
            ledger.count("photo deleted")
            del ledger.enrolled[case]
            ledger.bare.add(case)
            ledger.photo_deleted[case] = k
            ledger.checked.discard(case)
        else:
            ledger.failures.append(f"delete photo: {r.status_code} {r.text[:200]}")


# -- the checks after each restart -------------------------------------------------------------


def registry_cases(api: httpx.Client, refs: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Every case the admin reaches, with its photos' ids (and into ``refs``, its id by
    external ref)."""
    cases: dict[str, list[str]] = {}
    offset = 0
    while True:
        page = api.get("/v1/cases", params={"offset": offset, "limit": 200}).json()
        for c in page["items"]:
            cases[c["id"]] = [p["id"] for p in c["photos"]]
            if refs is not None:
                refs[c["external_ref"]] = c["id"]
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return cases


def candidates(api: httpx.Client, k: int) -> list[str]:
    r = api.post(
        "/v1/match", files={"file": ("p.jpg", distinct_photo(k), JPEG)}, data={"top_k": "50"}
    )
    assert r.status_code == 200, r.text
    (face,) = r.json()["faces"]
    return [c["case_id"] for c in face["candidates"]]


def settle_open(api: httpx.Client, ledger: Ledger) -> None:
    """Ask the registry how each operation cut by the kill ended, and book it so."""
    refs: dict[str, str] = {}
    registry = registry_cases(api, refs)
    for k in ledger.creating:  # created or not; if it was, it has no photo
        if f"crash-{k}" in refs:
            ledger.open[refs[f"crash-{k}"]] = k
    ledger.creating.clear()
    for case, k in ledger.open.items():
        ledger.enrolled.pop(case, None)
        ledger.bare.discard(case)
        ledger.checked.discard(case)
        photos = registry.get(case)
        if photos is None:
            ledger.deleted[case] = k
        elif photos:
            assert k is not None and len(photos) == 1, (case, photos)
            ledger.enrolled[case] = (photos[0], k)
        else:
            ledger.bare.add(case)
            if k is not None:
                ledger.photo_deleted[case] = k
    ledger.open.clear()
    ledger.taken.clear()


def check_registry(api: httpx.Client, ledger: Ledger) -> None:
    registry = registry_cases(api)
    for case, (photo_id, _) in ledger.enrolled.items():
        assert registry.get(case) == [photo_id], f"acknowledged enrollment {case} lost"
    for case in ledger.bare:
        assert registry.get(case) == [], f"case {case} should be there without photos"
    for case in ledger.deleted:
        assert case not in registry, f"acknowledged deletion of {case} came back"
    known = set(ledger.enrolled) | ledger.bare
    assert set(registry) == known, "the registry holds cases nobody acknowledged"


def check_index(api: httpx.Client, ledger: Ledger, everything: bool) -> int:
    """Rank 1 for enrollments, absence for deletions: those that changed since they were
    last matched, or all of them; returns how many searches were made."""
    stats = api.get("/v1/admin/index").json()
    assert stats["templates"] == stats["registry_templates"], stats
    gone = {**ledger.photo_deleted, **{c: k for c, k in ledger.deleted.items() if k is not None}}
    todo = [(case, k, True) for case, (_, k) in ledger.enrolled.items()]
    todo += [(case, k, False) for case, k in gone.items()]
    todo = [t for t in todo if everything or t[0] not in ledger.checked]

    def check(item: tuple[str, int, bool]) -> None:
        case, k, present = item
        found = candidates(api, k)
        if present:
            assert found and found[0] == case, f"enrolled case {case} not at rank 1: {found[:3]}"
        else:
            assert case not in found, f"deleted {case} is still found"

    with ThreadPoolExecutor(2) as pool:  # the server's two worker threads
        list(pool.map(check, todo))
    ledger.checked |= {case for case, _, _ in todo}
    return len(todo)


def check_storage(api: httpx.Client, data_dir: Path, model_id: str) -> None:
    verify = api.get("/v1/admin/audit/verify").json()
    assert verify["ok"], verify["problems"]
    _, names = registry_rows(data_dir, model_id)
    files = photo_files(data_dir)
    assert not list((data_dir / "faiss").glob(".*.tmp")), "a cut snapshot was not swept"
    assert files == names, (
        f"orphans {sorted(files - names)[:5]}, missing {sorted(names - files)[:5]}"
    )


def test_sigkill_at_random_moments_loses_nothing_acknowledged(
    tmp_path: Path, closing_note: Callable[[str], None]
) -> None:
    random.seed(10)
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir, tmp_path / "server.log")
    ledger = Ledger()
    opened: dict[str, int] = {}
    searches, checking = 0, 0.0
    started = time.monotonic()
    server.start()
    with server.client(timeout=60) as api:
        info = api.get("/v1/info").json()
    model_id = info["model_id"]
    try:
        for _ in range(KILLS):
            stop = threading.Event()
            with server.client(timeout=60) as api:
                threads = [
                    threading.Thread(target=run_client, args=(api, ledger, stop))
                    for _ in range(CLIENTS)
                ]
                for t in threads:
                    t.start()
                time.sleep(random.uniform(*WORKLOAD_SECONDS))
                server.kill()
                stop.set()
                for t in threads:
                    t.join(60)
            assert not ledger.failures, ledger.failures
            server.start()
            check_started = time.monotonic()
            with server.client(timeout=60) as api:
                how = api.get("/v1/admin/index").json()["opened"]
                opened[how] = opened.get(how, 0) + 1
                settle_open(api, ledger)
                check_registry(api, ledger)
                searches += check_index(api, ledger, everything=False)
                check_storage(api, data_dir, model_id)
            checking += time.monotonic() - check_started
        with server.client(timeout=60) as api:
            searches += check_index(api, ledger, everything=True)
            check_storage(api, data_dir, model_id)
        assert server.stop() in (0, -signal.SIGTERM), server.tail()
        templates, _ = registry_rows(data_dir, model_id)
        dimension, transform = info["dimension"], info["template_transform"]
        assert snapshot_ids(data_dir, model_id, dimension, transform) == templates
    finally:
        server.kill()
    elapsed = time.monotonic() - started
    startup = sorted(server.startup_seconds)
    acknowledged = ", ".join(f"{n} {op}" for op, n in sorted(ledger.acknowledged.items()))
    closing_note(
        f"crash: {KILLS} SIGKILLs in {elapsed:.0f} s (start-up median "
        f"{startup[len(startup) // 2]:.1f} s, checks {checking:.0f} s); acknowledged: "
        f"{acknowledged}; at the end {len(ledger.enrolled)} cases enrolled, "
        f"{len(ledger.deleted)} deleted, {len(ledger.photo_deleted)} photos deleted or cut "
        f"before enrolled; {searches} searches checked; {server.swept()} orphan photo "
        f"files swept; index opened {opened}"
    )
    assert ledger.acknowledged.get("photo enrolled", 0) >= KILLS
    assert ledger.acknowledged.get("case deleted", 0) >= KILLS // 3


# -- a snapshot cut in the middle of its writing ------------------------------------------------


def fill_registry(settings: Settings, backend: FaceBackend, count: int) -> None:
    """``count`` synthetic cases with a photo row and a random unit template each, written
    straight into the registry (like scripts/bench_match.py), so a snapshot is large enough
    to be caught in the middle of its writing."""
    built = Container(settings, backend)
    org = built.access.create_org(SYSTEM, "synthetic")
    model_id = built.pipeline.model_id
    rng = np.random.default_rng(0)
    now = datetime.now(UTC)
    for start in range(1, count + 1, 20_000):
        ids = range(start, min(start + 20_000, count + 1))
        vectors = rng.normal(size=(len(ids), backend.dimension)).astype("<f4")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        with built.db.unit() as tx:
            s = tx.session
            s.execute(insert(Case), [
                {"id": f"s{i}", "org_id": org.id, "display_name": "s", "sex": "unknown",
                 "status": "missing", "created_at": now, "updated_at": now} for i in ids
            ])  # fmt: skip
            s.execute(insert(Photo), [
                {"id": f"s{i}", "case_id": f"s{i}", "upload_sha256": f"{i}", "stored_name":
                 f"s{i}.jpg", "width": 1, "height": 1, "face_box": "[0, 0, 1, 1]",
                 "created_at": now} for i in ids
            ])  # fmt: skip
            s.execute(insert(Template), [
                {"id": i, "case_id": f"s{i}", "photo_id": f"s{i}", "model_id": model_id,
                 "kind": "original", "vector": v.tobytes(), "created_at": now}
                for i, v in zip(ids, vectors, strict=True)
            ])  # fmt: skip
            s.execute(insert(TemplateChange), [
                {"model_id": model_id, "template_id": i, "op": "add"} for i in ids
            ])  # fmt: skip
    built.close()


def test_a_snapshot_cut_by_sigkill_leaves_no_temp_file(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    sface_backend: FaceBackend,
    closing_note: Callable[[str], None],
) -> None:
    data_dir = tmp_path / "data"
    fill_registry(make_settings(data_dir=data_dir), sface_backend, 60_000)
    server = ServerProcess(data_dir, tmp_path / "server.log")  # its worker runs the rebuild job
    snapshots = data_dir / "faiss"
    try:
        server.start()
        for _ in range(5):  # until the kill lands in the middle of a snapshot's writing
            with server.client() as api:
                rebuild = threading.Thread(target=_rebuild_until_cut, args=(api,))
                rebuild.start()
                deadline = time.monotonic() + 60
                while not list(snapshots.glob(".*.tmp")) and time.monotonic() < deadline:
                    time.sleep(0.0005)
                server.kill()
                rebuild.join(60)
            left = sorted(p.name for p in snapshots.glob(".*.tmp"))
            server.start()
            if left:
                break
        assert left, "the kill never landed while a snapshot was written"
        assert not list(snapshots.glob(".*.tmp")), "the cut snapshot's temp file stayed"
        with server.client() as api:
            stats = api.get("/v1/admin/index").json()
        assert stats["templates"] == stats["registry_templates"] == 60_000, stats
    finally:
        server.kill()
    closing_note(f"crash: SIGKILL in the middle of a snapshot left {left}; swept at the restart")


def _rebuild_until_cut(api: httpx.Client) -> None:
    with contextlib.suppress(httpx.TransportError):
        api.post("/v1/admin/index/rebuild")
