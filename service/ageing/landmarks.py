"""Faces and their 68 landmarks with dlib: the HOG detector and the 68-point shape predictor
of ``face_recognition_models``. The models are the process's shared ones
(``service.faces.dlib_backend.shared_models``), loaded on first use, once; dlib objects are
not thread-safe, so every call into them holds the shared models' lock."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from service.ageing.shapes import N_POINTS, Points
from service.faces.base import Image
from service.faces.dlib_backend import region_around, shared_models

Box = tuple[int, int, int, int]  # x, y, width, height in image pixels


class LandmarkDetector:
    """dlib HOG face detection and 68-point landmarks.

    Detection runs on a copy scaled down to ``max_side`` pixels (HOG's cost grows with the
    pixel count). It looks at the photo as it is first (faces from about 80 px) and only
    when that finds nothing upsamples it, up to ``max_upsample`` doublings: upsampling finds
    smaller faces but also more false ones (e.g. on skimage's astronaut, a second "face" on
    the suit). Landmarks are placed on the full-resolution image.
    """

    def __init__(self, *, max_upsample: int = 1, max_side: int = 1024) -> None:
        if max_upsample < 0 or max_side < 64:
            raise ValueError("max_upsample must be >= 0 and max_side >= 64")
        self.max_upsample = max_upsample
        self.max_side = max_side

    def detect(self, image: Image) -> list[Box]:
        """Face boxes, largest first."""
        scale = min(1.0, self.max_side / max(image.shape[:2]))
        small = image if scale == 1.0 else _resized(image, scale)
        rgb = np.ascontiguousarray(small[:, :, ::-1])
        rects: list[Any] = []
        models = shared_models()
        with models.lock:
            for upsample in range(self.max_upsample + 1):
                rects = list(models.detector(rgb, upsample))
                if rects:
                    break
        boxes = [_box(rect, scale) for rect in rects]
        return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)

    def landmarks(self, image: Image, box: Box) -> Points:
        """The 68 landmarks (x, y) of the face in ``box``, placed on the full-resolution
        pixels around the box (only that part of the photo is converted for dlib)."""
        x, y, w, h = (round(v) for v in box)
        region, left, top = region_around(image, (x, y, w, h))
        rgb = np.asarray(cv2.cvtColor(region, cv2.COLOR_BGR2RGB), dtype=np.uint8)
        x, y = x - left, y - top
        models = shared_models()
        with models.lock:
            shape = models.sixty_eight(rgb, models.dlib.rectangle(x, y, x + w - 1, y + h - 1))
            points = np.array([(p.x + left, p.y + top) for p in shape.parts()], dtype=np.float64)
        if points.shape != (N_POINTS, 2):
            raise RuntimeError(f"the shape predictor gave {points.shape}, expected 68 points")
        return points


def _resized(image: Image, scale: float) -> Image:
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def _box(rect: Any, scale: float) -> Box:
    """A dlib rectangle (inclusive corners) found at ``scale``, in full-image pixels."""
    left, top = rect.left() / scale, rect.top() / scale
    width, height = (
        (rect.right() - rect.left() + 1) / scale,
        (rect.bottom() - rect.top() + 1) / scale,
    )
    return round(left), round(top), round(width), round(height)
