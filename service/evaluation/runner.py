"""Runs a protocol's plan through the service's own code on a throwaway data directory:
cases are created in the registry, photos enrolled and probes matched by ``Homeward``."""

from __future__ import annotations

import base64
import logging
import secrets
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import SecretStr
from tqdm import tqdm

from service.container import Container
from service.errors import HomewardError, NoFaceFound, SeveralFaces
from service.evaluation.fusion import GalleryTemplates, fusion_ranks
from service.evaluation.metrics import Scores, Templates, pair_scores
from service.evaluation.protocols import GalleryCase, Plan, Probe, Sample
from service.faces.pipeline import FaceChoice
from service.matching.actors import SYSTEM, Actor
from service.matching.cases import NewCase
from service.matching.enrollment import PhotoDetails
from service.matching.search import MatchQuery
from service.matching.views import Enrollment
from service.settings import Settings

logger = logging.getLogger(__name__)

EVALUATION_ORG = "evaluation"


@dataclass
class Gallery:
    case_ids: dict[str, str] = field(default_factory=dict)  # case key -> case id
    identity: dict[str, str] = field(default_factory=dict)  # case id -> identity
    photos: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (photo, reason)
    flagged: list[tuple[str, str]] = field(default_factory=list)  # (photo, quality issue)
    several_faces: list[str] = field(default_factory=list)  # photos: the largest enrolled


@dataclass
class ProbeResult:
    rank: int | None  # of the first candidate of the probe's identity; None: not found
    template: Scores | None  # the matched face's template as queried; None: no face/error
    failure: str | None = None  # why no candidate list was obtained


@dataclass(frozen=True)
class Outcome:
    model_id: str
    gallery: Gallery
    probes: list[ProbeResult]
    mated: int  # probes whose identity has a case with an enrolled photo
    genuine: Scores
    impostor: Scores
    enroll_seconds: float
    match_seconds: float
    # per case-template fusion, the rank of each probe (as ``ProbeResult.rank``)
    fusion: dict[str, list[int | None]] = field(default_factory=dict)


def evaluation_settings(settings: Settings, folder: Path) -> Settings:
    """The given settings (model, quality gate, score floor, threads) on a fresh SQLite data
    dir with throwaway secrets, both in ``folder``: an evaluation never touches the
    configured database, data directory or secrets file."""
    return settings.model_copy(
        update={
            "data_dir": folder / "data",
            "database_url": None,
            "admin_key": None,
            "secret_key": _throwaway_key(),
            "photo_key": _throwaway_key(),
            "secrets_file": folder / "secrets.json",  # not read: both keys are given
        }
    )


def _throwaway_key() -> SecretStr:
    return SecretStr(base64.b64encode(secrets.token_bytes(32)).decode())


def run_plan(settings: Settings, plan: Plan, top_k: int) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="homeward-eval-") as tmp:
        svc = Container(evaluation_settings(settings, Path(tmp)))
        try:
            return _run(svc, plan, top_k)
        finally:
            svc.db.close()


def _run(svc: Container, plan: Plan, top_k: int) -> Outcome:
    started = time.perf_counter()
    actor = evaluator(svc)
    gallery = enroll_gallery(svc, actor, plan.gallery)
    enrolled = time.perf_counter()
    fetch = min(top_k + 1, svc.settings.max_candidates) if _excludes(plan) else top_k
    results = [
        match_probe(svc, actor, gallery, probe, fetch, top_k)
        for probe in tqdm(plan.probes, desc="matching", unit="probe")
    ]
    matched = time.perf_counter()
    raw = gallery_templates(svc)
    templates = replace(raw, vectors=svc.index.transform.apply(raw.vectors))  # as indexed
    genuine, impostor = verification_scores(gallery, templates, plan.probes, results)
    fused = case_fusion(
        plan.gallery, gallery, templates, plan.probes, results, svc.settings.score_floor, top_k
    )
    mated = {gallery.identity[c] for c in templates.case_ids}
    return Outcome(
        model_id=svc.pipeline.model_id,
        gallery=gallery,
        probes=results,
        mated=sum(p.sample.identity in mated for p in plan.probes),
        genuine=genuine,
        impostor=impostor,
        enroll_seconds=enrolled - started,
        match_seconds=matched - enrolled,
        fusion=fused,
    )


