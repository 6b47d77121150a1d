"""How often an unrelated child's photo would score this high: each candidate's estimated
false-match rate, so that a reviewer can read a score.

A cosine of 0.31 means nothing to a person, and the same score means different things for
different models and gallery sizes. Per model (and template transform), an impostor curve
gives how often a photo of one child scores at least ``s`` against one template of another
child. It is fitted on labelled data (``scripts/fit_scores.py``: impostor pairs of FG-NET's
children, checked leave-subjects-out; the figures are kept in ``data/chance.json``): the
measured rates down to 1 in 100, and an exponential tail fitted to the highest scores
beyond, since no dataset holds the one-in-a-million pairs a large gallery needs.

Against a gallery of M templates, the chance that at least one unrelated template scores
at least ``s`` is 1 - (1 - fmr(s))^M: the candidate's false-match rate against this
gallery. The templates of one case are alike, and an exponential tail falls more slowly
than the measured ones, so both steps overstate the chance: they err towards caution.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SHIPPED = Path(__file__).with_name("data") / "chance.json"


@dataclass(frozen=True)
class ImpostorCurve:
    """One model's false-match rate per comparison as a function of the score."""

    model_id: str
    transform: str
    knot_scores: tuple[float, ...]  # increasing
    knot_rates: tuple[float, ...]  # measured rates at those scores, decreasing
    tail_scale: float  # beyond the last knot: rate x exp(-(score - knot) / scale)

    def rate(self, score: float) -> float:
        """How often one unrelated template scores at least ``score``."""
        start, start_rate = self.knot_scores[-1], self.knot_rates[-1]
        if score >= start:
            return start_rate * math.exp(-(score - start) / self.tail_scale)
        logs = np.log(np.asarray(self.knot_rates))
        return float(np.exp(np.interp(score, self.knot_scores, logs)))

    def in_gallery(self, score: float, templates: int) -> float:
        """How often a search of ``templates`` unrelated templates finds one scoring at least
        ``score``: 1 - (1 - rate)^templates, computed without underflow."""
        rate = self.rate(score)
        if rate >= 1.0:
            return 1.0
        return -math.expm1(max(templates, 1) * math.log1p(-rate))

    @classmethod
    def from_entry(cls, model_id: str, entry: dict[str, Any]) -> ImpostorCurve:
        scores = tuple(float(s) for s, _ in entry["knots"])
        rates = tuple(float(r) for _, r in entry["knots"])
        if len(scores) < 2 or list(scores) != sorted(set(scores)):
            raise ValueError(f"the impostor curve of {model_id} needs increasing knot scores")
        if list(rates) != sorted(rates, reverse=True) or not 0 < rates[-1] <= rates[0] <= 1:
            raise ValueError(f"the impostor curve of {model_id} needs decreasing rates in (0, 1]")
        return cls(model_id, str(entry["transform"]), scores, rates, float(entry["tail_scale"]))


def load_curve(model_id: str, transform: str, shipped: Path = SHIPPED) -> ImpostorCurve | None:
    """The curve fitted for this model id and template transform; None (logged) when there is
    none: candidates then carry no false-match rate, and are ranked by score alone."""
    entries = json.loads(shipped.read_text())["curves"] if shipped.exists() else {}
    entry = entries.get(model_id)
    if entry is None or entry["transform"] != transform:
        logger.warning(
            "no impostor curve fitted for %s with the transform %s: candidates get no "
            "false-match rate (scripts/fit_scores.py fits one)",
            model_id,
            transform,
        )
        return None
    return ImpostorCurve.from_entry(model_id, entry)


# Knots every quarter decade of the measured rate, from every pair (the lowest score) down to
# TAIL_FROM; the exponential tail is fitted to the scores beyond the last knot.
KNOT_RATES = tuple(10 ** (-k / 4) for k in range(9))
TAIL_FROM = KNOT_RATES[-1]


def fit_curve(impostor: np.ndarray, model_id: str, transform: str) -> ImpostorCurve:
    """Measured rates at the knots, and the exponential tail's scale: the mean excess of the
    impostor scores above the last knot (its maximum-likelihood estimate)."""
    scores = np.sort(np.asarray(impostor, dtype=np.float64))
    if len(scores) < 100 / TAIL_FROM:
        raise ValueError(f"{len(scores)} impostor scores are too few to fit a curve")
    knots = [float(np.quantile(scores, 1.0 - rate, method="higher")) for rate in KNOT_RATES]
    excess = scores[scores > knots[-1]] - knots[-1]
    return ImpostorCurve(
        model_id,
        transform,
        tuple(round(k, 5) for k in knots),
        KNOT_RATES,
        round(float(excess.mean()), 6),
    )
