"""Anti-aliased shape drawing into uint8 coverage masks (OpenCV LINE_AA with 4 sub-pixel bits).

Coverage is drawn at the output resolution: OpenCV's anti-aliasing gives fractional edges without the cost of
supersampling, and thin strokes drawn with a value below 255 stand for sub-pixel-wide strands.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
Points = npt.NDArray[np.float64]  # (N, 2) x, y in pixels

_SHIFT = 4
_ONE = 1 << _SHIFT


def _fixed(pts: Points) -> npt.NDArray[np.int32]:
    return np.round(np.asarray(pts, np.float64) * _ONE).astype(np.int32)


def fill(mask: U8, pts: Points, value: int = 255) -> U8:
    """Fill one polygon (N, 2) into ``mask`` in place."""
    cv2.fillPoly(mask, [_fixed(pts)], int(value), cv2.LINE_AA, _SHIFT)
    return mask


def strokes(mask: U8, lines: list[Points] | npt.NDArray[np.float64], value: int, thickness: int = 1) -> U8:
    """Draw open polylines (each (K, 2)) in place; one OpenCV call for all of them."""
    cv2.polylines(mask, [_fixed(p) for p in lines], False, int(value), int(thickness), cv2.LINE_AA, _SHIFT)
    return mask


def ellipse_points(
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    angle_deg: float = 0.0,
    n: int = 48,
    t0: float = 0.0,
    t1: float = 2 * np.pi,
) -> Points:
    """(n, 2) points on an ellipse arc (angles in radians, y down), rotated by ``angle_deg``."""
    t = np.linspace(t0, t1, n, endpoint=(t1 - t0) < 2 * np.pi - 1e-6)
    return transform(np.stack([rx * np.cos(t), ry * np.sin(t)], 1), cx, cy, angle_deg)


def transform(pts: Points, cx: float, cy: float, angle_deg: float = 0.0, scale: float = 1.0) -> Points:
    """Rotate (about the origin) then translate local points (N, 2)."""
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    rot = np.array([[c, -s], [s, c]]) * scale
    return np.asarray(pts, np.float64) @ rot.T + np.array([cx, cy])


def bezier(p0: tuple[float, float], p1: tuple[float, float], p2: tuple[float, float], n: int = 16) -> Points:
    """(n, 2) a quadratic Bezier curve."""
    t = np.linspace(0, 1, n)[:, None]
    a, b, c = np.array(p0), np.array(p1), np.array(p2)
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * b + t**2 * c


def coverage(mask: U8) -> npt.NDArray[np.float32]:
    """uint8 coverage -> float32 alpha in [0, 1]."""
    return mask.astype(np.float32) * np.float32(1 / 255)