def _excludes(plan: Plan) -> bool:
    return any(p.own_case is not None for p in plan.probes)


def evaluator(svc: Container) -> Actor:
    """The evaluation acts as an administrator of an organisation of its own."""
    org = svc.access.create_org(SYSTEM, EVALUATION_ORG)
    return Actor("evaluation", org.id, frozenset({"admin"}))


def enroll_gallery(svc: Container, actor: Actor, cases: list[GalleryCase]) -> Gallery:
    """One case per gallery entry, each photo enrolled whatever its face's quality (its
    issues are counted); photos that fail enrollment are recorded and left out."""
    gallery = Gallery()
    bar = tqdm(total=sum(len(c.photos) for c in cases), desc="enrolling", unit="photo")
    for entry in cases:
        fields = {"display_name": entry.key, "external_ref": entry.key, **case_dates(entry)}
        case = svc.cases.create(actor, NewCase.model_validate(fields))
        gallery.case_ids[entry.key] = case.id
        gallery.identity[case.id] = entry.identity
        for photo in entry.photos:
            gallery.photos += 1
            try:
                enrolled = enroll_photo(svc, actor, case.id, photo, gallery)
                gallery.flagged += [(photo.name, i) for i in enrolled.photo.quality_issues]
            except HomewardError as err:
                gallery.failures.append((photo.name, str(err)))
            bar.update()
    bar.close()
    return gallery


def enroll_photo(
    svc: Container, actor: Actor, case_id: str, photo: Sample, gallery: Gallery
) -> Enrollment:
    """A photo of one labelled person. Where several faces are found (the others mostly
    false detections) and the service asks for a choice, the largest is taken, as for a
    probe; such photos are counted."""
    data, details = photo.file.read_bytes(), PhotoDetails(age_at_photo=photo.age)
    try:
        return svc.enrollment.enroll(actor, case_id, data, details)
    except SeveralFaces:
        pass
    gallery.several_faces.append(photo.name)
    return svc.enrollment.enroll(actor, case_id, data, replace(details, choice=FaceChoice(0)))


def case_dates(entry: GalleryCase, today: date | None = None) -> dict[str, Any]:
    """A case's age at disappearance (its latest photo's age) and the date it went missing,
    placed so that its expected age today is the protocol's ``expected_age``."""
    ages = [p.age for p in entry.photos if p.age is not None]
    if entry.expected_age is None or not ages:
        return {}
    last = max(ages)
    years = max(entry.expected_age - last, 0.0)
    since = (today or date.today()) - timedelta(days=round(years * 365.25))
    return {"age_at_disappearance": last, "missing_since": since}


def match_probe(
    svc: Container, actor: Actor, gallery: Gallery, probe: Probe, fetch: int, top_k: int
) -> ProbeResult:
    """Rank of the probe's identity among the largest face's candidates (its own case
    dropped first), counted within ``top_k``."""
    try:
        result = svc.search.match(actor, probe.sample.file.read_bytes(), MatchQuery(top_k=fetch))
    except NoFaceFound:
        return ProbeResult(None, None, "no face found")
    except HomewardError as err:
        return ProbeResult(None, None, str(err))
    face = result.faces[0]
    own = gallery.case_ids.get(probe.own_case or "")
    ranked = [c.case_id for c in face.candidates if c.case_id != own][:top_k]
    identities = [gallery.identity.get(case_id) for case_id in ranked]
    rank = (
        identities.index(probe.sample.identity) + 1 if probe.sample.identity in identities else None
    )
    return ProbeResult(rank, svc.index.transform.apply(face.face.template.reshape(1, -1))[0])


