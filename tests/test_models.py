"""Choosing and verifying models: checksums, the auto choice, the info it reports."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.errors import ModelUnavailable
from service.faces.factory import load_backend, resolve_backend_name
from service.settings import Settings
from tests.conftest import REPO
from tests.onnx_packs import write_tiny_pack


def copy_sface(target: Path) -> Path:
    shutil.copytree(REPO / "models" / "opencv-zoo", target / "opencv-zoo")
    return target


def test_a_model_file_with_a_wrong_checksum_is_refused(tmp_path: Path) -> None:
    models = copy_sface(tmp_path)
    recogniser = models / "opencv-zoo" / "face_recognition_sface_2021dec.onnx"
    with recogniser.open("r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ModelUnavailable, match="failed its checksum.*refusing to load"):
        load_backend(Settings(model_dir=models, model_backend="sface"))


def test_a_missing_model_file_says_how_to_fetch_it(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="missing.*fetch_models.py"):
        load_backend(Settings(model_dir=tmp_path, model_backend="sface"))


def test_auto_prefers_an_insightface_pack_when_present(tmp_path: Path) -> None:
    models = copy_sface(tmp_path)
    settings = Settings(model_dir=models, model_backend="auto", insightface_pack="tinypack")
    assert resolve_backend_name(settings) == "sface"
    assert load_backend(settings).model_id.startswith("sface:")
    write_tiny_pack(models, pack_name="tinypack")
    assert resolve_backend_name(settings) == "insightface"
    backend = load_backend(settings)
    assert backend.model_id.startswith("insightface:tinypack/w600k_r50:")
    assert backend.dimension == 512


def test_unknown_backend_name_fails_at_settings() -> None:
    with pytest.raises(ValueError):
        Settings(model_backend="facenet")  # type: ignore[arg-type]


def test_info_reports_backend_and_model(client) -> None:  # type: ignore[no-untyped-def]
    info = client.get("/v1/info").json()
    assert info["model_backend"] == "sface" and info["dimension"] == 128
    assert info["model_id"] == "sface:face_recognition_sface_2021dec:0ba9fbfa01b5+flip"
    assert info["template_transform"] == "sface-flip-wccn-v1"


def test_hog_fallback_finds_faces_the_backend_misses(sface_backend) -> None:  # type: ignore[no-untyped-def]
    """When the backend's detector finds nothing, dlib's HOG detector is tried, and its
    five landmarks align the chip well enough that the template is still this person's."""
    import numpy as np

    from service.faces.base import FaceBackend
    from service.faces.dlib_backend import HogFaceDetector
    from service.faces.pipeline import FacePipeline
    from service.faces.quality import QualityThresholds
    from tests.faces_of_t1 import face_crop

    class Blind(FaceBackend):  # the real SFace model with a detector that sees nothing
        name, model_id, dimension = "blind", sface_backend.model_id, sface_backend.dimension

        def detect(self, image):  # type: ignore[no-untyped-def]
            return []

        def align(self, image, face):  # type: ignore[no-untyped-def]
            return sface_backend.align(image, face)

        def embed(self, image, face, chip):  # type: ignore[no-untyped-def]
            return sface_backend.embed(image, face, chip)

    thresholds = QualityThresholds(40, 10, 65)
    normal = FacePipeline(sface_backend, thresholds, 10)
    others = [normal.analyse_all(face_crop(i))[0].template for i in range(1, 6)]
    photo = face_crop(0)
    (own,) = normal.analyse_all(photo)
    assert FacePipeline(Blind(), thresholds, 10).analyse_all(photo) == []
    (found,) = FacePipeline(Blind(), thresholds, 10, fallback=HogFaceDetector()).analyse_all(photo)
    same = float(np.dot(found.template, own.template))
    assert same > 0.5 and same > max(float(np.dot(found.template, o)) for o in others) + 0.3
