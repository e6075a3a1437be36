"""Classical (learning-free) flash/no-flash matting baseline, numpy + OpenCV only.

The flash lights the nearby subject far more than the distant background, so the exposure-compensated
flash-minus-no-flash luminance separates them; Otsu picks the cut, connected components drop speckle,
and a guided filter (He et al. 2010) on the no-flash frame turns the hard mask into edge-aware soft alpha.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
_REC709 = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


@dataclass
class FlashMatteConfig:
    """Knobs of ``classical_flash_matte``; sizes are fractions of the short side so they hold at any scale."""

    gamma: float = 2.2  # sRGB -> ~linear: flash light adds in linear intensity, not in gamma-encoded values
    exposure_percentile: float = 20.0  # of flash/no-flash luminance ratio, read as the exposure change:
    # the background is the least flash-lit part, so a low percentile of the ratio is its (exposure-only) gain
    valid_range: tuple[float, float] = (0.002, 0.95)  # usable linear luminance: above noise, below clip
    blur_sigma: float = 1.0 / 240  # pre-difference Gaussian: keeps sensor noise from splitting the Otsu mask
    open_frac: float = 1.0 / 120  # morphological opening that removes isolated specks
    min_component_frac: float = 0.2  # keep components at least this share of the largest one
    max_hole_frac: float = 0.02  # fill enclosed background holes smaller than this share of the image
    radius_frac: float = 1.0 / 60  # guided-filter radius
    eps: float = 1e-3  # guided-filter regulariser (images in [0, 1]); larger = smoother, less edge-following


def box(x: F32, radius: int) -> F32:
    """Mean over a (2r+1)^2 window, reflected borders."""
    k = 2 * radius + 1
    out = cv2.boxFilter(x, -1, (k, k), normalize=True, borderType=cv2.BORDER_REFLECT)
    return out.astype(np.float32, copy=False)


def guided_filter(guide: F32, src: F32, radius: int, eps: float) -> F32:
    """He et al. guided filter: src (H, W) filtered under guide (H, W) grey or (H, W, 3) colour, -> (H, W).

    Colour guides use the full 3x3 covariance (He et al. eq. 14), so edges that differ only in hue are kept.
    """
    g = np.asarray(guide, dtype=np.float32)
    p = np.asarray(src, dtype=np.float32)
    if g.shape[:2] != p.shape or p.ndim != 2:
        raise ValueError(f"guide {g.shape} and src {p.shape} must share (H, W); src must be 2-D")
    mean_p = box(p, radius)
    if g.ndim == 2:
        mean_i = box(g, radius)
        var_i = box(g * g, radius) - mean_i * mean_i
        a = ((box(g * p, radius) - mean_i * mean_p) / (var_i + eps)).astype(np.float32)
        b = mean_p - a * mean_i
        grey: F32 = box(a, radius) * g + box(b, radius)
        return grey
    if g.ndim != 3 or g.shape[2] != 3:
        raise ValueError(f"guide must be (H, W) or (H, W, 3), got {g.shape}")
    chans = [np.ascontiguousarray(g[..., c]) for c in range(3)]
    means = [box(c, radius) for c in chans]
    cov_ip = np.stack([box(c * p, radius) - m * mean_p for c, m in zip(chans, means, strict=True)], axis=-1)
    sigma = np.empty((*p.shape, 3, 3), dtype=np.float32)
    for i in range(3):
        for j in range(i, 3):
            v = box(chans[i] * chans[j], radius) - means[i] * means[j]
            sigma[..., i, j] = v
            sigma[..., j, i] = v
    sigma += eps * np.eye(3, dtype=np.float32)
    a3 = np.linalg.solve(sigma, cov_ip[..., None])[..., 0]  # (H, W, 3)
    b3 = mean_p - sum(a3[..., c] * means[c] for c in range(3))
    mean_a = [box(np.ascontiguousarray(a3[..., c]), radius) for c in range(3)]
    colour = sum(mean_a[c] * chans[c] for c in range(3)) + box(b3.astype(np.float32), radius)
    return np.asarray(colour, dtype=np.float32)


def _luminance(rgb: F32, gamma: float) -> F32:
    lin = np.clip(rgb, 0.0, 1.0) ** gamma
    y: F32 = (lin @ _REC709).astype(np.float32)
    return y


def exposure_gain(y_flash: F32, y_noflash: F32, cfg: FlashMatteConfig) -> float:
    """Flash/no-flash exposure ratio read off the least flash-lit pixels; 1.0 if too few are usable."""
    lo, hi = cfg.valid_range
    valid = (y_flash > lo) & (y_flash < hi) & (y_noflash > lo) & (y_noflash < hi)
    if valid.sum() < max(16, valid.size // 100):
        return 1.0
    return float(np.percentile(y_flash[valid] / y_noflash[valid], cfg.exposure_percentile))


def _keep_components(mask: npt.NDArray[np.uint8], cfg: FlashMatteConfig) -> npt.NDArray[np.uint8]:
    """Largest component(s) of mask, then small enclosed holes filled."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = 1 + np.flatnonzero(areas >= cfg.min_component_frac * areas.max())
    out = np.isin(labels, keep).astype(np.uint8)
    h, w = out.shape
    n, labels, stats, _ = cv2.connectedComponentsWithStats(1 - out, connectivity=4)
    for k in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[k])
        touches_border = x == 0 or y == 0 or x + bw == w or y + bh == h
        if not touches_border and area < cfg.max_hole_frac * h * w:
            out[labels == k] = 1
    return out


