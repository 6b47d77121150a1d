"""ORM models. Schema changes go through an Alembic migration in ``migrations/versions``."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite drops the zone on the way)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Aware values are stored as UTC (SQLite keeps the wall-clock time and drops the
        offset); naive ones are taken to be UTC already."""
        if value is not None and value.tzinfo is not None:
            return value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (UniqueConstraint("org_id", "external_ref", name="uq_cases_org_ref"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    external_ref: Mapped[str | None] = mapped_column(String(128))  # unique per organisation
    display_name: Mapped[str] = mapped_column(String(200))
    sex: Mapped[str] = mapped_column(String(8), default="unknown")
    birth_date: Mapped[date | None] = mapped_column(Date)
    age_at_disappearance: Mapped[float | None] = mapped_column(Float)
    missing_since: Mapped[date | None] = mapped_column(Date)
    region: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="missing", index=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    photos: Mapped[list[Photo]] = relationship(
        back_populates="case",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Photo.created_at",
    )


class Photo(Base):
    __tablename__ = "photos"
    __table_args__ = (UniqueConstraint("case_id", "upload_sha256"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    upload_sha256: Mapped[str] = mapped_column(String(64))
    stored_name: Mapped[str] = mapped_column(String(128), unique=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    taken_on: Mapped[date | None] = mapped_column(Date)
    age_at_photo: Mapped[float | None] = mapped_column(Float)
    face_box: Mapped[str] = mapped_column(String(200))  # JSON [x, y, w, h]
    # JSON list of the enrolled face's quality issues (small, blurred, turned); enrolled all
    # the same. NULL: enrolled before they were recorded (then only faces without issues were).
    quality_issues: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    case: Mapped[Case] = relationship(back_populates="photos")
    templates: Mapped[list[Template]] = relationship(
        back_populates="photo", cascade="all, delete-orphan", passive_deletes=True
    )


class Template(Base):
    """One face embedding. Its integer id is the vector index's id."""

    __tablename__ = "templates"
    __table_args__ = (Index("ix_templates_model_case", "model_id", "case_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    photo_id: Mapped[str] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(16), default="original")  # original | aged
    age: Mapped[float | None] = mapped_column(Float)  # the age the template stands for
    generator: Mapped[str | None] = mapped_column(String(40))  # e.g. the growth model version
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    photo: Mapped[Photo] = relationship(back_populates="templates")


class TemplateChange(Base):
    """Append-only log of template adds and removes. Its highest ``seq`` is the registry
    watermark: an index that has applied every change up to it is consistent."""

    __tablename__ = "template_changes"
    __table_args__ = (  # the watermark is the last entry of a model's range
        Index("ix_template_changes_model_id_seq", "model_id", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(String(120))
    template_id: Mapped[int] = mapped_column(Integer)
    op: Mapped[str] = mapped_column(String(6))  # "add" | "remove"


class CaseLink(Base):
    """Two cases people judged to be the same child (registered twice, e.g. by two
    organisations). ``case_a`` < ``case_b``, so a pair is linked once; deleting either case
    deletes the link (ON DELETE CASCADE)."""

    __tablename__ = "case_links"
    __table_args__ = (
        UniqueConstraint("case_a", "case_b", name="uq_case_links_pair"),
        CheckConstraint("case_a < case_b", name="ck_case_links_order"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_a: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    case_b: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    note: Mapped[str | None] = mapped_column(String(1000))
    linked_by: Mapped[str] = mapped_column(String(16))  # api key id
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Organisation(Base):
    """Owns cases; receives confirmed candidates through its webhook."""

    __tablename__ = "organisations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    webhook_url: Mapped[str | None] = mapped_column(String(500))
    webhook_secret: Mapped[bytes | None] = mapped_column(LargeBinary)  # sealed at rest
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    roles: Mapped[str] = mapped_column(String(100))  # comma-separated
    secret_hash: Mapped[str] = mapped_column(String(64))  # HMAC-SHA-256 with the server secret
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(self.roles.split(","))


class WebSession(Base):
    """A signed-in browser: an API key exchanged for a server-side session. Only the
    token's HMAC is stored; the CSRF token guards the session's forms."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # HMAC of the cookie token
    key_id: Mapped[str] = mapped_column(String(16), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Sighting(Base):
    """A photo of a child who may be missing, sent by a volunteer."""

    __tablename__ = "sightings"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    submitted_by: Mapped[str] = mapped_column(String(16), index=True)  # api key id
    org_id: Mapped[str] = mapped_column(String(32))
    stored_name: Mapped[str] = mapped_column(String(128), unique=True)
    upload_sha256: Mapped[str] = mapped_column(String(64))
    place: Mapped[str | None] = mapped_column(String(200))
    seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    estimated_age: Mapped[float | None] = mapped_column(Float)
    note: Mapped[str | None] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(16), default="received", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)

    candidates: Mapped[list[Candidate]] = relationship(
        back_populates="sighting", cascade="all, delete-orphan", passive_deletes=True
    )


class Candidate(Base):
    """One case proposed for one face of a sighting, routed to the case's organisation."""

    __tablename__ = "candidates"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    sighting_id: Mapped[str] = mapped_column(
        ForeignKey("sightings.id", ondelete="CASCADE"), index=True
    )
    face_index: Mapped[int] = mapped_column(Integer)
    face_box: Mapped[str] = mapped_column(String(200))
    face_quality: Mapped[str] = mapped_column(String(1000))  # JSON
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    org_id: Mapped[str] = mapped_column(String(32), index=True)
    photo_id: Mapped[str] = mapped_column(String(32))
    template_kind: Mapped[str] = mapped_column(String(16))
    rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    false_match_rate: Mapped[float | None] = mapped_column(Float)  # against the gallery
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    sighting: Mapped[Sighting] = relationship(back_populates="candidates")
    reviews: Mapped[list[Review]] = relationship(
        back_populates="candidate",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Review.created_at",
    )


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("candidate_id", "reviewer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    candidate_id: Mapped[str] = mapped_column(
        ForeignKey("candidates.id", ondelete="CASCADE"), index=True
    )
    reviewer: Mapped[str] = mapped_column(String(16))  # api key id
    decision: Mapped[str] = mapped_column(String(8))  # confirm | reject | unsure
    note: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    candidate: Mapped[Candidate] = relationship(back_populates="reviews")


class WebhookDelivery(Base):
    """One event to one organisation's webhook, retried with backoff until it lands."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(String(32), index=True)
    event: Mapped[str] = mapped_column(String(50))
    payload: Mapped[str] = mapped_column(String(4000))  # the exact JSON body that is signed
    status: Mapped[str] = mapped_column(String(12), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())  # claimed by a worker
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditRecord(Base):
    """Append-only, hash-chained: ``hash`` covers this record's fields and ``prev_hash``."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(40))  # ISO-8601 UTC, hashed as written
    key_id: Mapped[str | None] = mapped_column(String(16))
    org_id: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(40), index=True)
    target: Mapped[str | None] = mapped_column(String(100))
    input_sha256: Mapped[str | None] = mapped_column(String(64))
    result_ids: Mapped[str] = mapped_column(Text)  # JSON list, as long as the results are
    detail: Mapped[str] = mapped_column(String(2000))  # JSON object
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Job(Base):
    """A long task a worker runs (an index rebuild, a re-embedding), its progress and its
    outcome. A worker holds a running job by a lease it renews at each progress report; a
    lease that ran out means its worker died, and another one starts the job again."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(20))  # index.rebuild | index.reembed
    status: Mapped[str] = mapped_column(String(12), default="queued", index=True)
    # "index" while queued or running, else NULL: a unique key, so that two requests at once
    # never both start a job on the index
    slot: Mapped[str | None] = mapped_column(String(16), unique=True)
    requested_by: Mapped[str] = mapped_column(String(16))  # api key id
    requested_org: Mapped[str | None] = mapped_column(String(32))
    stage: Mapped[str | None] = mapped_column(String(20))  # e.g. embedding, indexing, saving
    done: Mapped[int] = mapped_column(Integer, default=0)  # of the stage's items
    total: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, default="{}")  # JSON: the result, the check
    error: Mapped[str | None] = mapped_column(String(500))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # claims so far
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stage_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Meta(Base):
    """Small facts about this registry (the audit chain's head, the photo key fingerprint)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
