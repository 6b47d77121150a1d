"""What the use cases return to the edges: plain, immutable records. The edges never hold
a database row, so nothing they do can reach back into the registry."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any, TypeVar

from service.faces.pipeline import AnalysedFace
from service.matching.actors import Actor
from service.matching.ages import expected_age
from service.registry.models import ApiKey, Case, Photo

T = TypeVar("T")


def copy_of(view: type[T], row: object, **computed: Any) -> T:
    """A view filled from the same-named attributes of ``row`` (and ``computed``)."""
    names = [f.name for f in fields(view)]  # type: ignore[arg-type]
    values = {n: computed[n] if n in computed else getattr(row, n) for n in names}
    return view(**values)


@dataclass(frozen=True)
class PhotoView:
    id: str
    width: int
    height: int
    taken_on: date | None
    age_at_photo: float | None
    face_box: list[float]
    created_at: datetime
    template_kinds: list[str]
    quality_issues: list[str]  # the enrolled face's (small, blurred, turned): enrolled anyway

    @classmethod
    def of(cls, photo: Photo) -> PhotoView:
        kinds = sorted({t.kind for t in photo.templates})  # build views inside the unit of work
        return copy_of(
            cls,
            photo,
            face_box=json.loads(photo.face_box),
            template_kinds=kinds,
            quality_issues=json.loads(photo.quality_issues or "[]"),
        )


@dataclass(frozen=True)
class CaseView:
    id: str
    org_id: str
    external_ref: str | None
    display_name: str
    sex: str
    birth_date: date | None
    age_at_disappearance: float | None
    missing_since: date | None
    region: str | None
    status: str
    expected_age_today: float | None
    created_at: datetime
    updated_at: datetime
    photos: list[PhotoView]

    @classmethod
    def of(cls, case: Case, today: date | None = None) -> CaseView:
        age = expected_age(
            case.birth_date, case.age_at_disappearance, case.missing_since, today or date.today()
        )
        return copy_of(
            cls,
            case,
            expected_age_today=None if age is None else round(age, 1),
            photos=[PhotoView.of(p) for p in case.photos],
        )


@dataclass(frozen=True)
class CasePage:
    items: list[CaseView]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class Enrollment:
    photo: PhotoView
    face: AnalysedFace
    model_id: str
    aged_templates: list[float]
    warnings: list[str]


@dataclass(frozen=True)
class RankedCase:
    """One case proposed for one face of a photo: its best template's score. Not a verdict."""

    rank: int
    case_id: str
    org_id: str
    external_ref: str | None
    score: float
    photo_id: str
    template_kind: str
    # How often a search of this gallery, holding no photo of this child, would put up an
    # unrelated case scoring this high (None: no impostor curve for this model).
    false_match_rate: float | None = None


@dataclass(frozen=True)
class FaceMatch:
    face: AnalysedFace
    candidates: list[RankedCase]
    stands_out: bool | None = None  # any candidate beyond chance; None: not calibrated
    review_required: bool = True


@dataclass(frozen=True)
class MatchResult:
    faces: list[FaceMatch]
    model_id: str
    index_generation: int
    score_floor: float
    gallery_templates: int = 0  # searched: what the false-match rates are scaled by
    review_required: bool = True

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for f in self.faces for c in f.candidates]


@dataclass(frozen=True)
class SightingView:
    """What a volunteer sees of their sighting: its status, never the candidates."""

    id: str
    status: str
    place: str | None
    seen_at: datetime | None
    estimated_age: float | None
    created_at: datetime


@dataclass(frozen=True)
class ConfirmedSighting:
    """A sighting two reviewers confirmed for a case: where and when the child was seen."""

    sighting_id: str
    candidate_id: str
    place: str | None
    seen_at: datetime | None
    estimated_age: float | None
    score: float
    confirmed_by: list[str]  # the confirming reviewers' key names
    confirmed_at: datetime  # the last confirmation


