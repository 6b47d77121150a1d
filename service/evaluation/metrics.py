"""Identification (CMC) and verification (TAR at a FAR) figures."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

Scores = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]


def cmc(ranks: Sequence[int | None], top_k: int) -> list[float]:
    """Share of probes whose mate is at rank <= k, for k = 1..top_k (None = not found)."""
    if not ranks:
        return [0.0] * top_k
    found = np.array([r if r is not None else top_k + 1 for r in ranks])
    return [float(np.mean(found <= k)) for k in range(1, top_k + 1)]


@dataclass(frozen=True)
class Templates:
    """Unit-length templates (rows) with the identity and case of each, as integer codes."""

    vectors: Scores
    identity: Labels
    case: Labels


def pair_scores(probes: Templates, gallery: Templates) -> tuple[Scores, Scores]:
    """Cosine scores of every probe against every gallery template: (genuine, impostor).
    Pairs of a probe with its own case (leave-one-image-out) are neither."""
    scores = probes.vectors @ gallery.vectors.T
    same = probes.identity[:, None] == gallery.identity[None, :]
    own = probes.case[:, None] == gallery.case[None, :]
    return scores[same & ~own], scores[~same]


@dataclass(frozen=True)
class OperatingPoint:
    far: float
    threshold: float
    tar: float


def tar_at_far(genuine: Scores, impostor: Scores, far: float) -> OperatingPoint | None:
    """The true-accept rate at the threshold that accepts ``far`` of the impostor pairs."""
    if genuine.size == 0 or impostor.size == 0:
        return None
    threshold = float(np.quantile(impostor, 1.0 - far, method="higher"))
    return OperatingPoint(far, threshold, float(np.mean(genuine > threshold)))


def median(scores: Scores) -> float | None:
    return float(np.median(scores)) if scores.size else None
