"""A dense, seam-free image warp that carries landmarks from where they are to where they
should be.

The landmarks plus fixed anchors (a ring around the face, well clear of it, and points
along the image border) are triangulated (Delaunay) at their destinations. Each triangle's
affine map from destination to source gives, for every output pixel, where to sample the
input; the per-pixel map is built once and applied with one ``cv2.remap``. The map is
continuous across triangle edges, so there are no seams, and it is the identity in every
triangle whose corners are all fixed: outside the ring the output is the input, pixel for
pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from service.ageing.shapes import Points, as_points, eye_centres
from service.faces.base import Image

Triangles = npt.NDArray[np.intp]  # (k, 3) indices into the control points
Affines = npt.NDArray[np.float64]  # (k, 2, 3), destination -> source
Roi = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)

_SUBPIXEL_BITS = 4  # fillConvexPoly's fixed-point shift: vertices to 1/16 px


@dataclass(frozen=True)
class WarpOptions:
    # The ring of fixed points is an ellipse around the landmarks, in the face's own frame,
    # ``ring_scale`` times their extent from the centroid: far enough that the forehead
    # and the jaw line can move smoothly, near enough that hair and background stay put.
    ring_scale: float = 1.7
    ring_points: int = 24
    border_points: int = 5  # fixed points per image side, corners included
    min_spacing: float = 1.0  # px; closer landmarks are merged (e.g. a closed mouth's lips)


def warp_image(
    image: Image, source: Points, target: Points, options: WarpOptions | None = None
) -> Image:
    """``image`` warped so that the ``source`` landmarks land on ``target``."""
    options = options or WarpOptions()
    height, width = image.shape[:2]
    src, dst = control_points(as_points(source), as_points(target), (height, width), options)
    triangles = delaunay(dst)
    moving = np.any(np.abs(src - dst) > 1e-9, axis=1)
    triangles = triangles[moving[triangles].any(axis=1)]
    out = image.copy()
    if len(triangles) == 0:
        return out
    roi = _bounding_roi(dst[triangles.ravel()], (height, width))
    map_x, map_y = dense_map(src, dst, triangles, roi)
    x0, y0, x1, y1 = roi
    out[y0:y1, x0:x1] = cv2.remap(
        image, map_x, map_y, cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REPLICATE
    )
    return out


def control_points(
    source: Points, target: Points, size: tuple[int, int], options: WarpOptions
) -> tuple[Points, Points]:
    """(source, destination) of every control point: the landmarks (near-duplicates
    merged), then the fixed anchors, which are the same in both."""
    keep = _spaced(source, target, options.min_spacing)
    anchors = np.concatenate(
        [face_ring(source, options), border_points(size, options.border_points)]
    )
    return (
        np.concatenate([source[keep], anchors]),
        np.concatenate([target[keep], anchors]),
    )


def face_ring(landmarks: Points, options: WarpOptions) -> Points:
    """Fixed points on an ellipse around the face, aligned with its eye line."""
    right, left = eye_centres(landmarks)
    across = (left - right) / max(float(np.linalg.norm(left - right)), 1e-9)
    down = np.array([-across[1], across[0]])
    centre = landmarks.mean(axis=0)
    offsets = landmarks - centre
    half_width = np.abs(offsets @ across).max() * options.ring_scale
    half_height = np.abs(offsets @ down).max() * options.ring_scale
    angles = np.linspace(0, 2 * np.pi, options.ring_points, endpoint=False)
    ring: Points = (
        centre
        + np.outer(np.cos(angles) * half_width, across)
        + np.outer(np.sin(angles) * half_height, down)
    )
    return ring


def border_points(size: tuple[int, int], per_side: int) -> Points:
    """Points along the image border (pixel centres of the outermost rows and columns)."""
    height, width = size
    xs = np.linspace(0, width - 1, per_side)
    ys = np.linspace(0, height - 1, per_side)[1:-1]
    points = [(x, 0.0) for x in xs] + [(x, height - 1.0) for x in xs]
    points += [(0.0, y) for y in ys] + [(width - 1.0, y) for y in ys]
    return np.array(points, dtype=np.float64)


def delaunay(points: Points) -> Triangles:
    """Delaunay triangles of ``points`` as index triples (duplicate points share one)."""
    low = np.floor(points.min(axis=0)) - 2
    high = np.ceil(points.max(axis=0)) + 2
    rect = (int(low[0]), int(low[1]), int(high[0] - low[0]), int(high[1] - low[1]))
    subdiv = cv2.Subdiv2D(rect)
    index: dict[tuple[float, float], int] = {}
    for i, (x, y) in enumerate(points.astype(np.float32)):
        key = (float(x), float(y))
        if key not in index:
            index[key] = i
            subdiv.insert(key)
    corners = np.asarray(subdiv.getTriangleList()).reshape(-1, 3, 2)
    triangles = [
        [index.get((float(x), float(y)), -1) for x, y in corners_of_one]
        for corners_of_one in corners
    ]
    array = np.array(triangles, dtype=np.intp).reshape(-1, 3)
    return array[(array >= 0).all(axis=1)]  # drop those touching Subdiv2D's outer vertices


def triangle_affines(src: Points, dst: Points, triangles: Triangles) -> Affines:
    """Per triangle, the affine map taking its destination corners to its source corners.
    A degenerate (zero-area) destination triangle gets the mean translation instead."""
    dst_h = np.concatenate([dst[triangles], np.ones((len(triangles), 3, 1))], axis=2)
    src_t = src[triangles]  # (k, 3, 2)
    affines = np.empty((len(triangles), 2, 3))
    for k in range(len(triangles)):
        if abs(np.linalg.det(dst_h[k])) < 1e-6:
            shift = (src_t[k] - dst_h[k, :, :2]).mean(axis=0)
            affines[k] = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]])
        else:
            affines[k] = np.linalg.solve(dst_h[k], src_t[k]).T
    return affines


def dense_map(
    src: Points, dst: Points, triangles: Triangles, roi: Roi
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Source coordinates (map_x, map_y) for every pixel of ``roi``: the affine of the
    triangle the pixel lies in, the identity where no moving triangle covers it."""
    x0, y0, x1, y1 = roi
    labels = np.full((y1 - y0, x1 - x0), len(triangles), dtype=np.int32)
    scale = 1 << _SUBPIXEL_BITS
    for k, tri in enumerate(triangles):
        corners = np.round((dst[tri] - (x0, y0)) * scale).astype(np.int32)
        cv2.fillConvexPoly(labels, corners, k, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    identity = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    affines = np.concatenate([triangle_affines(src, dst, triangles), identity])
    per_pixel = affines[labels]  # (h, w, 2, 3)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    map_x = per_pixel[..., 0, 0] * xs + per_pixel[..., 0, 1] * ys + per_pixel[..., 0, 2]
    map_y = per_pixel[..., 1, 0] * xs + per_pixel[..., 1, 1] * ys + per_pixel[..., 1, 2]
    return map_x.astype(np.float32), map_y.astype(np.float32)


def _spaced(source: Points, target: Points, min_spacing: float) -> npt.NDArray[np.bool_]:
    """Mask of the landmarks to keep: each one closer than ``min_spacing`` to an earlier
    kept one (at its source or its target) is dropped, so no sliver triangles form."""
    keep = np.zeros(len(source), dtype=bool)
    for i in range(len(source)):
        kept_src, kept_dst = source[keep], target[keep]
        near_src = np.linalg.norm(kept_src - source[i], axis=1) < min_spacing
        near_dst = np.linalg.norm(kept_dst - target[i], axis=1) < min_spacing
        keep[i] = not (near_src.any() or near_dst.any())
    return keep


def _bounding_roi(points: Points, size: tuple[int, int]) -> Roi:
    height, width = size
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + 2
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)
