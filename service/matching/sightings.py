"""Sightings: a volunteer's photo of a child who may be missing becomes candidate lists,
routed to the organisations that own the candidate cases. Volunteers see only the status
of their own sightings, never candidates or gallery photos."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from service.errors import InvalidInput, NoFaceFound, NotFound
from service.faces.pipeline import FaceChoice
from service.matching.actors import Actor, Permission
from service.matching.search import Matcher, MatchQuery
from service.matching.uploads import Uploads
from service.matching.views import MatchResult, SightingView, copy_of
from service.registry.db import Database
from service.registry.models import Candidate, Sighting, new_id
from service.registry.photostore import PhotoStore

OWN_SIGHTINGS_SHOWN = 100


@dataclass(frozen=True)
class SightingReport:
    place: str | None = None
    seen_at: datetime | None = None  # without a time zone: UTC
    estimated_age: float | None = None
    note: str | None = None


class SightingService:
    def __init__(
        self, db: Database, uploads: Uploads, photos: PhotoStore, matcher: Matcher
    ) -> None:
        self.db = db
        self.uploads = uploads
        self.photos = photos
        self.matcher = matcher

    def submit(
        self,
        actor: Actor,
        data: bytes,
        report: SightingReport,
        face: FaceChoice | None = None,
    ) -> SightingView:
        """Store the photo (re-encoded, sealed), match every face (or only the ``face``
        the volunteer picked) against every organisation's cases, and route each candidate
        to the case's organisation."""
        actor.require(Permission.SIGHTINGS)
        report = _checked(report)
        image = self.uploads.decode(data)
        try:
            result = self.matcher.search(image, MatchQuery(face=face))
        except NoFaceFound as err:  # nothing of a photo without a face is kept
            raise NoFaceFound(
                "no face was found in the photo; nothing was kept (try a closer, sharper photo)"
            ) from err
        sighting = Sighting(
            id=new_id(),
            submitted_by=actor.key_id,
            org_id=actor.org_id or "",
            upload_sha256=image.upload_sha256,
            **asdict(report),
        )
        sighting.stored_name = f"sighting-{sighting.id}.jpg"
        candidates = _candidates(sighting.id, result)
        sighting.status = "received" if candidates else "closed"
        self.photos.put(sighting.stored_name, image.clean_jpeg)
        try:
            with self.db.unit() as tx:
                tx.sightings.add(sighting, candidates)
                tx.audit.record(
                    actor,
                    "sighting.create",
                    target=sighting.id,
                    input_sha256=image.upload_sha256,
                    results=[c.case_id for c in candidates],
                    detail={"faces": len(result.faces), "face_picked": face is not None},
                )
                return copy_of(SightingView, sighting)
        except BaseException:
            self.photos.delete(sighting.stored_name)
            raise

    def get(self, actor: Actor, sighting_id: str) -> SightingView:
        """A sighting, for the key that sent it (or an admin): others get 404."""
        actor.require(Permission.SIGHTINGS)
        with self.db.unit() as tx:
            sighting = tx.sightings.get(sighting_id)
            if sighting is None or not (actor.is_admin or sighting.submitted_by == actor.key_id):
                raise NotFound(f"sighting {sighting_id} not found")
            return copy_of(SightingView, sighting)

    def own(self, actor: Actor) -> list[SightingView]:
        actor.require(Permission.SIGHTINGS)
        with self.db.unit() as tx:
            rows = tx.sightings.sent_by(actor.key_id, OWN_SIGHTINGS_SHOWN)
            return [copy_of(SightingView, s) for s in rows]


def _checked(report: SightingReport) -> SightingReport:
    seen_at = report.seen_at
    if seen_at is not None:
        seen_at = seen_at if seen_at.tzinfo else seen_at.replace(tzinfo=UTC)
        if seen_at > datetime.now(UTC):
            raise InvalidInput("seen_at is in the future")
    return SightingReport(report.place, seen_at, report.estimated_age, report.note)


def _candidates(sighting_id: str, result: MatchResult) -> list[Candidate]:
    return [
        Candidate(
            id=new_id(),
            sighting_id=sighting_id,
            face_index=n,
            face_box=json.dumps([round(v, 1) for v in face.face.face.box]),
            face_quality=json.dumps(asdict(face.face.quality)),
            case_id=c.case_id,
            org_id=c.org_id,
            photo_id=c.photo_id,
            template_kind=c.template_kind,
            rank=c.rank,
            score=c.score,
            false_match_rate=c.false_match_rate,
        )
        for n, face in enumerate(result.faces)
        for c in face.candidates
    ]
