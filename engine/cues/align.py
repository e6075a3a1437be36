"""Flash/no-flash pair alignment: people move and cameras re-expose between the two frames.

Geometry: a Euclidean (rotation + shift) ECC fit on blurred grey images at low resolution; ECC's
correlation criterion is insensitive to global brightness/contrast changes, so the flash does not bias it
much. Photometry: per-channel gains from a low percentile of flash/no-flash ratios, i.e. from the pixels the
flash barely reaches (the far background), which absorbs auto-exposure and white-balance shifts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from engine.frames import resize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alignment:
    """How the no-flash frame maps onto the flash frame."""

    warp: np.ndarray  # (2, 3) float32 affine, no-flash pixel coords -> flash pixel coords (full resolution)
    gains: np.ndarray  # (3,) float32 per-channel flash/no-flash gain of the un-flashed background
    converged: bool

    def warp_noflash(self, noflash: np.ndarray) -> np.ndarray:
        """No-flash (H, W, C) resampled into the flash frame's geometry."""
        h, w = noflash.shape[:2]
        if np.allclose(self.warp, np.eye(2, 3, dtype=np.float32), atol=1e-4):
            return noflash
        return cv2.warpAffine(noflash, self.warp, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _grey_small(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    g = cv2.cvtColor(resize(rgb, size), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    return cv2.GaussianBlur(g, (5, 5), 1.0)


def estimate_alignment(flash: np.ndarray, noflash: np.ndarray, *, work_side: int = 256,
                       gain_percentile: float = 20.0) -> Alignment:
    """Fit the no-flash -> flash warp and photometric gains. Both (H, W, 3) uint8 RGB of equal size."""
    h, w = flash.shape[:2]
    scale = min(1.0, work_side / max(h, w))
    small = (max(8, round(h * scale)), max(8, round(w * scale)))
    f_s, n_s = _grey_small(flash, small), _grey_small(noflash, small)
    warp_s = np.eye(2, 3, dtype=np.float32)
    converged = True
    try:
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
        _, warp_s = cv2.findTransformECC(  # type: ignore[call-overload]
            f_s, n_s, warp_s, cv2.MOTION_EUCLIDEAN, criteria, None, 3
        )
    except cv2.error:
        # Flat or too different images: no reliable geometry, keep identity rather than a wild warp.
        converged = False
        warp_s = np.eye(2, 3, dtype=np.float32)
    # ECC gives flash->no-flash sampling coords (template = flash); invert to map no-flash onto flash.
    sx, sy = w / small[1], h / small[0]
    warp_full = warp_s.copy()
    warp_full[0, 2] *= sx
    warp_full[1, 2] *= sy
    if np.abs(warp_full[:, 2]).max() > 0.15 * max(h, w):
        converged, warp_full = False, np.eye(2, 3, dtype=np.float32)
    inv = cv2.invertAffineTransform(warp_full).astype(np.float32)
    aligned = cv2.warpAffine(noflash, inv, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    gains = estimate_gains(flash, aligned, percentile=gain_percentile)
    return Alignment(warp=inv, gains=gains, converged=converged)


def estimate_gains(flash: np.ndarray, noflash: np.ndarray, *, percentile: float = 20.0) -> np.ndarray:
    """Per-channel flash/no-flash gain of the least-lit pixels (the background), clipped to a sane range."""
    f = resize(flash, (90, 160)).reshape(-1, 3).astype(np.float32) + 1.0
    n = resize(noflash, (90, 160)).reshape(-1, 3).astype(np.float32) + 1.0
    usable = (n.min(axis=1) > 12) & (n.max(axis=1) < 243) & (f.max(axis=1) < 250)
    if usable.sum() < 50:
        return np.ones(3, np.float32)
    ratios = f[usable] / n[usable]
    gains = np.percentile(ratios, percentile, axis=0).astype(np.float32)
    # Auto-exposure darkens a flash frame, it never brightens the unlit background much.
    return np.clip(gains, 0.25, 1.1)
