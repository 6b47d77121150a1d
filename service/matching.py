"""The use cases: enroll a case photo, match a photo, delete. Ties faces, registry and index.

Every match result is a candidate list for people to review; nothing here decides a match.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from service.errors import NoFaceFound
from service.faces.intake import DecodedImage, decode_upload
from service.faces.pipeline import AnalysedFace, FaceChoice, FacePipeline
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

    @property
    def active(self) -> bool:
        return self.sex is not None or self.min_age is not None or self.max_age is not None


@dataclass(frozen=True)
class Candidate:
    rank: int
    case_id: str
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
    review_required: bool = True


@dataclass(frozen=True)
class Enrollment:
    photo: Photo
    analysed: AnalysedFace
    warnings: list[str] = field(default_factory=list)


class Homeward:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        photos: PhotoStore,
        pipeline: FacePipeline,
        keeper: IndexKeeper,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.photos = photos
        self.pipeline = pipeline
        self.keeper = keeper

    @property
    def model_id(self) -> str:
        return self.pipeline.model_id

    def decode(self, data: bytes) -> DecodedImage:
        return decode_upload(
            data, max_bytes=self.settings.max_upload_bytes, max_pixels=self.settings.max_pixels
        )

    # -- enrollment ----------------------------------------------------------------------

    def enroll_photo(
        self,
        case_id: str,
        data: bytes,
        *,
        taken_on: date | None = None,
        age_at_photo: float | None = None,
        choice: FaceChoice | None = None,
    ) -> Enrollment:
        self.registry.get_case(case_id)  # 404 before any model work
        image = self.decode(data)
        analysed = self.pipeline.analyse_for_enrollment(image.pixels, choice)
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
            self.registry.add_photo(case_id, photo, [NewTemplate(self.model_id, analysed.template)])
        except BaseException:
            self.photos.delete(photo.stored_name)
            raise
        self.keeper.catch_up()
        return Enrollment(photo, analysed)

    def delete_photo(self, case_id: str, photo_id: str) -> None:
        name = self.registry.delete_photo(case_id, photo_id)
        self.photos.delete(name)
        self.keeper.catch_up()

    def delete_case(self, case_id: str) -> None:
        for name in self.registry.delete_case(case_id):
            self.photos.delete(name)
        self.keeper.catch_up()

    # -- matching ------------------------------------------------------------------------

    def match(
        self, data: bytes, *, top_k: int, filters: MatchFilters = MatchFilters()
    ) -> MatchResult:
        image = self.decode(data)
        faces = self.pipeline.analyse_all(image.pixels)
        if not faces:
            raise NoFaceFound("no face was found in the photo")
        self.keeper.catch_up()
        allowed = self._allowed_templates(filters)
        queries = np.stack([f.template for f in faces])
        return MatchResult(
            faces=[
                FaceMatch(face, self._candidates(query, top_k, allowed))
                for face, query in zip(faces, queries, strict=True)
            ],
            model_id=self.model_id,
            index_generation=self.keeper.generation,
        )

    def _candidates(
        self, query: np.ndarray, top_k: int, allowed: np.ndarray | None
    ) -> list[Candidate]:
        """The top_k best cases (each at its best-scoring template), highest score first.
        Several templates of one case can fill the raw top list, so it widens as needed."""
        index = self.keeper.index
        fetch = top_k * 4
        while True:
            scores, ids = index.search(query[None], fetch, allowed)
            best = self._best_per_case(scores[0], ids[0])
            if len(best) >= top_k or fetch >= len(index):
                break
            fetch *= 4
        cases = self.registry.cases_by_id([c for c, _, _, _ in best])
        return [
            Candidate(
                rank=rank,
                case_id=case_id,
                external_ref=cases[case_id].external_ref,
                score=round(score, 4),
                photo_id=photo_id,
                template_kind=kind,
            )
            for rank, (case_id, score, photo_id, kind) in enumerate(best[:top_k], start=1)
            if case_id in cases
        ]

    def _best_per_case(
        self, scores: np.ndarray, ids: np.ndarray
    ) -> list[tuple[str, float, str, str]]:
        hits = [(int(i), float(s)) for s, i in zip(scores, ids, strict=True) if i >= 0]
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
            for row in self.registry.case_ages(filters.sex)
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
