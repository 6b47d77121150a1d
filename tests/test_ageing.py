"""Age progression (service/ageing) on real photos, with dlib's real 68-point model."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from service.ageing import AgeProgressor, Progression, age_photo, contact_sheet
from service.ageing.growth import DEFAULT_MODEL_FILE, load_growth_model
from service.ageing.shapes import inter_ocular, lower_face_ratio
from service.ageing.warp import warp_image
from service.errors import FaceRejected, InvalidInput, NoFaceFound
from service.faces.base import FaceBackend
from service.faces.factory import build_pipeline
from service.faces.pipeline import FacePipeline
from service.settings import Settings
from tests.conftest import REPO
from tests.faces_of_t1 import blank_photo
from tests.images import astronaut_bgr, t1_bgr

CORNER = 48  # px: a square at each corner of the 512 px astronaut, far from her face


@pytest.fixture(scope="module")
def progressor() -> AgeProgressor:
    return AgeProgressor()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return astronaut_bgr()


@pytest.fixture(scope="module")
def aged_4_to_10_12(progressor: AgeProgressor, astronaut: np.ndarray) -> Progression:
    return progressor.progress(astronaut, 4, [10, 12])


@pytest.fixture(scope="module")
def pipeline(sface_backend: FaceBackend) -> FacePipeline:
    return build_pipeline(Settings(model_dir=REPO / "models"), backend=sface_backend)


def test_one_output_per_target_age_at_the_input_size(
    aged_4_to_10_12: Progression, astronaut: np.ndarray
) -> None:
    assert [a.age for a in aged_4_to_10_12.aged] == [10, 12]
    for aged in aged_4_to_10_12.aged:
        assert aged.image.shape == astronaut.shape
        assert aged.image.dtype == np.uint8
        assert not np.array_equal(aged.image, astronaut)


def test_background_far_from_the_face_is_unchanged(
    aged_4_to_10_12: Progression, astronaut: np.ndarray
) -> None:
    image = aged_4_to_10_12.aged[-1].image
    for rows in (slice(0, CORNER), slice(-CORNER, None)):
        for cols in (slice(0, CORNER), slice(-CORNER, None)):
            assert np.array_equal(image[rows, cols], astronaut[rows, cols])
    changed_rows = np.nonzero(np.any(image != astronaut, axis=(1, 2)))[0]
    x, y, w, h = aged_4_to_10_12.box
    assert changed_rows.min() > y - 2 * h and changed_rows.max() < y + 3 * h


def test_the_aged_face_has_a_longer_lower_face(
    progressor: AgeProgressor, aged_4_to_10_12: Progression
) -> None:
    """dlib, run again on the aged photo, finds what the growth model asked for: the
    chin further from the eyes relative to the eye distance."""
    source = aged_4_to_10_12.landmarks
    aged = aged_4_to_10_12.aged[-1]
    found = progressor.detector.landmarks(aged.image, aged_4_to_10_12.box)
    asked = lower_face_ratio(aged.landmarks) - lower_face_ratio(source)
    got = lower_face_ratio(found) - lower_face_ratio(source)
    assert asked > 0.03
    assert got > 0.5 * asked
    assert abs(inter_ocular(found) - inter_ocular(aged.landmarks)) < 0.05 * inter_ocular(source)


def test_the_aged_photo_is_the_same_person(
    pipeline: FacePipeline, aged_4_to_10_12: Progression, astronaut: np.ndarray
) -> None:
    def template(image: np.ndarray) -> np.ndarray:
        return pipeline.analyse(image, pipeline.detect(image)[0]).template

    aged = aged_4_to_10_12.aged[0].image  # aged to 10
    assert float(template(astronaut) @ template(aged)) > 0.8


def test_the_module_function_and_sex(astronaut: np.ndarray) -> None:
    """``sex`` is accepted and, with no sex-specific shapes fitted, gives the mean model."""
    (unknown,) = age_photo(astronaut, 6, [9])
    (female,) = age_photo(astronaut, 6, [9], sex="female")
    assert np.array_equal(unknown, female)


@pytest.mark.parametrize(
    ("age_at_photo", "targets", "words"),
    [
        (8, [8], "above the age at photo"),
        (8, [12, 6], "above the age at photo"),
        (21, [24], "age at photo must be 0 to 20"),
        (-1, [5], "age at photo must be 0 to 20"),
        (10, [26], "at most 25"),
        (10, [], "at least one target age"),
    ],
)
def test_ages_outside_the_model_are_refused(
    progressor: AgeProgressor,
    astronaut: np.ndarray,
    age_at_photo: float,
    targets: list[float],
    words: str,
) -> None:
    with pytest.raises(InvalidInput, match=words):
        progressor.progress(astronaut, age_at_photo, targets)


def test_unknown_sex_and_non_images_are_refused(
    progressor: AgeProgressor, astronaut: np.ndarray
) -> None:
    with pytest.raises(InvalidInput, match="sex"):
        progressor.progress(astronaut, 4, [10], sex="other")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="colour"):
        progressor.progress(astronaut[:, :, 0], 4, [10])


def test_a_photo_without_a_face(progressor: AgeProgressor) -> None:
    blank = cv2.imdecode(np.frombuffer(blank_photo(), np.uint8), cv2.IMREAD_COLOR)
    with pytest.raises(NoFaceFound):
        progressor.progress(blank, 4, [10])


def test_several_faces_need_a_choice(progressor: AgeProgressor) -> None:
    with pytest.raises(FaceRejected, match="6 faces") as refused:
        progressor.progress(t1_bgr(), 4, [10])
    assert refused.value.reason == "several_faces"
    with pytest.raises(FaceRejected, match="out of range"):
        progressor.progress(t1_bgr(), 4, [10], face_index=6)


def test_a_face_chosen_by_index(progressor: AgeProgressor) -> None:
    result = progressor.progress(t1_bgr(), 8, [12], face_index=0)
    boxes = progressor.detector.detect(t1_bgr())
    assert result.box == boxes[0]
    assert result.aged[0].image.shape == t1_bgr().shape


def test_the_shipped_model_file() -> None:
    data = json.loads(DEFAULT_MODEL_FILE.read_text())
    assert data["version"] == "growth_v2"
    assert data["ages"] == list(range(26))
    assert np.asarray(data["shapes"]).shape == (26, 68, 2)
    assert {"source", "method", "fitted", "sex_specific"} <= set(data)
    assert np.asarray(data["pose"]["modes"]).shape == (2, 68, 2)
    assert all(0 <= p < 0.5 for p in data["pose"]["persistence"])  # pose hardly persists
    assert DEFAULT_MODEL_FILE.stat().st_size < 100_000


def test_mean_faces_lengthen_with_age() -> None:
    model = load_growth_model()
    ratios = [lower_face_ratio(model.mean_shape(age)) for age in (2, 6, 10, 14, 18)]
    assert ratios == sorted(ratios)
    assert ratios[-1] > 1.08 * ratios[0]


def test_a_warp_that_moves_nothing_is_the_identity(astronaut: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(150, 350, size=(68, 2))
    assert np.array_equal(warp_image(astronaut, points, points), astronaut)


def test_contact_sheet(astronaut: np.ndarray) -> None:
    sheet = contact_sheet([astronaut, astronaut[:, :256]], ["6", "10"], height=128)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3
    assert 128 < sheet.shape[0] < 200
    assert sheet.shape[1] > 128 + 64
    with pytest.raises(ValueError, match="one label per image"):
        contact_sheet([astronaut], ["6", "10"])
