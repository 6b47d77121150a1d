"""Request and response bodies of API v1."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.faces.pipeline import AnalysedFace
from service.matching import Candidate, case_expected_age
from service.registry.models import Candidate as ReviewCandidate
from service.registry.models import Case, Photo, Sighting

Sex = Literal["female", "male", "unknown"]
CaseStatus = Literal["missing", "found", "closed"]


class CaseFields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    external_ref: str | None = Field(None, min_length=1, max_length=128)
    sex: Sex | None = None
    birth_date: date | None = None
    age_at_disappearance: float | None = Field(None, ge=0, le=25)
    missing_since: date | None = None
    region: str | None = Field(None, min_length=1, max_length=200)
    status: CaseStatus | None = None

    @model_validator(mode="after")
    def _dates_make_sense(self) -> Self:
        today = date.today()
        for name in ("birth_date", "missing_since"):
            value = getattr(self, name)
            if value is not None and value > today:
                raise ValueError(f"{name} is in the future")
        if self.birth_date and self.missing_since and self.missing_since < self.birth_date:
            raise ValueError("missing_since is before birth_date")
        return self


class CaseCreate(CaseFields):
    display_name: str = Field(min_length=1, max_length=200)
    sex: Sex = "unknown"
    status: CaseStatus = "missing"


class CasePatch(CaseFields):
    display_name: str | None = Field(None, min_length=1, max_length=200)


class PhotoOut(BaseModel):
    id: str
    width: int
    height: int
    taken_on: date | None
    age_at_photo: float | None
    face_box: list[float]
    created_at: datetime

    @classmethod
    def of(cls, photo: Photo) -> PhotoOut:
        return cls(
            id=photo.id,
            width=photo.width,
            height=photo.height,
            taken_on=photo.taken_on,
            age_at_photo=photo.age_at_photo,
            face_box=json.loads(photo.face_box),
            created_at=photo.created_at,
        )


class CaseOut(BaseModel):
    id: str
    external_ref: str | None
    display_name: str
    sex: Sex
    birth_date: date | None
    age_at_disappearance: float | None
    missing_since: date | None
    region: str | None
    status: CaseStatus
    expected_age_today: float | None
    created_at: datetime
    updated_at: datetime
    photos: list[PhotoOut]

    @classmethod
    def of(cls, case: Case) -> CaseOut:
        age = case_expected_age(case)
        return cls(
            id=case.id,
            external_ref=case.external_ref,
            display_name=case.display_name,
            sex=case.sex,  # type: ignore[arg-type]  # the column holds only Sex values
            birth_date=case.birth_date,
            age_at_disappearance=case.age_at_disappearance,
            missing_since=case.missing_since,
            region=case.region,
            status=case.status,  # type: ignore[arg-type]
            expected_age_today=None if age is None else round(age, 1),
            created_at=case.created_at,
            updated_at=case.updated_at,
            photos=[PhotoOut.of(p) for p in case.photos],
        )


class CasePage(BaseModel):
    items: list[CaseOut]
    total: int
    offset: int
    limit: int


class QualityOut(BaseModel):
    size_px: float
    sharpness: float
    yaw: float
    pitch: float
    roll: float
    detection_score: float
    acceptable: bool
    issues: list[str]


class FaceOut(BaseModel):
    box: list[float] = Field(description="x, y, width, height in pixels of the upright image")
    landmarks: list[list[float]] = Field(description="eyes, nose tip, mouth corners")
    quality: QualityOut

    @classmethod
    def of(cls, face: AnalysedFace) -> FaceOut:
        q = face.quality
        return cls(
            box=[round(v, 1) for v in face.face.box],
            landmarks=[[round(float(x), 1), round(float(y), 1)] for x, y in face.face.landmarks],
            quality=QualityOut(
                size_px=q.size_px,
                sharpness=q.sharpness,
                yaw=q.yaw,
                pitch=q.pitch,
                roll=q.roll,
                detection_score=q.detection_score,
                acceptable=q.acceptable,
                issues=list(q.issues),
            ),
        )


class EnrollmentOut(BaseModel):
    photo: PhotoOut
    face: FaceOut
    model_id: str
    aged_templates: list[float] = Field(
        description="ages of the aged templates enrolled with the photo (age progression)"
    )
    warnings: list[str]


class CandidateOut(BaseModel):
    rank: int
    case_id: str
    external_ref: str | None
    score: float = Field(description="cosine similarity of the best template; not a verdict")
    photo_id: str
    template_kind: str

    @classmethod
    def of(cls, c: Candidate) -> CandidateOut:
        return cls(
            rank=c.rank,
            case_id=c.case_id,
            external_ref=c.external_ref,
            score=c.score,
            photo_id=c.photo_id,
            template_kind=c.template_kind,
        )


class FaceMatchOut(FaceOut):
    candidates: list[CandidateOut]
    review_required: Literal[True] = True


class MatchOut(BaseModel):
    faces: list[FaceMatchOut]
    model_id: str
    index_generation: int
    score_floor: float = Field(description="candidates below this score are never returned")
    review_required: Literal[True] = True


class InfoOut(BaseModel):
    version: str
    model_backend: str
    model_id: str
    dimension: int
    index_type: str
    index_size: int
    index_generation: int
    index_opened: str
    template_transform: str = Field(description="version of the index's template transform")
    photos_readable: bool
    score_floor: float
    limits: dict[str, int | float]


class ErrorOut(BaseModel):
    detail: str
    reason: str


# -- sightings and review -------------------------------------------------------------------


class SightingOut(BaseModel):
    """What a volunteer sees of their sighting: its status, never the candidates."""

    id: str
    status: Literal["received", "in_review", "confirmed", "closed"]
    place: str | None
    seen_at: datetime | None
    estimated_age: float | None
    created_at: datetime

    @classmethod
    def of(cls, s: Sighting) -> SightingOut:
        return cls(
            id=s.id,
            status=s.status,  # type: ignore[arg-type]  # the column holds only these
            place=s.place,
            seen_at=s.seen_at,
            estimated_age=s.estimated_age,
            created_at=s.created_at,
        )


class QueueItemOut(BaseModel):
    candidate_id: str
    sighting_id: str
    case_id: str
    external_ref: str | None = None
    score: float
    rank: int
    status: str
    created_at: datetime

    @classmethod
    def of(cls, c: ReviewCandidate) -> QueueItemOut:
        return cls(
            candidate_id=c.id,
            sighting_id=c.sighting_id,
            case_id=c.case_id,
            score=c.score,
            rank=c.rank,
            status=c.status,
            created_at=c.created_at,
        )


class ReviewOut(BaseModel):
    reviewer: str
    decision: str
    note: str | None
    created_at: datetime


class CasePhotoRef(BaseModel):
    photo_id: str
    url: str
    age_at_photo: float | None
    taken_on: date | None
    template_kinds: list[str]


class CandidateDetailOut(BaseModel):
    """The probe face and the candidate's photos side by side, for a reviewer."""

    candidate_id: str
    status: str
    score: float
    rank: int
    age_gap: float | None = Field(
        description="case's expected age today minus the sighting's estimated age, years"
    )
    probe: dict[str, object]
    case: CaseOut
    case_photos: list[CasePhotoRef]
    matched_photo_id: str
    reviews: list[ReviewOut]
    reviewers_needed: int


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["confirm", "reject", "unsure"]
    note: str | None = Field(None, max_length=2000)


class DecisionOut(BaseModel):
    candidate_id: str
    status: str
    confirmations: int


# -- administration ---------------------------------------------------------------------------


class OrgIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)


class OrgOut(BaseModel):
    id: str
    name: str
    webhook_url: str | None
    created_at: datetime


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    org_id: str = Field(min_length=1, max_length=32)
    roles: list[Literal["volunteer", "reviewer", "registry", "admin"]] = Field(min_length=1)
    expires_at: datetime | None = None


class KeyOut(BaseModel):
    key_id: str
    name: str
    org_id: str
    roles: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="shown once; only its HMAC is stored")


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, max_length=500, pattern=r"^https?://[^\s]+$")


class WebhookOut(BaseModel):
    url: str | None
    secret: str | None = Field(description="the signing secret, shown once")


class DeliveryOut(BaseModel):
    id: int
    org_id: str
    event: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
