"""Procedural textures (display-space albedo): value noise, cloth patterns, wall finishes.

All return float32; colour textures are (h, w, 3) in [0, 1]. Vectorised: small random grids upsampled by
OpenCV and trigonometric patterns on coordinate grids, never per-pixel Python.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from cuematte.training.data.color import F32, jitter, random_cloth
from cuematte.training.data.fastops import expand, mix


def value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> F32:
    """(h, w) smooth noise in [0, 1] with features about ``cell`` pixels across."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    grid = rng.random((gh, gw), dtype=np.float32)
    return np.asarray(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), np.float32)


def fbm(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3) -> F32:
    """(h, w) fractal noise, zero mean, about unit standard deviation."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        out += amp * (value_noise(rng, h, w, max(cell, 1.5)) - 0.5)
        total += amp * amp
        amp *= 0.5
        cell *= 0.5
    return out * (3.4 / np.sqrt(total))  # uniform grid noise has std ~0.29 before interpolation smooths it


def _grid(h: int, w: int) -> tuple[F32, F32]:
    yy, xx = np.mgrid[0:h, 0:w]
    return yy.astype(np.float32), xx.astype(np.float32)


def _smooth_square(phase: npt.NDArray[np.floating[Any]], duty: float, softness: float) -> F32:
    """A square wave in [0, 1] with soft edges (anti-aliased stripes) from a phase in cycles."""
    s = np.sin(2 * np.pi * phase)
    return np.clip((s - np.cos(np.pi * duty)) / softness + 0.5, 0.0, 1.0).astype(np.float32)


def cloth(rng: np.random.Generator, h: int, w: int, scale: float) -> F32:
    """(h, w, 3) a garment texture: solid, heather noise, stripes, plaid or knit, with folds.

    ``scale`` is the garment size in pixels (e.g. shoulder width); pattern sizes follow it. Patterns are made
    at half resolution (their finest period is a few pixels there) and upsampled.
    """
    h2, w2 = max(2, (h + 1) // 2), max(2, (w + 1) // 2)
    img = _cloth_half(rng, h2, w2, scale / 2)
    return np.asarray(cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)


def _cloth_half(rng: np.random.Generator, h: int, w: int, scale: float) -> F32:
    base = random_cloth(rng)
    other = random_cloth(rng) if rng.random() < 0.8 else jitter(rng, base * 0.6, 0.05)
    yy, xx = _grid(h, w)
    # Domain warp so patterns drape instead of looking printed on a flat card.
    warp = scale * 0.05
    wx = xx + warp * fbm(rng, h, w, scale * 0.4, 2)
    wy = yy + warp * fbm(rng, h, w, scale * 0.4, 2)
    kind = rng.choice(["solid", "heather", "stripes", "plaid", "knit"], p=[0.3, 0.2, 0.22, 0.14, 0.14])
    if kind == "solid":
        t = np.zeros((h, w), np.float32)
    elif kind == "heather":
        t = np.clip(0.5 + 0.25 * fbm(rng, h, w, max(2.0, scale * 0.02), 2), 0, 1)
        other = jitter(rng, base * rng.uniform(0.6, 1.4), 0.1)
    elif kind == "stripes":
        ang = rng.choice([0.0, np.pi / 2, rng.uniform(0, np.pi)])
        period = scale * rng.uniform(0.03, 0.15)
        t = _smooth_square((wx * np.cos(ang) + wy * np.sin(ang)) / period, rng.uniform(0.2, 0.6), 0.6)
    elif kind == "plaid":
        period = scale * rng.uniform(0.06, 0.2)
        a = _smooth_square(wx / period, rng.uniform(0.2, 0.5), 0.5)
        b = _smooth_square(wy / period, rng.uniform(0.2, 0.5), 0.5)
        t = np.clip(0.55 * a + 0.55 * b, 0, 1)
    else:  # knit / ribbed: a fine vertical rib
        period = max(1.6, scale * rng.uniform(0.008, 0.02))
        t = (0.5 + 0.3 * np.sin(wx * np.float32(2 * np.pi / period))).astype(np.float32)
        other = base * 0.7
    # Folds and fabric grain: low-frequency shading and a little fine noise.
    folds = 1 + rng.uniform(0.03, 0.12) * fbm(rng, h, w, scale * 0.25, 2)
    grain = 1 + 0.025 * (value_noise(rng, h, w, 1.0) - 0.5)
    img = mix(t.astype(np.float32), base, other) * expand(folds * grain)
    return np.clip(img, 0, 1)


def wall(rng: np.random.Generator, h: int, w: int, base: F32) -> F32:
    """(h, w, 3) a wall finish around ``base``: plaster, wallpaper stripes, brick, wood panels or tiles.

    Patterns are computed at half resolution (walls are a little out of focus anyway) and upsampled.
    """
    h2, w2 = max(2, (h + 1) // 2), max(2, (w + 1) // 2)
    img = _wall_half(rng, h2, w2, base)
    return np.asarray(cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)


def _wall_half(rng: np.random.Generator, h: int, w: int, base: F32) -> F32:
    kind = rng.choice(["plaster", "wallpaper", "brick", "wood", "tiles"], p=[0.45, 0.15, 0.15, 0.15, 0.1])
    yy, xx = _grid(h, w) if kind != "plaster" else (np.empty(0, np.float32), np.empty(0, np.float32))
    lum = np.ones((h, w), np.float32)
    t = np.zeros((h, w), np.float32)
    other = base
    if kind == "plaster":
        lum = 1 + rng.uniform(0.01, 0.05) * fbm(rng, h, w, rng.uniform(4, 20), 3)
    elif kind == "wallpaper":
        period = rng.uniform(5, 20)
        t = _smooth_square(xx / period, rng.uniform(0.2, 0.5), 0.8)
        if rng.random() < 0.5:  # a repeating motif row
            t = t * (0.7 + 0.3 * np.sin(2 * np.pi * yy / period) ** 2)
        other = jitter(rng, base * rng.uniform(0.7, 1.2), 0.08)
    elif kind == "brick":
        bh = rng.uniform(3.5, 8)
        bw = bh * rng.uniform(2.2, 3.0)
        row = np.floor(yy / bh)
        xs = xx + (row % 2) * bw * 0.5
        col = np.floor(xs / bw)
        mortar = ((yy % bh) < 0.8) | ((xs % bw) < 0.8)
        # Per-brick shade from a hash of (row, col): vectorised, deterministic, no Python loops.
        shade = (np.sin(row * 12.9898 + col * 78.233) * 43758.5453) % 1.0
        lum = (0.8 + 0.35 * shade).astype(np.float32)
        lum = np.where(mortar, 1.35, lum).astype(np.float32)
        lum *= 1 + 0.05 * fbm(rng, h, w, 2, 2)
    elif kind == "wood":
        pw = rng.uniform(8, 22)
        board = np.floor(xx / pw)
        shade = (np.sin(board * 12.9898) * 43758.5453) % 1.0
        grain = np.asarray(
            cv2.resize(
                rng.random((max(2, h // 12), max(2, w)), dtype=np.float32),
                (w, h),
                interpolation=cv2.INTER_LINEAR,
            )
        )
        lum = (0.8 + 0.25 * shade + 0.15 * (grain - 0.5)).astype(np.float32)
        lum = np.where((xx % pw) < 0.7, 0.6, lum).astype(np.float32)
    else:  # tiles
        ts = rng.uniform(6, 15)
        grout = ((xx % ts) < 0.7) | ((yy % ts) < 0.7)
        lum = np.where(grout, 0.75, 1.0).astype(np.float32) * (1 + 0.02 * fbm(rng, h, w, 3, 2))
    return np.clip(mix(t.astype(np.float32), base, other) * expand(lum.astype(np.float32)), 0, 1)


def smooth_blobs(rng: np.random.Generator, h: int, w: int, n: int, radius: float) -> npt.NDArray[np.float32]:
    """(h, w) a few soft blobs in [0, 1] (e.g. leaves, cheeks, lamp glows)."""
    img = np.zeros((h, w), np.float32)
    for _ in range(n):
        c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        cv2.circle(img, c, max(1, int(radius * rng.uniform(0.5, 1.5))), 1.0, -1)
    return np.asarray(cv2.GaussianBlur(img, (0, 0), radius * 0.5), np.float32)
