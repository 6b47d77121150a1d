"""Index jobs: a rebuild (from the stored templates) or a re-embedding (the stored photos
embedded again by the current model, then a rebuild), started by an administrator and run
by a worker (``homeward worker``, the API process's own on the embedded database, or the
CLI), which reports its progress in the registry so that anyone can follow it.

One index job at a time: a second is refused (Conflict) while one is queued or running. A
worker holds a running job by a lease it renews at each progress report; if the worker
dies, the lease runs out and another worker starts the job again. A job cancelled or failed
leaves the live index as it was (the rebuild is discarded before the swap)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from service.errors import Conflict, HomewardError, InvalidInput
from service.matching.actors import Actor, Permission
from service.matching.enrollment import EnrollmentService
from service.matching.maintenance import MaintenanceService
from service.registry.db import Database
from service.registry.models import Job

logger = logging.getLogger(__name__)

JobKind = Literal["index.rebuild", "index.reembed"]
KINDS: tuple[JobKind, ...] = ("index.rebuild", "index.reembed")
LEASE_SECONDS = 60.0  # renewed at each progress report
REPORT_EVERY = 0.5  # seconds between progress writes (the last of a stage is always written)


class JobBusy(Conflict):
    """Another index job is queued or running."""


class JobCancelled(Exception):  # noqa: N818 - a signal, not a failure
    """Raised by a progress report when cancelling was asked: the job stops there."""


class JobInterrupted(Exception):  # noqa: N818
    """Raised by a progress report when the worker is stopping: the job is handed back."""


class JobLost(Exception):  # noqa: N818
    """Raised by a progress report when the job's lease ran out and another worker took it
    over (or it was finished meanwhile): this run stops without a word."""


@dataclass(frozen=True)
class JobView:
    id: str
    kind: str
    status: str  # queued | running | done | failed | cancelled
    stage: str | None  # embedding (photos), indexing (templates)
    done: int
    total: int | None
    rate: float | None  # items a second in the current stage
    eta_seconds: float | None  # None until known, and once finished
    requested_by: str
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    detail: dict[str, Any]

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled")

    @classmethod
    def of(cls, job: Job) -> JobView:
        rate = eta = None
        if job.stage_started_at is not None and job.done > 0:
            elapsed = (job.updated_at - job.stage_started_at).total_seconds()
            rate = job.done / elapsed if elapsed > 0 else None
        if job.status == "running" and rate and job.total is not None:
            eta = max(0.0, (job.total - job.done) / rate)
        return cls(
            id=job.id,
            kind=job.kind,
            status=job.status,
            stage=job.stage,
            done=job.done,
            total=job.total,
            rate=rate,
            eta_seconds=eta,
            requested_by=job.requested_by,
            cancel_requested=job.cancel_requested,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            error=job.error,
            detail=json.loads(job.detail or "{}"),
        )


class JobService:
    """Starts, reports on, cancels and runs index jobs. The index's use cases are reached
    only to run one, so following a job (``homeward index rebuild --follow``) loads nothing
    but the registry."""

    def __init__(
        self,
        db: Database,
        maintenance: Callable[[], MaintenanceService],
        enrollment: Callable[[], EnrollmentService],
    ) -> None:
        self.db = db
        self._maintenance = maintenance
        self._enrollment = enrollment

    def start(self, actor: Actor, kind: str = "index.rebuild", run_here: bool = False) -> JobView:
        """Queue an index job (audited); Conflict, naming it, while another is queued or
        running. ``run_here``: claimed at once by the caller, who then calls ``run``."""
        actor.require(Permission.ADMIN)
        if kind not in KINDS:
            raise InvalidInput(f"a job is one of {', '.join(KINDS)}, not {kind!r}")
        try:
            with self.db.unit() as tx:
                busy = tx.jobs.active()
                if busy is not None:
                    raise _busy(busy)
                job = tx.jobs.add(kind, actor.key_id, actor.org_id)
                if run_here:
                    tx.jobs.claim(job.id, LEASE_SECONDS)
                tx.audit.record(actor, "job.start", target=job.id, detail={"kind": kind})
                return JobView.of(tx.jobs.get(job.id))
        except JobBusy:
            raise
        except Conflict as err:  # another request took the index slot since the check
            with self.db.unit() as tx:
                busy = tx.jobs.active()
            raise (_busy(busy) if busy is not None else err) from None

    def get(self, actor: Actor, job_id: str) -> JobView:
        actor.require(Permission.ADMIN)
        with self.db.unit() as tx:
            return JobView.of(tx.jobs.get(job_id))

    def recent(self, actor: Actor, limit: int = 20) -> list[JobView]:
        """The latest jobs, newest first."""
        actor.require(Permission.ADMIN)
        with self.db.unit() as tx:
            return [JobView.of(job) for job in tx.jobs.recent(limit)]

    def cancel(self, actor: Actor, job_id: str) -> JobView:
        """A queued job is cancelled at once; a running one stops at its next progress
        report (within a second or a block), leaving the live index as it was."""
        actor.require(Permission.ADMIN)
        with self.db.unit() as tx:
            job = tx.jobs.request_cancel(job_id)
            tx.audit.record(actor, "job.cancel", target=job_id, detail={"status": job.status})
            return JobView.of(job)

    def recover(self) -> int:
        """On the embedded database, the starting server or worker is the data dir's only
        one: a job left running was its predecessor's, and can be claimed again at once."""
        with self.db.unit() as tx:
            return tx.jobs.release_running()

    # -- running -----------------------------------------------------------------------------

    def run_next(self, stop: threading.Event | None = None) -> JobView | None:
        """Claim the next job and run it to its end (the worker's loop); None when there
        is none. A ``stop`` set meanwhile hands the job back for another worker."""
        with self.db.unit() as tx:
            job = tx.jobs.claim_next(LEASE_SECONDS)
            if job is None:
                return None
            claimed = _Claim.of(job)
        return self._run(claimed, stop)

    def run(self, actor: Actor, job_id: str, stop: threading.Event | None = None) -> JobView:
        """Run a job this process claimed (``start(run_here=True)``), to its end."""
        actor.require(Permission.ADMIN)
        with self.db.unit() as tx:
            job = tx.jobs.get(job_id)
            if job.status != "running":
                raise Conflict(f"job {job_id} is {job.status}, not claimed to run here")
            claimed = _Claim.of(job)
        return self._run(claimed, stop)

    def _run(self, job: _Claim, stop: threading.Event | None) -> JobView:
        logger.info("job %s (%s) started, attempt %d", job.id, job.kind, job.attempt)
        report = _Reporter(self.db, job, stop)
        status, detail, error = "done", dict[str, Any](), None
        try:
            report.check()  # cancelled before this claim (e.g. while its last worker died)
            if job.kind == "index.reembed":
                embedded = self._enrollment().reembed(job.actor, report.stage("embedding"))
                detail["photos_embedded"] = embedded
            maintenance = self._maintenance()
            check = maintenance.rebuild_index(job.actor, report.stage("indexing"))
            detail.update(check.figures(), generation=maintenance.index.generation)
        except JobCancelled:
            status, error = "cancelled", "cancelled on request; the live index is unchanged"
        except JobInterrupted:
            status, error = "queued", None  # handed back: another worker starts it again
        except JobLost:
            logger.warning("job %s was taken over by another worker; this run stopped", job.id)
            return self._view(job.id)
        except HomewardError as err:
            status, error = "failed", str(err)
        except Exception as err:
            logger.exception("job %s failed", job.id)
            status, error = "failed", f"unexpected error ({type(err).__name__}); see the log"
        with self.db.unit() as tx:
            tx.jobs.finish(job.id, job.attempt, status, detail, error)
        logger.info("job %s (%s) %s%s", job.id, job.kind, status, f": {error}" if error else "")
        return self._view(job.id)

    def _view(self, job_id: str) -> JobView:
        with self.db.unit() as tx:
            return JobView.of(tx.jobs.get(job_id))


