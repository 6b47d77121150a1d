"""Five-point similarity alignment (Umeyama's least-squares estimate)."""

from __future__ import annotations

import cv2
import numpy as np

from service.faces.base import CHIP_SIZE, REFERENCE_LANDMARKS, FloatArray, Image


def similarity_transform(src: FloatArray, dst: FloatArray) -> FloatArray:
    """The 2x3 matrix of the rotation + uniform scale + translation taking src onto dst."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_c.var(axis=0).sum()
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]]).astype(np.float32)


def align_chip(image: Image, landmarks: FloatArray, size: int = CHIP_SIZE) -> Image:
    """Warp the face so its five landmarks land on the reference template of a size x size chip."""
    reference = REFERENCE_LANDMARKS * (size / CHIP_SIZE)
    matrix = similarity_transform(landmarks, reference)
    chip = cv2.warpAffine(
        image,
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    return np.asarray(chip, dtype=np.uint8)
