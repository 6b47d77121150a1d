"""Evaluate age progression on FG-NET, leave-subjects-out.

    .venv/bin/python scripts/eval_ageing.py --dataset ../shared/data/fgnet \
        [--json ageing.json] [--sheets /tmp/ageing-sheets]
    .venv/bin/python scripts/eval_ageing.py --astronaut-sheet docs/ageing-sheet-astronaut.jpg

Subjects are split into 5 folds; each fold is scored with a growth model refitted (through
fit_growth.fit, as the shipped model is) on the other four, so no subject is scored by a
model that has seen it.

Geometry: pairs of photos of one subject, the source at age 0-8 and the target 5 or more
years later and at most 25. The source landmarks aged to the target's age, and the
unaged ones, are compared with the target's real landmarks after a similarity
(Procrustes) fit: mean point distance over the target's inter-ocular distance. Reported
on FG-NET's hand-placed landmarks (mapped to dlib's order) and on dlib's own, for the
growth step alone and for the service's ageing (growth and the pose model's step).

Identity: each source photo at age 0-8 aged (the real warp) to source+6 and to the age
of the subject's latest photo at 25 or younger (5+ years later); SFace cosine similarity
between the source's template and the aged photo's, and whether the aged photo's best
match in a gallery of every source photo is its own source.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from fit_growth import Sample, fit, load_fgnet

from service.ageing import AgeProgressor, GrowthModel, LandmarkDetector, contact_sheet
from service.ageing.landmarks import Box
from service.ageing.shapes import (
    Points,
    align,
    inter_ocular,
    lower_face_ratio,
    nose_ratio,
    width_ratio,
    yaw_score,
)
from service.faces.factory import build_pipeline
from service.faces.pipeline import FacePipeline
from service.settings import Settings

REPO = Path(__file__).resolve().parent.parent
FOLDS = 5
MAX_SOURCE_AGE = 8
MIN_GAP = 5
MAX_TARGET_AGE = 25
BANDS = (("0-2", 0, 2), ("3-5", 3, 5), ("6-8", 6, 8), ("all", 0, 8))
FRONTAL = 0.06  # yaw score of a near-frontal face (shapes.yaw_score)
Vector = npt.NDArray[np.float32]
Row = dict[str, float | int | str]  # one line of a printed table


# ---------------------------------------------------------------- folds and pairs


def subject_folds(samples: Sequence[Sample], folds: int = FOLDS, seed: int = 0) -> list[int]:
    """The fold of each sample: subjects shuffled (fixed seed) and dealt round-robin."""
    subjects = sorted({s.subject for s in samples})
    order = np.random.default_rng(seed).permutation(len(subjects))
    fold_of = {subjects[i]: rank % folds for rank, i in enumerate(order)}
    return [fold_of[s.subject] for s in samples]


def fold_models(samples: Sequence[Sample], folds: Sequence[int]) -> dict[int, GrowthModel]:
    """For each fold, the growth model fitted on every other fold."""
    return {
        f: fit([s for s, g in zip(samples, folds, strict=True) if g != f])
        for f in sorted(set(folds))
    }


def age_pairs(samples: Sequence[Sample]) -> list[tuple[int, int]]:
    """(source, target) indices: one subject, source 0-8, target 5+ years on and <= 25."""
    return [
        (i, j)
        for i, src in enumerate(samples)
        if src.age <= MAX_SOURCE_AGE
        for j, dst in enumerate(samples)
        if dst.subject == src.subject and dst.age - src.age >= MIN_GAP and dst.age <= MAX_TARGET_AGE
    ]


# ---------------------------------------------------------------- geometry


@dataclass(frozen=True)
class PairScore:
    source_age: int
    target_age: int
    unaged: float  # landmark error of the source's landmarks
    growth: float  # landmark error of the landmarks aged by growth alone (no pose step)
    aged: float  # landmark error of the aged landmarks (growth and pose step)
    frontal: bool  # both photos near-frontal
    ratios: dict[str, tuple[float, float, float]]  # name -> (unaged, aged, real)


RATIOS: dict[str, Callable[[Points], float]] = {
    "chin-eyes/IOD": lower_face_ratio,
    "nose/IOD": nose_ratio,
    "width/IOD": width_ratio,
}


def landmark_error(predicted: Points, real: Points) -> float:
    """Mean point distance after a similarity fit, over the real inter-ocular distance."""
    distances = np.linalg.norm(align(predicted, real) - real, axis=1)
    return float(distances.mean()) / inter_ocular(real)


def score_pair(
    model: GrowthModel, source: Points, target: Points, ages: tuple[int, int]
) -> PairScore:
    aged = model.age_points(source, ages[0], ages[1])
    return PairScore(
        source_age=ages[0],
        target_age=ages[1],
        unaged=landmark_error(source, target),
        growth=landmark_error(model.age_points(source, ages[0], ages[1], pose=False), target),
        aged=landmark_error(aged, target),
        frontal=max(yaw_score(source), yaw_score(target)) <= FRONTAL,
        ratios={n: (f(source), f(aged), f(target)) for n, f in RATIOS.items()},
    )


def geometry(
    samples: Sequence[Sample],
    points: dict[int, Points],
    folds: Sequence[int],
    models: dict[int, GrowthModel],
) -> list[PairScore]:
    """Every pair whose two photos have landmarks, each scored by its fold's model."""
    return [
        score_pair(models[folds[i]], points[i], points[j], (samples[i].age, samples[j].age))
        for i, j in age_pairs(samples)
        if i in points and j in points
    ]


