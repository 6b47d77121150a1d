"""The audit log: append-only and hash-chained.

Each record's hash covers its fields and the previous record's hash, and the registry keeps
the chain's head (last seq and hash), so an edited, removed or appended-behind-our-back
record breaks ``verify``. Callers write the record before answering: if it cannot be
written, the request fails.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from service.errors import HomewardError
from service.registry.db import Database
from service.registry.models import AuditRecord, Meta

GENESIS = "0" * 64
HEAD = "audit_head"


class AuditUnavailable(HomewardError):
    reason = "audit_unavailable"


@dataclass(frozen=True)
class Actor:
    """Who acts: an API key (its id, organisation and roles) or the system itself."""

    key_id: str
    org_id: str | None
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


SYSTEM = Actor("system", None, frozenset({"admin"}))


@dataclass(frozen=True)
class Verification:
    records: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_hash(r: AuditRecord) -> str:
    fields = [
        r.seq,
        r.at,
        r.key_id,
        r.org_id,
        r.action,
        r.target,
        r.input_sha256,
        r.result_ids,
        r.detail,
        r.prev_hash,
    ]
    return sha256_hex(json.dumps(fields, separators=(",", ":")).encode())


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        with db.session() as s:
            if s.get(Meta, HEAD) is None:
                s.add(Meta(key=HEAD, value=f"0:{GENESIS}"))

    def record(
        self,
        actor: Actor,
        action: str,
        *,
        target: str | None = None,
        input_sha256: str | None = None,
        results: Iterable[str] = (),
        detail: dict[str, Any] | None = None,
    ) -> AuditRecord:
        try:
            with self._lock, self.db.session() as s:
                # Touch the head first: it takes the write lock (SQLite) or the row lock
                # (PostgreSQL) before the previous hash is read.
                s.execute(update(Meta).where(Meta.key == HEAD).values(value=Meta.value))
                head = s.get(Meta, HEAD, populate_existing=True)
                assert head is not None
                seq, prev = head.value.split(":")
                rec = AuditRecord(
                    seq=int(seq) + 1,
                    at=datetime.now(UTC).isoformat(timespec="microseconds"),
                    key_id=actor.key_id,
                    org_id=actor.org_id,
                    action=action,
                    target=target,
                    input_sha256=input_sha256,
                    result_ids=json.dumps(sorted(set(results))),
                    detail=json.dumps(detail or {}, sort_keys=True, default=str),
                    prev_hash=prev,
                )
                rec.hash = record_hash(rec)
                s.add(rec)
                head.value = f"{rec.seq}:{rec.hash}"
                return rec
        except SQLAlchemyError as err:
            raise AuditUnavailable(f"the audit record could not be written: {err}") from err

    def recent(self, limit: int, action: str | None = None) -> list[AuditRecord]:
        query = select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(limit)
        if action:
            query = query.where(AuditRecord.action == action)
        with self.db.session() as s:
            return list(s.scalars(query))

    def verify(self) -> Verification:
        problems: list[str] = []
        expected_seq, prev, count = 1, GENESIS, 0
        with self.db.session() as s:
            for rec in s.scalars(select(AuditRecord).order_by(AuditRecord.seq)):
                count += 1
                if rec.seq != expected_seq:
                    problems.append(f"records {expected_seq}..{rec.seq - 1} are missing")
                if rec.prev_hash != prev:
                    problems.append(f"record {rec.seq} does not follow the record before it")
                if record_hash(rec) != rec.hash:
                    problems.append(f"record {rec.seq} was altered (its hash does not match)")
                expected_seq, prev = rec.seq + 1, rec.hash
            head = s.get(Meta, HEAD)
        if head is not None and head.value != f"{expected_seq - 1}:{prev}":
            problems.append(
                f"the chain ends at record {expected_seq - 1} but its head says "
                f"{head.value.split(':')[0]}: records were removed or added"
            )
        return Verification(count, problems)
