"""ORM models. Schema changes go through an Alembic migration in ``migrations/versions``."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from sqlalchemy import (
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
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

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class Case(Base):
    __tablename__ = "cases"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    external_ref: Mapped[str | None] = mapped_column(String(128), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    sex: Mapped[str] = mapped_column(String(8), default="unknown")
    birth_date: Mapped[date | None] = mapped_column(Date)
    age_at_disappearance: Mapped[float | None] = mapped_column(Float)
    missing_since: Mapped[date | None] = mapped_column(Date)
    region: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="missing", index=True)
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
    kind: Mapped[str] = mapped_column(String(16), default="original")
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    photo: Mapped[Photo] = relationship(back_populates="templates")


class TemplateChange(Base):
    """Append-only log of template adds and removes. Its highest ``seq`` is the registry
    watermark: an index that has applied every change up to it is consistent."""

    __tablename__ = "template_changes"
    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(String(120), index=True)
    template_id: Mapped[int] = mapped_column(Integer)
    op: Mapped[str] = mapped_column(String(6))  # "add" | "remove"


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
