"""Links between cases that people judged to be the same child."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.errors import NotFound
from service.registry.models import CaseLink

MAX_ID = 2**31 - 1  # an INTEGER column's on every database


class LinkRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(self, case_a: str, case_b: str, note: str | None, linked_by: str) -> CaseLink:
        """Link two cases; ``case_a`` < ``case_b`` (the pair's one order)."""
        link = CaseLink(case_a=case_a, case_b=case_b, note=note, linked_by=linked_by)
        self.s.add(link)
        self.s.flush()
        return link

    def get(self, link_id: int) -> CaseLink:
        link = self.s.get(CaseLink, link_id) if 0 < link_id <= MAX_ID else None
        if link is None:
            raise NotFound(f"case link {link_id} not found")
        return link

    def between(self, case_a: str, case_b: str) -> CaseLink | None:
        return self.s.scalar(
            select(CaseLink).where(CaseLink.case_a == case_a, CaseLink.case_b == case_b)
        )

    def pairs(self) -> dict[tuple[str, str], int]:
        """Every linked pair (case_a, case_b) and its link's id."""
        rows = self.s.execute(select(CaseLink.case_a, CaseLink.case_b, CaseLink.id))
        return {(a, b): link_id for a, b, link_id in rows}

    def page(self, offset: int, limit: int) -> tuple[list[CaseLink], int]:
        total = self.s.scalar(select(func.count(CaseLink.id))) or 0
        rows = self.s.scalars(
            select(CaseLink).order_by(CaseLink.created_at, CaseLink.id).offset(offset).limit(limit)
        )
        return list(rows), total

    def delete(self, link: CaseLink) -> None:
        self.s.delete(link)
        self.s.flush()
