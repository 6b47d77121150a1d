"""Load: 16 concurrent clients on a real server for a bounded time (3 minutes, or
``HOMEWARD_LOAD_SECONDS``), mixing match, enroll, delete and info. No 5xx at all (nor any
other unexpected answer), memory flat after the warm-up, the index equal to the registry
at the end; the closing note gives p50/p95 per route."""

from __future__ import annotations

import os
import random
import signal
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from tests.conftest import ADMIN_KEY
from tests.faces_of_t1 import altered_probe, distinct_photo
from tests.server_process import (
    ServerProcess,
    percentiles,
    photo_files,
    registry_rows,
    snapshot_ids,
)

pytestmark = pytest.mark.slow

CLIENTS = 16
SECONDS = float(os.environ.get("HOMEWARD_LOAD_SECONDS", "180"))
WARM_UP = min(60.0, SECONDS / 3)  # the allocator's and the models' buffers settle
MAX_GROWTH = 5.0  # MiB a minute after the warm-up: flat, not leaking
SEED_CASES = 24
JPEG = "image/jpeg"
MIB = 1024 * 1024


@dataclass
class Record:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, dict[int, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(
        self, route: str, expected: int, send: httpx.Client, method: str, url: str, **kw: object
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            r = send.request(method, url, **kw)  # type: ignore[arg-type]
        except httpx.TransportError as err:
            with self.lock:
                self.unexpected.append(f"{route}: {type(err).__name__} {err}")
            return None
        took = time.perf_counter() - started
        with self.lock:
            self.latencies[route].append(took)
            self.statuses[route][r.status_code] += 1
            if r.status_code != expected:
                self.unexpected.append(f"{route}: {r.status_code} {r.text[:200]}")
        return r if r.status_code == expected else None


class Photos:
    """Distinct photos handed out once each, across the clients."""

    def __init__(self) -> None:
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            self._next += 1
            return self._next - 1


def enroll(api: httpx.Client, rec: Record, photos: Photos) -> tuple[str, int] | None:
    k = photos.take()
    r = rec.call("POST /v1/cases", 201, api, "POST", "/v1/cases", json={"display_name": f"L{k}"})
    if r is None:
        return None
    case = r.json()["id"]
    files = {"file": ("p.jpg", distinct_photo(k), JPEG)}
    url = f"/v1/cases/{case}/photos"
    if rec.call("POST /v1/cases/{id}/photos", 201, api, "POST", url, files=files) is None:
        return None
    return case, k


def match(api: httpx.Client, rec: Record, photo: bytes, **form: str) -> list[str] | None:
    files = {"file": ("p.jpg", photo, JPEG)}
    r = rec.call("POST /v1/match", 200, api, "POST", "/v1/match", files=files, data=form)
    return None if r is None else [c["case_id"] for c in r.json()["faces"][0]["candidates"]]


def client_loop(
    base_url: str, key: str, deadline: float, rec: Record, photos: Photos, seed: int
) -> None:
    rng = random.Random(seed)
    mine: list[tuple[str, int]] = []
    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=300) as api:
        while time.monotonic() < deadline:
            roll = rng.random()
            if roll < 0.45:
                if mine and rng.random() < 0.5:  # one of its own: found at rank 1
                    case, k = rng.choice(mine)
                    found = match(api, rec, distinct_photo(k))
                    if found is not None and found[:1] != [case]:
                        with rec.lock:
                            rec.unexpected.append(f"match: {case} not at rank 1 but {found[:1]}")
                else:
                    match(api, rec, altered_probe(rng.randrange(6)), top_k="10")
            elif roll < 0.65:
                rec.call("GET /v1/info", 200, api, "GET", "/v1/info")
            elif roll < 0.83 or not mine:
                enrolled = enroll(api, rec, photos)
                if enrolled:
                    mine.append(enrolled)
            else:
                case, _ = mine.pop(rng.randrange(len(mine)))
                rec.call("DELETE /v1/cases/{id}", 204, api, "DELETE", f"/v1/cases/{case}")


def sample_memory(pid: int, stop: threading.Event, samples: list[tuple[float, float]]) -> None:
    process = psutil.Process(pid)
    started = time.monotonic()
    while not stop.wait(1.0):
        samples.append((time.monotonic() - started, process.memory_info().rss / MIB))


def test_sixteen_clients_mixed_load(tmp_path: Path, closing_note: Callable[[str], None]) -> None:
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir, tmp_path / "server.log")
    server.start()
    rec, photos = Record(), Photos()
    samples: list[tuple[float, float]] = []
    try:
        with server.client() as api:
            info = api.get("/v1/info").json()
            for _ in range(SEED_CASES):
                assert enroll(api, rec, photos) is not None, rec.unexpected
        stop = threading.Event()
        sampler = threading.Thread(target=sample_memory, args=(server.pid, stop, samples))
        sampler.start()
        started = time.monotonic()
        deadline = started + SECONDS
        clients = [
            threading.Thread(
                target=client_loop,
                args=(server.base_url, ADMIN_KEY, deadline, rec, photos, i),
            )
            for i in range(CLIENTS)
        ]
        for t in clients:
            t.start()
        for t in clients:
            t.join(SECONDS + 600)
        elapsed = time.monotonic() - started
        stop.set()
        sampler.join()
        with server.client() as api:
            stats = api.get("/v1/admin/index").json()
            audit = api.get("/v1/admin/audit/verify").json()
        assert server.stop() in (0, -signal.SIGTERM), server.tail()
    finally:
        server.kill()

    requests = sum(len(v) for v in rec.latencies.values())
    fives = {r: {s: n for s, n in c.items() if s >= 500} for r, c in rec.statuses.items()}
    warm = [rss for t, rss in samples if WARM_UP <= t < WARM_UP + 20]
    end = [rss for t, rss in samples if t >= samples[-1][0] - 20]
    warm_rss, end_rss = statistics.median(warm), statistics.median(end)
    after = np.array([(t, rss) for t, rss in samples if t >= WARM_UP])
    growth = float(np.polyfit(after[:, 0] / 60, after[:, 1], 1)[0])  # MiB a minute
    rows = [
        f"  {route:<30} {len(lat):>6} {p50:>8.0f} {p95:>8.0f}"
        for route, lat in sorted(rec.latencies.items())
        for p50, p95 in [percentiles(lat)]
    ]
    closing_note(
        f"load: {CLIENTS} clients for {elapsed:.0f} s, {requests} requests "
        f"({requests / elapsed:.1f}/s), statuses {dict(sorted(_merged(rec).items()))}; "
        f"server RSS {warm_rss:.0f} MiB after the {WARM_UP:.0f} s warm-up, {end_rss:.0f} "
        f"MiB at the end (peak {max(s for _, s in samples):.0f}, trend {growth:+.1f} MiB/min "
        f"after the warm-up); index "
        f"{stats['templates']} templates = registry {stats['registry_templates']}\n"
        f"  {'route':<30} {'count':>6} {'p50 ms':>8} {'p95 ms':>8}\n" + "\n".join(rows)
    )
    assert not any(fives.values()), fives
    assert not rec.unexpected, rec.unexpected[:10]
    assert stats["templates"] == stats["registry_templates"], stats
    assert audit["ok"], audit["problems"]
    assert growth < MAX_GROWTH, f"memory grows {growth:.1f} MiB a minute after the warm-up"
    assert end_rss <= warm_rss * 1.1, f"memory grew from {warm_rss:.0f} to {end_rss:.0f} MiB"
    model_id = info["model_id"]
    templates, names = registry_rows(data_dir, model_id)
    assert snapshot_ids(data_dir, model_id, info["dimension"], info["template_transform"]) == (
        templates
    )
    assert photo_files(data_dir) == names


def _merged(rec: Record) -> dict[int, int]:
    total: dict[int, int] = defaultdict(int)
    for counts in rec.statuses.values():
        for status, n in counts.items():
            total[status] += n
    return total
