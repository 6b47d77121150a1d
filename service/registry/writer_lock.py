"""One writer per embedded data dir: with SQLite and an in-process FAISS index, two serving
processes on one data dir would each keep an index the other's snapshots overwrite. The
lock is the operating system's (``flock``), so it is released whenever its process ends,
crash included; a second server or worker on the same data dir is refused at start-up."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from service.errors import DataDirInUse

LOCK_NAME = "writer.lock"


class WriterLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # private like every file of the data dir (it holds only a pid)
        handle = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise DataDirInUse(
                f"another Homeward process (pid {holder}) is serving the data dir "
                f"{self.path.parent}: with the embedded SQLite database and FAISS index only "
                "one process may serve a data dir. Stop it, or run several processes on "
                "PostgreSQL (HOMEWARD_DATABASE_URL)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
