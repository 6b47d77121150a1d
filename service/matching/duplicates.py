"""Duplicate cases: the same child registered twice, usually by two organisations (a family
association, the police, a shelter). Administrators list the pairs of cases whose photos
score at or above a calibrated threshold, and link the pairs people judge to be one child.

Only administrators list, link and unlink: a registry never learns through this that
another organisation has a case, let alone which one.

The threshold is calibrated per model on FG-NET (``scripts/fit_duplicates.py``, the figures
in ``data/duplicates.json``): the score that at most one pair of photos of two different
children in a thousand reaches, in the index's space (after the template transform it was
calibrated with). ``HOMEWARD_DUPLICATE_THRESHOLD`` overrides it, and is needed for a model
(or transform) without a calibrated threshold.

Only original templates take part: aged templates are the service's own guesses of a face
years later, and were not calibrated.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.errors import Conflict, InvalidInput, ModelUnavailable
from service.matching.actors import Actor, Permission
from service.matching.views import (
    CaseLinkPage,
    CaseLinkView,
    CaseRef,
    DuplicateList,
    DuplicatePair,
)
from service.registry.db import Database, UnitOfWork
from service.registry.models import CaseLink
from service.registry.templates import Owner
from service.search.keeper import IndexKeeper
from service.settings import Settings

logger = logging.getLogger(__name__)

SHIPPED = Path(__file__).with_name("data") / "duplicates.json"
MAX_PAGE = 100  # pairs per answer: the page's case ids fit one audit record
FIRST_K = 16  # neighbours fetched per template, widened while they all score above
MAX_NEIGHBOURS = 1024  # per template: reached only with a threshold set far too low
OWNER_BATCH = 5000


def calibrated_threshold(
    setting: float | None, model_id: str, transform: str, shipped: Path = SHIPPED
) -> float:
    """The setting, else the threshold calibrated for this model id and template transform
    (ModelUnavailable, saying to set HOMEWARD_DUPLICATE_THRESHOLD, when there is none)."""
    if setting is not None:
        return setting
    entries = json.loads(shipped.read_text())["thresholds"] if shipped.exists() else {}
    entry = entries.get(model_id)
    if entry is None:
        raise ModelUnavailable(
            f"no duplicate threshold is calibrated for the model {model_id}: set "
            "HOMEWARD_DUPLICATE_THRESHOLD (scripts/fit_duplicates.py calibrates one)",
            reason="duplicate_threshold_unset",
        )
    if entry["transform"] != transform:
        raise ModelUnavailable(
            f"the duplicate threshold of {model_id} was calibrated with the template transform "
            f"{entry['transform']}, not {transform}: set HOMEWARD_DUPLICATE_THRESHOLD "
            "(scripts/fit_duplicates.py calibrates one)",
            reason="duplicate_threshold_unset",
        )
    return float(entry["threshold"])


@dataclass(frozen=True)
class _Best:
    score: float
    a: Owner  # the template of the case with the smaller id
    b: Owner


class DuplicateService:
    def __init__(self, settings: Settings, db: Database, index: IndexKeeper) -> None:
        self.settings = settings
        self.db = db
        self.index = index

    @property
    def threshold(self) -> float:
        return calibrated_threshold(
            self.settings.duplicate_threshold, self.index.model_id, self.index.transform.version
        )

    def find(
        self,
        actor: Actor,
        min_score: float | None = None,
        same_org: bool = False,
        offset: int = 0,
        limit: int = MAX_PAGE,
    ) -> DuplicateList:
        """Pairs of cases of different organisations (also of one organisation with
        ``same_org``) whose best pair of original templates scores at or above the threshold
        (``min_score`` only raises it), strongest first; a page of them, audited with its
        case ids."""
        actor.require(Permission.ADMIN)
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise InvalidInput(f"limit must be 1 to {MAX_PAGE} and offset at least 0")
        calibrated = self.threshold
        threshold = calibrated if min_score is None else max(calibrated, min_score)
        self.index.catch_up()
        model_id = self.index.model_id
        with self.db.unit() as tx:
            queries = [
                (t, v) for t, v, _, kind in tx.templates.vectors(model_id) if kind == "original"
            ]
        hits = [
            (query, hit, score)
            for query, vector in queries
            for hit, score in self._neighbours(vector, threshold)
            if hit != query
        ]
        with self.db.unit() as tx:
            owners = _owners(tx, {t for q, h, _ in hits for t in (q, h)})
            ranked = _best_pairs(hits, owners, same_org)
            page = ranked[offset : offset + limit]
            links = tx.links.pairs()
            orgs = {o.id: o.name for o in tx.keys.orgs()}
            pairs = [
                DuplicatePair(
                    case_a=_ref(best.a.case_id, best.a.external_ref, best.a.org_id, orgs),
                    case_b=_ref(best.b.case_id, best.b.external_ref, best.b.org_id, orgs),
                    score=round(best.score, 4),
                    photo_a=best.a.photo_id,
                    photo_b=best.b.photo_id,
                    same_org=best.a.org_id == best.b.org_id,
                    link_id=links.get((best.a.case_id, best.b.case_id)),
                )
                for best in page
            ]
            tx.audit.record(
                actor,
                "duplicates.list",
                results=[c for p in pairs for c in (p.case_a.case_id, p.case_b.case_id)],
                detail={
                    "threshold": threshold,
                    "pairs": len(ranked),
                    "offset": offset,
                    "same_org": same_org,
                },
            )
        return DuplicateList(model_id, threshold, pairs, len(ranked), offset, limit)

    def _neighbours(self, vector: bytes, threshold: float) -> list[tuple[int, float]]:
        """The index's templates scoring at least ``threshold`` with this raw template (the
        search widens while every neighbour fetched scores above it)."""
        template = np.frombuffer(vector, dtype="<f4")
        k = FIRST_K
        while True:
            scores, ids = self.index.search(template, k)
            hits = [(int(i), float(s)) for s, i in zip(scores, ids, strict=True) if i >= 0]
            if len(hits) < k or hits[-1][1] < threshold or k >= MAX_NEIGHBOURS:
                return [(i, s) for i, s in hits if s >= threshold]
            k = min(k * 4, MAX_NEIGHBOURS)

    def link(self, actor: Actor, case_a: str, case_b: str, note: str | None) -> CaseLinkView:
        """Record that two cases are one child; audited (``case.link``)."""
        actor.require(Permission.ADMIN)
        if case_a == case_b:
            raise InvalidInput("a case cannot be linked to itself")
        a, b = sorted((case_a, case_b))
        with self.db.unit() as tx:
            tx.cases.get(case_a, actor.scope)
            tx.cases.get(case_b, actor.scope)
            if tx.links.between(a, b) is not None:
                raise Conflict("these two cases are already linked")
            row = tx.links.add(a, b, note, actor.key_id)
            tx.audit.record(actor, "case.link", target=str(row.id), results=[a, b])
            return _link_views(tx, [row])[0]

    def unlink(self, actor: Actor, link_id: int) -> None:
        """Remove a link; audited (``case.unlink``)."""
        actor.require(Permission.ADMIN)
        with self.db.unit() as tx:
            row = tx.links.get(link_id)
            pair = [row.case_a, row.case_b]
            tx.links.delete(row)
            tx.audit.record(actor, "case.unlink", target=str(link_id), results=pair)

    def links(self, actor: Actor, offset: int = 0, limit: int = MAX_PAGE) -> CaseLinkPage:
        """A page of the links, oldest first; audited with its case ids."""
        actor.require(Permission.ADMIN)
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise InvalidInput(f"limit must be 1 to {MAX_PAGE} and offset at least 0")
        with self.db.unit() as tx:
            rows, total = tx.links.page(offset, limit)
            views = _link_views(tx, rows)
            tx.audit.record(
                actor,
                "duplicates.links",
                results=[c for r in rows for c in (r.case_a, r.case_b)],
                detail={"offset": offset},
            )
        return CaseLinkPage(views, total, offset, limit)


def _owners(tx: UnitOfWork, template_ids: set[int]) -> dict[int, Owner]:
    ids, owners = sorted(template_ids), {}
    for start in range(0, len(ids), OWNER_BATCH):
        owners.update(tx.templates.owners(ids[start : start + OWNER_BATCH]))
    return owners


def _best_pairs(
    hits: list[tuple[int, int, float]], owners: dict[int, Owner], same_org: bool
) -> list[_Best]:
    """Each pair of cases at its best-scoring pair of original templates, strongest first
    (ties by case ids)."""
    best: dict[tuple[str, str], _Best] = {}
    for query, hit, score in hits:
        a, b = owners.get(query), owners.get(hit)
        if a is None or b is None or b.kind != "original" or a.case_id == b.case_id:
            continue  # a template deleted meanwhile, an aged one, or the case's own
        if a.org_id == b.org_id and not same_org:
            continue
        if a.case_id > b.case_id:
            a, b = b, a
        key = (a.case_id, b.case_id)
        if key not in best or score > best[key].score:
            best[key] = _Best(score, a, b)
    return sorted(best.values(), key=lambda p: (-p.score, p.a.case_id, p.b.case_id))


def _ref(case_id: str, external_ref: str | None, org_id: str, orgs: dict[str, str]) -> CaseRef:
    return CaseRef(case_id, external_ref, org_id, orgs.get(org_id, org_id))


def _link_views(tx: UnitOfWork, rows: list[CaseLink]) -> list[CaseLinkView]:
    cases = tx.cases.by_ids([c for r in rows for c in (r.case_a, r.case_b)])
    orgs = {o.id: o.name for o in tx.keys.orgs()}

    def ref(case_id: str) -> CaseRef:
        case = cases[case_id]
        return _ref(case_id, case.external_ref, case.org_id, orgs)

    return [
        CaseLinkView(r.id, ref(r.case_a), ref(r.case_b), r.note, r.linked_by, r.created_at)
        for r in rows
    ]
