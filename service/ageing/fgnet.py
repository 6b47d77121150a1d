"""FG-NET's 68-point landmark markup (``.pts`` files), read and mapped to dlib's 68-point
order, so that the growth model can be fitted on FG-NET's hand-placed points
(``scripts/fit_growth.py``, and per fold in ``homeward evaluate``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def read_pts(path: Path) -> Array:
    """The points of an ASM/AAM ``.pts`` file; ValueError if it is not one."""
    try:
        body = path.read_text().split("{", 1)[1].split("}", 1)[0]
        points = np.array(body.split(), dtype=np.float64).reshape(-1, 2)
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a .pts landmark file: {exc}") from exc
    return points


def read_fgnet_points(path: Path) -> Array:
    """A FG-NET ``.pts`` file's 68 points in dlib's order."""
    points = read_pts(path)
    if points.shape != (68, 2):
        raise ValueError(f"{path} holds {len(points)} points, FG-NET's markup has 68")
    return fgnet_to_dlib(points)


def _lerp(a: Array, b: Array, t: float) -> Array:
    return (1 - t) * a + t * b


def _resample(polyline: Array, n: int) -> Array:
    """``n`` points evenly spaced by arc length along a polyline, ends kept."""
    steps = np.linalg.norm(np.diff(polyline, axis=0), axis=1)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    at = np.linspace(0, along[-1], n)
    return np.stack([np.interp(at, along, polyline[:, 0]), np.interp(at, along, polyline[:, 1])], 1)


def _lid(corner_a: Array, middle: Array, corner_b: Array, t: float) -> Array:
    """A point on the quadratic curve from corner_a (t=0) through middle (t=0.5) to
    corner_b (t=1): how an eyelid runs between FG-NET's three points."""
    control = 2 * middle - (corner_a + corner_b) / 2
    return (1 - t) ** 2 * corner_a + 2 * (1 - t) * t * control + t**2 * corner_b


def _brow(
    outer: Array, upper: tuple[Array, Array], inner: Array, lower: tuple[Array, Array]
) -> Array:
    """dlib's five brow points (outer to inner) from FG-NET's brow outline: dlib follows the
    upper-middle of the brow, so a blend of the upper (80%) and lower (20%) edges."""
    top = _resample(np.array([outer, *upper, inner]), 5)
    bottom = _resample(np.array([outer, *lower, inner]), 5)
    return 0.8 * top + 0.2 * bottom


def fgnet_to_dlib(p: Array) -> Array:
    """FG-NET's 68-point markup -> dlib's 68-point order.

    FG-NET (found by plotting the indices on photos): 0-14 jaw line from the image-left
    ear to the image-right one; 15-20 image-right brow (15 outer end, 16-17 upper edge,
    18 inner end, 19-20 lower edge); 21-26 image-left brow (21 outer, 22-23 upper, 24 inner,
    25-26 lower); 27-31 image-left eye (outer corner, top, inner corner, bottom, pupil);
    32-36 image-right eye (outer, top, inner, bottom, pupil); 37 and 45 the sides of the
    bridge at the inner corners; 38-44 the nose outline with 40, 41, 42 the left alar base,
    subnasale and right alar base; 46-47 nostrils; 48-59 outer lips exactly as dlib's;
    60-65 inner lips (65, 64, 63 upper from image left; 62, 61, 60 lower from image
    right); 66 the mouth's centre; 67 the nose tip.

    Where dlib has points FG-NET lacks (two more jaw points, two more per eyelid, the inner
    lip corners, the bridge) they are interpolated; the interpolation weights were set by
    comparing with dlib's own landmarks on the same photos (the mapped points then sit a
    median 0.04 inter-ocular distances from dlib's). It is a notation map, applied to every
    photo alike, and carries no age information.
    """
    d = np.zeros((68, 2))
    d[0:17] = _resample(p[0:15], 17)
    d[17:22] = _brow(p[21], (p[22], p[23]), p[24], (p[26], p[25]))
    d[22:27] = _brow(p[15], (p[16], p[17]), p[18], (p[20], p[19]))[::-1]
    bridge = (p[37] + p[45]) / 2
    for k in range(4):  # dlib 27 sits a little above FG-NET's bridge line, 30 just above 67
        d[27 + k] = _lerp(bridge, p[67], -0.15 + 0.35 * k)
    d[31], d[33], d[35] = p[40], p[41], p[42]
    d[32], d[34] = (p[40] + p[41]) / 2, (p[41] + p[42]) / 2
    d[36], d[39] = p[27], p[29]
    d[37], d[38] = _lid(p[27], p[28], p[29], 1 / 3), _lid(p[27], p[28], p[29], 2 / 3)
    d[40], d[41] = _lid(p[29], p[30], p[27], 1 / 3), _lid(p[29], p[30], p[27], 2 / 3)
    d[42], d[45] = p[34], p[32]
    d[43], d[44] = _lid(p[34], p[33], p[32], 1 / 3), _lid(p[34], p[33], p[32], 2 / 3)
    d[46], d[47] = _lid(p[32], p[35], p[34], 1 / 3), _lid(p[32], p[35], p[34], 2 / 3)
    d[48:60] = p[48:60]
    d[60], d[64] = _lerp(p[48], p[66], 0.12), _lerp(p[54], p[66], 0.12)
    d[61], d[62], d[63] = _lerp(p[65], p[64], 0.4), p[64], _lerp(p[63], p[64], 0.4)
    d[65], d[66], d[67] = _lerp(p[62], p[61], 0.4), p[61], _lerp(p[60], p[61], 0.4)
    return d
