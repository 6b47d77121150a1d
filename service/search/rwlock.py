"""A readers-writer lock: many concurrent searches, one exclusive writer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    """Reader-preferring: a waiting writer does not hold back new readers.

    A snapshot is a long reader. Were waiting writers to block new readers, one catch-up
    queued behind a snapshot would stall every search until the snapshot was written.
    Writers still exclude readers (and each other) once they hold the lock. The cost is
    that a writer waits for a gap between overlapping readers; searches are short, so
    gaps come quickly, and a snapshot is taken at most once at a time.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
