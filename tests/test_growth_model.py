"""The growth model's arithmetic and its fitting, on shapes made here from the shipped
mean shapes (so the truth is known)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from service.ageing.fitting import FitOptions, fit_growth_model
from service.ageing.growth import GrowthModel, load_growth_model
from service.ageing.shapes import N_POINTS, lower_face_ratio, similarity, yaw_score


@pytest.fixture(scope="module")
def shipped() -> GrowthModel:
    return load_growth_model()


def turned(model: GrowthModel, age: float, amount: float) -> np.ndarray:
    """The mean face at ``age`` turned by ``amount`` of the head-turn mode, placed in an
    image frame (scaled, rotated, shifted)."""
    assert model.pose is not None
    shape = model.mean_shape(age) + amount * model.pose.modes[0]
    angle = 0.2
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    placed: np.ndarray = 90 * shape @ rotation.T + [240, 260]
    return placed


def test_the_leading_pose_mode_is_a_head_turn(shipped: GrowthModel) -> None:
    assert yaw_score(turned(shipped, 6, 0.8)) > yaw_score(shipped.mean_shape(6)) + 0.05


def test_the_pose_step_turns_a_face_towards_frontal_within_its_limit(
    shipped: GrowthModel,
) -> None:
    assert shipped.pose is not None
    face = turned(shipped, 4, 1.5)
    growth_only = shipped.age_points(face, 4, 12, pose=False)
    aged = shipped.age_points(face, 4, 12)
    assert yaw_score(aged) < yaw_score(growth_only) - 0.02
    # the step is the limit in the normalised frame, carried into the face's frame
    scale = np.hypot(*similarity(shipped.mean_shape(4), face)[0][0])
    assert np.linalg.norm(aged - growth_only) == pytest.approx(
        scale * shipped.pose.limits[0], rel=1e-3
    )


def test_a_frontal_face_keeps_its_pose(shipped: GrowthModel) -> None:
    face = turned(shipped, 4, 0.0)
    aged = shipped.age_points(face, 4, 12)
    assert np.abs(aged - shipped.age_points(face, 4, 12, pose=False)).max() < 1.0  # px
    assert lower_face_ratio(aged) > lower_face_ratio(face) + 0.05


def test_a_model_file_without_a_pose_model_ages_by_growth_alone(shipped: GrowthModel) -> None:
    plain = GrowthModel.from_json(replace(shipped, pose=None).to_json())
    face = turned(shipped, 4, 1.5)
    assert plain.pose is None
    np.testing.assert_allclose(
        plain.age_points(face, 4, 12), shipped.age_points(face, 4, 12, pose=False), atol=1e-3
    )


def test_a_growth_model_file_must_be_complete(shipped: GrowthModel) -> None:
    data = shipped.to_json()
    del data["shapes"]
    with pytest.raises(ValueError, match="not a growth model file"):
        GrowthModel.from_json(data)
    broken = shipped.to_json()
    broken["pose"]["limits"] = [-1.0, 0.2]
    with pytest.raises(ValueError, match="pose limits"):
        GrowthModel.from_json(broken)


def synthetic_faces(
    truth: GrowthModel, people: int = 40, photos: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Faces of known age: the true mean shape, a lasting per-person variation, and a
    head turn that changes from photo to photo, each photo scaled and shifted."""
    assert truth.pose is not None
    rng = np.random.default_rng(seed)
    identity_modes = rng.normal(size=(3, N_POINTS, 2)) * 0.004
    shapes, ages, subjects = [], [], []
    for person in range(people):
        lasting = np.tensordot(rng.normal(size=3), identity_modes, axes=1)
        for age in rng.uniform(0, 25, size=photos):
            turn = rng.normal(scale=0.5) * truth.pose.modes[0]
            shape = truth.mean_shape(age) + lasting + turn
            shapes.append(rng.uniform(60, 120) * shape + rng.uniform(100, 300, size=2))
            ages.append(age)
            subjects.append(f"p{person}")
    return np.stack(shapes), np.array(ages), subjects


def test_fitting_recovers_growth_and_a_pose_that_does_not_persist(shipped: GrowthModel) -> None:
    assert shipped.pose is not None
    shapes, ages, subjects = synthetic_faces(shipped)
    options = FitOptions(max_yaw_score=1.0)  # the synthetic turns are all kept
    fitted = fit_growth_model(shapes, ages, subjects, options, source="test", landmarks="test")
    assert fitted.pose is not None and fitted.version == "growth_v2"
    head_turn = abs(float((fitted.pose.modes[0] * shipped.pose.modes[0]).sum()))
    assert head_turn > 0.95
    assert abs(fitted.pose.persistence[0]) < 0.15
    assert 0.2 < fitted.pose.limits[0] < 0.6  # the 75th percentile of |N(0, 0.5)| is 0.34
    ratios = [lower_face_ratio(fitted.mean_shape(a)) for a in (1, 6, 12, 18)]
    assert ratios == sorted(ratios)


def test_fitting_needs_photos_of_one_person_for_the_pose_model(shipped: GrowthModel) -> None:
    shapes, ages, _ = synthetic_faces(shipped, people=1, photos=30)
    subjects = [f"p{i}" for i in range(len(shapes))]
    with pytest.raises(ValueError, match="two or more photos of one person"):
        fit_growth_model(shapes, ages, subjects, source="test", landmarks="test")
    plain = fit_growth_model(
        shapes, ages, subjects, FitOptions(pose_modes=0), source="test", landmarks="test"
    )
    assert plain.pose is None
