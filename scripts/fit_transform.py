"""Fit the template transform (service/search/transform.py) on FG-NET.

Every FG-NET photo is embedded once through the service's own pipeline (largest face; the
original chip and its mirror image), cached in /tmp (never in the repository), then a
linear map is fitted on within-identity variation:

  0. centre on the mean template;
  1. project out the directions along which a person's own templates move with age
     (per person, the least-squares slope of template on age; the top ``--age-dirs``
     principal directions of those slopes);
  2. whiten the regularised within-person covariance (WCCN): W = (S_w + r I)^-1/2.

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
            image = cv2.imread(str(dataset / row["path"]), cv2.IMREAD_COLOR)
            faces = pipeline.detect(image) if image is not None else []
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help=".npz")
    parser.add_argument("--version", default="sface-wccn-v1")
    parser.add_argument("--age-dirs", type=int, default=FIT_AGE_DIRS)
    parser.add_argument("--reg", type=float, default=FIT_REG, help="ridge, x mean eigenvalue")
    parser.add_argument("--flip", action="store_true", help="fit on mean(original, mirror)")
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


if __name__ == "__main__":
    main()
