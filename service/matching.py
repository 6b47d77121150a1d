"""The use cases of the gallery: enroll a case photo, match a photo, view and delete.

Every match result is a candidate list for people to review; nothing here decides a match.
Every search, photo view and deletion is written to the audit log before it is answered.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from service.ageing import AgedFace
from service.ageing.templates import AgedTemplates, target_ages
from service.audit import Actor, AuditLog
from service.errors import HomewardError, NoFaceFound
from service.faces.base import DetectedFace, Image
from service.faces.intake import DecodedImage, decode_stored, decode_upload
from service.faces.pipeline import AnalysedFace, FaceChoice, FacePipeline, choose_face
from service.registry.models import Case, Photo, new_id
from service.registry.photostore import PhotoStore
from service.registry.repository import NewTemplate, Registry, box_json
from service.search.keeper import IndexKeeper
from service.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MatchFilters:
    sex: str | None = None
    min_age: float | None = None
    max_age: float | None = None
    scope: str | None = None  # only this organisation's cases

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.sex, self.min_age, self.max_age, self.scope))


@dataclass(frozen=True)
class Candidate:
    rank: int
    case_id: str
    org_id: str
    external_ref: str | None
    score: float
    photo_id: str
    template_kind: str


@dataclass(frozen=True)
class FaceMatch:
    analysed: AnalysedFace
    candidates: list[Candidate]
    review_required: bool = True


@dataclass(frozen=True)
class MatchResult:
    faces: list[FaceMatch]
    model_id: str
    index_generation: int
    image: DecodedImage
    review_required: bool = True

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for f in self.faces for c in f.candidates]


@dataclass(frozen=True)
class Enrollment:
    photo: Photo
    analysed: AnalysedFace
    aged_ages: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def scope_of(actor: Actor) -> str | None:
    """The organisation whose cases an actor may touch; None (all) for admins."""
    return None if actor.is_admin else actor.org_id


class Homeward:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        photos: PhotoStore,
        pipeline: FacePipeline,
        keeper: IndexKeeper,
        audit: AuditLog,
        aged: AgedTemplates,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.photos = photos
        self.pipeline = pipeline
        self.keeper = keeper
        self.audit = audit
        self.aged = aged

    @property
    def model_id(self) -> str:
        return self.pipeline.model_id

    def decode(self, data: bytes) -> DecodedImage:
        return decode_upload(
            data, max_bytes=self.settings.max_upload_bytes, max_pixels=self.settings.max_pixels
        )

    # -- cases -----------------------------------------------------------------------------

    def create_case(self, actor: Actor, fields: dict[str, Any]) -> Case:
        case = self.registry.create_case(actor.org_id or "", fields)
        self.audit.record(actor, "case.create", target=case.id)
        return self.registry.get_case(case.id)

    def get_case(self, actor: Actor, case_id: str) -> Case:
        return self.registry.get_case(case_id, scope_of(actor))

    def list_cases(
        self, actor: Actor, offset: int, limit: int, status: str | None
    ) -> tuple[list[Case], int]:
        return self.registry.list_cases(offset, limit, status, scope_of(actor))

    def update_case(self, actor: Actor, case_id: str, fields: dict[str, Any]) -> Case:
        case = self.registry.update_case(case_id, fields, scope_of(actor))
        self.audit.record(actor, "case.update", target=case_id, detail={"fields": sorted(fields)})
        return case

    # -- enrollment ----------------------------------------------------------------------

    def enroll_photo(
        self,
        actor: Actor,
        case_id: str,
        data: bytes,
        *,
        taken_on: date | None = None,
        age_at_photo: float | None = None,
        choice: FaceChoice | None = None,
    ) -> Enrollment:
        scope = scope_of(actor)
        case = self.registry.get_case(case_id, scope)  # 404 before any model work
        image = self.decode(data)
        analysed = self.pipeline.analyse_for_enrollment(image.pixels, choice)
        aged, warnings = self._aged_templates(image.pixels, analysed.face, case, age_at_photo)
        photo = Photo(
            id=new_id(),
            upload_sha256=image.upload_sha256,
            width=image.width,
            height=image.height,
            taken_on=taken_on,
            age_at_photo=age_at_photo,
            face_box=box_json(analysed.face.box),
        )
        photo.stored_name = f"{photo.id}.jpg"
        self.photos.put(photo.stored_name, image.clean_jpeg)
        try:
            original = NewTemplate(self.model_id, analysed.template, age=age_at_photo)
            self.registry.add_photo(case_id, photo, [original, *aged], scope)
        except BaseException:
            self.photos.delete(photo.stored_name)
            raise
        self.keeper.catch_up()
        self.audit.record(
            actor,
            "photo.enroll",
            target=case_id,
            input_sha256=image.upload_sha256,
            results=[photo.id],
            detail={"aged_templates": len(aged)},
        )
        return Enrollment(
            photo, analysed, aged_ages=[t.age or 0.0 for t in aged], warnings=warnings
        )

    def _aged_templates(
        self, pixels: Image, face: DetectedFace, case: Case, age_at_photo: float | None
    ) -> tuple[list[NewTemplate], list[str]]:
        if not self.settings.aged_templates:
            return [], []
        ages = target_ages(age_at_photo, case_expected_age(case))
        if not ages or age_at_photo is None:
            return [], []
        return self.aged.make(pixels, face, age_at_photo, ages, case.sex)

    def age_upload(
        self,
        actor: Actor,
        data: bytes,
        age_at_photo: float,
        ages: list[float],
        sex: str | None = None,
        face_index: int | None = None,
    ) -> list[AgedFace]:
        """An uploaded photo aged to each age (for posters and reviewers); audited."""
        image = self.decode(data)
        aged = self.aged.age_photo(image.pixels, age_at_photo, ages, sex, face_index)
        self.audit.record(
            actor,
            "ageing",
            input_sha256=image.upload_sha256,
            detail={"from": age_at_photo, "to": ages},
        )
        return aged

    def refresh_aged(self, actor: Actor) -> int:
        """Re-age every photo whose aged templates no longer sit at the case's expected age
        today (or came from an older growth model); returns how many photos changed."""
        if not self.settings.aged_templates:
            return 0
        changed = 0
        for photo, case, existing in self.registry.photos_with_age():
            wanted = target_ages(photo.age_at_photo, case_expected_age(case))
            current = sorted(age or 0.0 for age, gen in existing if gen == self.aged.generator)
            if current == wanted and len(existing) == len(current):
                continue
            try:
                pixels, face = self._stored_face(photo)
            except HomewardError as err:
                logger.warning("photo %s not re-aged: %s", photo.id, err)
                continue
            templates, _ = self._aged_templates(pixels, face, case, photo.age_at_photo)
            self.registry.replace_aged_templates(photo.id, templates)
            changed += 1
        self.keeper.catch_up()
        self.audit.record(actor, "ageing.refresh", detail={"photos": changed})
        return changed

    def reembed(self, actor: Actor) -> int:
        """Template every stored photo that has none of the current model (after a model
        change, e.g. turning TTA_FLIP on), from the stored photo and its face box; returns
        how many photos were embedded."""
        done = 0
        for photo, case in self.registry.photos_without_model(self.model_id):
            try:
                pixels, face = self._stored_face(photo)
            except HomewardError as err:
                logger.warning("photo %s not re-embedded: %s", photo.id, err)
                continue
            analysed = self.pipeline.analyse(pixels, face)
            aged, _ = self._aged_templates(pixels, face, case, photo.age_at_photo)
            original = NewTemplate(self.model_id, analysed.template, age=photo.age_at_photo)
            self.registry.add_templates(photo.id, [original, *aged])
            done += 1
        self.keeper.catch_up()
        self.audit.record(actor, "templates.reembed", detail={"photos": done})
        return done

    def _stored_face(self, photo: Photo) -> tuple[Image, DetectedFace]:
        """A stored photo's pixels and the face enrolled from it (found again by its box)."""
        pixels = decode_stored(self.photos.read(photo.stored_name))
        faces = self.pipeline.detect(pixels)
        if not faces:
            raise NoFaceFound("the enrolled face is no longer found in the stored photo")
        x, y, w, h = json.loads(photo.face_box)
        return pixels, choose_face(faces, FaceChoice(box=(x, y, w, h)))

    def photo_bytes(self, actor: Actor, case_id: str, photo_id: str) -> bytes:
        """A stored case photo (decrypted), for people who may see it; the view is audited."""
        photo = self.registry.get_photo(case_id, photo_id, scope_of(actor))
        self.audit.record(actor, "photo.view", target=case_id, results=[photo_id])
        return self.photos.read(photo.stored_name)

    def delete_photo(self, actor: Actor, case_id: str, photo_id: str) -> None:
        name = self.registry.delete_photo(case_id, photo_id, scope_of(actor))
        self.photos.delete(name)
        self.keeper.catch_up()
        self.audit.record(actor, "photo.delete", target=case_id, results=[photo_id])

    def delete_case(self, actor: Actor, case_id: str, action: str = "case.delete") -> None:
        for name in self.registry.delete_case(case_id, scope_of(actor)):
            self.photos.delete(name)
        self.keeper.catch_up()
        self.audit.record(actor, action, target=case_id)

    # -- matching ------------------------------------------------------------------------

    def match(
        self,
        actor: Actor,
        data: bytes,
        *,
        top_k: int,
        filters: MatchFilters = MatchFilters(),
        min_score: float | None = None,
        action: str = "match",
    ) -> MatchResult:
        """Candidates for every face; audited (with the upload's hash and the candidate
        cases) before it is returned, so an unwritable audit log fails the search."""
        image = self.decode(data)
        result = self.search(image, top_k=top_k, filters=filters, min_score=min_score)
        self.audit.record(
            actor,
            action,
            input_sha256=image.upload_sha256,
            results=result.case_ids,
            detail={"faces": len(result.faces), "top_k": top_k},
        )
        return result

    def search(
        self,
        image: DecodedImage,
        *,
        top_k: int,
        filters: MatchFilters = MatchFilters(),
        min_score: float | None = None,
    ) -> MatchResult:
        faces = self.pipeline.analyse_all(image.pixels)
        if not faces:
            raise NoFaceFound("no face was found in the photo")
        self.keeper.catch_up()
        floor = max(self.settings.score_floor, min_score if min_score is not None else -1.0)
        allowed = self._allowed_templates(filters)
        top_k = min(top_k, self.settings.max_candidates)
        return MatchResult(
            faces=[
                FaceMatch(face, self._candidates(face.template, top_k, allowed, floor))
                for face in faces
            ],
            model_id=self.model_id,
            index_generation=self.keeper.generation,
            image=image,
        )

    def _candidates(
        self, query: np.ndarray, top_k: int, allowed: np.ndarray | None, floor: float
    ) -> list[Candidate]:
        """The top_k best cases (each at its best-scoring template) scoring at least the
        floor, highest first. Several templates of one case can fill the raw top list, so
        the search widens as needed."""
        index, query = self.keeper.index, self.keeper.query(query)
        fetch = top_k * 4
        while True:
            scores, ids = index.search(query, fetch, allowed)
            best = self._best_per_case(scores[0], ids[0], floor)
            if len(best) >= top_k or fetch >= len(index) or scores[0][-1] < floor:
                break
            fetch *= 4
        cases = self.registry.cases_by_id([c for c, _, _, _ in best])
        return [
            Candidate(
                rank=rank,
                case_id=case_id,
                org_id=cases[case_id].org_id,
                external_ref=cases[case_id].external_ref,
                score=round(score, 4),
                photo_id=photo_id,
                template_kind=kind,
            )
            for rank, (case_id, score, photo_id, kind) in enumerate(best[:top_k], start=1)
            if case_id in cases
        ]

    def _best_per_case(
        self, scores: np.ndarray, ids: np.ndarray, floor: float
    ) -> list[tuple[str, float, str, str]]:
        hits = [
            (int(i), float(s)) for s, i in zip(scores, ids, strict=True) if i >= 0 and s >= floor
        ]
        owners = self.registry.template_kinds([i for i, _ in hits])
        best: dict[str, tuple[str, float, str, str]] = {}
        for template_id, score in hits:  # already sorted by score
            if template_id in owners:
                case_id, photo_id, kind = owners[template_id]
                best.setdefault(case_id, (case_id, score, photo_id, kind))
        return list(best.values())

    def _allowed_templates(self, filters: MatchFilters) -> np.ndarray | None:
        if not filters.active:
            return None
        today = date.today()
        case_ids = [
            row[0]
            for row in self.registry.case_ages(filters.sex, filters.scope)
            if _age_in_range(expected_age(*row[1:], today), filters)
        ]
        ids = self.registry.template_ids_for_cases(self.model_id, case_ids) if case_ids else []
        return np.asarray(ids, dtype=np.int64)


def expected_age(
    birth_date: date | None,
    age_at_disappearance: float | None,
    missing_since: date | None,
    today: date,
) -> float | None:
    """The child's age today, from the birth date or from the age when they went missing."""
    if birth_date is not None:
        return (today - birth_date).days / 365.25
    if age_at_disappearance is not None and missing_since is not None:
        return age_at_disappearance + (today - missing_since).days / 365.25
    return None


def case_expected_age(case: Case, today: date | None = None) -> float | None:
    return expected_age(
        case.birth_date, case.age_at_disappearance, case.missing_since, today or date.today()
    )


def _age_in_range(age: float | None, filters: MatchFilters) -> bool:
    """Cases with no known age are kept: a filter must never hide a child whose record
    lacks dates."""
    if age is None:
        return True
    low = filters.min_age if filters.min_age is not None else -1.0
    high = filters.max_age if filters.max_age is not None else 1e9
    return low <= age <= high
