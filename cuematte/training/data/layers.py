"""Layer compositing shared by the person and background painters.

A ``LayerStack`` accumulates premultiplied colour with the "over" operator at full resolution and, at a
quarter of it, the geometry the flash needs (height field for normals, depth, specular strength): those vary
smoothly, so low resolution keeps the cost down without visible loss.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from cuematte.training.data.color import F32
from cuematte.training.data.fastops import expand, outer
from cuematte.training.data.shapes import U8

GEOMETRY_DOWNSCALE = 4


def bbox(mask: U8, pad: int = 1) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of the nonzero pixels, padded, or None if the mask is empty."""
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return None
    H, W = mask.shape
    return max(0, y - pad), min(H, y + h + pad), max(0, x - pad), min(W, x + w + pad)


def blur(x: F32, sigma: float) -> F32:
    if sigma <= 0.2:
        return x
    return np.asarray(cv2.GaussianBlur(x, (0, 0), sigma), np.float32)


def blur_fast(x: F32, sigma: float) -> F32:
    """A Gaussian blur of a smooth quantity, computed at reduced resolution when ``sigma`` is large."""
    f = int(max(1, min(8, sigma // 3)))
    if f == 1:
        return blur(x, sigma)
    h, w = x.shape[:2]
    small = cv2.resize(x, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / f)
    return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)


class LayerStack:
    """Paint parts back to front; read out alpha, colour and geometry maps."""

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w
        self.lh, self.lw = max(2, h // GEOMETRY_DOWNSCALE), max(2, w // GEOMETRY_DOWNSCALE)
        self.premult = np.zeros((h, w, 3), np.float32)
        self.alpha = np.zeros((h, w), np.float32)
        self.height = np.zeros((self.lh, self.lw), np.float32)  # toward the camera, in low-res pixels
        self.depth = np.zeros((self.lh, self.lw), np.float32)  # metres, relative
        self.spec = np.zeros((self.lh, self.lw), np.float32)

    def add(
        self,
        cov: U8,
        colour: F32,
        *,
        opacity: float = 1.0,
        bulge: float = 0.0,
        bulge_sigma: float = 0.0,
        depth: float | F32 = 0.0,
        spec: float = 0.0,
        geometry: bool = True,
    ) -> F32 | None:
        """Paint coverage ``cov`` (H, W) uint8 with ``colour`` ((3,) or (H, W, 3) display values).

        ``bulge`` (full-res pixels) and ``bulge_sigma`` shape the part's height field: a blurred silhouette,
        so normals turn away from the camera at its rim. ``depth`` is metres, a constant or a (lh, lw) map at
        geometry resolution. Returns the part's full-res alpha inside its bbox.
        """
        box = bbox(cov)
        if box is None:
            return None
        y0, y1, x0, x1 = box
        a = cov[y0:y1, x0:x1].astype(np.float32) * np.float32(opacity / 255.0)
        a3 = expand(a)
        pm = self.premult[y0:y1, x0:x1]
        pm *= 1 - a3
        pm += a3 * colour[y0:y1, x0:x1] if colour.ndim == 3 else outer(a, colour)
        self.alpha[y0:y1, x0:x1] = self.alpha[y0:y1, x0:x1] * (1 - a) + a
        if geometry:
            small = np.asarray(cv2.resize(cov, (self.lw, self.lh), interpolation=cv2.INTER_AREA), np.float32)
            small *= np.float32(opacity / 255.0)
            s = GEOMETRY_DOWNSCALE
            h_part = (
                blur(small, bulge_sigma / s) * np.float32(bulge / s) if bulge > 0 else np.zeros_like(small)
            )
            if not isinstance(depth, float) and depth.shape != small.shape:
                raise ValueError(
                    f"depth maps are given at geometry resolution {small.shape}, not {depth.shape}"
                )
            d = depth
            self.height = self.height * (1 - small) + small * h_part
            self.depth = self.depth * (1 - small) + small * d
            self.spec = self.spec * (1 - small) + small * spec
        return a

    def colour(self) -> F32:
        """(H, W, 3) unpremultiplied colour, extended smoothly past the silhouette (no dark fringes)."""
        # Outside the silhouette a normalised blur spreads edge colours outward (as matting datasets' extended
        # foregrounds do); it is smooth, so it is made at geometry resolution.
        size = (self.lw, self.lh)
        sp = np.asarray(cv2.resize(self.premult, size, interpolation=cv2.INTER_AREA), np.float32)
        sa = np.asarray(cv2.resize(self.alpha, size, interpolation=cv2.INTER_AREA), np.float32)
        k = max(1.5, self.lw / 48)
        ext = blur(sp, k) / expand(np.maximum(blur(sa, k), 1e-3))
        out = self.upsampled(np.clip(ext, 0, 1))
        inside = expand((self.alpha > 1e-3).astype(np.float32)) > 0
        np.divide(self.premult, expand(np.maximum(self.alpha, 1e-3)), out=out, where=inside)
        return np.clip(out, 0, 1, out=out)

    def normals_lowres(self) -> F32:
        """(lh, lw, 3) unit normals (x right, y down, z toward the camera) from the height field."""
        gx = cv2.Sobel(self.height, cv2.CV_32F, 1, 0, ksize=3) / 8
        gy = cv2.Sobel(self.height, cv2.CV_32F, 0, 1, ksize=3) / 8
        inv = 1 / np.sqrt(gx * gx + gy * gy + 1)
        return np.asarray(cv2.merge([-gx * inv, -gy * inv, inv]), np.float32)

    def upsampled(self, x: npt.NDArray[np.float32]) -> F32:
        return np.asarray(cv2.resize(x, (self.w, self.h), interpolation=cv2.INTER_LINEAR), np.float32)
