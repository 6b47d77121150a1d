"""A real ``homeward serve`` process on loopback, for the suites that need one (SIGKILL,
load, a full or read-only disk, a tampered model), and what they check underneath it: the
registry's SQLite file read directly and the index snapshot the server wrote."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import faiss
import httpx
import numpy as np

from service.search.faiss_index import FaissIndex
from tests.conftest import ADMIN_KEY, PHOTO_KEY, REPO, SECRET_KEY

HUGE_RATE_LIMITS = json.dumps(dict.fromkeys(("volunteer", "reviewer", "registry", "admin"), 10**7))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m service.cli serve`` on 127.0.0.1 with its own data dir; its output goes
    to ``log`` (appended across restarts). Use ``start()`` again after ``kill()``."""

    def __init__(self, data_dir: Path, log: Path, env: Mapping[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.log = log
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HOMEWARD_")},
            "HOMEWARD_DATA_DIR": str(data_dir),
            "HOMEWARD_MODEL_DIR": str(REPO / "models"),
            "HOMEWARD_ADMIN_KEY": ADMIN_KEY,
            "HOMEWARD_SECRET_KEY": SECRET_KEY,
            "HOMEWARD_PHOTO_KEY": PHOTO_KEY,
            "HOMEWARD_SECRETS_FILE": str(log.parent / "unused-secrets.json"),
            "HOMEWARD_RATE_LIMITS": HUGE_RATE_LIMITS,
            "HOMEWARD_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: list[float] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def client(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"X-API-Key": ADMIN_KEY}, timeout=timeout
        )

    def start(self, timeout: float = 120.0) -> None:
        """Start and wait until /readyz answers 200 (fails with the log's tail otherwise)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        started = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        with httpx.Client(base_url=self.base_url, timeout=5) as probe:
            while time.monotonic() - started < timeout:
                if self.proc.poll() is not None:
                    code = self.proc.returncode
                    raise AssertionError(f"server exited, code {code}:\n{self.tail()}")
                try:
                    if probe.get("/readyz").status_code == 200:
                        self.startup_seconds.append(time.monotonic() - started)
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.kill()
        raise AssertionError(f"server not ready after {timeout} s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no snapshot, whatever was in flight is cut."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM: uvicorn shuts down, the lifespan writes the snapshot; the exit code
        (uvicorn re-raises the signal once it has shut down: -SIGTERM is a clean stop)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"server did not stop on SIGTERM:\n{self.tail()}") from None
        return int(self.proc.returncode)

    def swept(self) -> int:
        """How many orphan photo files the start-up sweeps removed (from the log)."""
        found = re.findall(r"removed (\d+) orphaned photo", self.log.read_text(errors="replace"))
        return sum(int(n) for n in found)

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


# -- what lies underneath --------------------------------------------------------------------


def registry_rows(data_dir: Path, model_id: str) -> tuple[set[int], set[str]]:
    """(template ids of the model, stored photo names of cases and sightings), read from the
    SQLite file without writing to it."""
    uri = f"file:{data_dir / 'homeward.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True, timeout=30) as db:
        templates = {
            int(r[0])
            for r in db.execute("SELECT id FROM templates WHERE model_id = ?", (model_id,))
        }
        names = {r[0] for r in db.execute("SELECT stored_name FROM photos")}
        names |= {r[0] for r in db.execute("SELECT stored_name FROM sightings")}
    db.close()
    return templates, names


def photo_files(data_dir: Path) -> set[str]:
    """Every file under the photo store, temp files included."""
    return {p.name for p in (data_dir / "photos").glob("*/*") if p.is_file()}


def snapshot_ids(data_dir: Path, model_id: str, dimension: int, transform: str) -> set[int]:
    """The template ids in the index snapshot a server left (it must be intact)."""
    index = FaissIndex.load(data_dir / "faiss", model_id, dimension, transform)
    assert index is not None, "no intact index snapshot"
    ids = faiss.vector_to_array(index._index.id_map).astype(np.int64)
    return {int(i) for i in ids}


def percentiles(values: list[float]) -> tuple[float, float]:
    """(p50, p95) in milliseconds of durations in seconds."""
    if not values:
        return float("nan"), float("nan")
    ms = np.asarray(values) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))
