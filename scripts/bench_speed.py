#!/usr/bin/env python3
"""Homeward's POST /v1/match side by side with the face_recognition library's pipeline, on
the same 640x480 one-face photo and a gallery of the same size.

Homeward: a real ``homeward serve`` process (default settings), timed over HTTP on
loopback, its gallery synthetic SFace templates plus the photo's own face enrolled.
face_recognition's pipeline, reproduced with dlib as the library runs it (the package need
not be installed): the JPEG decoded with Pillow to RGB, ``get_frontal_face_detector()``
with 1 upsample, ``pose_predictor_5_point`` on each face,
``compute_face_descriptor(img, shape, num_jitters=1)``, then the Euclidean distance to
every gallery vector with numpy (``face_distance``). Its weights come from the
face-recognition-models package, as face_recognition loads them.

Concurrency 1: latency, the two taking turns in short blocks so that other load on the
machine falls on both alike. Concurrency 4: requests per second with four requests always
in flight, in alternating windows; face_recognition in a process pool (dlib runs one
thread per call), 2 and 4 workers both measured and the better one compared.

    python scripts/bench_speed.py [--gallery 10000] [--rounds 6] [--window 8]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from bench_match import Server, fill_gallery, probe_photo, secrets_file
from PIL import Image as PILImage

from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


class FaceRecognitionPipeline:
    """face_recognition's ``face_encodings`` then ``face_distance``, on dlib directly."""

    def __init__(self, gallery: np.ndarray) -> None:
        import dlib

        from service.faces.dlib_backend import model_file  # face-recognition-models' files

        self.detector = dlib.get_frontal_face_detector()
        self.pose = dlib.shape_predictor(str(model_file("shape_predictor_5_face_landmarks.dat")))
        self.encoder = dlib.face_recognition_model_v1(
            str(model_file("dlib_face_recognition_resnet_model_v1.dat"))
        )
        self.gallery = gallery

    def match(self, photo: bytes) -> list[np.ndarray]:
        """Distances from each face of the photo to every gallery vector."""
        image = np.array(PILImage.open(io.BytesIO(photo)).convert("RGB"))  # load_image_file
        faces = self.detector(image, 1)
        shapes = [self.pose(image, face) for face in faces]
        encodings = [np.array(self.encoder.compute_face_descriptor(image, s, 1)) for s in shapes]
        return [np.linalg.norm(self.gallery - e, axis=1) for e in encodings]


def fr_gallery(size: int) -> np.ndarray:
    """``size`` 128-D vectors shaped like dlib descriptors (norm about 1)."""
    vectors = np.random.default_rng(0).normal(size=(size, 128))
    unit: np.ndarray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit


_worker: FaceRecognitionPipeline | None = None


def _start_worker(size: int) -> None:
    global _worker
    _worker = FaceRecognitionPipeline(fr_gallery(size))


def _worker_match(photo: bytes) -> int:
    assert _worker is not None
    return len(_worker.match(photo))


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def rate_threads(fn: Callable[[int], Any], workers: int, seconds: float) -> float:
    """Calls per second with ``workers`` threads calling ``fn(thread number)`` back to back."""
    done = [0] * workers
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            fn(i)
            done[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - start)


def rate_pool(pool: ProcessPoolExecutor, photo: bytes, in_flight: int, seconds: float) -> float:
    """Photos per second through the pool with ``in_flight`` always submitted."""
    start = time.perf_counter()
    stop, done = start + seconds, 0
    pending: set[Future[int]] = {pool.submit(_worker_match, photo) for _ in range(in_flight)}
    while pending:
        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
        done += len(finished)
        if time.perf_counter() < stop:
            pending |= {pool.submit(_worker_match, photo) for _ in finished}
    return done / (time.perf_counter() - start)


def warm_pool(pool: ProcessPoolExecutor, photo: bytes, workers: int) -> None:
    for future in [pool.submit(_worker_match, photo) for _ in range(2 * workers)]:
        assert future.result() == 1


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


@contextmanager
def homeward(gallery: int, photo: bytes) -> Iterator[Server]:
    """A server whose gallery holds ``gallery`` templates, the photo's face one of them."""
    from service.faces.factory import build_pipeline

    with tempfile.TemporaryDirectory(prefix="homeward-bench-") as tmp:
        data_dir = Path(tmp)
        settings = Settings(data_dir=data_dir, secrets_file=secrets_file(data_dir))
        pipeline = build_pipeline(Settings(model_dir=ROOT / "models"))
        try:
            fill_gallery(settings, pipeline.model_id, pipeline.backend.dimension, gallery - 1)
            del pipeline
            server = Server(data_dir)
            try:
                enroll_probe(server.client, photo)
                yield server
            finally:
                server.stop()
        finally:
            secrets_file(data_dir).unlink(missing_ok=True)


