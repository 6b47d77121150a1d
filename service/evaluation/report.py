"""The figures of a run: as a dict (for JSON), as a printed table, and as a PNG plot drawn
with OpenCV (two panels: the CMC curve and the genuine/impostor score histograms)."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from service.evaluation.fusion import FUSIONS
from service.evaluation.metrics import Scores, cmc, median, tar_at_far
from service.evaluation.runner import Outcome

logger = logging.getLogger(__name__)

RANKS = (1, 5, 10, 20)
FARS = (0.01, 0.001)


def figures(outcome: Outcome, top_k: int) -> dict[str, Any]:
    probes = outcome.probes
    curve = cmc([p.rank for p in probes], top_k)
    no_face = sum(p.failure == "no face found" for p in probes)
    return {
        "model_id": outcome.model_id,
        "top_k": top_k,
        "probes": len(probes),
        "probes_with_enrolled_mate": outcome.mated,
        **{f"rank_{k}": curve[k - 1] if k <= top_k else None for k in RANKS},
        "no_face": no_face,
        "no_face_share": no_face / len(probes) if probes else 0.0,
        "probe_errors": reason_counts(
            p.failure for p in probes if p.failure not in (None, "no face found")
        ),
        "gallery": {
            "cases": len(outcome.gallery.case_ids),
            "photos": outcome.gallery.photos,
            "enrollment_failures": len(outcome.gallery.failures),
            "failure_reasons": reason_counts(r for _, r in outcome.gallery.failures),
            "failed_photos": [{"photo": n, "reason": r} for n, r in outcome.gallery.failures],
            "enrolled_with_quality_issues": len({n for n, _ in outcome.gallery.flagged}),
            "quality_issues": reason_counts(i for _, i in outcome.gallery.flagged),
            "several_faces_largest_enrolled": len(outcome.gallery.several_faces),
        },
        "verification": verification(outcome.genuine, outcome.impostor),
        "case_fusion": case_fusion(outcome, top_k),
        "cmc": curve,
        "seconds": {"enroll": outcome.enroll_seconds, "match": outcome.match_seconds},
    }


def reason_counts(reasons: Iterable[str]) -> dict[str, int]:
    """Rejection reasons with their numbers blanked, so alike ones are counted together."""
    return dict(Counter(re.sub(r"\d+(\.\d+)?", "#", r) for r in reasons).most_common())


def case_fusion(outcome: Outcome, top_k: int) -> dict[str, Any]:
    """Rank-k of each case-template fusion, and how many probes' ``best`` ranks equal the
    service's own (they differ only on near-ties between cases)."""
    if not outcome.fusion:
        return {}
    service = [p.rank for p in outcome.probes]
    agree = sum(a == b for a, b in zip(outcome.fusion["best"], service, strict=True))
    if agree < len(service):
        logger.warning("best-template fusion ranks differ from the service's for %d probe(s)",
                       len(service) - agree)  # fmt: skip
    fusions = {}
    for name, ranks in outcome.fusion.items():
        curve = cmc(ranks, top_k)
        fusions[name] = {
            "description": FUSIONS[name][1] if name in FUSIONS else "",
            **{f"rank_{k}": curve[k - 1] if k <= top_k else None for k in RANKS},
        }
    return {"best_agrees_with_service": {"probes": agree, "of": len(service)}, **fusions}


def verification(genuine: Scores, impostor: Scores) -> dict[str, Any]:
    points = {far: tar_at_far(genuine, impostor, far) for far in FARS}
    return {
        "genuine_pairs": int(genuine.size),
        "impostor_pairs": int(impostor.size),
        "genuine_median": median(genuine),
        "impostor_median": median(impostor),
        **{
            f"far_{far:g}": {"tar": p.tar, "threshold": p.threshold} if p else None
            for far, p in points.items()
        },
    }


def table(fig: dict[str, Any]) -> str:
    gallery, ver = fig["gallery"], fig["verification"]
    rows = [
        ("probes", str(fig["probes"])),
        ("  with an enrolled mate", str(fig["probes_with_enrolled_mate"])),
    ]
    rows += [(f"rank-{k}", _num(fig[f"rank_{k}"])) for k in RANKS]
    rows.append(("no face found (probes)", f"{fig['no_face_share']:.1%} ({fig['no_face']})"))
    rows += [(f"  probe error: {r}", str(n)) for r, n in fig["probe_errors"].items()]
    fails = f"{gallery['enrollment_failures']} of {gallery['photos']} photos"
    rows.append(("gallery enrollment failures", fails))
    rows += [(f"  {n:4d}  {r}", "") for r, n in gallery["failure_reasons"].items()]
    flagged = f"{gallery['enrolled_with_quality_issues']} of {gallery['photos']} photos"
    rows.append(("gallery enrolled with quality issues", flagged))
    rows += [(f"  {n:4d}  {r}", "") for r, n in gallery["quality_issues"].items()]
    several = f"{gallery['several_faces_largest_enrolled']} photos (the largest face enrolled)"
    rows.append(("gallery with several faces", several))
    for far in FARS:
        point = ver[f"far_{far:g}"]
        value = f"{point['tar']:.3f} (threshold {point['threshold']:.3f})" if point else "-"
        rows.append((f"TAR @ FAR {far * 100:g}%", value))
    rows.append(("genuine score median", _num(ver["genuine_median"])))
    rows.append(("impostor score median", _num(ver["impostor_median"])))
    rows.append(("genuine / impostor pairs", f"{ver['genuine_pairs']} / {ver['impostor_pairs']}"))
    rows += _fusion_rows(fig.get("case_fusion") or {})
    width = max(len(label) for label, value in rows if value)
    return "\n".join(f"{label:{width}}  {value}".rstrip() for label, value in rows)


