"""Request and response bodies of API v1."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.faces.pipeline import AnalysedFace
from service.matching import Candidate, case_expected_age
from service.registry.models import Case, Photo

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
    limits: dict[str, int | float]


class ErrorOut(BaseModel):
    detail: str
    reason: str
