"""Fit the growth model shipped as service/ageing/data/growth_v2.json from FG-NET.

    .venv/bin/python scripts/fit_growth.py --dataset ../shared/data/fgnet

Uses FG-NET's 68 hand-placed landmarks, mapped from FG-NET's own markup to dlib's 68-point
order (``service.ageing.fgnet``), and ``service.ageing.fitting.fit_growth_model``. The evaluation
(scripts/eval_ageing.py) refits through ``fit`` below on the training folds only.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.ageing.fgnet import read_fgnet_points
from service.ageing.fitting import FitOptions, fit_growth_model
from service.ageing.growth import DEFAULT_MODEL_FILE, GrowthModel, save_growth_model

Array = npt.NDArray[np.float64]
SOURCE = (
    "FG-NET ageing database (1002 photos of 82 people aged 0-69), hand-placed landmarks "
    "mapped to dlib's 68-point order"
)


@dataclass(frozen=True)
class Sample:
    path: str  # relative to the dataset folder
    subject: str
    age: int
    points: Array  # (68, 2) hand-placed, dlib order


def load_fgnet(dataset: Path) -> list[Sample]:
    """Every photo of ``labels.csv`` with its landmarks in dlib order."""
    with (dataset / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        Sample(
            path=row["path"],
            subject=row["identity"],
            age=int(row["age"]),
            points=read_fgnet_points(dataset / row["landmarks"]),
        )
        for row in rows
    ]


def fit(samples: list[Sample], options: FitOptions | None = None) -> GrowthModel:
    """The growth model fitted on ``samples`` (the evaluation passes training folds)."""
    shapes = np.stack([s.points for s in samples])
    ages = np.array([s.age for s in samples], dtype=np.float64)
    subjects = [s.subject for s in samples]
    return fit_growth_model(
        shapes, ages, subjects, options, source=SOURCE, landmarks="hand-placed (FG-NET markup)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True, help="the FG-NET folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_FILE)
    args = parser.parse_args()
    samples = load_fgnet(args.dataset)
    model = fit(samples)
    save_growth_model(model, args.out)
    print(f"{model.version}: {len(samples)} photos, {model.metadata['shapes_used']} used")
    print(json.dumps(model.metadata, indent=2))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
