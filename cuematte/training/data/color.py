"""Colour helpers: transfer curves, light colour temperature, and palettes of skin, hair and cloth colours."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

# sRGB-ish display colours (0..255), light to dark; sampled between neighbours so tones vary continuously.
SKIN_TONES = (
    np.array(
        [
            [255, 226, 204],
            [243, 203, 176],
            [230, 183, 150],
            [214, 160, 125],
            [190, 135, 98],
            [160, 106, 76],
            [128, 82, 58],
            [100, 63, 45],
            [74, 48, 36],
        ],
        np.float32,
    )
    / 255.0
)
HAIR_COLOURS = (
    np.array(
        [
            [22, 18, 16],
            [40, 28, 22],
            [62, 42, 30],
            [96, 64, 40],
            [128, 70, 40],
            [170, 130, 85],
            [205, 170, 115],
            [150, 145, 140],
            [215, 210, 205],
        ],
        np.float32,
    )
    / 255.0
)
HAIR_WEIGHTS = np.array([0.22, 0.2, 0.16, 0.12, 0.06, 0.08, 0.07, 0.05, 0.04])
# Cloth colours people wear on calls: many neutrals, some saturated.
CLOTH_COLOURS = (
    np.array(
        [
            [20, 20, 24],
            [45, 45, 50],
            [120, 120, 125],
            [200, 200, 205],
            [240, 240, 235],
            [30, 40, 80],
            [60, 90, 150],
            [120, 30, 40],
            [80, 90, 50],
            [150, 120, 90],
            [200, 80, 60],
            [230, 200, 80],
            [70, 140, 130],
            [150, 90, 160],
            [100, 160, 210],
            [235, 170, 180],
        ],
        np.float32,
    )
    / 255.0
)


@lru_cache(maxsize=4)
def _linear_table(gamma: float) -> F32:
    t = (np.arange(256, dtype=np.float64) / 255) ** gamma
    return np.maximum(t, 1e-6).astype(np.float32)


def to_linear(x: F32, gamma: float = 2.2) -> F32:
    """Display values (albedo textures, photos) -> linear light, through 8-bit levels as textures are stored.

    A lookup table: ~8x cheaper than a power function per pixel.
    """
    u8 = cv2.convertScaleAbs(np.clip(x, 0.0, 1.0), alpha=255.0)
    return np.asarray(cv2.LUT(u8, _linear_table(float(gamma))), np.float32)


def to_display(x: F32, gamma: float = 2.2) -> F32:
    return np.power(np.clip(x, 1e-8, 1.0), np.float32(1.0 / gamma)).astype(np.float32, copy=False)


def kelvin_rgb(kelvin: float) -> F32:
    """Linear RGB of a black-body-like light at ``kelvin``, normalised to green = 1 (6500 K ~ white).

    Tanner Helland's fit of the Planckian locus, made relative to 6500 K; good to a few percent.
    """

    def raw(k: float) -> np.ndarray:
        t = k / 100.0
        r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
        g = (
            99.4708025861 * np.log(t) - 161.1195681661
            if t <= 66
            else 288.1221695283 * (t - 60) ** -0.0755148492
        )
        b = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5177312231 * np.log(t - 10) - 305.0447927307)
        return np.clip(np.array([r, g, b], np.float64), 1.0, 255.0) / 255.0

    rgb = (raw(kelvin) / raw(6500.0)) ** 2.2  # the fit is in display space
    return (rgb / rgb[1]).astype(np.float32)


def pick_between(rng: np.random.Generator, table: F32, weights: np.ndarray | None = None) -> F32:
    """A colour on the segment between a random row of ``table`` and its neighbour (3,)."""
    i = int(rng.choice(len(table), p=None if weights is None else weights / weights.sum()))
    j = min(len(table) - 1, i + 1)
    t = float(rng.uniform(0, 1)) if weights is None else float(rng.uniform(0, 0.3))
    return ((1 - t) * table[i] + t * table[j]).astype(np.float32)


def jitter(rng: np.random.Generator, colour: F32, amount: float) -> F32:
    """Multiplicative per-channel jitter (3,)."""
    return np.clip(colour * (1 + rng.normal(0, amount, 3)), 0.0, 1.0).astype(np.float32)


def random_cloth(rng: np.random.Generator) -> F32:
    if rng.random() < 0.75:
        return jitter(rng, CLOTH_COLOURS[int(rng.integers(len(CLOTH_COLOURS)))], 0.08)
    return rng.uniform(0.05, 0.95, 3).astype(np.float32)


def luminance(x: F32) -> F32:
    """(..., 3) -> (...) Rec. 709 luma weights."""
    return (x[..., 0] * 0.2126 + x[..., 1] * 0.7152 + x[..., 2] * 0.0722).astype(np.float32)
