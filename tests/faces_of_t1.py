"""The six faces of insightface's t1.jpg as separate photos, and altered probes of them."""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

from tests.images import encode, t1_bgr


@cache
def face_boxes() -> list[tuple[int, int, int, int]]:
    """Boxes (x, y, w, h) of the six faces, left to right (found once with YuNet)."""
    from service.faces.factory import load_backend
    from service.settings import Settings
    from tests.conftest import REPO

    backend = load_backend(Settings(model_dir=REPO / "models", model_backend="sface"))
    faces = backend.detect(t1_bgr())
    assert len(faces) == 6
    return sorted((tuple(int(v) for v in f.box) for f in faces), key=lambda b: b[0])  # type: ignore[misc]


def face_crop(i: int, margin: float = 0.6) -> np.ndarray:
    """Face i with a margin around it: a photo of one person."""
    img = t1_bgr()
    x, y, w, h = face_boxes()[i]
    mx, my = int(w * margin), int(h * margin)
    return img[max(0, y - my) : y + h + my, max(0, x - mx) : x + w + mx].copy()


def altered_probe(i: int) -> bytes:
    """Face i flipped, rescaled to 80% and re-compressed at JPEG quality 60."""
    crop = cv2.flip(face_crop(i), 1)
    small = cv2.resize(crop, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    return encode(small, quality=60)


def blank_photo() -> bytes:
    """A photo with no face in it: a smooth colour gradient with some noise."""
    rng = np.random.default_rng(3)
    grad = np.linspace(0, 255, 320, dtype=np.float32)
    img = np.stack([np.tile(grad, (240, 1))] * 3, axis=-1) + rng.normal(0, 8, (240, 320, 3))
    return encode(np.clip(img, 0, 255).astype(np.uint8))


def distinct_photo(k: int) -> bytes:
    """The k-th of many distinct one-face photos, all 240x240 (t1's six people, framed
    with several margins and offsets, then a little brighter for each further round): all
    pass the enrollment gate, and each has its own template, so a search with a photo's own
    bytes ranks the case enrolled from it first."""
    person, j = k % 6, k // 6
    crop = face_crop(person, margin=0.45 + 0.05 * (j % 5))
    height, width = crop.shape[:2]
    cut = 3 * (j // 5 % 12)  # pixels cut off the top left: the face moves in the frame
    framed = cv2.resize(crop[cut * height // width :, cut:], (240, 240))
    return encode(cv2.add(framed, np.full_like(framed, j // 60)), quality=90)
