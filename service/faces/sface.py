"""The default backend: OpenCV Zoo's YuNet detector and SFace recogniser (128-D)."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from service.faces.align import align_chip
from service.faces.base import DetectedFace, FaceBackend, FloatArray, Image, l2_normalise
from service.faces.model_files import sha256_file
from service.faces.onnx import cpu_session

# YuNet is run at most this many pixels on its longer side (by default; the pipeline
# hands it a copy no larger than its own bound); faces are found on the downscaled copy
# and mapped back, which keeps detection time flat for large photos.
DETECT_MAX_SIDE = 1280


class SFaceBackend(FaceBackend):
    name = "sface"
    dimension = 128

    def __init__(
        self,
        detector: Path,
        recogniser: Path,
        *,
        threads: int = 1,
        score_threshold: float = 0.6,
        max_side: int = DETECT_MAX_SIDE,
    ) -> None:
        self.max_side = max_side
        # errors only: OpenCV 5 warns about DNN targets it ignores
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        self._detector = cv2.FaceDetectorYN.create(
            str(detector), "", (320, 320), score_threshold, 0.3, 5000
        )
        self._detector_lock = threading.Lock()  # YuNet keeps its input size as state
        self._recogniser: ort.InferenceSession = cpu_session(recogniser, threads)
        self._input_name = self._recogniser.get_inputs()[0].name
        self.model_id = f"sface:{recogniser.stem}:{sha256_file(recogniser)[:12]}"

    def detect(self, image: Image) -> list[DetectedFace]:
        scale = min(1.0, self.max_side / max(image.shape[:2]))
        small = (
            image
            if scale == 1.0
            else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        )
        with self._detector_lock:
            self._detector.setInputSize((small.shape[1], small.shape[0]))
            _, rows = self._detector.detect(small)
        if rows is None:
            return []
        return [_face_from_row(row, scale) for row in rows]

    def align(self, image: Image, face: DetectedFace) -> Image:
        return align_chip(image, face.landmarks)

    def embed(self, image: Image, face: DetectedFace, chip: Image) -> FloatArray:
        # SFace takes RGB in 0..255; its graph normalises internally.
        blob = chip[:, :, ::-1].astype(np.float32).transpose(2, 0, 1)[None]
        (output,) = self._recogniser.run(None, {self._input_name: blob})
        return l2_normalise(np.asarray(output, dtype=np.float32).reshape(-1))


def _face_from_row(row: FloatArray, scale: float) -> DetectedFace:
    """One YuNet output row: x, y, w, h, five (x, y) landmarks, score; mapped back to full size."""
    geometry = np.asarray(row[:14], dtype=np.float32) / np.float32(scale)
    x, y, w, h = (float(v) for v in geometry[:4])
    return DetectedFace(
        box=(x, y, w, h), landmarks=geometry[4:14].reshape(5, 2), score=float(row[14])
    )
