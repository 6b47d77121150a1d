"""The face-model interface every backend implements, and the data it hands back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Image = npt.NDArray[np.uint8]  # H x W x 3, BGR (OpenCV order)

# Reference positions of the five landmarks in a 112x112 chip (the ArcFace template that
# SFace and ArcFace were trained on). Order: subject's right eye, left eye, nose tip,
# right mouth corner, left mouth corner; "right" is the subject's, i.e. image left.
CHIP_SIZE = 112
REFERENCE_LANDMARKS = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


@dataclass(frozen=True)
class DetectedFace:
    """A face found by a detector: box (x, y, w, h) and five landmarks, in image pixels."""

    box: tuple[float, float, float, float]
    landmarks: FloatArray  # shape (5, 2), order as REFERENCE_LANDMARKS
    score: float

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]

    def scaled(self, sx: float, sy: float) -> DetectedFace:
        """The same face in an image resized by (sx, sy): e.g. found on a downscaled copy,
        mapped back to the full image."""
        x, y, w, h = self.box
        factors = np.array([sx, sy], dtype=np.float32)
        return DetectedFace(
            box=(x * sx, y * sy, w * sx, h * sy),
            landmarks=(np.asarray(self.landmarks, np.float32) * factors).astype(np.float32),
            score=self.score,
        )


def downscaled(image: Image, max_side: int) -> tuple[Image, float, float]:
    """The image scaled down (area interpolation) so that its longer side is at most
    ``max_side``, and the (x, y) factors from it back to ``image``; ``image`` itself and
    (1, 1) when it already fits."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image, 1.0, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    step = int(1 / scale)
    if step >= 2:  # twice as fast: whole blocks averaged first (the last < step rows and
        # columns left out), then the rest of the way; within 1 grey level of one resize
        height, width = height // step * step, width // step * step
        image = np.asarray(
            cv2.resize(
                image[:height, :width],
                (width // step, height // step),
                interpolation=cv2.INTER_AREA,
            ),
            dtype=np.uint8,
        )
    small = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    return small, width / size[0], height / size[1]


class FaceBackend(ABC):
    """One model family: a detector with five landmarks and a recogniser.

    ``embed`` returns L2-normalised float32 rows, so inner product is cosine similarity.
    """

    name: str
    model_id: str  # names the weights exactly; templates of different ids never mix
    dimension: int

    @abstractmethod
    def detect(self, image: Image) -> list[DetectedFace]:
        """All faces above the backend's detection threshold, any order."""

    @abstractmethod
    def align(self, image: Image, face: DetectedFace) -> Image:
        """The aligned chip the recogniser takes (BGR)."""

    @abstractmethod
    def embed(self, image: Image, face: DetectedFace, chip: Image) -> FloatArray:
        """One unit-length template for one face, shape (dimension,)."""


def l2_normalise(vectors: npt.NDArray[np.floating]) -> FloatArray:
    """Rows scaled to unit length (zero rows stay zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    out: FloatArray = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    return out
