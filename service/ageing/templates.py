"""Aged templates: a case photo aged to the child's expected age today (and two years
either side), embedded like any photo and enrolled beside the original as kind ``aged``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from service.ageing.growth import Sex
from service.ageing.progression import (
    MAX_AGE_AT_PHOTO,
    MAX_TARGET_AGE,
    AgedFace,
    AgeProgressor,
    face_to_age,
)
from service.errors import HomewardError, NoFaceFound
from service.faces.base import DetectedFace, Image, downscaled
from service.faces.dlib_backend import region_around
from service.faces.pipeline import FaceChoice, FacePipeline, choose_face, iou
from service.registry.templates import NewTemplate

logger = logging.getLogger(__name__)

SPREAD_YEARS = 2.0  # aged templates at the expected age and this far either side
MIN_GAP_YEARS = 1.0  # no aged template closer than this to the age at photo


def target_ages(age_at_photo: float | None, expected_age_now: float | None) -> list[float]:
    """The ages to age a photo to: expected age now and +-2 years, capped at the growth
    model's range, each at least a year above the age at photo."""
    if age_at_photo is None or expected_age_now is None or age_at_photo > MAX_AGE_AT_PHOTO:
        return []
    ages = {
        round(min(expected_age_now + d, MAX_TARGET_AGE), 1)
        for d in (-SPREAD_YEARS, 0.0, SPREAD_YEARS)
    }
    return sorted(a for a in ages if a >= age_at_photo + MIN_GAP_YEARS)


@dataclass(frozen=True)
class AgedTemplates:
    pipeline: FacePipeline
    progressor: AgeProgressor

    @property
    def generator(self) -> str:
        return self.progressor.model.version

    def make(
        self,
        image: Image,
        face: DetectedFace,
        age_at_photo: float,
        ages: list[float],
        sex: str | None,
    ) -> tuple[list[NewTemplate], list[str]]:
        """Templates of the face aged to each age, and warnings for ages that failed
        (the original template is enrolled regardless).

        A photo larger than the progressor's ``max_side`` is aged in a crop around the face
        (scaled down if still larger): the templates need only the face, and a small face
        in a large photo keeps its pixels."""
        if not ages:
            return [], []
        region, face = _around_face(image, face, self.progressor.max_side)
        try:
            aged_faces, face = self._aged(region, face, age_at_photo, ages, sex)
        except HomewardError as err:
            return [], [f"no aged templates: {err}"]
        templates, warnings = [], []
        for aged in aged_faces:
            faces = self.pipeline.detect(aged.image)
            try:
                chosen = self.pipeline.analyse(aged.image, _same_face(faces, face))
            except HomewardError as err:
                warnings.append(f"aged to {aged.age:g}: {err}")
                continue
            templates.append(
                NewTemplate(
                    self.pipeline.model_id,
                    chosen.template,
                    kind="aged",
                    age=aged.age,
                    generator=self.generator,
                )
            )
        return templates, warnings

    def age_photo(
        self,
        image: Image,
        age_at_photo: float,
        ages: list[float],
        sex: str | None = None,
        face_index: int | None = None,
    ) -> list[AgedFace]:
        """The photo's face aged to each age. Faces are found and ordered (largest first)
        exactly as enrollment does; several faces need a ``face_index``."""
        faces = self.pipeline.detect(image)
        face = faces[face_to_age(len(faces), face_index)]
        return self.age_face(image, face, age_at_photo, ages, sex)

    def age_face(
        self,
        image: Image,
        face: DetectedFace,
        age_at_photo: float,
        ages: list[float],
        sex: str | None,
    ) -> list[AgedFace]:
        """The face aged to each age: photos at most the progressor's ``max_side`` pixels
        on the longer side (a larger photo is aged scaled down)."""
        return self._aged(image, face, age_at_photo, ages, sex)[0]

    def _aged(
        self,
        image: Image,
        face: DetectedFace,
        age_at_photo: float,
        ages: list[float],
        sex: str | None,
    ) -> tuple[list[AgedFace], DetectedFace]:
        """The aged faces, made on a copy at most ``max_side`` a side, and the face in that
        copy's pixels (the aged photos' too)."""
        small, sx, sy = downscaled(image, self.progressor.max_side)
        face = face.scaled(1 / sx, 1 / sy)
        box = self._landmark_box(small, face)
        progression = self.progressor.progress(
            small, age_at_photo, ages, sex=known_sex(sex), face_box=box
        )
        return progression.aged, face

    def _landmark_box(self, image: Image, face: DetectedFace) -> tuple[int, int, int, int]:
        """dlib's own box for this face when its detector finds it (the landmark model was
        trained on those boxes), else the recogniser's detector's box."""
        boxes = self.progressor.detector.detect(image)
        best = max(boxes, key=lambda b: iou(_floats(b), face.box), default=None)
        if best is not None and iou(_floats(best), face.box) >= 0.3:
            return best
        x, y, w, h = face.box
        return round(x), round(y), round(w), round(h)


def _around_face(image: Image, face: DetectedFace, max_side: int) -> tuple[Image, DetectedFace]:
    """A photo over ``max_side`` cut to the face and one face size around it (room for
    the warp's ring and for finding the aged face again), and the face in the cut's
    pixels; a smaller photo as it is."""
    if max(image.shape[:2]) <= max_side:
        return image, face
    region, left, top = region_around(image, face.box)
    x, y, w, h = face.box
    moved = DetectedFace(
        box=(x - left, y - top, w, h),
        landmarks=(face.landmarks - np.array([left, top], np.float32)).astype(np.float32),
        score=face.score,
    )
    return region, moved


def _same_face(faces: list[DetectedFace], original: DetectedFace) -> DetectedFace:
    if not faces:
        raise NoFaceFound("no face found in the aged photo")
    return choose_face(faces, FaceChoice(box=original.box))


def _floats(box: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
    return float(box[0]), float(box[1]), float(box[2]), float(box[3])


def known_sex(sex: str | None) -> Sex | None:
    """The growth model's sex, or None (the mean) for "unknown"."""
    if sex == "female":
        return "female"
    if sex == "male":
        return "male"
    return None
