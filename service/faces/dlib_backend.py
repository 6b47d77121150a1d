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
import math
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import cv2
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
# The HOG detector scans at most this many pixels, upsampling included (a 1280x960 photo
# upsampled once): well under a second on one core, whatever the photo's size.
HOG_MAX_PIXELS = 2560 * 1920

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
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def region_around(
    image: Image, box: tuple[float, float, float, float], margin: float = 1.0
) -> tuple[Image, int, int]:
    """The part of ``image`` within ``margin`` box sizes of the box (a view), and its
    top-left corner: what dlib's shape predictors and chips read of a face, so that they
    need not convert the whole photo."""
    x, y, w, h = box
    pad = margin * max(w, h)
    height, width = image.shape[:2]
    left, top = max(0, int(x - pad)), max(0, int(y - pad))
    right, bottom = min(width, int(np.ceil(x + w + pad))), min(height, int(np.ceil(y + h + pad)))
    if right <= left or bottom <= top:  # the box is off the image: nothing to crop to
        return image, 0, 0
    return image[top:bottom, left:right], left, top


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
    construction only checks that they are installed (ModelUnavailable if not).

    HOG's time grows with the pixels it scans, so the image it scans is bounded: at most
    ``max_pixels`` after upsampling. An image small enough is upsampled ``upsample``
    times by dlib as ever; a larger one is resized to ``max_pixels`` (down, or up by less
    than the full factor) and scanned as it is, and the faces mapped back to the image's
    pixels."""

    def __init__(self, *, upsample: int = 1, max_pixels: int = HOG_MAX_PIXELS) -> None:
        if upsample < 0:
            raise ValueError("upsample must be >= 0")
        if max_pixels < 80 * 80:
            raise ValueError("max_pixels must be at least 80x80 (HOG's window)")
        check_available()
        self.upsample = upsample
        self.max_pixels = max_pixels

    def __call__(self, image: Image) -> list[DetectedFace]:
        models = shared_models()
        height, width = image.shape[:2]
        upsample, scale = scan_plan(height, width, self.upsample, self.max_pixels)
        if scale != 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            shrink = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            image = np.asarray(cv2.resize(image, size, interpolation=shrink), dtype=np.uint8)
        rgb = _to_rgb(image)
        with models.lock:
            rects, scores, _ = models.detector.run(rgb, upsample, 0)
            found = []
            for rect, score in zip(rects, scores, strict=True):
                box = _clipped_box(rect, rgb.shape[1], rgb.shape[0])
                shape = models.sixty_eight(rgb, _rect(models.dlib, box))
                found.append(
                    DetectedFace(
                        box=box, landmarks=five_landmarks(_shape_points(shape)), score=float(score)
                    )
                )
        if scale == 1.0:
            return found
        sx, sy = width / rgb.shape[1], height / rgb.shape[0]
        return [face.scaled(sx, sy) for face in found]


def scan_plan(height: int, width: int, upsample: int, max_pixels: int) -> tuple[int, float]:
    """How HOG scans a height x width image within ``max_pixels``: (dlib's upsampling, the
    scale to resize the image by first). (upsample, 1.0) when upsampling fits, else no
    upsampling and the scale that makes the image ``max_pixels``."""
    if (height * width) << (2 * upsample) <= max_pixels:
        return upsample, 1.0
    return 0, math.sqrt(max_pixels / (height * width))


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
        region, left, top = region_around(image, face.box)
        x, y, w, h = face.box
        chip_rgb = self._chip_rgb(_to_rgb(region), (x - left, y - top, w, h))
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