def flash_difference(flash: F32, noflash: F32, cfg: FlashMatteConfig | None = None) -> F32:
    """Exposure-compensated linear luminance difference max(Y_f / gain - Y_nf, 0), blurred; (H, W)."""
    cfg = cfg or FlashMatteConfig()
    yf, ynf = _luminance(flash, cfg.gamma), _luminance(noflash, cfg.gamma)
    sigma = max(0.5, cfg.blur_sigma * min(yf.shape))
    yf = cv2.GaussianBlur(yf, (0, 0), sigma).astype(np.float32, copy=False)
    ynf = cv2.GaussianBlur(ynf, (0, 0), sigma).astype(np.float32, copy=False)
    diff: F32 = np.maximum(yf / exposure_gain(yf, ynf, cfg) - ynf, 0.0).astype(np.float32)
    return diff


def classical_flash_matte(flash: F32, noflash: F32, cfg: FlashMatteConfig | None = None) -> F32:
    """Alpha (H, W) float32 in [0, 1] of the no-flash frame from a flash / no-flash pair.

    flash, noflash: (H, W, 3) float32 RGB in [0, 1], same size, roughly aligned. Steps: exposure-compensated
    luminance difference -> Otsu threshold -> opening -> largest component(s) with small holes filled ->
    colour guided filter on the no-flash frame for soft, image-aligned edges.
    """
    cfg = cfg or FlashMatteConfig()
    flash = np.asarray(flash, dtype=np.float32)
    noflash = np.asarray(noflash, dtype=np.float32)
    if flash.shape != noflash.shape or flash.ndim != 3 or flash.shape[2] != 3:
        raise ValueError(f"flash {flash.shape} and noflash {noflash.shape} must both be (H, W, 3)")
    h, w = noflash.shape[:2]
    short = min(h, w)
    diff = flash_difference(flash, noflash, cfg)
    top = float(np.percentile(diff, 99.5))
    if top <= 1e-6:  # no flash response anywhere: nothing to separate
        return np.zeros((h, w), dtype=np.float32)
    d8 = np.clip(diff / top * 255.0, 0, 255).astype(np.uint8)
    _, mask = cv2.threshold(d8, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    k = max(1, round(cfg.open_frac * short)) | 1
    opened = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    mask = _keep_components(opened.astype(np.uint8, copy=False), cfg)
    radius = max(1, round(cfg.radius_frac * short))
    alpha = guided_filter(noflash, mask.astype(np.float32), radius, cfg.eps)
    out: F32 = np.clip(alpha, 0.0, 1.0).astype(np.float32)
    return out


__all__ = ["FlashMatteConfig", "box", "classical_flash_matte", "exposure_gain", "flash_difference",
           "guided_filter"]
