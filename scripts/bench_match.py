#!/usr/bin/env python3
"""Benchmark the real server: POST /v1/match latency at two gallery sizes, enrollment
throughput, and the server's memory.

Each gallery gets a fresh data dir; synthetic unit vectors (one case, photo and template
each) fill it through the registry, plus one real enrolled face, then a real
``homeward serve`` process is started and timed over HTTP on loopback.

    python scripts/bench_match.py [--sizes 1000 100000] [--requests 200]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import cv2
import httpx
import numpy as np
from sqlalchemy import insert

from service.registry.models import Case, Photo, Template, TemplateChange, new_id
from service.settings import Settings

KEY = "bench-admin-key-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent


def probe_photo() -> bytes:
    """A 640x480 photo with one face (skimage's astronaut on a grey canvas)."""
    from skimage import data

    canvas = np.full((480, 640, 3), 128, np.uint8)
    astronaut = data.astronaut()  # type: ignore[no-untyped-call]
    canvas[:, 80:560] = cv2.resize(astronaut[:, :, ::-1], (480, 480))
    return cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def enrollment_photos() -> list[bytes]:
    """Real one-face photos: the six faces of insightface's t1.jpg at several scales."""
    sys.path.insert(0, str(ROOT))
    from tests.faces_of_t1 import face_crop

    photos = []
    for scale in (1.0, 0.9, 1.2, 1.4, 0.8):
        for i in range(6):
            crop = cv2.resize(face_crop(i), None, fx=scale, fy=scale)
            photos.append(cv2.imencode(".jpg", crop)[1].tobytes())
    return photos


def fill_gallery(settings: Settings, model_id: str, dimension: int, count: int) -> None:
    from service.container import Container
    from service.matching.actors import SYSTEM

    built = Container(settings)
    db = built.db
    org = built.access.create_org(SYSTEM, "synthetic gallery")
    rng = np.random.default_rng(0)
    now = datetime.now(UTC)
    block = 20_000
    next_template = 1
    for start in range(0, count, block):
        n = min(block, count - start)
        vectors = rng.normal(size=(n, dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        case_ids = [new_id() for _ in range(n)]
        photo_ids = [new_id() for _ in range(n)]
        ids = list(range(next_template, next_template + n))
        next_template += n
        with db.unit() as tx:
            s = tx.session
            s.execute(
                insert(Case),
                [
                    {
                        "id": c,
                        "org_id": org.id,
                        "display_name": "synthetic",
                        "sex": "unknown",
                        "status": "missing",
                        "created_at": now,
                        "updated_at": now,
                    }
                    for c in case_ids
                ],
            )
            s.execute(
                insert(Photo),
                [
                    {
                        "id": p,
                        "case_id": c,
                        "upload_sha256": p * 2,
                        "stored_name": f"{p}.jpg",
                        "width": 112,
                        "height": 112,
                        "face_box": "[0, 0, 112, 112]",
                        "created_at": now,
                    }
                    for p, c in zip(photo_ids, case_ids, strict=True)
                ],
            )
            s.execute(
                insert(Template),
                [
                    {
                        "id": t,
                        "case_id": c,
                        "photo_id": p,
                        "model_id": model_id,
                        "kind": "original",
                        "vector": v.tobytes(),
                        "created_at": now,
                    }
                    for t, c, p, v in zip(ids, case_ids, photo_ids, vectors, strict=True)
                ],
            )
            s.execute(
                insert(TemplateChange),
                [{"model_id": model_id, "template_id": t, "op": "add"} for t in ids],
            )
    built.close()


def secrets_file(data_dir: Path) -> Path:
    """Beside the throwaway data dir (never inside it), shared by the filler and server."""
    return data_dir.parent / f"{data_dir.name}-secrets.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> tuple[float, float]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class Server:
    """A real ``homeward serve`` on a free port; ``cpus`` pins it (every thread) to those."""

    def __init__(self, data_dir: Path, cpus: set[int] | None = None) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "HOMEWARD_DATA_DIR": str(data_dir),
            "HOMEWARD_ADMIN_KEY": KEY,
            "HOMEWARD_MODEL_DIR": str(ROOT / "models"),
            "HOMEWARD_LOG_LEVEL": "WARNING",
            "HOMEWARD_SECRETS_FILE": str(secrets_file(data_dir)),
            # measure latency, not the per-key rate limit
            "HOMEWARD_RATE_LIMITS": '{"admin": 1000000}',
        }
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
        )
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", headers={"X-API-Key": KEY}, timeout=60
        )
        while True:
            try:
                if self.client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.perf_counter() - started > 600:
                raise SystemExit("server did not start")
            time.sleep(0.1)
        self.startup_s = time.perf_counter() - started

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=60)


