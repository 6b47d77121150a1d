"""Detect -> align -> assess quality -> embed, for whichever backend was chosen."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from service.errors import FaceRejected, NoFaceFound, SeveralFaces
from service.faces.base import (
    DetectedFace,
    FaceBackend,
    FloatArray,
    Image,
    downscaled,
    l2_normalise,
)
from service.faces.quality import FaceQuality, QualityThresholds, assess

# Faces are found on a copy of the photo at most this long a side (see FacePipeline.detect).
DETECT_MAX_SIDE = 1280


@runtime_checkable
class ChipBatchEmbedder(Protocol):
    """A backend whose templates depend on the aligned chip alone, embedded several at once."""

    def embed_chips(self, chips: Sequence[Image]) -> FloatArray:
        """Unit-length templates, one row per chip, as ``embed`` gives them one by one."""
        ...


@dataclass(frozen=True)
class AnalysedFace:
    face: DetectedFace
    quality: FaceQuality
    template: FloatArray


@dataclass(frozen=True)
class FaceChoice:
    """Which face of an enrollment photo to use: by position in size order or by a box."""

    index: int | None = None
    box: tuple[float, float, float, float] | None = None


class FacePipeline:
    def __init__(
        self,
        backend: FaceBackend,
        thresholds: QualityThresholds,
        max_faces: int,
        flip: bool = False,
        fallback: Callable[[Image], list[DetectedFace]] | None = None,
        detect_max_side: int = DETECT_MAX_SIDE,
    ):
        if detect_max_side < 64:
            raise ValueError("detect_max_side must be at least 64")
        self.backend = backend
        self.thresholds = thresholds
        self.max_faces = max_faces
        self.flip = flip  # test-time augmentation: average with the mirrored chip's template
        self.fallback = fallback  # a second detector, tried when the backend's finds no face
        self.detect_max_side = detect_max_side

    @property
    def model_id(self) -> str:
        """The backend's model id; "+flip" when templates average in the mirror image, so
        templates of the two settings never mix."""
        return self.backend.model_id + ("+flip" if self.flip else "")

    def detect(self, image: Image) -> list[DetectedFace]:
        """Faces largest first, at most ``max_faces``, in ``image``'s pixels.

        Both detectors look at one copy of the photo whose longer side is at most
        ``detect_max_side`` (the photo itself when it fits), so their time and memory are
        bounded whatever the photo's size; boxes and landmarks are mapped back to the full
        image, whose pixels the chips and the quality check use."""
        small, sx, sy = downscaled(image, self.detect_max_side)
        faces = self.backend.detect(small)
        if not faces and self.fallback is not None:
            faces = self.fallback(small)
        if (sx, sy) != (1.0, 1.0):
            faces = [face.scaled(sx, sy) for face in faces]
        faces = sorted(faces, key=lambda f: f.area, reverse=True)
        return faces[: self.max_faces]

    def analyse(self, image: Image, face: DetectedFace) -> AnalysedFace:
        chip = self.backend.align(image, face)
        quality = assess(face, chip, self.thresholds)
        return AnalysedFace(face, quality, self._template(image, face, chip))

    def _template(self, image: Image, face: DetectedFace, chip: Image) -> FloatArray:
        if not self.flip:
            return self.backend.embed(image, face, chip)
        mirror = np.ascontiguousarray(chip[:, ::-1])
        if isinstance(self.backend, ChipBatchEmbedder):  # the chip and its mirror in one run
            template, flipped = self.backend.embed_chips([chip, mirror])
        else:
            template, flipped = (self.backend.embed(image, face, c) for c in (chip, mirror))
        return l2_normalise(template + flipped)

    def analyse_all(self, image: Image) -> list[AnalysedFace]:
        """Every face (for matching: poor quality is flagged, not refused)."""
        return [self.analyse(image, face) for face in self.detect(image)]

    def analyse_for_enrollment(self, image: Image, choice: FaceChoice | None) -> AnalysedFace:
        """The photo's only face, or the chosen one when it holds several. Never refused for
        its quality (a family may have no better photo): its issues are in ``quality``."""
        faces = self.detect(image)
        if not faces:
            raise NoFaceFound("no face was found in the photo")
        choice = choice or FaceChoice()
        if len(faces) > 1 and choice.index is None and choice.box is None:
            raise SeveralFaces(len(faces))
        return self.analyse(image, choose_face(faces, choice))


def choose_face(faces: list[DetectedFace], choice: FaceChoice) -> DetectedFace:
    if choice.index is not None:
        if not 0 <= choice.index < len(faces):
            raise FaceRejected(
                f"face_index {choice.index} out of range: {len(faces)} face(s) found"
            )
        return faces[choice.index]
    if choice.box is not None:
        best = max(faces, key=lambda f: iou(f.box, choice.box or f.box))
        if iou(best.box, choice.box) < 0.3:
            raise FaceRejected("no detected face overlaps the given face_box (IoU < 0.3)")
        return best
    return faces[0]


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    h = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0
