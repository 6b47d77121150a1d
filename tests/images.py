"""Real test images that installed packages ship (never downloaded, never FG-NET)."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import cv2
import numpy as np


def insightface_image(name: str = "t1.jpg") -> Path:
    """A file of the ``insightface`` distribution's sample images, found without importing it
    (importing insightface would pull in the GUI OpenCV; we install it with --no-deps)."""
    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the insightface package (installed with --no-deps by `make test`)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "images" / name


@cache
def t1_bgr() -> np.ndarray:
    """insightface's t1.jpg: six people, one face each, 1280x886."""
    image = cv2.imread(str(insightface_image()), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def astronaut_bgr() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def encode(image: np.ndarray, ext: str = ".jpg", **params: int) -> bytes:
    flags: list[int] = []
    if ext == ".jpg":
        flags = [cv2.IMWRITE_JPEG_QUALITY, params.get("quality", 92)]
    ok, buf = cv2.imencode(ext, image, flags)
    assert ok
    return buf.tobytes()