def gallery_templates(svc: Container) -> GalleryTemplates:
    """Every enrolled template of the model (rows, as embedded: no transform) with the
    case, photo, kind and age of each."""
    with svc.db.unit() as tx:
        rows = list(tx.templates.vectors(svc.pipeline.model_id, details=True))
    vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4")
    return GalleryTemplates(
        vectors.reshape(len(rows), svc.index.dimension).astype(np.float32),
        case_ids=[r[2] for r in rows],
        photo_ids=[r[4] for r in rows],
        kinds=[r[3] for r in rows],
        ages=[r[5] for r in rows],
    )


def _codes(gallery: Gallery) -> tuple[dict[str, int], dict[str, int]]:
    """Integer codes of the gallery's identities (sorted) and of its cases (in order)."""
    names = {identity: n for n, identity in enumerate(sorted(set(gallery.identity.values())))}
    return names, {case_id: n for n, case_id in enumerate(gallery.identity)}


def _with_template(
    probes: list[Probe], results: list[ProbeResult]
) -> list[tuple[int, Probe, Scores]]:
    return [
        (n, p, r.template)
        for n, (p, r) in enumerate(zip(probes, results, strict=True))
        if r.template is not None
    ]


def verification_scores(
    gallery: Gallery,
    templates: GalleryTemplates,
    probes: list[Probe],
    results: list[ProbeResult],
) -> tuple[Scores, Scores]:
    """Genuine and impostor cosine scores of the probe templates against the gallery's."""
    vectors, cases = templates.vectors, templates.case_ids
    names, codes = _codes(gallery)
    kept = _with_template(probes, results)
    own = [gallery.case_ids.get(p.own_case) if p.own_case else None for _, p, _ in kept]
    probe_side = Templates(
        np.array([t for _, _, t in kept], dtype=np.float32).reshape(len(kept), vectors.shape[1]),
        np.array([names.get(p.sample.identity, -1) for _, p, _ in kept], dtype=np.int64),
        np.array([codes[c] if c else -1 for c in own], dtype=np.int64),
    )
    gallery_side = Templates(
        vectors,
        np.array([names[gallery.identity[c]] for c in cases], dtype=np.int64),
        np.array([codes[c] for c in cases], dtype=np.int64),
    )
    return pair_scores(probe_side, gallery_side)


def case_fusion(
    plan_cases: list[GalleryCase],
    gallery: Gallery,
    templates: GalleryTemplates,
    probes: list[Probe],
    results: list[ProbeResult],
    floor: float,
    top_k: int,
) -> dict[str, list[int | None]]:
    """Each case-template fusion's rank of every probe (None: not found, or no face), from
    the probes' templates as queried and the gallery's as the index holds them. A case's
    expected age today is the protocol's (``GalleryCase.expected_age``)."""
    names, codes = _codes(gallery)
    kept = _with_template(probes, results)
    expected = {gallery.case_ids[c.key]: c.expected_age for c in plan_cases}
    own = [gallery.case_ids.get(p.own_case) if p.own_case else None for _, p, _ in kept]
    dimension = templates.vectors.shape[1]
    found = fusion_ranks(
        np.array([t for _, _, t in kept], dtype=np.float32).reshape(len(kept), dimension),
        templates,
        codes,
        np.array([names[gallery.identity[c]] for c in codes], dtype=np.int64),
        np.array([names.get(p.sample.identity, -1) for _, p, _ in kept], dtype=np.int64),
        np.array([codes[c] if c else -1 for c in own], dtype=np.int64),
        np.array([np.nan if (a := expected.get(c)) is None else a for c in codes]),
        np.array([np.nan if p.sample.age is None else p.sample.age for _, p, _ in kept]),
        floor,
        top_k,
    )
    out: dict[str, list[int | None]] = {}
    for name, found_ranks in found.items():
        out[name] = [None] * len(probes)
        for (n, _, _), rank in zip(kept, found_ranks, strict=True):
            out[name][n] = rank
    return out
