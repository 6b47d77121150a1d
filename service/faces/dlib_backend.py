"""dlib's face pipeline: HOG detector, 5-point alignment and the ResNet 128-d descriptor.

The weights come from the ``face_recognition_models`` package. The descriptor is computed on
dlib's own aligned 150x150 chip (``get_face_chip`` from the 5-point shape), as dlib intends;
the 68-point predictor is used only to report the five canonical landmarks.

The HOG detector and the 68-point predictor are shared by everything in the process that
uses them (the fallback detector, the dlib backend, age progression): ``shared_models()``
loads them once, on first use. dlib objects are not thread-safe, so every call into a dlib
object here or in ``service.ageing.landmarks`` holds the one ``DLIB_LOCK``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import ModelUnavailable
from service.faces.base import DetectedFace, FaceBackend, FloatArray, Image, l2_normalise
from service.faces.model_files import sha256_file

logger = logging.getLogger(__name__)

CHIP_SIZE = 150
CHIP_PADDING = 0.25
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
FIVE_POINT_FILE = "shape_predictor_5_face_landmarks.dat"
SIXTY_EIGHT_POINT_FILE = "shape_predictor_68_face_landmarks.dat"

# Indices into dlib's 68-point layout (iBUG 300-W). Points 36-41 outline the image-left eye,
# which is the subject's right eye; 48 and 54 are the image-left and image-right mouth corners.
_RIGHT_EYE = slice(36, 42)
_LEFT_EYE = slice(42, 48)
_NOSE_TIP = 30
_MOUTH_RIGHT = 48
_MOUTH_LEFT = 54


# Held by every call into a dlib object (the shared models and the dlib backend's own): the
# objects are not thread-safe, and the shared ones are used from several places at once.
DLIB_LOCK = threading.Lock()
_LOAD_LOCK = threading.Lock()  # for loading the shared models, once

_NO_DLIB = (
    "dlib features (fallback detector, age progression, dlib backend) need the `dlib` "
    "module (install the dlib-bin wheel)"
)


def _import_dlib() -> Any:
    try:
        return importlib.import_module("dlib")
    except ImportError as exc:
        raise ModelUnavailable(_NO_DLIB) from exc


def check_available() -> None:
    """Raises ModelUnavailable if the shared models could not load, without loading them
    (the module is found, not imported; the weights file is found, not read)."""
    if importlib.util.find_spec("dlib") is None:
        raise ModelUnavailable(_NO_DLIB)
    model_file(SIXTY_EIGHT_POINT_FILE)


@dataclass(frozen=True)
class DlibModels:
    """dlib's models shared in the process. Call them only with ``lock`` held."""

    dlib: Any  # the module
    detector: Any  # the HOG frontal face detector
    sixty_eight: Any  # the 68-point shape predictor
    lock: threading.Lock


_shared: DlibModels | None = None


def shared_models() -> DlibModels:
    """The process's HOG detector and 68-point predictor, loaded on the first call (~2 s)."""
    global _shared
    models = _shared
    if models is None:
        with _LOAD_LOCK:
            models = _shared
            if models is None:
                dlib = _import_dlib()
                predictor = dlib.shape_predictor(str(model_file(SIXTY_EIGHT_POINT_FILE)))
                models = DlibModels(dlib, dlib.get_frontal_face_detector(), predictor, DLIB_LOCK)
                _shared = models
                logger.info("dlib HOG detector and 68-point predictor loaded")
    return models


def model_file(name: str) -> Path:
    """A weights file of the installed ``face_recognition_models`` package.

    Found from the package's location rather than its helpers, which need pkg_resources.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            "dlib features (fallback detector, age progression, dlib backend) need the "
            "`face_recognition_models` package (dlib's weights); install face-recognition-models"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise ModelUnavailable(
            f"dlib model file {path} is missing; reinstall face-recognition-models"
        )
    return path


@cache
def _file_digest(path: Path) -> str:
    return sha256_file(path)


def descriptor_model_id(path: Path) -> str:
    """Names the ResNet weights exactly: its file name and the start of its sha256."""
    return f"dlib:{path.stem}:{_file_digest(path)[:12]}"


def _to_rgb(image: Image) -> Image:
    return np.ascontiguousarray(image[:, :, ::-1])


def _clipped_box(rect: Any, width: int, height: int) -> tuple[float, float, float, float]:
    """A dlib rectangle (inclusive corners) as (x, y, w, h) clipped to the image."""
    left, top = max(int(rect.left()), 0), max(int(rect.top()), 0)
    right, bottom = min(int(rect.right()), width - 1), min(int(rect.bottom()), height - 1)
    return float(left), float(top), float(right - left + 1), float(bottom - top + 1)


def _shape_points(shape: Any) -> FloatArray:
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def five_landmarks(points68: FloatArray) -> FloatArray:
    """The five canonical landmarks from dlib's 68, in REFERENCE_LANDMARKS order."""
    return np.stack(
        [
            points68[_RIGHT_EYE].mean(axis=0),
            points68[_LEFT_EYE].mean(axis=0),
            points68[_NOSE_TIP],
            points68[_MOUTH_RIGHT],
            points68[_MOUTH_LEFT],
        ]
    ).astype(np.float32)


