"""Retention: closed cases and unconfirmed sightings are purged after their periods."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from service.audit import SYSTEM
from service.matching import Homeward
from service.registry.models import Case, Sighting

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionReport:
    cases_purged: int
    sightings_purged: int


def run_retention(homeward: Homeward, now: datetime | None = None) -> RetentionReport:
    now = now or datetime.now(UTC)
    settings = homeward.settings
    case_cutoff = now - timedelta(days=settings.case_retention_days)
    sighting_cutoff = now - timedelta(days=settings.sighting_retention_days)
    db = homeward.registry.db
    with db.session() as s:
        cases = list(
            s.scalars(select(Case.id).where(Case.status == "closed", Case.closed_at <= case_cutoff))
        )
        sightings = list(
            s.execute(
                select(Sighting.id, Sighting.stored_name).where(
                    Sighting.status != "confirmed", Sighting.created_at <= sighting_cutoff
                )
            )
        )
    for case_id in cases:
        homeward.delete_case(SYSTEM, case_id, action="retention.purge_case")
    for sighting_id, stored_name in sightings:
        with db.session() as s:
            s.execute(delete(Sighting).where(Sighting.id == sighting_id))  # candidates cascade
        homeward.photos.delete(stored_name)
        homeward.audit.record(SYSTEM, "retention.purge_sighting", target=sighting_id)
    report = RetentionReport(len(cases), len(sightings))
    logger.info(
        "retention: purged %d closed case(s), %d sighting(s)",
        *(report.cases_purged, report.sightings_purged),
    )
    return report
