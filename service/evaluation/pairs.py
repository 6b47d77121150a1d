"""Every photo of a labelled dataset through the service's own path, and every pair of them
scored: what the score calibrations (``scripts/fit_duplicates.py``, ``scripts/fit_scores.py``)
are fitted on.

Each photo's largest face goes through intake, detection (with the fallback detector), the
model and mirror averaging when the model id says ``+flip``, as enrollment does; photos with
no face take no part. Scores are cosines in the index's space, i.e. after the model's
template transform. The shipped transforms are fitted on FG-NET itself, so a pair is scored
with the transform refitted by the same recipe on other people than its two (``cross_fitted``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from service.errors import HomewardError
from service.evaluation.folds import FIT_AGE_DIRS, FIT_REG
from service.evaluation.protocols import Sample, read_labels
from service.faces.factory import build_pipeline
from service.faces.pipeline import FacePipeline
from service.matching.uploads import Uploads
from service.search.transform import (
    IDENTITY,
    TemplateTransform,
    fit_linear_map,
    resolve_transform,
)
from service.settings import Settings

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Enrolled:
    """The templates of the photos with a face (rows), labelled."""

    vectors: F32
    person: npt.NDArray[np.str_]
    age: npt.NDArray[np.float64]
    photos: int  # photos in the dataset
    refused: int  # no face found
    seconds: float  # embedding time (0 when read from the cache)


@dataclass(frozen=True)
class Pairs:
    """Every pair (i < j) of a set of photos: row indices into Enrolled and the score."""

    i: npt.NDArray[np.int64]
    j: npt.NDArray[np.int64]
    score: F32


# -- embedding ------------------------------------------------------------------------------


def embed(
    samples: list[Sample], settings: Settings, pipeline: FacePipeline, cache: Path | None
) -> Enrolled:
    """Each photo's largest face's template as enrollment computes it; photos with no face
    are left out."""
    usable = [s for s in samples if s.age is not None]
    if cache is not None and cache.exists():
        with np.load(cache) as data:
            vectors, kept = data["vectors"], data["kept"]
        seconds = 0.0
    else:
        uploads = Uploads(settings)
        started = time.perf_counter()
        vectors = np.zeros((len(usable), pipeline.backend.dimension), np.float32)
        kept = np.zeros(len(usable), bool)
        for n, sample in enumerate(tqdm(usable, desc="embedding", unit="photo")):
            try:
                pixels = uploads.decode(sample.file.read_bytes()).pixels
                faces = pipeline.detect(pixels)
                if faces:
                    vectors[n] = pipeline.analyse(pixels, faces[0]).template
                    kept[n] = True
            except HomewardError:
                pass
        seconds = time.perf_counter() - started
        if cache is not None:
            with cache.open("wb") as handle:
                np.savez(handle, vectors=vectors, kept=kept)
    return Enrolled(
        vectors[kept],
        np.array([s.identity for s in usable])[kept],
        np.array([s.age for s in usable], dtype=np.float64)[kept],
        len(samples),
        len(samples) - int(kept.sum()),
        seconds,
    )


def cache_file(dataset: Path, settings: Settings, model_id: str, folder: Path) -> Path:
    what = [
        "largest",
        dataset.resolve(),
        model_id,
        settings.fallback_detector,
        settings.detect_max_side,
    ]
    key = hashlib.sha256("|".join(map(str, what)).encode()).hexdigest()[:16]
    return folder / f"homeward-templates-{key}.npz"


# -- scores ---------------------------------------------------------------------------------


def fit(data: Enrolled, rows: npt.NDArray[np.int64], model_id: str) -> TemplateTransform:
    """The template transform's recipe, fitted on these photos' people."""
    matrix, mean = fit_linear_map(
        data.vectors[rows], data.person[rows], data.age[rows], FIT_REG, FIT_AGE_DIRS
    )
    return TemplateTransform("fitted", model_id, matrix, mean)


def _pairs(
    rows_a: npt.NDArray[np.int64], rows_b: npt.NDArray[np.int64], block: F32, same: bool
) -> Pairs:
    ia, jb = np.triu_indices(len(rows_a), k=1) if same else np.indices(block.shape).reshape(2, -1)
    return Pairs(rows_a[ia], rows_b[jb], block[ia, jb].astype(np.float32))


def _join(parts: list[Pairs]) -> Pairs:
    return Pairs(
        np.concatenate([p.i for p in parts]),
        np.concatenate([p.j for p in parts]),
        np.concatenate([p.score for p in parts]),
    )


def scored_with(data: Enrolled, rows: npt.NDArray[np.int64], transform: TemplateTransform) -> Pairs:
    """Every pair of these photos, scored under one transform."""
    x = transform.apply(data.vectors[rows])
    return _pairs(rows, rows, x @ x.T, same=True)


def cross_fitted(
    data: Enrolled, rows: npt.NDArray[np.int64], folds: int, model_id: str, fitted: bool
) -> Pairs:
    """Every pair of these photos; with ``fitted``, each pair scored under a transform
    fitted on the people of the folds that hold neither of its photos."""
    if not fitted:
        return scored_with(data, rows, IDENTITY)
    people = sorted(set(data.person[rows]))
    fold_of_person = {p: n % folds for n, p in enumerate(people)}
    fold = np.array([fold_of_person[p] for p in data.person[rows]])
    parts = []
    for a in range(folds):
        for b in range(a, folds):
            transform = fit(data, rows[(fold != a) & (fold != b)], model_id)
            ra, rb = rows[fold == a], rows[fold == b]
            block = transform.apply(data.vectors[ra]) @ transform.apply(data.vectors[rb]).T
            parts.append(_pairs(ra, rb, block, same=a == b))
    return _join(parts)


def split(data: Enrolled, pairs: Pairs, child_age: float) -> tuple[F32, F32, F32, F32]:
    """(genuine, impostor) scores of the children's pairs, their age gaps, and the
    impostor scores of all pairs."""
    child = (data.age[pairs.i] < child_age) & (data.age[pairs.j] < child_age)
    same = data.person[pairs.i] == data.person[pairs.j]
    gap = np.abs(data.age[pairs.i] - data.age[pairs.j]).astype(np.float32)
    return (
        pairs.score[child & same],
        pairs.score[child & ~same],
        gap[child & same],
        pairs.score[~same],
    )


# -- the calibration scripts' common start ----------------------------------------------------


def dataset_arguments(parser: argparse.ArgumentParser, out: Path) -> None:
    """The options every calibration script takes."""
    parser.add_argument("--dataset", type=Path, required=True, help="folder with labels.csv")
    parser.add_argument("--out", type=Path, default=out, help="JSON file to update")
    parser.add_argument("--child-age", type=float, default=18, help="fit on photos under it")
    parser.add_argument("--folds", type=int, default=10, help="for cross-fitting the transform")
    parser.add_argument("--no-cache", action="store_true", help="embed again, keep nothing")


@dataclass(frozen=True)
class Calibration:
    """The configured model's templates of a dataset, and what they are scored under."""

    model_id: str
    transform: TemplateTransform  # the shipped one, whose version an entry records
    samples: list[Sample]
    data: Enrolled

    def __str__(self) -> str:
        data = self.data
        timing = f"in {data.seconds:.0f} s" if data.seconds else "(from the cache)"
        return (
            f"model {self.model_id}, template transform {self.transform.version}\n"
            f"{len(data.vectors)} of {data.photos} photos embedded, "
            f"{len(set(data.person))} people {timing}; no face found in {data.refused}"
        )

    @property
    def fitted(self) -> bool:
        """Whether scores go through a transform (then cross-fitted, never the shipped one)."""
        return self.transform is not IDENTITY


def embed_dataset(args: argparse.Namespace) -> Calibration:
    """The configured model (HOMEWARD_MODEL_BACKEND, HOMEWARD_TTA_FLIP, ...) run over
    ``--dataset``, its templates cached in the system's temp folder unless ``--no-cache``."""
    settings = Settings()
    pipeline = build_pipeline(settings)
    model_id, dimension = pipeline.model_id, pipeline.backend.dimension
    shipped = resolve_transform(settings.template_transform, model_id, dimension)
    samples = read_labels(args.dataset)
    folder = Path(tempfile.gettempdir())
    cache = None if args.no_cache else cache_file(args.dataset, settings, model_id, folder)
    return Calibration(model_id, shipped, samples, embed(samples, settings, pipeline, cache))


def store_entry(out: Path, section: str, model_id: str, entry: dict[str, Any]) -> None:
    """Write ``entry`` as ``out[section][model_id]``, keeping the other models' entries."""
    stored = json.loads(out.read_text()) if out.exists() else {}
    stored.setdefault(section, {})[model_id] = entry
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
