"""Search: a photo's faces against the gallery, ranked per case, for people to review.

The one place for the candidate count's default and cap, the score floor and the filters.
``Matcher`` searches without auditing and is private to the application layer; the edges
reach it only through ``SearchService.match`` (audited) and the sightings use case
(audited as the sighting)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

from service.errors import InvalidInput, NoFaceFound
from service.faces.intake import DecodedImage
from service.faces.pipeline import AnalysedFace, FaceChoice, FacePipeline, choose_face
from service.matching.actors import Actor, Permission
from service.matching.chance import ImpostorCurve
from service.matching.uploads import Uploads
from service.matching.views import FaceMatch, MatchResult, RankedCase
from service.metrics import Metrics
from service.registry.db import Database
from service.search.keeper import IndexKeeper
from service.search.port import SearchFilter
from service.settings import Settings


@dataclass(frozen=True)
class MatchQuery:
    top_k: int | None = None  # candidates per face; None: the server's default
    sex: str | None = None
    min_age: float | None = None  # the case's expected age today
    max_age: float | None = None
    min_score: float | None = None  # only raises the server's floor
    face: FaceChoice | None = None  # only this face of the photo; None: every face


class Matcher:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        pipeline: FacePipeline,
        index: IndexKeeper,
        metrics: Metrics,
        curve: ImpostorCurve | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.pipeline = pipeline
        self.index = index
        self.metrics = metrics
        self.curve = curve  # the model's impostor curve: candidates' false-match rates

    def top_k(self, requested: int | None) -> int:
        return min(requested or self.settings.default_candidates, self.settings.max_candidates)

    def floor(self, min_score: float | None) -> float:
        return max(self.settings.score_floor, min_score if min_score is not None else -1.0)

    def search(
        self, image: DecodedImage, query: MatchQuery, scope: str | None = None
    ) -> MatchResult:
        """Candidates for every face of the photo (NoFaceFound when it has none)."""
        if query.min_age is not None and query.max_age is not None:
            if query.min_age > query.max_age:
                raise InvalidInput("min_age is greater than max_age")
        with self.metrics.stage("detect"):
            found = self.pipeline.detect(image.pixels)
        if not found:
            raise NoFaceFound("no face was found in the photo")
        if query.face is not None:
            found = [choose_face(found, query.face)]
        with self.metrics.stage("embed"):
            faces = [self.pipeline.analyse(image.pixels, face) for face in found]
        with self.metrics.stage("search"):
            self.index.catch_up(wait=False)
            sex = None if query.sex == "unknown" else query.sex  # not known: not a filter
            where = SearchFilter(scope, sex, query.min_age, query.max_age, date.today())
            top_k, floor = self.top_k(query.top_k), self.floor(query.min_score)
            gallery = self.index.size
            matches = [self._rated(f, self._ranked(f, top_k, where, floor), gallery) for f in faces]
        return MatchResult(
            faces=matches,
            model_id=self.pipeline.model_id,
            index_generation=self.index.generation,
            score_floor=floor,
            gallery_templates=gallery,
        )

    def _rated(self, face: AnalysedFace, ranked: list[RankedCase], gallery: int) -> FaceMatch:
        """Each candidate's estimated false-match rate against a gallery of this many
        templates (the whole index: a filtered search compares fewer, so this errs towards
        caution), and whether any candidate stands out from chance. Nothing is hidden."""
        if self.curve is None:
            return FaceMatch(face, ranked)
        rates = [float(f"{self.curve.in_gallery(c.score, gallery):.3g}") for c in ranked]
        rated = [replace(c, false_match_rate=r) for c, r in zip(ranked, rates, strict=True)]
        stands_out = any(r <= self.settings.stands_out_rate for r in rates)
        return FaceMatch(face, rated, stands_out=stands_out)

    def _ranked(
        self, face: AnalysedFace, top_k: int, where: SearchFilter, floor: float
    ) -> list[RankedCase]:
        """The top_k best cases (each at its best-scoring template) scoring at least the
        floor, highest first. Several templates of one case can fill the raw top list, so
        the search widens as needed."""
        fetch = top_k * 4
        while True:
            scores, ids = self.index.search(face.template, fetch, where if where.active else None)
            hits = [(int(i), float(s)) for s, i in zip(scores, ids, strict=True) if i >= 0]
            best = self._best_per_case([(i, s) for i, s in hits if s >= floor])
            exhausted = len(hits) < fetch or fetch >= self.index.size
            if len(best) >= top_k or exhausted or (hits and hits[-1][1] < floor):
                return best[:top_k]
            fetch *= 4

    def _best_per_case(self, hits: list[tuple[int, float]]) -> list[RankedCase]:
        with self.db.unit() as tx:
            owners = tx.templates.owners([i for i, _ in hits])
        best: dict[str, RankedCase] = {}
        for template_id, score in hits:  # already sorted by score
            owner = owners.get(template_id)
            if owner is not None and owner.case_id not in best:
                best[owner.case_id] = RankedCase(
                    rank=len(best) + 1,
                    case_id=owner.case_id,
                    org_id=owner.org_id,
                    external_ref=owner.external_ref,
                    score=round(score, 4),
                    photo_id=owner.photo_id,
                    template_kind=owner.kind,
                )
        return list(best.values())


class SearchService:
    def __init__(self, matcher: Matcher, uploads: Uploads, db: Database) -> None:
        self.matcher = matcher
        self.uploads = uploads
        self.db = db

    def match(self, actor: Actor, data: bytes, query: MatchQuery) -> MatchResult:
        """Candidates among the cases the actor may search, for every face. Audited (the
        upload's hash and the candidate cases) before it is returned, so an unwritable
        audit log fails the search."""
        actor.require(Permission.MATCH)
        with self.matcher.metrics.stage("decode"):
            image = self.uploads.decode(data)
        result = self.matcher.search(image, query, actor.scope)
        with self.db.unit() as tx:
            tx.audit.record(
                actor,
                "match",
                input_sha256=image.upload_sha256,
                results=result.case_ids,
                detail={"faces": len(result.faces), "top_k": self.matcher.top_k(query.top_k)},
            )
        return result
