"""Fit the duplicate-case threshold (``homeward duplicates``) of the configured model on a
labelled dataset such as FG-NET, and check it leave-subjects-out.

Every photo goes through the service's own path (intake, detection with the fallback
detector, the model, mirror averaging when the model id says ``+flip``); its largest face
is the one enrolled (as a registry picks the child's face in a photo of several), and
photos with no face take no part. Scores are
cosines in the index's space, i.e. after the model's template transform. The shipped
transforms are fitted on FG-NET itself, so here the transform is refitted with the same
recipe on other people than the ones scored: a pair of photos is scored with a transform
fitted on the people of the folds that hold neither photo (``--folds``). Models without a
transform are scored on their raw cosines.

The threshold is the lowest score (4 decimals) at which at most ``--fmr`` of the impostor
pairs (two photos of different people) of the calibration population (photos of children,
age under ``--child-age``) score at or above it. The true-match rate is the share of the
same person's pairs of that population at or above it, by age gap.

Leave-subjects-out check: the people are split in two halves; the threshold is fitted on
one half exactly as above (the transform cross-fitted inside that half), then measured on
the other half's pairs, scored with a transform fitted on all of the first half (as the
shipped transform, fitted on all of FG-NET, meets new people). Both ways.

    python scripts/fit_duplicates.py --dataset ../shared/data/fgnet

writes the threshold for the configured model id (``HOMEWARD_MODEL_BACKEND``,
``HOMEWARD_TTA_FLIP``, ...) into ``service/matching/data/duplicates.json``, keeping the
other models' entries. The templates are cached in the system's temp folder (never in the
repository); ``--no-cache`` embeds again.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from service.evaluation.folds import fold_of
from service.evaluation.pairs import (
    F32,
    Enrolled,
    Pairs,
    cross_fitted,
    dataset_arguments,
    embed_dataset,
    fit,
    scored_with,
    split,
    store_entry,
)
from service.search.transform import IDENTITY

OUT = Path(__file__).resolve().parent.parent / "service" / "matching" / "data" / "duplicates.json"
GAPS = ((0, 2), (3, 5), (6, 10), (11, 99))  # age gap bins (years) of the genuine pairs


# -- threshold and figures ------------------------------------------------------------------


def threshold_at(impostor: F32, fmr: float) -> float:
    """The lowest 4-decimal score with at most ``fmr`` of the impostor scores at or above."""
    allowed = int(np.floor(fmr * len(impostor)))
    ranked = np.sort(impostor)[::-1]
    if allowed >= len(ranked):
        return -1.0
    return round(math.floor(float(ranked[allowed]) * 1e4) / 1e4 + 1e-4, 4)


def figures(data: Enrolled, pairs: Pairs, threshold: float, child_age: float) -> dict[str, Any]:
    genuine, impostor, gap, impostor_all = split(data, pairs, child_age)
    at = threshold - 1e-9  # scores are compared as "at or above"
    out: dict[str, Any] = {
        "impostor_pairs": int(len(impostor)),
        "false_matches": int((impostor >= at).sum()),
        "fmr": float(np.mean(impostor >= at)),
        "fmr_all_ages": float(np.mean(impostor_all >= at)),
        "genuine_pairs": int(len(genuine)),
        "tmr": float(np.mean(genuine >= at)),
    }
    for low, high in GAPS:
        rows = (gap >= low) & (gap <= high)
        out[f"tmr_gap_{low}_{high}"] = float(np.mean(genuine[rows] >= at)) if rows.any() else None
        out[f"pairs_gap_{low}_{high}"] = int(rows.sum())
    return out


def describe(f: dict[str, Any]) -> str:
    gaps = "  ".join(
        f"{low}-{high if high < 99 else ''}y {f[f'tmr_gap_{low}_{high}']:.3f}"
        f" ({f[f'pairs_gap_{low}_{high}']})"
        for low, high in GAPS
        if f[f"tmr_gap_{low}_{high}"] is not None
    )
    return (
        f"FMR {f['fmr']:.2e} ({f['false_matches']}/{f['impostor_pairs']}, all ages "
        f"{f['fmr_all_ages']:.2e})  TMR {f['tmr']:.3f} of {f['genuine_pairs']}  by gap: {gaps}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dataset_arguments(parser, OUT)
    parser.add_argument("--fmr", type=float, default=1e-3, help="false matches per impostor pair")
    args = parser.parse_args()
    calibration = embed_dataset(args)
    print(calibration)
    model_id, shipped, fitted = calibration.model_id, calibration.transform, calibration.fitted
    samples, data = calibration.samples, calibration.data
    people = sorted(set(data.person))

    every = np.arange(len(data.vectors))
    pairs = cross_fitted(data, every, args.folds, model_id, fitted)
    impostor = split(data, pairs, args.child_age)[1]
    crossed = f"transform cross-fitted ({args.folds} folds)" if fitted else "raw cosines"
    print(f"\nall people, {crossed}, photos under {args.child_age:g}:")
    for fmr in (1e-2, 1e-3, 1e-4):
        t = threshold_at(impostor, fmr)
        at = describe(figures(data, pairs, t, args.child_age))
        print(f"  at FMR {fmr:.0e}: threshold {t:.4f}; {at}")
    threshold = threshold_at(impostor, args.fmr)
    overall = figures(data, pairs, threshold, args.child_age)

    print(
        f"\nleave-subjects-out (FMR target {args.fmr:g}): fitted on one half, measured on the other"
    )
    half = fold_of(samples, 2)
    checks = []
    for fit_half in (0, 1):
        rows_fit = every[np.array([half[p] == fit_half for p in data.person])]
        rows_test = every[np.array([half[p] != fit_half for p in data.person])]
        inner = cross_fitted(data, rows_fit, args.folds, model_id, fitted)
        t = threshold_at(split(data, inner, args.child_age)[1], args.fmr)
        transform = fit(data, rows_fit, model_id) if fitted else IDENTITY
        measured = figures(data, scored_with(data, rows_test, transform), t, args.child_age)
        checks.append({"threshold": t, **measured})
        print(f"  half {fit_half + 1} -> half {2 - fit_half}: threshold {t:.4f}")
        print(f"    measured: {describe(measured)}")

    print(f"\nthreshold {threshold:.4f} for {model_id}")
    print(f"  all people (cross-fitted): {describe(overall)}")
    entry = {
        "threshold": threshold,
        "transform": shipped.version,
        "fmr_target": args.fmr,
        "population": f"{args.dataset.name}: pairs of photos taken under age {args.child_age:g}",
        "photos": len(data.vectors),
        "people": len(people),
        "figures": {k: round(v, 6) if isinstance(v, float) else v for k, v in overall.items()},
        "leave_subjects_out": [
            {k: round(v, 6) if isinstance(v, float) else v for k, v in c.items()} for c in checks
        ],
    }
    store_entry(args.out, "thresholds", model_id, entry)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
