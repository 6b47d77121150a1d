"""Response bodies of API v1 (request bodies that carry use-case rules live with their use
case, e.g. ``service.matching.cases.NewCase``). Each ``of`` reads one view of the
application layer."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime
from typing import Any, Literal, Self

from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field

from service.faces.pipeline import AnalysedFace
from service.matching import views
from service.matching.cases import CaseStatus, Sex


def jpeg(data: bytes) -> Response:
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


FALSE_MATCH_RATE = (
    "estimated chance that a search of this gallery, holding no photo of this child, puts up "
    "an unrelated case scoring this high (fitted per model on impostor scores of children, "
    "scaled by the gallery's size when searched); null when the model has no fitted curve. "
    "Never a verdict, and never a reason to hide a candidate"
)


class _FromView(BaseModel):
    @classmethod
    def of(cls, view: object) -> Self:
        return cls.model_validate(view, from_attributes=True)


class PhotoOut(_FromView):
    id: str
    width: int
    height: int
    taken_on: date | None
    age_at_photo: float | None
    face_box: list[float]
    created_at: datetime
    template_kinds: list[str] = Field(description="original, and aged when age progression ran")
    quality_issues: list[str] = Field(
        description="the enrolled face's quality issues (small, blurred, turned): a poor face "
        "is enrolled all the same, and these say how far to trust its scores"
    )


class CaseOut(_FromView):
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


class CasePage(_FromView):
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
    def fields_of(cls, face: AnalysedFace) -> dict[str, Any]:
        return {
            "box": [round(v, 1) for v in face.face.box],
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in face.face.landmarks],
            "quality": QualityOut(**asdict(face.quality), acceptable=face.quality.acceptable),
        }


class EnrollmentOut(BaseModel):
    photo: PhotoOut
    face: FaceOut
    model_id: str
    aged_templates: list[float] = Field(
        description="ages of the aged templates enrolled with the photo (age progression)"
    )
    warnings: list[str] = Field(
        description="the face's quality issues (it is enrolled all the same) and age progression's"
    )

    @classmethod
    def of(cls, e: views.Enrollment) -> EnrollmentOut:
        return cls(
            photo=PhotoOut.of(e.photo),
            face=FaceOut(**FaceOut.fields_of(e.face)),
            model_id=e.model_id,
            aged_templates=e.aged_templates,
            warnings=e.warnings,
        )


class CandidateOut(_FromView):
    rank: int
    case_id: str
    external_ref: str | None
    score: float = Field(description="cosine similarity of the best template; not a verdict")
    photo_id: str
    template_kind: str
    false_match_rate: float | None = Field(description=FALSE_MATCH_RATE)


class FaceMatchOut(FaceOut):
    candidates: list[CandidateOut]
    stands_out: bool | None = Field(
        description="whether any candidate's false-match rate is at most the service's "
        "stands_out_rate (i.e. unlikely by chance alone); null when not calibrated"
    )
    review_required: Literal[True] = True


class MatchOut(BaseModel):
    faces: list[FaceMatchOut]
    model_id: str
    index_generation: int
    score_floor: float = Field(description="candidates below this score are never returned")
    gallery_templates: int = Field(description="templates searched: the false-match rates' scale")
    review_required: Literal[True] = True

    @classmethod
    def of(cls, result: views.MatchResult) -> MatchOut:
        return cls(
            faces=[
                FaceMatchOut(
                    **FaceOut.fields_of(f.face),
                    candidates=[CandidateOut.of(c) for c in f.candidates],
                    stands_out=f.stands_out,
                )
                for f in result.faces
            ],
            model_id=result.model_id,
            index_generation=result.index_generation,
            score_floor=result.score_floor,
            gallery_templates=result.gallery_templates,
        )


class InfoOut(BaseModel):
    version: str
    model_backend: str
    model_id: str
    dimension: int
    index_backend: str
    index_type: str
    index_size: int | None = Field(description="administrators only")
    index_generation: int | None = Field(description="administrators only")
    index_opened: str
    template_transform: str = Field(description="version of the index's template transform")
    photos_readable: bool
    score_floor: float
    limits: dict[str, int | float]

    @classmethod
    def of(cls, version: str, info: views.ServiceInfo) -> InfoOut:
        return cls(version=version, **asdict(info))


class ErrorOut(BaseModel):
    detail: str
    reason: str


# -- sightings and review -------------------------------------------------------------------


class SightingOut(_FromView):
    """What a volunteer sees of their sighting: its status, never the candidates."""

    id: str
    status: Literal["received", "in_review", "confirmed", "closed"]
    place: str | None
    seen_at: datetime | None
    estimated_age: float | None
    created_at: datetime


class QueueItemOut(_FromView):
    candidate_id: str
    sighting_id: str
    case_id: str
    external_ref: str | None
    score: float
    false_match_rate: float | None = Field(description=FALSE_MATCH_RATE)
    rank: int
    status: str
    created_at: datetime
    confirmations: int = Field(description="confirmations by different reviewers so far")


class ReviewOut(_FromView):
    reviewer: str = Field(description="the reviewer's key id")
    reviewer_name: str | None = Field(description="the reviewer's key name")
    decision: str
    note: str | None
    created_at: datetime


class ProbeOut(_FromView):
    url: str
    face_box: list[float]
    quality: dict[str, Any]
    place: str | None
    seen_at: datetime | None
    estimated_age: float | None


class CasePhotoRef(BaseModel):
    photo_id: str
    url: str
    age_at_photo: float | None
    taken_on: date | None
    template_kinds: list[str]
    quality_issues: list[str]


class CandidateDetailOut(BaseModel):
    """The probe face and the candidate's photos side by side, for a reviewer."""

    candidate_id: str
    status: str
    score: float
    false_match_rate: float | None = Field(description=FALSE_MATCH_RATE)
    rank: int
    age_gap: float | None = Field(
        description="case's expected age today minus the sighting's estimated age, years"
    )
    probe: ProbeOut
    case: CaseOut
    case_photos: list[CasePhotoRef]
    matched_photo_id: str
    reviews: list[ReviewOut]
    reviewers_needed: int
    confirmations: int

    @classmethod
    def of(cls, d: views.CandidateDetail) -> CandidateDetailOut:
        photos = [
            CasePhotoRef(
                photo_id=p.id,
                url=f"/v1/review/{d.candidate_id}/photos/{p.id}",
                age_at_photo=p.age_at_photo,
                taken_on=p.taken_on,
                template_kinds=p.template_kinds,
                quality_issues=p.quality_issues,
            )
            for p in d.case.photos
        ]
        return cls(
            **{k: v for k, v in asdict(d).items() if k not in ("probe", "case", "reviews")},
            probe=ProbeOut.of(d.probe),
            case=CaseOut.of(d.case),
            case_photos=photos,
            reviews=[ReviewOut.of(r) for r in d.reviews],
        )


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["confirm", "reject", "unsure"]
    note: str | None = Field(None, max_length=2000)