def timed(fn: object, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - t) * 1000)
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def enrollment_rate(
    c: httpx.Client, photos: list[bytes], case: dict[str, str], form: dict[str, str] | None = None
) -> tuple[float, int]:
    """Photos enrolled per second (one new case each), and how many were accepted."""
    enrolled = 0
    t = time.perf_counter()
    for photo in photos:
        cid = c.post("/v1/cases", json={"display_name": "e", **case}).json()["id"]
        r = c.post(
            f"/v1/cases/{cid}/photos",
            files={"file": ("e.jpg", photo, "image/jpeg")},
            data=form or {},
        )
        enrolled += r.status_code == 201
    return enrolled / (time.perf_counter() - t), enrolled


def bench_size(
    size: int, requests: int, enroll: list[bytes], model_id: str, dim: int
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="homeward-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp), secrets_file=secrets_file(Path(tmp)))
        fill_gallery(settings, model_id, dim, size)
        server = Server(Path(tmp))
        try:
            c = server.client
            probe = probe_photo()

            def match() -> None:
                r = c.post("/v1/match", files={"file": ("p.jpg", probe, "image/jpeg")})
                assert r.status_code == 200, r.text

            case = c.post("/v1/cases", json={"display_name": "astronaut"}).json()["id"]
            assert (
                c.post(
                    f"/v1/cases/{case}/photos", files={"file": ("a.jpg", probe, "image/jpeg")}
                ).status_code
                == 201
            )
            timed(match, 5)  # warm-up
            latencies = timed(match, requests)
            top = c.post("/v1/match", files={"file": ("p.jpg", probe, "image/jpeg")}).json()
            assert top["faces"][0]["candidates"][0]["case_id"] == case
            enroll_per_s, enrolled = enrollment_rate(c, enroll, {})
            # A case with a birth date and a photo with its age: 3 aged templates each.
            birth = str(date.today().replace(year=date.today().year - 12))
            aged_per_s, _ = enrollment_rate(
                c, enroll[:10], {"birth_date": birth}, {"age_at_photo": "6"}
            )
            rss, peak = rss_mib(server.proc.pid)
            info = c.get("/v1/info").json()
        finally:
            server.stop()
            secrets_file(Path(tmp)).unlink(missing_ok=True)
    return {
        "size": info["index_size"],
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "enroll_per_s": enroll_per_s,
        "aged_per_s": aged_per_s,
        "enrolled": enrolled,
        "rss": rss,
        "peak": peak,
        "startup": server.startup_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    from service.faces.factory import build_pipeline

    pipeline = build_pipeline(Settings(model_dir=ROOT / "models"))  # the model id the server uses
    enroll = enrollment_photos()
    rows = [
        bench_size(n, args.requests, enroll, pipeline.model_id, pipeline.backend.dimension)
        for n in args.sizes
    ]
    print(
        f"\nPOST /v1/match, 640x480 photo with one face, {args.requests} sequential requests"
        f" after 5 warm-up; model {pipeline.model_id}; {os.cpu_count()} cores"
    )
    print(
        f"{'templates':>10}  {'p50 ms':>7}  {'p95 ms':>7}  {'enroll/s':>8}  {'aged/s':>7}"
        f"  {'RSS MiB':>8}  {'peak MiB':>8}  {'start s':>7}"
    )
    for r in rows:
        print(
            f"{r['size']:>10}  {r['p50']:7.1f}  {r['p95']:7.1f}  {r['enroll_per_s']:8.1f}  "
            f"{r['aged_per_s']:7.1f}  {r['rss']:8.0f}  {r['peak']:8.0f}  {r['startup']:7.1f}"
        )
    if len(rows) >= 2:
        print(
            f"p50 ratio {rows[-1]['size']} / {rows[0]['size']}: "
            f"{rows[-1]['p50'] / rows[0]['p50']:.2f}"
        )
    print(
        f"median enrollment rate: {statistics.median(r['enroll_per_s'] for r in rows):.1f} "
        f"photos/s ({rows[0]['enrolled']} one-face photos per run); with 3 aged templates "
        f"each (aged/s): {statistics.median(r['aged_per_s'] for r in rows):.1f} photos/s"
    )


if __name__ == "__main__":
    main()