@dataclass(frozen=True)
class QueueItem:
    candidate_id: str
    sighting_id: str
    case_id: str
    external_ref: str | None
    score: float
    false_match_rate: float | None  # against the gallery when it was searched
    rank: int
    status: str
    created_at: datetime
    confirmations: int  # by different reviewers so far
    my_decision: str | None  # the asking reviewer's own decision, if any


@dataclass(frozen=True)
class ReviewView:
    reviewer: str  # key id
    reviewer_name: str | None
    decision: str
    note: str | None
    created_at: datetime


@dataclass(frozen=True)
class ProbeView:
    url: str
    face_box: list[float]
    quality: dict[str, Any]
    place: str | None
    seen_at: datetime | None
    estimated_age: float | None


@dataclass(frozen=True)
class CandidateDetail:
    """The sighting's face and the candidate case's photos side by side, for a reviewer."""

    candidate_id: str
    status: str
    score: float
    false_match_rate: float | None
    rank: int
    age_gap: float | None
    probe: ProbeView
    case: CaseView
    matched_photo_id: str
    reviews: list[ReviewView]
    reviewers_needed: int
    confirmations: int


@dataclass(frozen=True)
class Decision:
    candidate_id: str
    status: str
    confirmations: int


@dataclass(frozen=True)
class OrgView:
    id: str
    name: str
    webhook_url: str | None
    created_at: datetime


@dataclass(frozen=True)
class KeyView:
    key_id: str
    name: str
    org_id: str
    roles: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> KeyView:
        return copy_of(cls, row, roles=sorted(row.role_set))


@dataclass(frozen=True)
class SignedIn:
    """A browser's session: who it acts as, and the token its forms must carry."""

    key_id: str
    key_name: str
    org_id: str
    org_name: str
    roles: list[str]
    csrf_token: str
    expires_at: datetime

    @property
    def actor(self) -> Actor:
        return Actor(self.key_id, self.org_id, frozenset(self.roles))


@dataclass(frozen=True)
class DeliveryView:
    id: int
    org_id: str
    event: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: str
    key_id: str | None
    org_id: str | None
    action: str
    target: str | None
    input_sha256: str | None
    result_ids: str
    hash: str


@dataclass(frozen=True)
class IndexStats:
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


@dataclass(frozen=True)
class RetentionReport:
    cases_purged: int
    sightings_purged: int


@dataclass(frozen=True)
class AuditCheck:
    ok: bool
    records: int
    problems: list[str]


@dataclass(frozen=True)
class ServiceInfo:
    model_backend: str
    model_id: str
    dimension: int
    index_backend: str
    index_type: str
    index_size: int | None  # administrators only
    index_generation: int | None
    index_opened: str
    template_transform: str
    photos_readable: bool
    score_floor: float
    limits: dict[str, int | float]


@dataclass(frozen=True)
class CaseRef:
    """A case as the duplicate lists show it to administrators: never a name or a photo."""

    case_id: str
    external_ref: str | None
    org_id: str
    org_name: str


@dataclass(frozen=True)
class DuplicatePair:
    """Two cases whose best pair of original templates scores at or above the threshold;
    ``photo_a`` and ``photo_b`` are that pair's photos."""

    case_a: CaseRef
    case_b: CaseRef
    score: float
    photo_a: str
    photo_b: str
    same_org: bool
    link_id: int | None  # the link, when people already linked the two

    @property
    def linked(self) -> bool:
        return self.link_id is not None


@dataclass(frozen=True)
class DuplicateList:
    model_id: str
    threshold: float  # the calibrated (or configured) one, or the client's higher min_score
    pairs: list[DuplicatePair]  # this page's, strongest first
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class CaseLinkView:
    id: int
    case_a: CaseRef
    case_b: CaseRef
    note: str | None
    linked_by: str  # api key id
    created_at: datetime


@dataclass(frozen=True)
class CaseLinkPage:
    items: list[CaseLinkView]
    total: int
    offset: int
    limit: int