def _fusion_rows(fusion: dict[str, Any]) -> list[tuple[str, str]]:
    if not fusion:
        return []
    agree = fusion["best_agrees_with_service"]
    ranks = "/".join(str(k) for k in RANKS)
    rows = [
        (f"case fusion: rank-{ranks}", f"(best = service on {agree['probes']} of {agree['of']})")
    ]
    for name, fig in fusion.items():
        if name != "best_agrees_with_service":
            rows.append((f"  {name}", "  ".join(_num(fig[f"rank_{k}"]) for k in RANKS)))
    return rows


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def write_json(path: Path, fig: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fig, indent=2) + "\n", encoding="utf-8")


# -- the plot (OpenCV: no plotting library among the dependencies) ---------------------

W, H, M = 600, 460, 60  # panel size and margin, pixels
BLACK, GREY, BLUE = (0, 0, 0), (215, 215, 215), (180, 90, 20)
GREEN, RED = (40, 150, 40), (40, 40, 210)
FONT = cv2.FONT_HERSHEY_SIMPLEX
Range = tuple[float, float]


def write_plot(
    path: Path, curve: list[float], genuine: Scores, impostor: Scores, title: str
) -> None:
    """Left: the CMC curve; right: histograms of the genuine and impostor scores."""
    canvas = np.full((H + 40, 2 * W, 3), 255, np.uint8)
    _text(canvas, title, (M, 28), 0.6)
    cmc_panel, score_panel = canvas[40:, :W], canvas[40:, W:]
    n = len(curve)
    ranks = (1.0, float(max(n, 2)))
    rank_ticks = [1, *range(10, n + 1, 10)] if n >= 10 else list(range(1, n + 1))
    _frame(cmc_panel, "CMC", "rank", ranks, (0, 1), rank_ticks, np.linspace(0, 1, 6))
    _plot(cmc_panel, np.arange(1, n + 1), np.array(curve), ranks, (0, 1), BLUE)
    _text(cmc_panel, f"rank-1 {curve[0]:.3f}", (M + 20, H - M - 20), 0.5, BLUE)

    lowest = min(genuine.min(initial=1), impostor.min(initial=1))
    step = 0.1 if lowest > 0.5 else 0.2  # dlib's scores are all high: zoom in
    lo = min(float(np.floor(lowest / step) * step), 1 - step)
    edges = np.linspace(lo, 1.0, 51)
    hists = [np.histogram(s, edges)[0] / max(s.size, 1) for s in (genuine, impostor)]
    top = max(float(max(h.max() for h in hists)) * 1.1, 1e-3)
    scores = (float(lo), 1.0)
    _frame(
        score_panel, "cosine scores (share of pairs)", "score", scores, (0, top),
        np.arange(lo, 1 + step / 2, step), np.linspace(0, top, 6),
    )  # fmt: skip
    for hist, colour, name, y in (
        (hists[0], GREEN, "genuine", 50),
        (hists[1], RED, "impostor", 70),
    ):
        _plot(score_panel, np.repeat(edges, 2)[1:-1], np.repeat(hist, 2), scores, (0, top), colour)
        _text(score_panel, name, (M + 10, y), 0.5, colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"could not write {path}")


def _px(xs: np.ndarray, ys: np.ndarray, xr: Range, yr: Range) -> np.ndarray:
    """Data coordinates -> pixel coordinates of a panel (plot area inside the margins)."""
    px = M + (xs - xr[0]) / (xr[1] - xr[0]) * (W - 1.5 * M)
    py = H - M - (ys - yr[0]) / (yr[1] - yr[0]) * (H - 1.5 * M)
    return np.stack([px, py], axis=-1).round().astype(np.int32)


def _plot(
    img: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    xr: Range,
    yr: Range,
    colour: tuple[int, int, int],
) -> None:
    cv2.polylines(img, [_px(xs, ys, xr, yr)], False, colour, 2, cv2.LINE_AA)


def _frame(
    img: np.ndarray,
    name: str,
    xlabel: str,
    xr: Range,
    yr: Range,
    xticks: Iterable[float],
    yticks: Iterable[float],
) -> None:
    """Grid lines with tick labels, the frame, the panel's name and the x axis label."""
    for x in xticks:
        ((gx, _),) = _px(np.array([x]), np.array([yr[0]]), xr, yr)
        cv2.line(img, (gx, M // 2), (gx, H - M), GREY, 1)
        _text(img, f"{x:g}" if isinstance(x, int) else f"{x:.1f}", (gx - 10, H - M + 18), 0.4)
    for y in yticks:
        ((_, gy),) = _px(np.array([xr[0]]), np.array([y]), xr, yr)
        cv2.line(img, (M, gy), (W - M // 2, gy), GREY, 1)
        _text(img, f"{y:.2f}", (12, gy + 4), 0.4)
    cv2.rectangle(img, (M, M // 2), (W - M // 2, H - M), BLACK, 1)
    _text(img, name, (M, 20), 0.55)
    _text(img, xlabel, (W // 2 - 15, H - 18), 0.45)


def _text(
    img: np.ndarray,
    text: str,
    at: tuple[int, int],
    scale: float,
    colour: tuple[int, int, int] = BLACK,
) -> None:
    cv2.putText(img, text, at, FONT, scale, colour, 1, cv2.LINE_AA)