def band_rows(scores: Sequence[PairScore]) -> list[Row]:
    rows: list[Row] = []
    for name, low, high in BANDS:
        band = [s for s in scores if low <= s.source_age <= high]
        unaged = float(np.mean([s.unaged for s in band]))
        growth = float(np.mean([s.growth for s in band]))
        aged = float(np.mean([s.aged for s in band]))
        rows.append(
            {
                "band": name,
                "pairs": len(band),
                "unaged": round(unaged, 4),
                "growth only": round(growth, 4),
                "growth cut": round(1 - growth / unaged, 3),
                "aged": round(aged, 4),
                "aged cut": round(1 - aged / unaged, 3),
            }
        )
    return rows


def ratio_rows(scores: Sequence[PairScore]) -> list[Row]:
    """Mean absolute error of three proportions (against the real target), unaged and aged,
    and the mean real change: an age-specific check that pose noise disturbs less."""
    rows: list[Row] = []
    for name in RATIOS:
        values = np.array([s.ratios[name] for s in scores])
        unaged, aged, real = values[:, 0], values[:, 1], values[:, 2]
        rows.append(
            {
                "ratio": name,
                "real change": round(float(np.mean(real - unaged)), 4),
                "model change": round(float(np.mean(aged - unaged)), 4),
                "unaged MAE": round(float(np.mean(np.abs(unaged - real))), 4),
                "aged MAE": round(float(np.mean(np.abs(aged - real))), 4),
            }
        )
    return rows


def dlib_landmarks(
    dataset: Path, samples: Sequence[Sample], detector: LandmarkDetector
) -> tuple[dict[int, Points], dict[int, Box]]:
    """dlib's landmarks and box for each photo at 25 or younger where HOG finds the face
    (the box holding the hand-placed landmarks' centre, if several)."""
    points: dict[int, Points] = {}
    boxes: dict[int, Box] = {}
    for i, sample in enumerate(samples):
        if sample.age > MAX_TARGET_AGE:
            continue
        image = read_image(dataset, sample)
        box = _box_around(detector.detect(image), sample.points.mean(axis=0))
        if box is not None:
            points[i], boxes[i] = detector.landmarks(image, box), box
    return points, boxes


def _box_around(boxes: Sequence[Box], centre: npt.NDArray[np.float64]) -> Box | None:
    for x, y, w, h in boxes:  # largest first
        if x <= centre[0] <= x + w and y <= centre[1] <= y + h:
            return x, y, w, h
    return None


# ---------------------------------------------------------------- identity


@dataclass(frozen=True)
class AgedPhoto:
    source: int  # sample index
    target_age: int
    kind: str  # "source+6" or "real age"
    image: npt.NDArray[np.uint8]


