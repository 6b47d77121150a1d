"""The audit log: append-only and hash-chained.

Each record's hash covers its fields and the previous record's hash, and the registry keeps
the chain's head (last seq and hash), so an edited, removed or appended-behind-our-back
record breaks ``verify``. A record is written in the transaction of what it records: if it
cannot be written, the change (or the answer) does not happen.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service.errors import AuditUnavailable
from service.registry.models import AuditRecord, Meta

GENESIS = "0" * 64
HEAD = "audit_head"


class Who(Protocol):
    """Whoever acts: an API key's id and organisation (``service.matching.actors.Actor``)."""

    @property
    def key_id(self) -> str: ...

    @property
    def org_id(self) -> str | None: ...


@dataclass(frozen=True)
class Verification:
    records: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


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
    return hashlib.sha256(json.dumps(fields, separators=(",", ":")).encode()).hexdigest()


class AuditRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    def record(
        self,
        who: Who,
        action: str,
        *,
        target: str | None = None,
        input_sha256: str | None = None,
        results: Iterable[str] = (),
        detail: dict[str, Any] | None = None,
    ) -> AuditRecord:
        try:
            # Touch the head first: it takes the write lock (SQLite) or the row lock
            # (PostgreSQL) before the previous hash is read, so the chain never forks.
            self.s.execute(update(Meta).where(Meta.key == HEAD).values(value=Meta.value))
            head = self.s.get(Meta, HEAD, populate_existing=True)
            if head is None:
                head = Meta(key=HEAD, value=f"0:{GENESIS}")
                self.s.add(head)
            seq, prev = head.value.split(":")
            rec = AuditRecord(
                seq=int(seq) + 1,
                at=datetime.now(UTC).isoformat(timespec="microseconds"),
                key_id=who.key_id,
                org_id=who.org_id,
                action=action,
                target=target,
                input_sha256=input_sha256,
                result_ids=json.dumps(sorted(set(results))),
                detail=json.dumps(detail or {}, sort_keys=True, default=str),
                prev_hash=prev,
            )
            rec.hash = record_hash(rec)
            self.s.add(rec)
            head.value = f"{rec.seq}:{rec.hash}"
            self.s.flush()
            return rec
        except SQLAlchemyError as err:
            raise AuditUnavailable("the audit record could not be written") from err

    def recent(self, limit: int, action: str | None = None) -> list[AuditRecord]:
        query = select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(limit)
        if action:
            query = query.where(AuditRecord.action == action)
        return list(self.s.scalars(query))

    def verify(self) -> Verification:
        problems: list[str] = []
        expected_seq, prev, count = 1, GENESIS, 0
        for rec in self.s.scalars(select(AuditRecord).order_by(AuditRecord.seq)):
            count += 1
            if rec.seq != expected_seq:
                problems.append(f"records {expected_seq}..{rec.seq - 1} are missing")
            if rec.prev_hash != prev:
                problems.append(f"record {rec.seq} does not follow the record before it")
            if record_hash(rec) != rec.hash:
                problems.append(f"record {rec.seq} was altered (its hash does not match)")
            expected_seq, prev = rec.seq + 1, rec.hash
        head = self.s.get(Meta, HEAD)
        if head is not None and head.value != f"{expected_seq - 1}:{prev}":
            problems.append(
                f"the chain ends at record {expected_seq - 1} but its head says "
                f"{head.value.split(':')[0]}: records were removed or added"
            )
        return Verification(count, problems)
