"""Age progression of a photo: find the face, move its landmarks with the growth model,
warp the photo to match. Output images have the input's size, up to ``max_side`` pixels
on the longer side (a larger photo is aged on a copy scaled down to that); only the face
and its surroundings inside a ring of fixed points change."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from service.ageing.growth import SEXES, GrowthModel, Sex, load_growth_model
from service.ageing.landmarks import Box, LandmarkDetector
from service.ageing.shapes import Points
from service.ageing.warp import WarpOptions, warp_image
from service.errors import FaceRejected, InvalidInput, NoFaceFound
from service.faces.base import Image, downscaled

logger = logging.getLogger(__name__)

MAX_AGE_AT_PHOTO = 20.0
MAX_TARGET_AGE = 25.0
# Photos are aged at most this many pixels on the longer side. The warp's time and memory
# grow with the face's pixels and every aged photo is a whole copy, so without a bound a
# 40 MP close-up took seconds per target age and a gigabyte; a larger photo is aged on a
# copy scaled down to this size.
AGEING_MAX_SIDE = 1280


@dataclass(frozen=True)
class AgedFace:
    age: float
    image: Image
    landmarks: Points  # where the growth model put the landmarks (image pixels)


@dataclass(frozen=True)
class Progression:
    box: Box
    landmarks: Points  # the source face's landmarks
    aged: list[AgedFace]
    scale: float = 1.0  # aged photos' size over the input's: below 1 for a photo over max_side


class AgeProgressor:
    """Ages the face in a photo. Holds the growth model and the (lazily loaded) dlib
    models; safe to share between threads. Photos larger than ``max_side`` pixels on the
    longer side are aged on a copy scaled down to it (boxes and landmarks are then in the
    copy's pixels, and ``Progression.scale`` says by how much)."""

    def __init__(
        self,
        model: GrowthModel | None = None,
        detector: LandmarkDetector | None = None,
        warp: WarpOptions | None = None,
        *,
        max_side: int = AGEING_MAX_SIDE,
    ) -> None:
        if max_side < 64:
            raise ValueError("max_side must be at least 64")
        self.model = model or load_growth_model()
        self.detector = detector or LandmarkDetector()
        self.warp = warp or WarpOptions()
        self.max_side = max_side

    def progress(
        self,
        image: Image,
        age_at_photo: float,
        target_ages: Sequence[float],
        *,
        sex: Sex | None = None,
        face_index: int | None = None,
        face_box: Box | None = None,
    ) -> Progression:
        """The face (``face_box`` in ``image``'s pixels, else the detected face
        ``face_index`` in size order, else the only face) aged to each target age."""
        check_request(image, age_at_photo, target_ages, sex)
        if face_box is not None and (face_box[2] <= 0 or face_box[3] <= 0):
            raise InvalidInput(f"face_box needs a positive width and height, got {face_box}")
        image, sx, sy = downscaled(image, self.max_side)
        if face_box is not None and (sx, sy) != (1.0, 1.0):
            x, y, w, h = face_box
            face_box = round(x / sx), round(y / sy), max(1, round(w / sx)), max(1, round(h / sy))
        box = face_box or self.choose_face(image, face_index)
        points = self.detector.landmarks(image, box)
        aged = [self._aged(image, points, age_at_photo, age, sex) for age in target_ages]
        logger.info("aged a face from %s to %s years", age_at_photo, list(target_ages))
        return Progression(box=box, landmarks=points, aged=aged, scale=1.0 / sx)

    def choose_face(self, image: Image, face_index: int | None) -> Box:
        boxes = self.detector.detect(image)
        return boxes[face_to_age(len(boxes), face_index)]

    def _aged(
        self, image: Image, points: Points, source_age: float, target_age: float, sex: Sex | None
    ) -> AgedFace:
        target = self.model.age_points(points, source_age, target_age, sex)
        return AgedFace(target_age, warp_image(image, points, target, self.warp), target)


def face_to_age(found: int, face_index: int | None) -> int:
    """Which of ``found`` faces (ordered by size) to age: the chosen one, else the only one.
    Raises NoFaceFound or FaceRejected with the reason."""
    if found == 0:
        raise NoFaceFound("no face was found in the photo")
    if face_index is None:
        if found > 1:
            raise FaceRejected(
                f"{found} faces were found; choose one with face_index "
                "(0 is the largest, faces ordered by size)",
                reason="several_faces",
            )
        return 0
    if not 0 <= face_index < found:
        raise FaceRejected(f"face_index {face_index} out of range: {found} face(s) found")
    return face_index


def check_request(
    image: Image, age_at_photo: float, target_ages: Sequence[float], sex: str | None
) -> None:
    """Raises InvalidInput, with the reason, for anything the model cannot do."""
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3):
        raise InvalidInput("the photo must be an 8-bit colour (BGR) image")
    if image.shape[2] != 3 or min(image.shape[:2]) < 16:
        raise InvalidInput(f"the photo must be BGR and at least 16 px a side, got {image.shape}")
    if not 0 <= age_at_photo <= MAX_AGE_AT_PHOTO:
        raise InvalidInput(
            f"age at photo must be 0 to {MAX_AGE_AT_PHOTO:g} years, got {age_at_photo:g}"
        )
    if not target_ages:
        raise InvalidInput("give at least one target age")
    for age in target_ages:
        if not age_at_photo < age <= MAX_TARGET_AGE:
            raise InvalidInput(
                f"target age {age:g} must be above the age at photo ({age_at_photo:g}) "
                f"and at most {MAX_TARGET_AGE:g} years"
            )
    if sex is not None and sex not in SEXES:
        raise InvalidInput(f"sex must be one of {', '.join(SEXES)} or omitted, got {sex!r}")


@cache
def default_progressor() -> AgeProgressor:
    """One shared progressor with the shipped growth model, built on first use."""
    return AgeProgressor()


def age_photo(
    image: Image,
    age_at_photo: float,
    target_ages: Sequence[float],
    *,
    sex: Sex | None = None,
    face_index: int | None = None,
    face_box: Box | None = None,
) -> list[Image]:
    """The photo's face aged to each of ``target_ages`` (years), one image per target age,
    each the size of the input.

    Raises InvalidInput (bad ages, sex or image), NoFaceFound, FaceRejected (several faces
    and no ``face_index``, or an index out of range).
    """
    result = default_progressor().progress(
        image, age_at_photo, target_ages, sex=sex, face_index=face_index, face_box=face_box
    )
    return [aged.image for aged in result.aged]
