"""The default backend: OpenCV Zoo's YuNet detector and SFace recogniser (128-D)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from service.faces.align import align_chip
from service.faces.base import DetectedFace, FaceBackend, FloatArray, Image, l2_normalise
from service.faces.model_files import sha256_file
from service.faces.onnx import batch_size_free, cpu_session

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
        self._new_detector = functools.partial(
            cv2.FaceDetectorYN.create, str(detector), "", (320, 320), score_threshold, 0.3, 5000
        )
        # YuNet keeps its input size as state: one per thread, so detections never queue
        self._detectors = threading.local()
        self._detectors.yunet = self._new_detector()  # a bad file fails here, at start-up
        self._recogniser = cpu_session(recogniser, threads, dynamic_batch=True)
        self._input_name = self._recogniser.get_inputs()[0].name
        self._batched = batch_size_free(self._recogniser)
        self.model_id = f"sface:{recogniser.stem}:{sha256_file(recogniser)[:12]}"

    def detect(self, image: Image) -> list[DetectedFace]:
        scale = min(1.0, self.max_side / max(image.shape[:2]))
        small = (
            image
            if scale == 1.0
            else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        )
        detector = self._detector()
        detector.setInputSize((small.shape[1], small.shape[0]))
        _, rows = detector.detect(small)
        if rows is None:
            return []
        return [_face_from_row(row, scale) for row in rows]

    def align(self, image: Image, face: DetectedFace) -> Image:
        return align_chip(image, face.landmarks)

    def embed(self, image: Image, face: DetectedFace, chip: Image) -> FloatArray:
        template: FloatArray = self.embed_chips([chip])[0]
        return template

    def embed_chips(self, chips: Sequence[Image]) -> FloatArray:
        """Unit-length templates of aligned chips, one row each, in one run when the graph
        takes a batch (a face and its mirror: one call instead of two)."""
        # SFace takes RGB in 0..255; its graph normalises internally.
        blob = np.stack([chip[:, :, ::-1].transpose(2, 0, 1) for chip in chips]).astype(np.float32)
        if self._batched:
            outputs = [self._recogniser.run(None, {self._input_name: blob})[0]]
        else:
            outputs = [self._recogniser.run(None, {self._input_name: row[None]})[0] for row in blob]
        return l2_normalise(np.concatenate(outputs).reshape(len(chips), self.dimension))

    def _detector(self) -> cv2.FaceDetectorYN:
        detector: cv2.FaceDetectorYN | None = getattr(self._detectors, "yunet", None)
        if detector is None:
            detector = self._detectors.yunet = self._new_detector()
        return detector


def _face_from_row(row: FloatArray, scale: float) -> DetectedFace:
    """One YuNet output row: x, y, w, h, five (x, y) landmarks, score; mapped back to full size."""
    geometry = np.asarray(row[:14], dtype=np.float32) / np.float32(scale)
    x, y, w, h = (float(v) for v in geometry[:4])
    return DetectedFace(
        box=(x, y, w, h), landmarks=geometry[4:14].reshape(5, 2), score=float(row[14])
    )
