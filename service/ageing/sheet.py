"""Contact sheets: photos side by side at one height, each with its label underneath."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from service.faces.base import Image

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GAP = 6  # px between tiles and around the sheet
_BACKGROUND = (255, 255, 255)
_INK = (20, 20, 20)


def contact_sheet(images: Sequence[Image], labels: Sequence[str], *, height: int = 320) -> Image:
    """One BGR image: ``images`` scaled to ``height`` px, in a row, labels below each."""
    if not images or len(images) != len(labels):
        raise ValueError("give one label per image, and at least one image")
    if height < 16:
        raise ValueError("height must be at least 16 px")
    tiles = [
        _labelled(_at_height(image, height), label)
        for image, label in zip(images, labels, strict=True)
    ]
    gap = np.full((tiles[0].shape[0], _GAP, 3), _BACKGROUND, dtype=np.uint8)
    row = np.concatenate([part for tile in tiles for part in (gap, tile)] + [gap], axis=1)
    margin = np.full((_GAP, row.shape[1], 3), _BACKGROUND, dtype=np.uint8)
    sheet: Image = np.concatenate([margin, row], axis=0)
    return sheet


def _at_height(image: Image, height: int) -> Image:
    if image.ndim == 2:
        image = np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    interpolation = cv2.INTER_AREA if height < image.shape[0] else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, (width, height), interpolation=interpolation), np.uint8)


def _labelled(tile: Image, label: str) -> Image:
    """The tile over a white strip holding the label, centred, shrunk to fit if long."""
    scale = max(0.4, tile.shape[0] / 400)
    thickness = max(1, round(scale * 1.5))
    (_, line_h), line_base = cv2.getTextSize("Ag(0)", _FONT, scale, thickness)
    strip = np.full((line_h + line_base + 2 * _GAP, tile.shape[1], 3), _BACKGROUND, np.uint8)
    (text_w, _), _ = cv2.getTextSize(label, _FONT, scale, thickness)
    if text_w > tile.shape[1] - 4:
        scale *= (tile.shape[1] - 4) / text_w
        (text_w, _), _ = cv2.getTextSize(label, _FONT, scale, thickness)
    origin = ((tile.shape[1] - text_w) // 2, _GAP + line_h)
    cv2.putText(strip, label, origin, _FONT, scale, _INK, thickness, cv2.LINE_AA)
    out: Image = np.concatenate([tile, strip], axis=0)
    return out
