"""Geometry of 68-point landmark shapes in dlib's (iBUG 300-W) order.

Shapes are float64 arrays of shape (68, 2) in image coordinates (x right, y down). "Image
left" is the subject's right. Similarity fits are least squares (Procrustes without
reflection); a shape's "frame" is the similarity that carries a reference shape onto it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Points = npt.NDArray[np.float64]  # (n, 2)
Matrix = npt.NDArray[np.float64]  # (2, 2), the linear part of a similarity: scale * rotation

N_POINTS = 68
JAW = slice(0, 17)
BROWS = slice(17, 27)
NOSE = slice(27, 36)
EYES = slice(36, 48)
MOUTH = slice(48, 68)
RIGHT_EYE = slice(36, 42)  # image left
LEFT_EYE = slice(42, 48)
CHIN = 8
NOSE_TIP = 30
JAW_ENDS = (0, 16)


def _mirror_permutation() -> npt.NDArray[np.intp]:
    """Index of each point's left/right counterpart (its own index on the midline)."""
    pairs = [
        *zip(range(0, 8), range(16, 8, -1), strict=True),  # jaw
        *zip(range(17, 22), range(26, 21, -1), strict=True),  # brows, outer to inner
        (31, 35),
        (32, 34),  # nostrils
        *zip((36, 37, 38, 39, 40, 41), (45, 44, 43, 42, 47, 46), strict=True),  # eyes
        *zip((48, 49, 50, 58, 59), (54, 53, 52, 56, 55), strict=True),  # outer lips
        *zip((60, 61, 67), (64, 63, 65), strict=True),  # inner lips
    ]
    perm = np.arange(N_POINTS)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


MIRROR = _mirror_permutation()


def as_points(points: npt.ArrayLike) -> Points:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"expected an (n, 2) array of points, got shape {array.shape}")
    return array


def similarity(src: Points, dst: Points) -> tuple[Matrix, npt.NDArray[np.float64]]:
    """(M, t) minimising ||src @ M.T + t - dst||, M a scaled rotation (no reflection)."""
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - src_mean, dst - dst_mean
    norm = float((a**2).sum())
    if norm == 0:
        raise ValueError("cannot fit a similarity to a degenerate shape")
    cos = float((a * b).sum()) / norm
    sin = float((a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum()) / norm
    m = np.array([[cos, -sin], [sin, cos]])
    return m, dst_mean - src_mean @ m.T


def align(src: Points, dst: Points) -> Points:
    """``src`` moved by the similarity that best fits it onto ``dst``."""
    m, t = similarity(src, dst)
    out: Points = src @ m.T + t
    return out


def deviation(shape: Points, reference: Points) -> Points:
    """How ``shape`` differs from ``reference`` once similarity is taken out (in the
    reference's frame)."""
    out: Points = align(shape, reference) - reference
    return out


def normalise(points: Points) -> Points:
    """Centroid at the origin, RMS distance from it 1."""
    centred = points - points.mean(axis=0)
    rms = float(np.sqrt((centred**2).sum(axis=1).mean()))
    if rms == 0:
        raise ValueError("cannot normalise a degenerate shape")
    out: Points = centred / rms
    return out


def eye_centres(points: Points) -> tuple[Points, Points]:
    """(image-left eye centre, image-right eye centre)."""
    return points[RIGHT_EYE].mean(axis=0), points[LEFT_EYE].mean(axis=0)


def inter_ocular(points: Points) -> float:
    right, left = eye_centres(points)
    return float(np.linalg.norm(left - right))


def upright(shape: Points) -> Points:
    """A normalised shape turned so that its eye line is horizontal."""
    right, left = eye_centres(shape)
    dx, dy = left - right
    angle = -np.arctan2(dy, dx)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    out: Points = normalise(shape) @ rot.T
    return out


def mirror(shape: Points) -> Points:
    """The shape of the mirror-image face, points relabelled so indices keep their meaning."""
    flipped = shape[MIRROR].copy()
    flipped[:, 0] *= -1
    return flipped


def symmetrise(shape: Points) -> Points:
    """Mean of a shape and its aligned mirror image: bilateral asymmetry removed."""
    return (shape + align(mirror(shape), shape)) / 2


def generalised_procrustes(shapes: npt.NDArray[np.float64], iterations: int = 10) -> Points:
    """Shapes (n, 68, 2) normalised and rotated onto their common upright mean."""
    aligned = np.stack([normalise(s) for s in shapes])
    reference = upright(aligned[0])
    for _ in range(iterations):
        aligned = np.stack([normalise(align(s, reference)) for s in aligned])
        reference = upright(aligned.mean(axis=0))
    out: Points = np.stack([normalise(align(s, reference)) for s in aligned])
    return out


def lower_face_ratio(points: Points) -> float:
    """Distance from the chin to the eye line's midpoint over the inter-ocular distance."""
    right, left = eye_centres(points)
    return float(np.linalg.norm(points[CHIN] - (right + left) / 2)) / inter_ocular(points)


def nose_ratio(points: Points) -> float:
    """Nose length (bridge top to base) over the inter-ocular distance."""
    return float(np.linalg.norm(points[33] - points[27])) / inter_ocular(points)


def width_ratio(points: Points) -> float:
    """Face width at the cheeks (jaw points 1 and 15) over the inter-ocular distance."""
    return float(np.linalg.norm(points[15] - points[1])) / inter_ocular(points)


def yaw_score(points: Points) -> float:
    """How far the nose tip sits off the midpoint of the jaw line's ends, as a share of
    their distance: about 0 for a frontal face, 0.1 for a clearly turned one."""
    a, b = points[JAW_ENDS[0]], points[JAW_ENDS[1]]
    width = float(np.linalg.norm(b - a))
    if width == 0:
        return float("inf")
    along = float((points[NOSE_TIP] - (a + b) / 2) @ ((b - a) / width))
    return abs(along) / width
