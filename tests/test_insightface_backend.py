"""InsightFaceBackend on tiny generated packs (SCRFD-shaped detector, ArcFace-shaped recogniser)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.errors import ModelUnavailable
from service.faces.base import CHIP_SIZE
from service.faces.insightface import InsightFaceBackend
from tests.images import t1_bgr
from tests.onnx_packs import (
    DET_SIZE,
    DETECTOR,
    PLANTED_BOX,
    PLANTED_LANDMARKS,
    PLANTED_SCORE,
    RECOGNISER,
    write_tiny_pack,
)


def expected_box(scale: float) -> tuple[float, float, float, float]:
    """The planted box (x, y, w, h) in an image the detector saw scaled by ``scale``."""
    x1, y1, x2, y2 = (v / scale for v in PLANTED_BOX)
    return x1, y1, x2 - x1, y2 - y1


@pytest.fixture(scope="module")
def pack_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("packs")
    write_tiny_pack(root)
    return root


@pytest.fixture(scope="module")
def backend(pack_root: Path) -> InsightFaceBackend:
    return InsightFaceBackend.from_pack(pack_root, "tinypack")


def test_pack_loads_with_identity(backend: InsightFaceBackend, tmp_path: Path) -> None:
    assert backend.name == "insightface"
    assert backend.dimension == 512
    assert re.fullmatch(r"insightface:tinypack/w600k_r50:[0-9a-f]{12}", backend.model_id)
    write_tiny_pack(tmp_path, pack_name="buffalo_l", dim=256)  # a known pack name, other weights
    other = InsightFaceBackend.from_pack(tmp_path, "buffalo_l")
    assert other.model_id.startswith("insightface:buffalo_l/w600k_r50:")
    assert other.model_id.rsplit(":", 1)[1] != backend.model_id.rsplit(":", 1)[1]


@pytest.mark.parametrize(
    "options",
    [{}, {"batched": True}, {"dynamic_input": True}],
    ids=["plain", "batch-dim", "dynamic-input"],
)
def test_detects_planted_face_on_t1(tmp_path: Path, options: dict[str, Any]) -> None:
    write_tiny_pack(tmp_path, **options)
    image = t1_bgr()  # 1280 x 886: the detector sees it at half size
    scale = DET_SIZE / image.shape[1]
    faces = InsightFaceBackend.from_pack(tmp_path, "tinypack").detect(image)
    assert len(faces) == 1
    face = faces[0]
    np.testing.assert_allclose(face.box, expected_box(scale), atol=2.0)
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
    np.testing.assert_allclose(face.landmarks, PLANTED_LANDMARKS / scale, atol=2.0)
    assert face.score == pytest.approx(PLANTED_SCORE, abs=0.01)


def test_letterbox_of_a_portrait_image(backend: InsightFaceBackend) -> None:
    image = np.full((800, 400, 3), 90, np.uint8)  # height-limited: scaled by 640 / 800
    (face,) = backend.detect(image)
    np.testing.assert_allclose(face.box, expected_box(0.8), atol=2.0)
    right_eye, left_eye, nose, right_mouth, left_mouth = face.landmarks
    assert right_eye[0] < left_eye[0] and abs(right_eye[1] - left_eye[1]) < 1.0
    assert nose[1] > right_eye[1] and right_mouth[1] > nose[1] and left_mouth[1] > nose[1]
    assert right_mouth[0] < left_mouth[0]


def test_a_small_image_is_not_enlarged(backend: InsightFaceBackend) -> None:
    image = np.full((300, 400, 3), 90, np.uint8)  # placed at its own size in the 640 input
    (face,) = backend.detect(image)
    np.testing.assert_allclose(face.box, expected_box(1.0), atol=2.0)


def test_detector_output_depends_on_input(backend: InsightFaceBackend) -> None:
    dark = backend.detect(np.zeros((640, 640, 3), np.uint8))[0].score
    bright = backend.detect(np.full((640, 640, 3), 255, np.uint8))[0].score
    assert bright > dark


def test_threshold_filters(pack_root: Path) -> None:
    strict = InsightFaceBackend.from_pack(pack_root, "tinypack", det_threshold=0.95)
    assert strict.detect(t1_bgr()) == []


def test_embed_gives_unit_vectors_that_differ(backend: InsightFaceBackend) -> None:
    image = t1_bgr()
    (face,) = backend.detect(image)
    chip = backend.align(image, face)
    assert chip.shape == (CHIP_SIZE, CHIP_SIZE, 3) and chip.dtype == np.uint8
    vector = backend.embed(image, face, chip)
    assert vector.shape == (512,) and vector.dtype == np.float32
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    np.testing.assert_array_equal(vector, backend.embed(image, face, chip.copy()))
    other = backend.embed(image, face, np.ascontiguousarray(chip[:, ::-1]))
    assert abs(float(np.linalg.norm(other)) - 1.0) < 1e-5
    assert float(vector @ other) < 0.99


def test_dimension_comes_from_the_recogniser(tmp_path: Path) -> None:
    write_tiny_pack(tmp_path, dim=256)
    backend = InsightFaceBackend.from_pack(tmp_path, "tinypack")
    assert backend.dimension == 256
    image = t1_bgr()
    (face,) = backend.detect(image)
    assert backend.embed(image, face, backend.align(image, face)).shape == (256,)


@pytest.mark.parametrize("member", [DETECTOR, RECOGNISER])
def test_tampered_file_is_refused(tmp_path: Path, member: str) -> None:
    pack = write_tiny_pack(tmp_path)
    with (pack / member).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelUnavailable, match="checksum"):
        InsightFaceBackend.from_pack(tmp_path, "tinypack")


def test_pack_without_checksums_is_refused(tmp_path: Path) -> None:
    write_tiny_pack(tmp_path, checksums=False)
    with pytest.raises(ModelUnavailable, match="SHA256SUMS"):
        InsightFaceBackend.from_pack(tmp_path, "tinypack")


def test_missing_pack_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="not found"):
        InsightFaceBackend.from_pack(tmp_path, "buffalo_l")


def test_missing_file_is_refused(tmp_path: Path) -> None:
    pack = write_tiny_pack(tmp_path)
    with pytest.raises(ModelUnavailable, match="missing"):
        InsightFaceBackend(pack / DETECTOR, pack / "absent.onnx")


def test_corrupt_model_is_refused(tmp_path: Path) -> None:
    pack = write_tiny_pack(tmp_path, checksums=False)
    (pack / RECOGNISER).write_bytes(b"not an onnx model")
    with pytest.raises(ModelUnavailable, match="cannot load"):
        InsightFaceBackend(pack / DETECTOR, pack / RECOGNISER)


def test_recogniser_with_wrong_input_is_refused(tmp_path: Path) -> None:
    write_tiny_pack(tmp_path, rec_input_size=96)
    with pytest.raises(ModelUnavailable, match=r"not an ArcFace model.*\[1, 3, 112, 112\]"):
        InsightFaceBackend.from_pack(tmp_path, "tinypack")


def test_detector_without_keypoints_is_refused(tmp_path: Path) -> None:
    write_tiny_pack(tmp_path, keypoints=False)
    with pytest.raises(ModelUnavailable, match="SCRFD model with keypoints: it has 6 outputs"):
        InsightFaceBackend.from_pack(tmp_path, "tinypack")


def test_detector_and_recogniser_swapped_are_refused(tmp_path: Path) -> None:
    pack = write_tiny_pack(tmp_path, checksums=False)
    with pytest.raises(ModelUnavailable, match="not an SCRFD model"):
        InsightFaceBackend(pack / RECOGNISER, pack / DETECTOR)
