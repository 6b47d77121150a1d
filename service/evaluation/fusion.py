"""Case-template fusions, measured offline: how a case holding several templates (several
photos, each with its aged templates) could be scored against a probe.

The service ranks a case by its best template (``best``); the others are candidates to
replace it. Scores are computed here from the templates as the index holds them, so one
run measures every fusion, and ``best`` is checked against the service's own ranks.

A template scoring below the score floor is dropped before fusing, as the service drops
such hits before grouping them by case; a case with none left is not ranked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.evaluation.metrics import Labels, Scores

logger = logging.getLogger(__name__)

Ages = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

AGE_TAU = 3.0  # years: the scale of the age-weighted fusion's weights


@dataclass(frozen=True)
class GalleryTemplates:
    """A model's gallery templates (rows) with the case, photo, kind and age of each."""

    vectors: Scores
    case_ids: list[str]
    photo_ids: list[str]
    kinds: list[str]  # original | aged
    ages: list[float | None]  # the age a template stands for (photo's or aged target)


@dataclass(frozen=True)
class CaseLayout:
    """The templates of each case side by side: ``case`` x ``slot`` (padded)."""

    case_of: Labels  # per template: its case's index
    slot_of: Labels  # per template: its slot within the case
    valid: Mask  # (cases, slots)
    original: Mask  # (cases, slots)
    age: Ages  # (cases, slots); NaN: unknown or padding
    photo: Mask  # (cases, photos, slots): which slots hold each photo's templates

    @classmethod
    def of(
        cls,
        case_of: Labels,
        n_cases: int,
        photo_ids: Sequence[str],
        kinds: Sequence[str],
        ages: Sequence[float | None],
    ) -> CaseLayout:
        slot_of = np.zeros(len(case_of), dtype=np.int64)
        counts = np.zeros(n_cases, dtype=np.int64)
        photo_slot: dict[tuple[int, str], int] = {}
        photos_per_case = np.zeros(n_cases, dtype=np.int64)
        photo_of = np.zeros(len(case_of), dtype=np.int64)
        for n, (case, photo) in enumerate(zip(case_of.tolist(), photo_ids, strict=True)):
            slot_of[n], counts[case] = counts[case], counts[case] + 1
            if (case, photo) not in photo_slot:
                photo_slot[case, photo] = int(photos_per_case[case])
                photos_per_case[case] += 1
            photo_of[n] = photo_slot[case, photo]
        slots = max(int(counts.max(initial=0)), 1)
        photos = max(int(photos_per_case.max(initial=0)), 1)
        valid = np.zeros((n_cases, slots), dtype=bool)
        original = np.zeros((n_cases, slots), dtype=bool)
        age = np.full((n_cases, slots), np.nan)
        held = np.zeros((n_cases, photos, slots), dtype=bool)
        valid[case_of, slot_of] = True
        original[case_of, slot_of] = np.array([k == "original" for k in kinds], dtype=bool)
        age[case_of, slot_of] = np.array([np.nan if a is None else a for a in ages])
        held[case_of, photo_of, slot_of] = True
        return cls(case_of, slot_of, valid, original, age, held)


@dataclass(frozen=True)
class Context:
    """One batch of probes against every case: ``scores`` is (probes, cases, slots), -inf
    where a slot holds no template or one below the floor."""

    scores: Scores
    layout: CaseLayout
    case_age: Ages  # (cases,): the case's expected age today; NaN: not known
    probe_age: Ages  # (probes,): the probe's labelled age (for the oracle only); NaN


Fusion = Callable[[Context], Scores]  # -> (probes, cases), -inf: the case is not ranked


def best(ctx: Context) -> Scores:
    """The case's best template: what the service ranks by today."""
    return _scores(ctx.scores.max(axis=-1))


def _scores(values: npt.ArrayLike) -> Scores:
    return np.asarray(values, dtype=np.float32)


def mean_top2(scores: Scores) -> Scores:
    """The mean of the two highest scores along the last axis (one: that one)."""
    top = -np.sort(-scores, axis=-1)[..., :2]
    if top.shape[-1] < 2:
        return _scores(top[..., 0])
    first, second = top[..., 0], top[..., 1]
    return _scores(np.where(np.isfinite(second), (first + second) / 2, first))


def photo_best(ctx: Context) -> Scores:
    """(probes, cases, photos): each photo's best template (its original or aged ones)."""
    inside = np.where(ctx.layout.photo[None], ctx.scores[:, :, None, :], -np.inf)
    return _scores(inside.max(axis=-1))


def nearest(ctx: Context, target: Ages) -> Scores:
    """The best of the templates whose age is nearest ``target`` (probes, cases); the
    case's best template where the target or every template's age is unknown."""
    usable = np.isfinite(ctx.scores) & ~np.isnan(ctx.layout.age)[None]
    gap = np.where(usable, np.abs(ctx.layout.age[None] - target[..., None]), np.inf)
    gap = np.nan_to_num(gap, nan=np.inf)
    closest = gap <= gap.min(axis=-1, keepdims=True) + 1e-6
    picked = np.where(closest & np.isfinite(gap), ctx.scores, -np.inf).max(axis=-1)
    return _scores(np.where(np.isfinite(picked), picked, best(ctx)))