class HogFaceDetector:
    """dlib's HOG detector with the 68-point landmarks reduced to the five canonical ones.
    The dlib backend's detector, and the fallback of the others when their detector finds
    no face (dlib finds some small, old or blurred children's faces that YuNet misses).

    The models are the process's shared ones (``shared_models``), loaded by the first call;
    construction only checks that they are installed (ModelUnavailable if not)."""

    def __init__(self, *, upsample: int = 1) -> None:
        if upsample < 0:
            raise ValueError("upsample must be >= 0")
        check_available()
        self.upsample = upsample

    def __call__(self, image: Image) -> list[DetectedFace]:
        models = shared_models()
        rgb = _to_rgb(image)
        height, width = rgb.shape[:2]
        with models.lock:
            rects, scores, _ = models.detector.run(rgb, self.upsample, 0)
            faces = []
            for rect, score in zip(rects, scores, strict=True):
                box = _clipped_box(rect, width, height)
                shape = models.sixty_eight(rgb, _rect(models.dlib, box))
                faces.append(
                    DetectedFace(
                        box=box, landmarks=five_landmarks(_shape_points(shape)), score=float(score)
                    )
                )
        return faces


class DlibBackend(FaceBackend):
    """dlib HOG detection + ResNet descriptor; unit-length 128-d float32 templates.

    Its own 5-point predictor and descriptor load at construction (it is the configured
    backend); detection uses the shared models, loaded on the first detection. All calls
    hold the shared ``DLIB_LOCK``.
    """

    name = "dlib"
    dimension = 128

    def __init__(self, *, upsample: int = 1) -> None:
        self.upsample = upsample
        self._faces = HogFaceDetector(upsample=upsample)
        self._dlib = _import_dlib()
        descriptor_path = model_file(DESCRIPTOR_FILE)
        self._five = self._dlib.shape_predictor(str(model_file(FIVE_POINT_FILE)))
        self._facerec = self._dlib.face_recognition_model_v1(str(descriptor_path))
        self.model_id = descriptor_model_id(descriptor_path)
        self._lock = DLIB_LOCK
        logger.info("dlib backend loaded (%s, upsample=%d)", self.model_id, upsample)

    def detect(self, image: Image) -> list[DetectedFace]:
        return self._faces(image)

    def align(self, image: Image, face: DetectedFace) -> Image:
        chip_rgb = self._chip_rgb(_to_rgb(image), face.box)
        return np.ascontiguousarray(chip_rgb[:, :, ::-1])

    def embed(self, image: Image, face: DetectedFace, chip: Image) -> FloatArray:
        """The descriptor of the aligned chip from ``align`` (``image`` and ``face`` unused)."""
        if chip.shape[:2] != (CHIP_SIZE, CHIP_SIZE):
            raise ValueError(f"dlib needs its own {CHIP_SIZE}x{CHIP_SIZE} chip, got {chip.shape}")
        with self._lock:
            descriptor = self._facerec.compute_face_descriptor(_to_rgb(chip))
        vector = np.asarray(descriptor, dtype=np.float32).reshape(self.dimension)
        return l2_normalise(vector)

    def _chip_rgb(self, rgb: Image, box: tuple[float, float, float, float]) -> Image:
        with self._lock:
            shape = self._five(rgb, _rect(self._dlib, box))
            chip = self._dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        return np.asarray(chip, dtype=np.uint8)


def _rect(dlib: Any, box: tuple[float, float, float, float]) -> Any:
    x, y, w, h = box
    left, top = int(round(x)), int(round(y))
    return dlib.rectangle(left, top, left + int(round(w)) - 1, top + int(round(h)) - 1)