def read_image(dataset: Path, sample: Sample) -> npt.NDArray[np.uint8]:
    image = cv2.imread(str(dataset / sample.path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read {dataset / sample.path}")
    return np.asarray(image, dtype=np.uint8)


def template(pipeline: FacePipeline, image: npt.NDArray[np.uint8]) -> Vector | None:
    """The largest face's SFace template, None when no face is found."""
    faces = pipeline.detect(image)
    return pipeline.analyse(image, faces[0]).template if faces else None


def latest_real(samples: Sequence[Sample], i: int) -> int | None:
    """The subject's latest photo at 25 or younger taken 5+ years after photo ``i``."""
    later = [
        j
        for j, s in enumerate(samples)
        if s.subject == samples[i].subject
        and s.age - samples[i].age >= MIN_GAP
        and s.age <= MAX_TARGET_AGE
    ]
    return max(later, key=lambda j: samples[j].age, default=None)


def aged_photos(
    dataset: Path,
    samples: Sequence[Sample],
    boxes: dict[int, Box],
    folds: Sequence[int],
    progressors: dict[int, AgeProgressor],
) -> list[AgedPhoto]:
    """Each source photo (age 0-8, face found by HOG) aged to source+6 and to its latest
    real age, with its fold's model."""
    out: list[AgedPhoto] = []
    for i, sample in enumerate(samples):
        if sample.age > MAX_SOURCE_AGE or i not in boxes:
            continue
        real = latest_real(samples, i)
        targets = [(sample.age + 6, "source+6")]
        if real is not None:
            targets.append((samples[real].age, "real age"))
        result = progressors[folds[i]].progress(
            read_image(dataset, sample), sample.age, [t for t, _ in targets], face_box=boxes[i]
        )
        for (age, kind), aged in zip(targets, result.aged, strict=True):
            out.append(AgedPhoto(i, age, kind, aged.image))
    return out


class SampleTemplates:
    """SFace templates of FG-NET photos, each computed once (None: no face found)."""

    def __init__(self, dataset: Path, samples: Sequence[Sample], pipeline: FacePipeline):
        self.dataset, self.samples, self.pipeline = dataset, samples, pipeline
        self._cache: dict[int, Vector | None] = {}

    def __call__(self, i: int) -> Vector | None:
        if i not in self._cache:
            self._cache[i] = template(self.pipeline, read_image(self.dataset, self.samples[i]))
        return self._cache[i]


@dataclass(frozen=True)
class IdentityScore:
    kind: str
    cosine: float | None  # None when SFace finds no face in the aged photo
    top1: bool  # the aged photo's best match in the gallery is its own source photo


def identity_scores(
    photos: Sequence[AgedPhoto], templates: SampleTemplates, pipeline: FacePipeline
) -> tuple[list[IdentityScore], int]:
    """Scores of the aged photos whose source has an SFace template, and the gallery size
    (every such source photo, all subjects)."""
    found = {i: t for i in sorted({p.source for p in photos}) if (t := templates(i)) is not None}
    gallery_ids, gallery = list(found), np.stack(list(found.values()))
    scores = []
    for photo in photos:
        source = templates(photo.source)
        if source is None:
            continue
        aged = template(pipeline, photo.image)
        if aged is None:
            scores.append(IdentityScore(photo.kind, None, False))
            continue
        best = gallery_ids[int(np.argmax(gallery @ aged))]
        scores.append(IdentityScore(photo.kind, float(source @ aged), best == photo.source))
    return scores, len(gallery_ids)


def identity_summary(scores: Sequence[IdentityScore]) -> dict[str, float | int]:
    cosines = np.array([s.cosine for s in scores if s.cosine is not None])
    quantiles = np.quantile(cosines, [0.0, 0.05, 0.25, 0.5, 0.75]).round(4)
    return {
        "aged photos": len(scores),
        "no face in aged": len(scores) - len(cosines),
        "cosine min": float(quantiles[0]),
        "cosine p5": float(quantiles[1]),
        "cosine p25": float(quantiles[2]),
        "cosine median": float(quantiles[3]),
        "cosine p75": float(quantiles[4]),
        "share cosine >= 0.9": round(float((cosines >= 0.9).mean()), 4),
        "top-1 own source": round(float(np.mean([s.top1 for s in scores])), 4),
    }


def identity(
    photos: Sequence[AgedPhoto], templates: SampleTemplates, pipeline: FacePipeline
) -> dict[str, object]:
    scores, gallery = identity_scores(photos, templates, pipeline)
    kinds = sorted({s.kind for s in scores})
    return {
        "gallery (source photos)": gallery,
        "sources without an SFace face": len({p.source for p in photos}) - gallery,
        "by target": {k: identity_summary([s for s in scores if s.kind == k]) for k in kinds},
        "all": identity_summary(scores),
    }


def cross_age(
    samples: Sequence[Sample],
    photos: Sequence[AgedPhoto],
    templates: SampleTemplates,
    pipeline: FacePipeline,
) -> dict[str, float | int]:
    """Does the aged photo resemble the real later photo more than the source does?"""
    pairs = []
    for photo in photos:
        real = latest_real(samples, photo.source)
        if photo.kind != "real age" or real is None:
            continue
        t_real, t_src = templates(real), templates(photo.source)
        t_aged = template(pipeline, photo.image)
        if t_real is not None and t_src is not None and t_aged is not None:
            pairs.append((float(t_src @ t_real), float(t_aged @ t_real)))
    cos = np.array(pairs)
    return {
        "pairs": len(cos),
        "cosine source-real (mean)": round(float(cos[:, 0].mean()), 4),
        "cosine aged-real (mean)": round(float(cos[:, 1].mean()), 4),
        "share where aged is closer": round(float((cos[:, 1] > cos[:, 0]).mean()), 4),
    }


# ---------------------------------------------------------------- sheets and output


def write_sheets(
    dataset: Path, samples: Sequence[Sample], photos: Sequence[AgedPhoto], out: Path, count: int
) -> list[Path]:
    """Source | aged to the real later age | real photo at that age, for ``count`` photos
    spread over the subjects. Outside the repository only: FG-NET photos stay out of it."""
    out.mkdir(parents=True, exist_ok=True)
    real_age = [p for p in photos if p.kind == "real age"]
    chosen: dict[str, AgedPhoto] = {}
    for photo in real_age:  # the earliest source of each subject
        chosen.setdefault(samples[photo.source].subject, photo)
    picks = list(chosen.values())[:: max(1, len(chosen) // count)][:count]
    paths = []
    for photo in picks:
        src = samples[photo.source]
        real = latest_real(samples, photo.source)
        assert real is not None
        images = [read_image(dataset, src), photo.image, read_image(dataset, samples[real])]
        labels = [
            f"photo at {src.age}",
            f"aged to {photo.target_age}",
            f"real at {samples[real].age}",
        ]
        path = out / f"{src.subject}_{src.age:02d}_to_{photo.target_age:02d}.jpg"
        cv2.imwrite(
            str(path), contact_sheet(images, labels, height=360), [cv2.IMWRITE_JPEG_QUALITY, 88]
        )
        paths.append(path)
    return paths


def astronaut_sheet(path: Path) -> None:
    """docs/ageing-sheet-astronaut.jpg: skimage's astronaut aged as if a child of 6 to 10, 14
    and 18, cropped to her head and the background around it (the warp's whole reach)."""
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    aged = AgeProgressor().progress(photo, 6, [10, 14, 18])
    crop = (slice(15, 245), slice(110, 335))
    images = [photo[crop]] + [a.image[crop] for a in aged.aged]
    labels = ["photo (as age 6)"] + [f"aged to {a.age:g}" for a in aged.aged]
    sheet = contact_sheet(images, labels, height=360)
    cv2.imwrite(str(path), sheet, [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def print_table(title: str, rows: Sequence[Row]) -> None:
    print(f"\n{title}")
    if not rows:
        print("  (none)")
        return
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print("  " + "  ".join(k.rjust(w) for k, w in zip(keys, widths, strict=True)))
    for row in rows:
        print("  " + "  ".join(str(row[k]).rjust(w) for k, w in zip(keys, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, help="the FG-NET folder")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--sheets", type=Path, default=Path("/tmp/ageing-sheets"))
    parser.add_argument("--sheet-count", type=int, default=8)
    parser.add_argument("--models", type=Path, default=REPO / "models")
    parser.add_argument(
        "--astronaut-sheet", type=Path, help="write the docs sheet here (needs no --dataset)"
    )
    args = parser.parse_args()
    if args.astronaut_sheet:
        astronaut_sheet(args.astronaut_sheet)
    if args.dataset is None:
        return
    if args.sheets.resolve().is_relative_to(REPO):
        raise SystemExit("sheets of FG-NET photos must not be written into the repository")

    samples = load_fgnet(args.dataset)
    folds = subject_folds(samples)
    models = fold_models(samples, folds)
    print(f"{len(samples)} photos, {len({s.subject for s in samples})} subjects, {FOLDS} folds")

    hand = {i: s.points for i, s in enumerate(samples)}
    hand_scores = geometry(samples, hand, folds, models)
    detector = LandmarkDetector()
    dlib_points, boxes = dlib_landmarks(args.dataset, samples, detector)
    dlib_scores = geometry(samples, dlib_points, folds, models)
    tables: dict[str, list[Row]] = {
        "geometry, hand-placed landmarks": band_rows(hand_scores),
        "geometry, hand-placed, both photos near-frontal": band_rows(
            [s for s in hand_scores if s.frontal]
        ),
        "geometry, dlib landmarks": band_rows(dlib_scores),
        "proportions, hand-placed landmarks": ratio_rows(hand_scores),
    }
    for title, rows in tables.items():
        print_table(title, rows)
    figures: dict[str, object] = dict(tables)

    progressors = {f: AgeProgressor(m, detector) for f, m in models.items()}
    photos = aged_photos(args.dataset, samples, boxes, folds, progressors)
    pipeline = build_pipeline(Settings(model_dir=args.models, model_backend="sface"))
    templates = SampleTemplates(args.dataset, samples, pipeline)
    figures["identity"] = identity(photos, templates, pipeline)
    figures["cross-age"] = cross_age(samples, photos, templates, pipeline)
    print("\nidentity (SFace):")
    print(json.dumps(figures["identity"], indent=2))
    print("\ncross-age (SFace, aged to the real later age):")
    print(json.dumps(figures["cross-age"], indent=2))

    sheets = write_sheets(args.dataset, samples, photos, args.sheets, args.sheet_count)
    print(f"\n{len(sheets)} sheets in {args.sheets}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
