"""Leave-subjects-out evaluation of a fitted template transform (``--folds K``).

The gallery is enrolled once with no transform. The people of the dataset are split into
K folds; for each fold the transform is fitted on the photos of the other folds' people
(embedded through the service's pipeline), the service's index is rebuilt with it (the
same path as a start with a new transform), and only the probes of the fold's own people
are matched. No probe is ever scored by a transform that has seen its person.

With aged templates, and labels that give FG-NET landmarks (a ``landmarks`` column), the
growth model is refitted per fold the same way, on the other folds' people: the gallery
is aged with the first fold's model as it is enrolled, and its aged templates are remade
with each later fold's (``ageing refresh``, as after a growth model update) before that
fold's probes are matched.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from service.ageing import AgeProgressor, GrowthModel
from service.ageing.fgnet import read_fgnet_points
from service.ageing.fitting import fit_growth_model
from service.ageing.templates import AgedTemplates
from service.container import Container
from service.errors import HomewardError
from service.evaluation.protocols import Plan, Sample
from service.evaluation.runner import (
    Outcome,
    ProbeResult,
    case_fusion,
    enroll_gallery,
    evaluation_settings,
    evaluator,
    gallery_templates,
    match_probe,
    verification_scores,
)
from service.faces.intake import decode_stored
from service.matching.actors import SYSTEM
from service.search.transform import TemplateTransform, fit_linear_map
from service.settings import Settings

logger = logging.getLogger(__name__)

# the fit of the shipped transform (scripts/fit_transform.py uses the same)
FIT_REG, FIT_AGE_DIRS = 1.0, 2


def fold_of(samples: list[Sample], k: int) -> dict[str, int]:
    """Each person's fold: people in name order, dealt round-robin."""
    return {person: n % k for n, person in enumerate(sorted({s.identity for s in samples}))}


def run_folds(settings: Settings, plan: Plan, samples: list[Sample], top_k: int, k: int) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="homeward-eval-") as tmp:
        folder = Path(tmp)
        svc = Container(
            evaluation_settings(settings, folder).model_copy(update={"template_transform": "none"})
        )
        try:
            return _run_folds(svc, plan, samples, top_k, k)
        finally:
            svc.db.close()


def embed_samples(svc: Container, samples: list[Sample]) -> tuple[np.ndarray, list[Sample]]:
    """The largest face's template of every sample with an age (those with a face)."""
    rows, kept = [], []
    for sample in tqdm(samples, desc="embedding for the fit", unit="photo"):
        if sample.age is None:
            continue
        try:
            faces = svc.pipeline.analyse_all(decode_stored(sample.file.read_bytes()))
        except HomewardError:
            continue
        if faces:
            rows.append(faces[0].template)
            kept.append(sample)
    return np.asarray(rows, dtype=np.float32), kept


def with_landmarks(samples: list[Sample]) -> list[Sample]:
    """The samples a growth model can be fitted on: landmarks and an age."""
    return [s for s in samples if s.landmarks is not None and s.age is not None]


def fold_growth_models(
    samples: list[Sample], folds: dict[str, int], k: int
) -> dict[int, GrowthModel]:
    """Per fold, the growth model fitted on the landmarks of the other folds' people; none
    if the labels give no landmarks."""
    marked = with_landmarks(samples)
    if not marked:
        return {}
    points = np.stack([read_fgnet_points(s.landmarks) for s in marked if s.landmarks])
    ages = np.array([s.age for s in marked], dtype=np.float64)
    people = np.array([s.identity for s in marked])
    fold = np.array([folds[s.identity] for s in marked])
    models = {}
    for f in range(k):
        train = fold != f
        model = fit_growth_model(
            points[train],
            ages[train],
            list(people[train]),
            source="the evaluation dataset's other folds",
            landmarks="labels.csv landmarks (FG-NET markup)",
        )
        models[f] = replace(model, version=f"{model.version} fold {f + 1}/{k}")
    return models


def use_growth_model(svc: Container, model: GrowthModel) -> None:
    """Age with ``model`` from now on, and remake every aged template made by another."""
    current = svc.enrollment.aged
    progressor = AgeProgressor(model, current.progressor.detector, current.progressor.warp)
    svc.enrollment.aged = AgedTemplates(current.pipeline, progressor)
    remade = svc.enrollment.refresh_aged(SYSTEM)
    logger.info("aged templates of %d photos remade with %s", remade, model.version)


def _run_folds(svc: Container, plan: Plan, samples: list[Sample], top_k: int, k: int) -> Outcome:
    started = time.perf_counter()
    folds = fold_of(samples, k)
    try:
        growth = fold_growth_models(samples, folds, k) if svc.settings.aged_templates else {}
    except ValueError as err:  # a landmark file that is not one, too few usable shapes
        raise click.ClickException(f"cannot refit the growth model per fold: {err}") from None
    if growth:  # the gallery is aged for fold 0 as it is enrolled, not remade for it
        use_growth_model(svc, growth[0])
    actor = evaluator(svc)
    gallery = enroll_gallery(svc, actor, plan.gallery)
    enrolled = time.perf_counter()
    vectors, fitted = embed_samples(svc, samples)
    person = np.array([folds[s.identity] for s in fitted])
    results: dict[int, ProbeResult] = {}
    genuine, impostor = [], []
    fused: dict[str, dict[int, int | None]] = {}
    excludes = any(p.own_case is not None for p in plan.probes)
    fetch = min(top_k + 1, svc.settings.max_candidates) if excludes else top_k
    keeper = svc.index
    for fold in range(k):
        if fold in growth:
            use_growth_model(svc, growth[fold])
        train = person != fold
        matrix, mean = fit_linear_map(
            vectors[train],
            np.array([s.identity for s, t in zip(fitted, train, strict=True) if t]),
            np.array([s.age or 0.0 for s, t in zip(fitted, train, strict=True) if t]),
            FIT_REG,
            FIT_AGE_DIRS,
        )
        name = f"fold-{fold}-of-{k}"
        keeper.transform = TemplateTransform(name, keeper.model_id, matrix, mean)
        keeper.rebuild()
        held = [n for n, p in enumerate(plan.probes) if folds[p.sample.identity] == fold]
        for n in tqdm(held, desc=f"matching fold {fold + 1}/{k}", unit="probe"):
            results[n] = match_probe(svc, actor, gallery, plan.probes[n], fetch, top_k)
        raw = gallery_templates(svc)
        templates = replace(raw, vectors=keeper.transform.apply(raw.vectors))
        probes, held_results = [plan.probes[n] for n in held], [results[n] for n in held]
        g, i = verification_scores(gallery, templates, probes, held_results)
        genuine.append(g)
        impostor.append(i)
        floor = svc.settings.score_floor
        found = case_fusion(plan.gallery, gallery, templates, probes, held_results, floor, top_k)
        for name, found_ranks in found.items():
            fused.setdefault(name, {}).update(zip(held, found_ranks, strict=True))
    mated = {gallery.identity[c] for c in gallery_templates(svc).case_ids}
    return Outcome(
        model_id=f"{svc.pipeline.model_id} + transform fitted per fold ({k} folds)",
        gallery=gallery,
        probes=[results[n] for n in range(len(plan.probes))],
        mated=sum(p.sample.identity in mated for p in plan.probes),
        genuine=np.concatenate(genuine),
        impostor=np.concatenate(impostor),
        enroll_seconds=enrolled - started,
        match_seconds=time.perf_counter() - enrolled,
        fusion={name: [r[n] for n in range(len(plan.probes))] for name, r in fused.items()},
    )