def age_weighted(ctx: Context, target: Ages, tau: float = AGE_TAU) -> Scores:
    """Mean of the case's template scores weighted by exp(-|age - target| / tau); the
    best template where the target or the ages are unknown."""
    usable = np.isfinite(ctx.scores) & ~np.isnan(ctx.layout.age)[None]
    gap = np.abs(ctx.layout.age[None] - target[..., None])
    weight = np.where(usable, np.exp(-np.nan_to_num(gap, nan=np.inf) / tau), 0.0)
    total = weight.sum(axis=-1)
    mean = (weight * np.where(usable, ctx.scores, 0.0)).sum(axis=-1) / np.maximum(total, 1e-12)
    return _scores(np.where(total > 0, mean, best(ctx)))


def _case_target(ctx: Context) -> Ages:
    return np.broadcast_to(ctx.case_age[None, :], ctx.scores.shape[:2])


def _probe_target(ctx: Context) -> Ages:
    return np.broadcast_to(ctx.probe_age[:, None], ctx.scores.shape[:2])


FUSIONS: dict[str, tuple[Fusion, str]] = {
    "best": (best, "the case's best template (the service today)"),
    "mean-top2": (
        lambda c: mean_top2(c.scores),
        "mean of the case's two best templates (one template: its score)",
    ),
    "mean-top2-photos": (
        lambda c: mean_top2(photo_best(c)),
        "mean of the best templates of the case's two best photos (original or aged)",
    ),
    "mean-top2-original": (
        lambda c: mean_top2(_scores(np.where(c.layout.original[None], c.scores, -np.inf))),
        "mean of the case's two best original templates (aged ones ignored)",
    ),
    "nearest-age": (
        lambda c: nearest(c, _case_target(c)),
        "the template whose age is nearest the case's expected age today",
    ),
    "best+nearest-age": (
        lambda c: _scores((best(c) + nearest(c, _case_target(c))) / 2),
        "mean of the best template and the one nearest the case's expected age",
    ),
    "age-weighted": (
        lambda c: age_weighted(c, _case_target(c)),
        f"templates weighted by exp(-|age - expected age| / {AGE_TAU:g} years)",
    ),
    "age-weighted-tau6": (
        lambda c: age_weighted(c, _case_target(c), 6.0),
        "templates weighted by exp(-|age - expected age| / 6 years)",
    ),
    "best+age-weighted": (
        lambda c: _scores((best(c) + age_weighted(c, _case_target(c))) / 2),
        f"mean of the best template and the age-weighted mean (tau {AGE_TAU:g} years)",
    ),
    "nearest-probe-age (oracle)": (
        lambda c: nearest(c, _probe_target(c)),
        "the template nearest the probe's labelled age (an oracle: the service has no probe age)",
    ),
}


def ranks(
    fused: Scores, case_identity: Labels, probe_identity: Labels, own_case: Labels, top_k: int
) -> list[int | None]:
    """Per probe, the rank of its identity's best-scoring case among the ranked cases (its
    own case left out; cases at -inf are not ranked); None beyond ``top_k`` or absent."""
    cases = np.arange(fused.shape[1])
    out: list[int | None] = []
    for row, identity, own in zip(fused, probe_identity, own_case, strict=True):
        ranked = np.isfinite(row) & (cases != own)
        mate = ranked & (case_identity == identity)
        if identity < 0 or not mate.any():
            out.append(None)
            continue
        top = row[mate].max()
        rank = 1 + int(np.sum(ranked & ~mate & (row > top)))
        out.append(rank if rank <= top_k else None)
    return out


def fusion_ranks(
    probe_vectors: Scores,
    templates: GalleryTemplates,
    case_index: dict[str, int],
    case_identity: Labels,
    probe_identity: Labels,
    own_case: Labels,
    case_age: Ages,
    probe_age: Ages,
    floor: float,
    top_k: int,
) -> dict[str, list[int | None]]:
    """Each fusion's ranks of the probes (rows of ``probe_vectors``, as queried) against
    the cases of ``case_index`` (case id -> column) holding ``templates``."""
    case_of = np.array([case_index[c] for c in templates.case_ids], dtype=np.int64)
    layout = CaseLayout.of(
        case_of, len(case_index), templates.photo_ids, templates.kinds, templates.ages
    )
    raw = probe_vectors @ templates.vectors.T  # (probes, templates)
    scores = np.full((len(probe_vectors), *layout.valid.shape), -np.inf, dtype=np.float32)
    scores[:, layout.case_of, layout.slot_of] = np.where(raw >= floor, raw, -np.inf)
    ctx = Context(scores, layout, case_age, probe_age)
    return {
        name: ranks(fusion(ctx), case_identity, probe_identity, own_case, top_k)
        for name, (fusion, _) in FUSIONS.items()
    }
