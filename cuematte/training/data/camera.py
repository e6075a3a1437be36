"""The webcam: auto-exposure, white balance, vignetting, tone curve, sensor noise, 8-bit output, JPEG.

Noise is physical: in linear units after gain k, a pixel of value x has variance
``shot * k * x + (read * k)^2``, so dim rooms (high gain) are noisy and a flash frame that AE darkened is
cleaner. It is applied to the display image through the tone curve's derivative, tabulated per 8-bit level:
a lookup instead of per-pixel powers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from cuematte.training.data.color import F32, luminance
from cuematte.training.data.fastops import outer


@dataclass(frozen=True)
class Camera:
    gamma: float  # display = linear ** (1 / gamma)
    wb: F32  # (3,) white-balance gains of the no-flash frame
    wb_flash: F32  # (3,) gains of the flash frame (AWB re-adapts part-way to the flash colour)
    vignette: float  # corner falloff: 1 - vignette * r^2
    target: float  # AE target mean (linear)
    shot: float
    read: float
    blur_noise: float  # demosaicing/denoising correlates noise over ~this many pixels (0 = white)
    jpeg_quality: int  # 0 = no JPEG


def sample_camera(
    rng: np.random.Generator,
    noise_scale: float,
    p_jpeg: float,
    quality: tuple[int, int],
    ambient_tint: F32,
    flash_tint: F32,
) -> Camera:
    # AWB aims at the ambient colour with some error; for the flash frame it moves part-way to the flash.
    wb = (1 / ambient_tint) * (1 + rng.normal(0, 0.04, 3))
    adapt = rng.uniform(0, 0.5)
    wb_flash = wb * (ambient_tint / flash_tint) ** adapt * (1 + rng.normal(0, 0.03, 3))
    quality_q = int(rng.integers(quality[0], quality[1] + 1)) if rng.random() < p_jpeg else 0
    sensor = rng.uniform(0.5, 1.6) * noise_scale
    return Camera(
        gamma=float(rng.uniform(2.0, 2.4)),
        wb=(wb / wb[1]).astype(np.float32),
        wb_flash=(wb_flash / wb_flash[1]).astype(np.float32),
        vignette=float(rng.uniform(0.0, 0.35)),
        target=float(rng.uniform(0.13, 0.22)),
        shot=2e-4 * sensor,
        read=1.2e-3 * sensor,
        blur_noise=float(rng.uniform(0.4, 0.9)) if rng.random() < 0.5 else 0.0,
        jpeg_quality=quality_q,
    )


@lru_cache(maxsize=8)
def _radius2(h: int, w: int) -> F32:
    ys = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / (h / 2)
    xs = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / (w / 2)
    r2 = ((xs[None, :] ** 2 + ys[:, None] ** 2) / 2).astype(np.float32)  # 1 at the corners
    r2.setflags(write=False)
    return r2


def gains(cam: Camera, h: int, w: int, exposure: float, flash: bool) -> F32:
    """(H, W, 3) the per-pixel linear gain: exposure x white balance x vignetting."""
    vig = 1 - cam.vignette * _radius2(h, w)
    wb = cam.wb_flash if flash else cam.wb
    return outer(vig.astype(np.float32), exposure * wb)


def metered(alpha: F32, fg: F32, bg: F32) -> float:
    """What AE meters from a frame's linear layers (alpha (H, W), fg/bg (H, W, 3)): a centre-weighted mean
    luminance (on a 4x subsample), highlights capped, the subject weighted up as face-AE webcams do."""
    a = alpha[::4, ::4]
    lum = a * luminance(fg[::4, ::4]) + (1 - a) * luminance(bg[::4, ::4])
    h, w = lum.shape
    ys = np.exp(-(((np.arange(h) - h / 2) / (h / 2)) ** 2))[:, None]
    xs = np.exp(-(((np.arange(w) - w / 2) / (w / 2)) ** 2))[None, :]
    wgt = ys * xs * (1 + 2 * a)
    return float((np.minimum(lum, 4 * np.median(lum) + 1e-6) * wgt).sum() / wgt.sum())


def tone(linear: F32, cam: Camera) -> F32:
    """Linear (already gained) -> display values in [0, 1]."""
    # np.clip, not cv2.min/max: OpenCV reads a Python scalar as (s, 0, 0, 0) on 3-channel images. The floor
    # keeps zeros and denormals, which take a ~10x slower path, out of the power function.
    x = np.clip(linear, 1e-6, 1.0)
    return np.asarray(cv2.pow(x, 1 / cam.gamma), np.float32)


@lru_cache(maxsize=1)
def _noise_bank() -> F32:
    """A fixed bank of standard normals: slicing it at a random offset is ~20x cheaper than drawing afresh."""
    bank = np.random.default_rng(0x6E6F697365).standard_normal(1 << 22, dtype=np.float32)
    bank.setflags(write=False)
    return bank


def standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> F32:
    n = int(np.prod(shape))
    bank = _noise_bank()
    if n * 2 > bank.size:
        return rng.standard_normal(shape, dtype=np.float32)
    start = int(rng.integers(0, bank.size - n))
    out = bank[start : start + n].reshape(shape)
    return -out if rng.random() < 0.5 else out.copy()


def noise_table(cam: Camera, gain: float) -> F32:
    """(256,) noise sigma in display units as a function of the display value (8-bit bins).

    With y = x ** (1 / gamma): sigma_y = sigma_x(x) * dy/dx
    = sqrt(shot * k * x + (read * k)^2) * y / (gamma * x).
    """
    y = np.maximum(np.arange(256, dtype=np.float64) / 255, 0.5 / 255)
    x = np.maximum(y**cam.gamma, 1e-4)
    sigma = np.sqrt(cam.shot * gain * x + (cam.read * gain) ** 2) * y / (cam.gamma * x)
    return np.minimum(sigma, 0.1).astype(np.float32)


def add_noise(rng: np.random.Generator, display: F32, cam: Camera, gain: float) -> F32:
    """Signal-dependent sensor noise on a noise-free display frame (H, W, 3), looked up per 8-bit level."""
    idx = cv2.convertScaleAbs(display, alpha=255.0)  # display >= 0: rounds to the 8-bit level
    sigma = np.asarray(cv2.LUT(idx, noise_table(cam, gain)), np.float32)
    n = standard_normal(rng, display.shape)
    if cam.blur_noise > 0:
        n = np.asarray(cv2.GaussianBlur(n, (0, 0), cam.blur_noise), np.float32) * np.float32(
            1 + 2 * cam.blur_noise
        )  # restore most of the variance the blur removed
    sigma *= n
    sigma += display
    return sigma


def to_8bit(x: F32) -> F32:
    """Quantise to what a camera delivers (8-bit levels), as float32 in [0, 1]."""
    u8 = cv2.convertScaleAbs(np.maximum(x, 0), alpha=255.0)  # rounds and saturates
    out = u8.astype(np.float32)
    out *= np.float32(1 / 255)
    return out


def jpeg(x: F32, quality: int) -> F32:
    """Re-compress an (H, W, 3) image in [0, 1] (RGB) through JPEG at ``quality``."""
    bgr = np.ascontiguousarray(np.clip(x[..., ::-1] * 255 + 0.5, 0, 255).astype(np.uint8))
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        return x
    dec = np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR))
    return np.ascontiguousarray(dec[..., ::-1], dtype=np.float32) * np.float32(1 / 255)
