"""Fit the configured model's impostor curve (each candidate's estimated false-match rate,
``service/matching/chance.py``) on a labelled dataset such as FG-NET, and check it
leave-subjects-out.

The curve is fitted on the impostor pairs (two photos of different people) of the photos of
children (under ``--child-age``), every photo through the service's own path, each pair
scored with the template transform refitted on other people than its two
(``service/evaluation/pairs.py``). Models without a transform are scored on raw cosines.

Leave-subjects-out check: the people are split in two halves; the curve is fitted on one
half exactly as above, then the other half's pairs are scored with a transform fitted on
all of the first half (as the shipped transform, fitted on all of FG-NET, meets new
people), and the rate the curve predicts is set beside the rate measured there, at the
scores where the measured rate is 1e-2, 1e-3 and 1e-4. Both ways.

    python scripts/fit_scores.py --dataset ../shared/data/fgnet

writes the curve for the configured model id (``HOMEWARD_MODEL_BACKEND``,
``HOMEWARD_TTA_FLIP``, ...) into ``service/matching/data/chance.json``, keeping the other
models' entries. Templates are cached in the system's temp folder (never in the repository).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from service.evaluation.folds import fold_of
from service.evaluation.pairs import (
    Enrolled,
    cross_fitted,
    dataset_arguments,
    embed_dataset,
    fit,
    scored_with,
    split,
    store_entry,
)
from service.matching.chance import SHIPPED, ImpostorCurve, fit_curve
from service.search.transform import IDENTITY

CHECK_RATES = (1e-2, 1e-3, 1e-4)
GALLERIES = (1_000, 100_000, 1_000_000)  # templates, for the share of mates standing out
STANDS_OUT = 0.01


def check(curve: ImpostorCurve, impostor: np.ndarray) -> list[dict[str, Any]]:
    """Predicted beside measured rates, at the scores where the measured rate is each of
    CHECK_RATES (where at least 10 pairs measure it)."""
    ranked = np.sort(impostor)[::-1]
    rows = []
    for rate in CHECK_RATES:
        above = int(rate * len(ranked))
        if above < 10:
            continue
        score = float(ranked[above - 1])
        measured = float(np.mean(impostor >= score))
        rows.append(
            {
                "score": round(score, 4),
                "measured": measured,
                "predicted": curve.rate(score),
                "pairs": int(len(impostor)),
            }
        )
    return rows


def describe(rows: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"at {r['score']:.4f} measured {r['measured']:.1e}, predicted {r['predicted']:.1e} "
        f"(x{r['predicted'] / r['measured']:.2f})"
        for r in rows
    )


def standing_out(curve: ImpostorCurve, genuine: np.ndarray) -> dict[str, float]:
    """Share of the children's genuine pairs whose score would stand out from chance
    (false-match rate against the gallery at most STANDS_OUT) in galleries of each size."""
    return {
        str(size): float(np.mean([curve.in_gallery(float(s), size) <= STANDS_OUT for s in genuine]))
        for size in GALLERIES
    }


def halves_checked(
    data: Enrolled, samples: list[Any], folds: int, model_id: str, fitted: bool, child_age: float
) -> list[dict[str, Any]]:
    half = fold_of(samples, 2)
    every = np.arange(len(data.vectors))
    out = []
    for fit_half in (0, 1):
        rows_fit = every[np.array([half[p] == fit_half for p in data.person])]
        rows_test = every[np.array([half[p] != fit_half for p in data.person])]
        inner = cross_fitted(data, rows_fit, folds, model_id, fitted)
        curve = fit_curve(split(data, inner, child_age)[1], model_id, "half")
        transform = fit(data, rows_fit, model_id) if fitted else IDENTITY
        held = split(data, scored_with(data, rows_test, transform), child_age)[1]
        rows = check(curve, held)
        print(f"  half {fit_half + 1} -> half {2 - fit_half}: {describe(rows)}")
        out.append({"fitted_on_half": fit_half + 1, "checks": rows})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dataset_arguments(parser, SHIPPED)
    args = parser.parse_args()
    calibration = embed_dataset(args)
    print(calibration)
    model_id, shipped, fitted = calibration.model_id, calibration.transform, calibration.fitted
    samples, data = calibration.samples, calibration.data

    pairs = cross_fitted(data, np.arange(len(data.vectors)), args.folds, model_id, fitted)
    genuine, impostor = split(data, pairs, args.child_age)[:2]
    curve = fit_curve(impostor, model_id, shipped.version)
    knots = zip(curve.knot_scores, curve.knot_rates, strict=True)
    print(
        f"\n{len(impostor)} impostor pairs of photos under {args.child_age:g}: knots "
        + ", ".join(f"{r:.0e}@{s:.4f}" for s, r in knots)
        + f"; tail scale {curve.tail_scale:.4f}"
    )
    shares = standing_out(curve, genuine)
    print(
        f"genuine pairs of children ({len(genuine)}) standing out from chance (rate against "
        f"the gallery <= {STANDS_OUT:g}): "
        + ", ".join(f"{int(k):,} templates {v:.3f}" for k, v in shares.items())
    )
    print("\nleave-subjects-out: fitted on one half, measured on the other")
    checks = halves_checked(data, samples, args.folds, model_id, fitted, args.child_age)

    entry = {
        "transform": shipped.version,
        "knots": [[s, r] for s, r in zip(curve.knot_scores, curve.knot_rates, strict=True)],
        "tail_scale": curve.tail_scale,
        "population": f"{args.dataset.name}: impostor pairs of photos taken under age "
        f"{args.child_age:g}, transform cross-fitted ({args.folds} folds)",
        "impostor_pairs": int(len(impostor)),
        "genuine_standing_out": {k: round(v, 4) for k, v in shares.items()},
        "leave_subjects_out": checks,
    }
    store_entry(args.out, "curves", model_id, entry)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
