"""Runs a protocol's plan through the service's own code on a throwaway data directory:
cases are created in the registry, photos enrolled and probes matched by ``Homeward``."""

from __future__ import annotations

import base64
import logging
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import SecretStr
from tqdm import tqdm

from service.audit import SYSTEM
from service.container import Services, build_services
from service.errors import HomewardError, NoFaceFound
from service.evaluation.metrics import Scores, Templates, pair_scores
from service.evaluation.protocols import GalleryCase, Plan, Probe
from service.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Gallery:
    case_ids: dict[str, str] = field(default_factory=dict)  # case key -> case id
    identity: dict[str, str] = field(default_factory=dict)  # case id -> identity
    photos: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (photo, reason)


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
        svc = build_services(evaluation_settings(settings, Path(tmp)))
        try:
            return _run(svc, plan, top_k)
        finally:
            svc.db.engine.dispose()


def _run(svc: Services, plan: Plan, top_k: int) -> Outcome:
    started = time.perf_counter()
    gallery = enroll_gallery(svc, plan.gallery)
    enrolled = time.perf_counter()
    fetch = min(top_k + 1, svc.settings.max_candidates) if _excludes(plan) else top_k
    results = [
        match_probe(svc, gallery, probe, fetch, top_k)
        for probe in tqdm(plan.probes, desc="matching", unit="probe")
    ]
    matched = time.perf_counter()
    vectors, cases = gallery_templates(svc)
    vectors = svc.homeward.keeper.transform.apply(vectors)  # as the index holds them
    genuine, impostor = verification_scores(gallery, (vectors, cases), plan.probes, results)
    mated = {gallery.identity[c] for c in cases}
    return Outcome(
        model_id=svc.homeward.model_id,
        gallery=gallery,
        probes=results,
        mated=sum(p.sample.identity in mated for p in plan.probes),
        genuine=genuine,
        impostor=impostor,
        enroll_seconds=enrolled - started,
        match_seconds=matched - enrolled,
    )


def _excludes(plan: Plan) -> bool:
    return any(p.own_case is not None for p in plan.probes)


def enroll_gallery(svc: Services, cases: list[GalleryCase]) -> Gallery:
    """One case per gallery entry; photos that fail enrollment are recorded and left out."""
    gallery = Gallery()
    org = svc.keys.create_org("evaluation")
    bar = tqdm(total=sum(len(c.photos) for c in cases), desc="enrolling", unit="photo")
    for entry in cases:
        fields = {"display_name": entry.key, "external_ref": entry.key}
        case = svc.registry.create_case(org.id, fields | case_dates(entry))
        gallery.case_ids[entry.key] = case.id
        gallery.identity[case.id] = entry.identity
        for photo in entry.photos:
            gallery.photos += 1
            try:
                svc.homeward.enroll_photo(
                    SYSTEM, case.id, photo.file.read_bytes(), age_at_photo=photo.age
                )
            except HomewardError as err:
                gallery.failures.append((photo.name, str(err)))
            bar.update()
    bar.close()
    return gallery


def case_dates(entry: GalleryCase, today: date | None = None) -> dict[str, Any]:
    """A case's age at disappearance (its first photo's age) and the date it went missing,
    placed so that its expected age today is the protocol's ``expected_age``."""
    first = entry.photos[0].age if entry.photos else None
    if entry.expected_age is None or first is None:
        return {}
    years = max(entry.expected_age - first, 0.0)
    since = (today or date.today()) - timedelta(days=round(years * 365.25))
    return {"age_at_disappearance": first, "missing_since": since}


def match_probe(
    svc: Services, gallery: Gallery, probe: Probe, fetch: int, top_k: int
) -> ProbeResult:
    """Rank of the probe's identity among the largest face's candidates (its own case
    dropped first), counted within ``top_k``."""
    try:
        result = svc.homeward.match(SYSTEM, probe.sample.file.read_bytes(), top_k=fetch)
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
    return ProbeResult(rank, svc.homeward.keeper.query(face.analysed.template)[0])


def gallery_templates(svc: Services) -> tuple[Scores, list[str]]:
    """Every enrolled template of the model (rows) and the case id of each."""
    blocks = list(svc.registry.iter_templates(svc.homeward.model_id))
    ids = [i for block_ids, _ in blocks for i in block_ids]
    owners = svc.registry.template_kinds(ids)
    vectors = np.frombuffer(b"".join(blob for _, blob in blocks), dtype="<f4")
    return vectors.reshape(len(ids), svc.homeward.keeper.dimension).astype(np.float32), [
        owners[i][0] for i in ids
    ]


def verification_scores(
    gallery: Gallery,
    templates: tuple[Scores, list[str]],
    probes: list[Probe],
    results: list[ProbeResult],
) -> tuple[Scores, Scores]:
    """Genuine and impostor cosine scores of the probe templates against the gallery's."""
    vectors, cases = templates
    names = {identity: n for n, identity in enumerate(sorted(set(gallery.identity.values())))}
    codes = {case_id: n for n, case_id in enumerate(gallery.identity)}
    kept = [(p, r.template) for p, r in zip(probes, results, strict=True) if r.template is not None]
    own = [gallery.case_ids.get(p.own_case) if p.own_case else None for p, _ in kept]
    probe_side = Templates(
        np.array([t for _, t in kept], dtype=np.float32).reshape(len(kept), vectors.shape[1]),
        np.array([names.get(p.sample.identity, -1) for p, _ in kept], dtype=np.int64),
        np.array([codes[c] if c else -1 for c in own], dtype=np.int64),
    )
    gallery_side = Templates(
        vectors,
        np.array([names[gallery.identity[c]] for c in cases], dtype=np.int64),
        np.array([codes[c] for c in cases], dtype=np.int64),
    )
    return pair_scores(probe_side, gallery_side)