def enroll_probe(client: httpx.Client, photo: bytes) -> None:
    """The photo's face enrolled as a case, which a match with the photo ranks first."""
    case = client.post("/v1/cases", json={"display_name": "astronaut"}).json()["id"]
    files = {"file": ("a.jpg", photo, "image/jpeg")}
    assert client.post(f"/v1/cases/{case}/photos", files=files).status_code == 201
    top = client.post("/v1/match", files=files).json()["faces"][0]["candidates"][0]
    assert top["case_id"] == case


def poster(server: Server, photo: bytes, clients: int) -> Callable[[int], None]:
    """POST /v1/match with the photo, on one keep-alive connection per client thread."""
    own = [
        httpx.Client(base_url=server.client.base_url, headers=server.client.headers, timeout=60)
        for _ in range(clients)
    ]

    def post(i: int) -> None:
        r = own[i].post("/v1/match", files={"file": ("p.jpg", photo, "image/jpeg")})
        assert r.status_code == 200, r.text

    return post


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gallery", type=int, default=10_000, help="templates in each gallery")
    parser.add_argument("--rounds", type=int, default=6, help="turns each at concurrency 1")
    parser.add_argument("--block", type=int, default=10, help="Homeward requests per turn")
    parser.add_argument("--window", type=float, default=8.0, help="seconds per throughput run")
    parser.add_argument("--windows", type=int, default=3, help="throughput runs of each")
    args = parser.parse_args()
    started, load_before = time.perf_counter(), load()
    photo = probe_photo()
    fr = FaceRecognitionPipeline(fr_gallery(args.gallery))
    assert len(fr.match(photo)) == 1
    pools = {
        n: ProcessPoolExecutor(n, initializer=_start_worker, initargs=(args.gallery,))
        for n in (2, 4)
    }
    try:
        with homeward(args.gallery, photo) as server:
            size = server.client.get("/v1/info").json()["index_size"]
            post = poster(server, photo, 4)
            timed(lambda: post(0), 5)
            timed(lambda: fr.match(photo), 2)
            for n, pool in pools.items():
                warm_pool(pool, photo, n)
            hw_ms: list[float] = []
            fr_ms: list[float] = []
            for _ in range(args.rounds):  # turns: other load falls on both alike
                hw_ms += timed(lambda: post(0), args.block)
                fr_ms += timed(lambda: fr.match(photo), max(1, args.block // 3))
            hw_rate: list[float] = []
            fr_rate: dict[int, list[float]] = {n: [] for n in pools}
            window_loads = []
            for _ in range(args.windows):
                hw_rate.append(rate_threads(post, 4, args.window))
                for n, pool in pools.items():
                    fr_rate[n].append(rate_pool(pool, photo, 4, args.window))
                window_loads.append(os.getloadavg()[0])
    finally:
        for pool in pools.values():
            pool.shutdown()
    report(args, size, hw_ms, fr_ms, hw_rate, fr_rate)
    print(
        f"load average (1/5/15 min) before {load_before}, after {load()}; 1-min load after "
        f"each throughput round: {', '.join(f'{v:.1f}' for v in window_loads)}; "
        f"{os.cpu_count()} cores; {time.perf_counter() - started:.0f} s in all"
    )


def report(
    args: argparse.Namespace,
    size: int,
    hw_ms: list[float],
    fr_ms: list[float],
    hw_rate: list[float],
    fr_rate: dict[int, list[float]],
) -> None:
    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q))

    best = max(fr_rate, key=lambda n: statistics.median(fr_rate[n]))
    hw_rps, fr_rps = statistics.median(hw_rate), statistics.median(fr_rate[best])
    print(
        f"\n640x480 photo, one face; galleries of {size} templates (Homeward: synthetic "
        f"SFace templates + the photo's face enrolled; face_recognition: {args.gallery} "
        "random 128-D vectors)"
    )
    print(f"{'':34}{'Homeward /v1/match':>20}{'face_recognition':>18}{'ratio':>8}")
    rows = [
        ("concurrency 1, p50 ms", pct(hw_ms, 50), pct(fr_ms, 50), "fr/hw"),
        ("concurrency 1, p95 ms", pct(hw_ms, 95), pct(fr_ms, 95), "fr/hw"),
        ("concurrency 4, requests/s", hw_rps, fr_rps, "hw/fr"),
    ]
    for label, hw, other, way in rows:
        ratio = other / hw if way == "fr/hw" else hw / other
        print(f"{label:34}{hw:>20.1f}{other:>18.1f}{ratio:>7.2f}x")
    print(
        f"concurrency 1: {len(hw_ms)} Homeward requests (HTTP, loopback) and {len(fr_ms)} "
        f"face_recognition runs (in this process), alternating in {args.rounds} rounds"
    )
    print(
        f"concurrency 4: medians of {args.windows} windows of {args.window:.0f} s, "
        "alternating; Homeward: 4 client threads; face_recognition: a process pool, "
        + ", ".join(f"{n} workers {statistics.median(r):.1f}/s" for n, r in fr_rate.items())
        + f" (compared: {best}); Homeward windows: "
        + ", ".join(f"{r:.1f}" for r in hw_rate)
    )


if __name__ == "__main__":
    main()
