"""Fitting a growth model from landmark shapes of known age (numpy only).

1. Keep near-frontal shapes (pose is the largest source of shape variation and the mean
   at an age should not carry the pose habits of the photos taken at that age).
2. Align all of them by generalised Procrustes (similarity) to a common upright mean.
3. For each output age, a Gaussian kernel-weighted local linear fit over the ages of the
   shapes (smooths across age; FG-NET has 10-45 photos per year of childhood).
4. Make each mean bilaterally symmetric and align it to the overall mean, so that the
   differences between ages hold shape only, no similarity and no average head turn.
5. The pose model, from every shape (not only frontal ones): each shape's deviation from
   the mean at its age; the leading principal modes of those differences (head turn and
   nod); per mode, the least-squares persistence of a person's coefficient from one photo
   to another of the same person (pairs of different photos); and, per mode, a limit on
   the change: the given percentile of the coefficients' magnitude, i.e. no more than
   the pose of an ordinary photo.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date

import numpy as np
import numpy.typing as npt

from service.ageing.growth import GrowthModel, PoseModel
from service.ageing.shapes import (
    N_POINTS,
    Points,
    align,
    deviation,
    generalised_procrustes,
    normalise,
    symmetrise,
    upright,
    yaw_score,
)

VERSION = "growth_v2"


@dataclass(frozen=True)
class FitOptions:
    min_age: int = 0
    max_age: int = 25
    bandwidth_years: float = 2.0
    max_yaw_score: float = 0.06  # about the median of FG-NET; see shapes.yaw_score
    max_age_used: int = 30  # shapes older than this carry no weight at max_age anyway
    pose_modes: int = 2  # head turn and nod; 0 for no pose model
    pose_limit_percentile: float = 75.0


def frontal_mask(shapes: npt.NDArray[np.float64], max_yaw_score: float) -> npt.NDArray[np.bool_]:
    return np.array([yaw_score(s) <= max_yaw_score for s in shapes], dtype=bool)


def fit_mean_shapes(
    shapes: npt.NDArray[np.float64], ages: npt.NDArray[np.float64], options: FitOptions
) -> npt.NDArray[np.float64]:
    """Mean shapes (n_ages, 68, 2) from shapes (n, 68, 2) in image pixels and their ages."""
    if shapes.ndim != 3 or shapes.shape[1:] != (N_POINTS, 2) or len(shapes) != len(ages):
        raise ValueError("expected shapes (n, 68, 2) and one age per shape")
    keep = frontal_mask(shapes, options.max_yaw_score) & (ages <= options.max_age_used)
    if keep.sum() < 2:
        raise ValueError("too few usable shapes to fit a growth model")
    aligned = generalised_procrustes(shapes[keep])
    used_ages = ages[keep]
    means = [
        _shape_at_age(aligned, used_ages, age, options.bandwidth_years)
        for age in range(options.min_age, options.max_age + 1)
    ]
    reference = upright(symmetrise(normalise(np.mean(means, axis=0))))
    return np.stack([normalise(align(symmetrise(m), reference)) for m in means])


def _shape_at_age(
    aligned: npt.NDArray[np.float64], ages: npt.NDArray[np.float64], age: int, bandwidth: float
) -> Points:
    """The shape at ``age`` by Gaussian-weighted local linear regression on age: unlike a
    plain weighted mean, it is not pulled towards older faces at age 0, where the kernel
    only sees one side and the face changes fastest."""
    weights = np.exp(-0.5 * ((ages - age) / bandwidth) ** 2)
    if weights.sum() < 1e-6:
        raise ValueError(f"no shapes near age {age} to fit a mean shape")
    offsets = ages - age
    design = np.stack([np.ones_like(offsets), offsets], axis=1)
    normal = design.T @ (weights[:, None] * design)
    flat = aligned.reshape(len(aligned), -1)
    if np.linalg.cond(normal) > 1e8:  # all weight at one age: the plain weighted mean
        mean = weights @ flat / weights.sum()
    else:
        mean = np.linalg.solve(normal, design.T @ (weights[:, None] * flat))[0]
    return normalise(mean.reshape(N_POINTS, 2))


def fit_pose_model(
    shapes: npt.NDArray[np.float64],
    ages: npt.NDArray[np.float64],
    subjects: Sequence[str],
    means: GrowthModel,
    options: FitOptions,
) -> PoseModel:
    """The pose model (step 5 above) of shapes (n, 68, 2) of known age and person."""
    used = [i for i, age in enumerate(ages) if age <= options.max_age_used]
    clamp = float(means.max_age)
    deviations = np.stack(
        [deviation(shapes[i], means.mean_shape(min(float(ages[i]), clamp))).ravel() for i in used]
    )
    _, _, vt = np.linalg.svd(deviations - deviations.mean(axis=0), full_matrices=False)
    modes = vt[: options.pose_modes]
    projected = deviations @ modes.T
    coefficients = dict(zip(used, projected, strict=True))
    photos_of: dict[str, list[int]] = defaultdict(list)
    for i in used:
        photos_of[subjects[i]].append(i)
    pairs = [(i, j) for group in photos_of.values() for i in group for j in group if i != j]
    if not pairs:
        raise ValueError("a pose model needs two or more photos of one person")
    earlier = np.stack([coefficients[i] for i, _ in pairs])
    later = np.stack([coefficients[j] for _, j in pairs])
    persistence = (earlier * later).sum(axis=0) / (earlier**2).sum(axis=0)
    limits = np.percentile(np.abs(projected), options.pose_limit_percentile, axis=0)
    return PoseModel(modes.reshape(-1, N_POINTS, 2), persistence, limits)


def fit_growth_model(
    shapes: npt.NDArray[np.float64],
    ages: npt.NDArray[np.float64],
    subjects: Sequence[str],
    options: FitOptions | None = None,
    *,
    source: str,
    landmarks: str,
) -> GrowthModel:
    """A growth model with its provenance; ``subjects`` names the person of each shape,
    ``source`` the data, ``landmarks`` how the shapes were obtained."""
    options = options or FitOptions()
    means = fit_mean_shapes(shapes, ages, options)
    used = int((frontal_mask(shapes, options.max_yaw_score) & (ages <= options.max_age_used)).sum())
    metadata = {
        "source": source,
        "landmarks": landmarks,
        "landmark_order": "dlib 68-point (iBUG 300-W)",
        "frame": "normalised: centroid 0, RMS radius 1, eye line horizontal, symmetric",
        "method": (
            "generalised Procrustes (similarity) alignment of near-frontal shapes; per integer "
            "age, Gaussian kernel-weighted local linear regression on age; mirror-symmetrised. "
            "Pose: principal modes of all shapes' differences from the mean at their age, "
            "persistence regressed over pairs of one person's photos, limits a percentile "
            "of the coefficients' magnitude"
        ),
        "options": asdict(options),
        "shapes_used": used,
        "sex_specific": False,
        "fitted": date.today().isoformat(),
    }
    ages_out = tuple(range(options.min_age, options.max_age + 1))
    model = GrowthModel(version=VERSION, ages=ages_out, shapes=means, metadata=metadata)
    if options.pose_modes == 0:
        return model
    pose = fit_pose_model(shapes, ages, subjects, model, options)
    return replace(model, pose=pose)
