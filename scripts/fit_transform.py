"""Fit the template transform (service/search/transform.py) on FG-NET.

Every FG-NET photo is embedded once through the service's own pipeline (largest face; the
original chip and its mirror image), cached in /tmp (never in the repository), then a
linear map is fitted on within-identity variation:

  0. centre on the mean template;
  1. project out the directions along which a person's own templates move with age
     (per person, the least-squares slope of template on age; the top ``--age-dirs``
     principal directions of those slopes);
  2. whiten the regularised within-person covariance (WCCN): W = (S_w + r I)^-1/2.

``--check K`` also prints leave-subjects-out figures of the templates without and with the
recipe (people in K folds, each fold's map fitted on the others), to see whether it helps.

    python scripts/fit_transform.py --dataset ../shared/data/fgnet \
        --out service/search/data/sface_wccn_v1.npz

Fitted on all FG-NET subjects, the shipped file is for use on other data: evaluating it on
FG-NET itself is not leave-subjects-out (use ``homeward evaluate --folds K``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from service.evaluation.folds import FIT_AGE_DIRS, FIT_REG
from service.faces.base import l2_normalise
from service.faces.factory import build_pipeline
from service.faces.pipeline import FacePipeline
from service.search.transform import TemplateTransform, fit_linear_map
from service.settings import Settings

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Embedded:
    """Templates of a labelled dataset (rows; zero rows where no face was found)."""

    names: list[str]
    identity: npt.NDArray[np.str_]
    age: npt.NDArray[np.float64]
    raw: F32
    flip: F32
    found: npt.NDArray[np.bool_]


def embed_all(dataset: Path, pipeline: FacePipeline, cache_dir: Path = Path("/tmp")) -> Embedded:
    """Every photo of DIR/labels.csv embedded once (cached in ``cache_dir``)."""
    with (dataset / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    key = hashlib.sha256(f"{dataset.resolve()}|{pipeline.model_id}".encode()).hexdigest()[:16]
    cache = cache_dir / f"homeward-embeddings-{key}.npz"
    if not cache.exists():
        d = pipeline.backend.dimension
        raw, flip = np.zeros((len(rows), d), np.float32), np.zeros((len(rows), d), np.float32)
        for n, row in enumerate(rows):
            read = cv2.imread(str(dataset / row["path"]), cv2.IMREAD_COLOR)
            if read is None:
                continue
            image = np.asarray(read, dtype=np.uint8)
            faces = pipeline.detect(image)
            if not faces:
                continue
            backend, face = pipeline.backend, faces[0]
            chip = backend.align(image, face)
            raw[n] = backend.embed(image, face, chip)
            flip[n] = backend.embed(image, face, np.ascontiguousarray(chip[:, ::-1]))
            if n % 100 == 0:
                print(f"embedded {n}/{len(rows)}", flush=True)
        np.savez(cache, raw=raw, flip=flip)
    data = np.load(cache)
    raw, flip = data["raw"], data["flip"]
    return Embedded(
        [r["path"] for r in rows],
        np.array([r["identity"] for r in rows]),
        np.array([float(r["age"]) for r in rows]),
        raw,
        flip,
        np.linalg.norm(raw, axis=1) > 0,
    )


def check(
    x: F32,
    identity: npt.NDArray[np.str_],
    age: npt.NDArray[np.float64],
    folds: int,
    reg: float,
    age_dirs: int,
) -> dict[str, list[float]]:
    """Leave-subjects-out figures without and with the map: people dealt round-robin into
    ``folds``; each fold's photos ranked against the fold's other photos, under the identity
    and under a map fitted on the other folds' people. Rank-1, rank-5 (photos with another
    photo of their person in the fold) and TAR at FAR 1% and 0.1% (the fold's pairs)."""
    people = sorted(set(identity))
    fold = np.array([people.index(p) % folds for p in identity])
    out = {}
    for name in ("none", "fitted"):
        hits: list[npt.NDArray[np.bool_]] = []
        genuine, impostor = [], []
        for k in range(folds):
            test = fold == k
            y = x[test]
            if name == "fitted":
                matrix, mean = fit_linear_map(x[~test], identity[~test], age[~test], reg, age_dirs)
                y = TemplateTransform("check", "", matrix, mean).apply(y)
            scores = y @ y.T
            np.fill_diagonal(scores, -np.inf)
            who = identity[test]
            same = who[:, None] == who[None, :]
            ranked = same[np.arange(len(y))[:, None], np.argsort(-scores, axis=1)[:, :5]]
            has_mate = same.sum(axis=1) > 1
            hits.append(np.stack([ranked[has_mate, 0], ranked[has_mate].any(axis=1)], axis=1))
            upper = np.triu_indices(len(y), 1)
            genuine.append(scores[upper][same[upper]])
            impostor.append(scores[upper][~same[upper]])
        g, i = np.concatenate(genuine), np.concatenate(impostor)
        tar = [float(np.mean(g >= np.quantile(i, 1 - far))) for far in (1e-2, 1e-3)]
        out[name] = [*np.concatenate(hits).mean(axis=0).tolist(), *tar]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help=".npz")
    parser.add_argument("--version", default="sface-wccn-v1")
    parser.add_argument("--age-dirs", type=int, default=FIT_AGE_DIRS)
    parser.add_argument("--reg", type=float, default=FIT_REG, help="ridge, x mean eigenvalue")
    parser.add_argument("--flip", action="store_true", help="fit on mean(original, mirror)")
    parser.add_argument(
        "--check", type=int, metavar="FOLDS", help="also print leave-subjects-out figures"
    )
    args = parser.parse_args()
    pipeline = build_pipeline(Settings(model_dir=Path("models"), tta_flip=False))
    emb = embed_all(args.dataset, pipeline)
    x = l2_normalise(emb.raw + emb.flip) if args.flip else emb.raw
    keep = emb.found
    matrix, mean = fit_linear_map(
        x[keep], emb.identity[keep], emb.age[keep], args.reg, args.age_dirs
    )
    model_id = pipeline.backend.model_id + ("+flip" if args.flip else "")
    TemplateTransform(args.version, model_id, matrix, mean).save(args.out)
    people = len(set(emb.identity[keep]))
    print(f"wrote {args.out}: {args.version} for {model_id}, {keep.sum()} photos, {people} people")
    if args.check:
        figures = check(
            x[keep], emb.identity[keep], emb.age[keep], args.check, args.reg, args.age_dirs
        )
        print(f"leave-subjects-out ({args.check} folds of people): rank-1 rank-5 TAR@FAR1% 0.1%")
        for name, values in figures.items():
            print(f"  transform {name:6} " + "  ".join(f"{v:.3f}" for v in values))


if __name__ == "__main__":
    main()
