"""Jobs a worker runs (index rebuilds, re-embeddings): queued, claimed by one worker at a
time with a lease, reported on as they go, finished."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from service.errors import NotFound
from service.registry.models import Job

ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")
INDEX_SLOT = "index"  # every job kind rebuilds the index: one at a time


class JobRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(self, kind: str, requested_by: str, requested_org: str | None) -> Job:
        """A queued job; Conflict (at the flush) while another holds the index slot."""
        job = Job(
            kind=kind,
            status="queued",
            slot=INDEX_SLOT,
            requested_by=requested_by,
            requested_org=requested_org,
            detail="{}",
        )
        self.s.add(job)
        self.s.flush()
        return job

    def get(self, job_id: str) -> Job:
        job = self.s.get(Job, job_id, populate_existing=True)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    def recent(self, limit: int = 20) -> list[Job]:
        query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
        return list(self.s.scalars(query))

    def active(self) -> Job | None:
        """The queued or running job, if any."""
        query = select(Job).where(Job.status.in_(ACTIVE)).order_by(Job.created_at).limit(1)
        return self.s.scalars(query).first()

    def claim_next(self, lease_seconds: float) -> Job | None:
        """Lease the oldest queued job to the caller, or a running one whose lease ran out
        (its worker died: it starts again from the beginning). A row another worker holds
        is skipped (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite has one writer at a time)
        and the re-check in the update makes the claim safe without row locks."""
        now = datetime.now(UTC)
        claimable = _claimable(now)
        job_id = self.s.scalars(
            select(Job.id)
            .where(claimable)
            .order_by(Job.created_at, Job.id)
            .limit(1)  # locks only the row it takes
            .with_for_update(skip_locked=True)
        ).first()
        return None if job_id is None else self._claim(job_id, claimable, now, lease_seconds)

    def claim(self, job_id: str, lease_seconds: float) -> Job | None:
        """Lease this job to the caller if it is claimable (queued, or its lease ran out)."""
        now = datetime.now(UTC)
        return self._claim(job_id, _claimable(now), now, lease_seconds)

    def _claim(
        self, job_id: str, claimable: ColumnElement[bool], now: datetime, lease_seconds: float
    ) -> Job | None:
        result = self.s.execute(
            update(Job)
            .where(Job.id == job_id, claimable)
            .values(
                status="running",
                attempt=Job.attempt + 1,
                lease_until=now + timedelta(seconds=lease_seconds),
                started_at=now,
                stage=None,
                stage_started_at=now,
                done=0,
                total=None,
                updated_at=now,
            )
        )
        return self.get(job_id) if result.rowcount == 1 else None  # type: ignore[attr-defined]

    def progress(
        self,
        job_id: str,
        attempt: int,
        stage: str,
        done: int,
        total: int | None,
        lease_seconds: float,
    ) -> bool | None:
        """Record progress and extend the lease; returns whether cancelling was asked, or
        None when this claim of the job is no longer the current one (its lease ran out and
        another worker took it over, or it was finished)."""
        job = self.s.get(Job, job_id, populate_existing=True, with_for_update=True)
        if job is None or job.status != "running" or job.attempt != attempt:
            return None
        now = datetime.now(UTC)
        if job.stage != stage:
            job.stage, job.stage_started_at = stage, now
        job.done, job.total = done, total
        job.lease_until = now + timedelta(seconds=lease_seconds)
        job.updated_at = now
        return job.cancel_requested

    def finish(
        self,
        job_id: str,
        attempt: int | None,
        status: str,
        detail: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> bool:
        """End the job (done, failed or cancelled), freeing the index slot; or, with status
        "queued", hand it back for another worker (this one is stopping). ``attempt`` None:
        whichever claim holds it. Returns False when the job had moved on without us."""
        job = self.s.get(Job, job_id, populate_existing=True, with_for_update=True)
        if job is None or job.status not in ACTIVE:
            return False
        if attempt is not None and job.attempt != attempt:
            return False
        now = datetime.now(UTC)
        job.status, job.updated_at, job.lease_until = status, now, None
        if status in FINISHED:
            job.slot, job.finished_at = None, now
        if detail is not None:
            job.detail = json.dumps(detail, sort_keys=True)
        if error is not None:
            job.error = error[:500]
        return True

    def request_cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one is asked to stop (its runner
        stops at its next progress report)."""
        job = self.get(job_id)
        if job.status == "queued":
            self.finish(job_id, None, "cancelled", error="cancelled before it started")
        elif job.status == "running":
            job.cancel_requested = True
        return self.get(job_id)

    def release_running(self) -> int:
        """Let every running job be claimed again at once (an embedded registry's only
        serving process starting: whatever was running died with the previous one)."""
        now = datetime.now(UTC)
        result = self.s.execute(
            update(Job).where(Job.status == "running").values(lease_until=now, updated_at=now)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def _claimable(now: datetime) -> ColumnElement[bool]:
    return or_(
        Job.status == "queued",
        (Job.status == "running") & or_(Job.lease_until.is_(None), Job.lease_until <= now),
    )