def _busy(job: Job) -> JobBusy:
    return JobBusy(
        f"an index job is already {job.status}: {job.id} ({job.kind}); follow it or cancel it"
    )


@dataclass(frozen=True)
class _Claim:
    """What a worker needs of the job it claimed, outside the claim's transaction."""

    id: str
    kind: str
    attempt: int
    actor: Actor  # the administrator who asked for it

    @classmethod
    def of(cls, job: Job) -> _Claim:
        actor = Actor(job.requested_by, job.requested_org, frozenset({"admin"}))
        return cls(job.id, job.kind, job.attempt, actor)


class _Reporter:
    """Writes a running job's progress (at most every REPORT_EVERY seconds, and always at
    the end of a stage), renewing its lease, and stops the work by raising when cancelling
    was asked, the worker is stopping, or the job was lost."""

    def __init__(self, db: Database, job: _Claim, stop: threading.Event | None) -> None:
        self.db = db
        self.job = job
        self.stop = stop
        self._last = 0.0

    def stage(self, name: str) -> _StageReport:
        self._write(name, 0, None)
        return _StageReport(self, name)

    def check(self) -> None:
        self._write("starting", 0, None)

    def report(self, stage: str, done: int, total: int) -> None:
        if self.stop is not None and self.stop.is_set():
            raise JobInterrupted()
        if done < total and time.monotonic() - self._last < REPORT_EVERY:
            return
        self._write(stage, done, total)

    def _write(self, stage: str, done: int, total: int | None) -> None:
        with self.db.unit() as tx:
            cancel = tx.jobs.progress(
                self.job.id, self.job.attempt, stage, done, total, LEASE_SECONDS
            )
        self._last = time.monotonic()
        if cancel is None:
            raise JobLost()
        if cancel:
            raise JobCancelled()


@dataclass(frozen=True)
class _StageReport:
    """``progress(done, total)`` for one stage, as the keeper and reembed call it."""

    reporter: _Reporter
    name: str

    def __call__(self, done: int, total: int) -> None:
        self.reporter.report(self.name, done, total)
