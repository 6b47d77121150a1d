"""``homeward worker``: the background loops, in a process of their own or (``serve
--with-worker``, the embedded default) beside the API in one process.

- webhook deliveries: claimed in the database, so several workers never send one twice;
- index jobs (rebuilds, re-embeddings): claimed the same way, run one at a time;
- index snapshots: written when the index moved on, so a restart replays little;
- retention and ageing refresh: once a day.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.container import Container
from service.errors import HomewardError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Intervals:
    deliveries: float = 1.0
    jobs: float = 1.0
    snapshots: float = 60.0
    daily: float = 24 * 3600.0


class Worker:
    def __init__(self, container: Container, intervals: Intervals = Intervals()) -> None:
        self.container = container
        self.intervals = intervals
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._saved_generation = -1

    def start(self) -> None:
        if self.container.settings.is_embedded:  # this process is the data dir's only one
            self.container.jobs.recover()
        loops: list[tuple[str, float, Callable[[], object]]] = [
            ("deliveries", self.intervals.deliveries, self.container.webhooks.deliver_due),
            ("jobs", self.intervals.jobs, self.run_jobs),
            ("snapshots", self.intervals.snapshots, self.snapshot),
            ("daily", self.intervals.daily, self.daily),
        ]
        for name, every, job in loops:
            thread = threading.Thread(
                target=self._loop, args=(name, every, job), name=f"homeward-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        logger.info("worker started: deliveries, index jobs, snapshots, retention, ageing refresh")

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def run_forever(self) -> None:
        """Until interrupted (Ctrl-C or SIGTERM through the CLI)."""
        self.start()
        try:
            while not self._stop.wait(3600):
                pass
        finally:
            self.stop()

    def run_jobs(self) -> None:
        """Run the queued index jobs, one after another; stopping hands a running one back."""
        while not self._stop.is_set() and self.container.jobs.run_next(self._stop):
            pass

    def snapshot(self) -> None:
        """Write an index snapshot when the index moved on since the last one."""
        index = self.container.index
        index.catch_up()
        if index.generation != self._saved_generation:
            index.save()
            self._saved_generation = index.generation

    def daily(self) -> None:
        report = self.container.maintenance.run_retention()
        refreshed = self.container.enrollment.refresh_aged()
        logger.info(
            "daily: purged %d case(s) and %d sighting(s), re-aged %d photo(s)",
            report.cases_purged,
            report.sightings_purged,
            refreshed,
        )

    def _loop(self, name: str, every: float, job: Callable[[], object]) -> None:
        """Run ``job`` every ``every`` seconds; a failure is logged and tried again."""
        next_run = time.monotonic() + (every if name not in ("deliveries", "jobs") else 0.0)
        while not self._stop.is_set():
            if time.monotonic() >= next_run:
                outcome = "ok"
                try:
                    job()
                except HomewardError as err:
                    outcome = "failed"
                    logger.warning("worker %s: %s", name, err)
                except Exception:  # keep the loop alive; the next round tries again
                    outcome = "failed"
                    logger.exception("worker %s failed; retrying", name)
                metrics = self.container.metrics
                metrics.worker_runs.labels(name, outcome).inc()
                metrics.worker_last_run.labels(name).set_to_current_time()
                next_run = time.monotonic() + every
            self._stop.wait(min(1.0, max(0.05, next_run - time.monotonic())))
