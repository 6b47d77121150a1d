"""Per-face quality: size, sharpness and a pose estimate from the five landmarks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from service.faces.base import CHIP_SIZE, REFERENCE_LANDMARKS, DetectedFace, Image

# Nose height between the eye line and the mouth line on a frontal face (reference chip).
_FRONTAL_NOSE_RATIO = float(
    (REFERENCE_LANDMARKS[2, 1] - REFERENCE_LANDMARKS[:2, 1].mean())
    / (REFERENCE_LANDMARKS[3:, 1].mean() - REFERENCE_LANDMARKS[:2, 1].mean())
)
_INNER = slice(24, 100)  # rows/columns of the 112 px chip from brows to chin, cheek to cheek

# Nose offset (in half eye distances) -> tan(yaw); set so a face judged by eye to be
# turned about 45 degrees reads about 45.
_YAW_GAIN = 0.7


@dataclass(frozen=True)
class QualityThresholds:
    min_face_px: float
    min_sharpness: float
    max_yaw_degrees: float


@dataclass(frozen=True)
class FaceQuality:
    size_px: float  # shorter side of the detection box
    sharpness: float  # variance of the Laplacian on the grey 112x112 chip
    yaw: float  # degrees, rough estimates from landmark geometry
    pitch: float
    roll: float
    detection_score: float
    issues: tuple[str, ...] = field(default=())

    @property
    def acceptable(self) -> bool:
        return not self.issues


def assess(face: DetectedFace, chip: Image, limits: QualityThresholds) -> FaceQuality:
    yaw, pitch, roll = estimate_pose(face)
    size = min(face.box[2], face.box[3])
    sharpness = laplacian_variance(chip)
    issues = []
    if size < limits.min_face_px:
        issues.append(f"face too small: {size:.0f} px, need {limits.min_face_px:.0f}")
    if sharpness < limits.min_sharpness:
        issues.append(
            f"face too blurry: sharpness {sharpness:.1f}, need {limits.min_sharpness:.1f}"
        )
    if abs(yaw) > limits.max_yaw_degrees:
        issues.append(f"face turned too far: yaw {yaw:.0f} deg, limit {limits.max_yaw_degrees:.0f}")
    return FaceQuality(
        size_px=round(size, 1),
        sharpness=round(sharpness, 1),
        yaw=round(yaw, 1),
        pitch=round(pitch, 1),
        roll=round(roll, 1),
        detection_score=round(face.score, 4),
        issues=tuple(issues),
    )


def laplacian_variance(chip: Image) -> float:
    """Sharpness of the inner face (eyes to mouth) of a chip at 112 px. The chip's rim is
    left out: it holds background and, for faces near the image edge, the warp's black
    fill, whose hard edge would read as detail."""
    grey = cv2.cvtColor(chip, cv2.COLOR_BGR2GRAY)
    if grey.shape[0] != CHIP_SIZE:
        grey = cv2.resize(grey, (CHIP_SIZE, CHIP_SIZE), interpolation=cv2.INTER_AREA)
    inner = grey[_INNER, _INNER]
    return float(cv2.Laplacian(inner, cv2.CV_64F).var())


def estimate_pose(face: DetectedFace) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees. Roll is the eye line's angle; after undoing it, yaw
    follows from the nose tip's sideways offset against half the eye distance, and pitch
    from the nose's height between the eye and mouth lines. Rough by design: enough to
    flag profiles, not a head-pose model."""
    pts = np.asarray(face.landmarks, dtype=np.float64)
    right_eye, left_eye, nose = pts[0], pts[1], pts[2]
    mouth = pts[3:].mean(axis=0)
    dx, dy = left_eye - right_eye
    roll = math.atan2(dy, dx)
    c, s = math.cos(-roll), math.sin(-roll)
    rot = np.array([[c, -s], [s, c]])
    eye_mid = (right_eye + left_eye) / 2
    nose_r, mouth_r = rot @ (nose - eye_mid), rot @ (mouth - eye_mid)
    half_eye = max(math.hypot(dx, dy) / 2, 1e-6)
    yaw = math.degrees(math.atan(_YAW_GAIN * nose_r[0] / half_eye))
    ratio = nose_r[1] / mouth_r[1] if abs(mouth_r[1]) > 1e-6 else _FRONTAL_NOSE_RATIO
    pitch = math.degrees(math.atan((ratio - _FRONTAL_NOSE_RATIO) * 2.0))
    return yaw, pitch, math.degrees(roll)
