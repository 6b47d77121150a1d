"""Keeping the gallery in order: retention purges and the vector index's state."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from service.errors import StorageUnavailable
from service.matching.actors import SYSTEM, Actor, Permission
from service.matching.cases import CaseService
from service.matching.views import IndexStats, RetentionReport, ServiceInfo
from service.metrics import Vitals
from service.registry.db import Database
from service.registry.photostore import PhotoStore
from service.search.keeper import IndexKeeper, Progress
from service.search.verify import CheckReport
from service.settings import Settings

logger = logging.getLogger(__name__)


class MaintenanceService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        photos: PhotoStore,
        cases: CaseService,
        index: IndexKeeper,
        model_backend: str,
        photos_readable: bool,
    ) -> None:
        self.settings = settings
        self.db = db
        self.photos = photos
        self.cases = cases
        self.index = index
        self.model_backend = model_backend
        self.photos_readable = photos_readable

    def run_retention(self, actor: Actor = SYSTEM, now: datetime | None = None) -> RetentionReport:
        """Purge closed cases and unconfirmed sightings past their retention periods; each
        purge is audited."""
        actor.require(Permission.ADMIN)
        now = now or datetime.now(UTC)
        with self.db.unit() as tx:
            cases = tx.cases.closed_before(now - timedelta(days=self.settings.case_retention_days))
            sightings = tx.sightings.purgeable(
                now - timedelta(days=self.settings.sighting_retention_days)
            )
        for case_id in cases:
            self.cases.remove(actor, case_id, "retention.purge_case")
        for sighting_id, stored_name in sightings:
            with self.db.unit() as tx:
                tx.sightings.delete(sighting_id)
                tx.audit.record(actor, "retention.purge_sighting", target=sighting_id)
            self.photos.delete(stored_name)
        report = RetentionReport(len(cases), len(sightings))
        logger.info(
            "retention: purged %d closed case(s), %d sighting(s)", *report.__dict__.values()
        )
        return report

    def index_stats(self, actor: Actor) -> IndexStats:
        actor.require(Permission.ADMIN)
        with self.db.unit() as tx:
            registry_count = tx.templates.count(self.index.model_id)
        return IndexStats(
            model_id=self.index.model_id,
            dimension=self.index.dimension,
            backend=self.index.backend,
            index_type=self.index.index_type,
            templates=self.index.size,
            registry_templates=registry_count,
            generation=self.index.generation,
            opened=self.index.last_open,
            transform=self.index.transform.version,
            snapshot_dir=str(self.index.folder),
        )

    def rebuild_index(self, actor: Actor, progress: Progress | None = None) -> CheckReport:
        """A new index generation from the registry's templates, built beside the live one,
        checked (its count is the registry's; a sample of searches agrees with exact search)
        and swapped in; searches go on meanwhile. ``progress(done, total)`` is called after
        each block and may raise to stop. A failed check raises IndexCheckFailed; stopped
        or failed, the live index is untouched. Snapshotted, and audited with the check's
        figures. Run as a job (``service.matching.jobs``)."""
        actor.require(Permission.ADMIN)
        report = self.index.rebuild(progress)
        self.index.save()
        detail = {**report.figures(), "generation": self.index.generation}
        with self.db.unit() as tx:
            tx.audit.record(actor, "index.rebuild", detail=detail)
        return report

    def info(self, actor: Actor) -> ServiceInfo:
        """The model and the limits, for any key; the gallery's size and generation only for
        administrators (how many faces the gallery holds is not every key's business)."""
        actor.require(Permission.INFO)
        s = self.settings
        admin = actor.is_admin
        return ServiceInfo(
            model_backend=self.model_backend,
            model_id=self.index.model_id,
            dimension=self.index.dimension,
            index_backend=self.index.backend,
            index_type=self.index.index_type,
            index_size=self.index.size if admin else None,
            index_generation=self.index.generation if admin else None,
            index_opened=self.index.last_open,
            template_transform=self.index.transform.version,
            photos_readable=self.photos_readable,
            score_floor=s.score_floor,
            limits={
                "max_upload_bytes": s.max_upload_bytes,
                "max_pixels": s.max_pixels,
                "max_faces_per_image": s.max_faces_per_image,
                "default_candidates": s.default_candidates,
                "max_candidates": s.max_candidates,
                "min_face_px": s.min_face_px,
                "min_sharpness": s.min_sharpness,
                "max_yaw_degrees": s.max_yaw_degrees,
            },
        )

    def vitals(self) -> Vitals:
        """What the metrics report at each scrape."""
        with self.db.unit() as tx:
            queue = tx.sightings.pending_count(None)
            deliveries = tx.outbox.count_by_state()
        return Vitals(
            model_id=self.index.model_id,
            index_backend=self.index.backend,
            index_type=self.index.index_type,
            index_templates=self.index.size,
            index_generation=self.index.generation,
            review_queue=queue,
            deliveries=deliveries,
        )

    def readiness(self) -> list[str]:
        """What keeps the service from serving (empty when ready): the database must
        answer and the index must be loaded."""
        problems = []
        try:
            self.db.ping()
        except StorageUnavailable:
            problems.append("database unavailable")
        if not self.index.ready:
            problems.append("index not loaded")
        if not self.photos_readable:
            problems.append("the photo key does not match the stored photos")
        return problems