class DecisionOut(_FromView):
    candidate_id: str
    status: str
    confirmations: int


# -- administration ---------------------------------------------------------------------------


class OrgIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)


class OrgOut(_FromView):
    id: str
    name: str
    webhook_url: str | None
    created_at: datetime


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    org_id: str = Field(min_length=1, max_length=32)
    roles: list[Literal["volunteer", "reviewer", "registry", "admin"]] = Field(min_length=1)
    expires_at: datetime | None = Field(None, description="without a time zone: UTC")


class KeyOut(_FromView):
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


class DeliveryOut(_FromView):
    id: int
    org_id: str
    event: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class AuditEntryOut(_FromView):
    seq: int
    at: str
    key_id: str | None
    org_id: str | None
    action: str
    target: str | None
    input_sha256: str | None
    result_ids: str
    hash: str


class AuditCheckOut(_FromView):
    ok: bool
    records: int
    problems: list[str]


class RetentionOut(_FromView):
    cases_purged: int
    sightings_purged: int


class IndexStatsOut(_FromView):
    model_id: str
    dimension: int
    backend: str
    index_type: str
    templates: int
    registry_templates: int
    generation: int
    opened: str
    transform: str
    snapshot_dir: str


class CaseRefOut(_FromView):
    case_id: str
    external_ref: str | None
    org_id: str
    org_name: str


class DuplicatePairOut(_FromView):
    case_a: CaseRefOut
    case_b: CaseRefOut
    score: float = Field(description="the best score of an original template of each case")
    photo_a: str = Field(description="case_a's photo of that best-scoring pair")
    photo_b: str
    same_org: bool
    linked: bool
    link_id: int | None


class DuplicatesOut(_FromView):
    model_id: str
    threshold: float = Field(description="the calibrated threshold, or a higher min_score")
    pairs: list[DuplicatePairOut]
    total: int
    offset: int
    limit: int


class LinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    case_a: str = Field(min_length=1, max_length=32)
    case_b: str = Field(min_length=1, max_length=32)
    note: str | None = Field(None, max_length=1000)


class CaseLinkOut(_FromView):
    id: int
    case_a: CaseRefOut
    case_b: CaseRefOut
    note: str | None
    linked_by: str = Field(description="the id of the key that linked them")
    created_at: datetime


class CaseLinkPageOut(_FromView):
    items: list[CaseLinkOut]
    total: int
    offset: int
    limit: int


class RebuildIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reembed: bool = Field(
        False,
        description="first embed the stored photos again with the current model (after a "
        "model change), in several processes; then rebuild",
    )


class JobOut(_FromView):
    id: str
    kind: Literal["index.rebuild", "index.reembed"]
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    stage: str | None = Field(description="embedding (photos) or indexing (templates)")
    done: int = Field(description="items of the current stage done")
    total: int | None = Field(description="items of the current stage; null until known")
    rate: float | None = Field(description="items a second in the current stage")
    eta_seconds: float | None = Field(description="seconds left; null until known and once over")
    requested_by: str = Field(description="the id of the key that started it")
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None = Field(description="why it failed or was cancelled")
    detail: dict[str, Any] = Field(
        description="once done: templates, registry_templates, generation, photos_embedded, "
        "and the check (sample_queries, exact_neighbours, found, depth)"
    )
