"""2-D motion: small affines, smooth trajectories, non-rigid jitter, and warping of layers.

Affines are (2, 3) float64 mapping source pixel coordinates to destination ones, as OpenCV's warpAffine
takes them; ``compose(a, b)`` applies b first, then a.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from cuematte.training.data.color import F32
from cuematte.training.data.textures import value_noise

Affine = npt.NDArray[np.float64]


def identity() -> Affine:
    return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def similarity(rot_deg: float, scale: float, tx: float, ty: float, centre: tuple[float, float]) -> Affine:
    """Rotate by ``rot_deg`` and scale about ``centre``, then translate by (tx, ty)."""
    m = np.asarray(cv2.getRotationMatrix2D(centre, rot_deg, scale), np.float64)
    m[:, 2] += (tx, ty)
    return m


def compose(a: Affine, b: Affine) -> Affine:
    """a after b."""
    a3 = np.vstack([a, [0, 0, 1]])
    b3 = np.vstack([b, [0, 0, 1]])
    return (a3 @ b3)[:2]


def random_affine(
    rng: np.random.Generator,
    shift: float,
    rot_deg: float,
    scale: float,
    centre: tuple[float, float],
    shear: float = 0.0,
) -> Affine:
    """A small random affine: uniform rotation, log-uniform scale, uniform shift (pixels), optional shear."""
    m = similarity(
        float(rng.uniform(-rot_deg, rot_deg)),
        float(np.exp(rng.uniform(-scale, scale))),
        float(rng.uniform(-shift, shift)),
        float(rng.uniform(-shift, shift)),
        centre,
    )
    if shear:
        s = np.array([[1, rng.uniform(-shear, shear), 0], [rng.uniform(-shear, shear), 1, 0]])
        c = np.array(centre)
        s[:, 2] = c - s[:, :2] @ c
        m = compose(m, s)
    return m


def corner_noise(rng: np.random.Generator, m: Affine, h: int, w: int, sigma_px: float) -> Affine:
    """``m`` perturbed so each image corner lands ~``sigma_px`` away: a noisy estimate of the motion."""
    src = np.array([[0, 0], [w, 0], [0, h]], np.float32)
    dst = (src @ m[:, :2].T + m[:, 2]).astype(np.float32) + rng.normal(0, sigma_px, (3, 2)).astype(np.float32)
    return np.asarray(cv2.getAffineTransform(src, dst), np.float64)


def warp(x: F32, m: Affine, size: tuple[int, int], border: int = cv2.BORDER_CONSTANT) -> F32:
    """Warp an (h, w[, c]) map by ``m`` into ``size`` = (H, W) (bilinear; channels > 4 are done in chunks)."""
    H, W = size
    if x.ndim == 3 and x.shape[2] > 4:
        return np.concatenate([warp(x[..., i : i + 4], m, size, border) for i in range(0, x.shape[2], 4)], -1)
    out: F32 = np.asarray(
        cv2.warpAffine(x, m.astype(np.float32), (W, H), flags=cv2.INTER_LINEAR, borderMode=border), np.float32
    )
    return out[..., None] if x.ndim == 3 and out.ndim == 2 else out


def elastic(rng: np.random.Generator, h: int, w: int, amp_px: float, cell: float) -> tuple[F32, F32]:
    """A smooth random displacement field (map_x, map_y) for cv2.remap, up to about ``amp_px``."""
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    dx = (value_noise(rng, h, w, cell) - 0.5) * 2 * amp_px
    dy = (value_noise(rng, h, w, cell) - 0.5) * 2 * amp_px
    return xs + dx, ys + dy


def remap(x: F32, maps: tuple[F32, F32]) -> F32:
    out = np.asarray(
        cv2.remap(x, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT), np.float32
    )
    return out[..., None] if x.ndim == 3 and out.ndim == 2 else out


def smooth_path(
    rng: np.random.Generator, n: int, amplitude: float, wiggles: float = 1.5
) -> npt.NDArray[np.float64]:
    """(n,) a smooth random 1-D trajectory starting at 0, within about +-``amplitude``.

    A sum of a few sinusoids with random frequencies (up to ``wiggles`` cycles over the clip) and phases.
    """
    t = np.linspace(0, 1, n)
    path = np.zeros(n)
    for k in range(3):
        f = rng.uniform(0.2, wiggles) * (k + 1) / 2
        ph = rng.uniform(0, 2 * np.pi)
        path += rng.normal(0, 1) / (k + 1) * (np.sin(2 * np.pi * f * t + ph) - np.sin(ph))
    peak = np.abs(path).max()
    return path * (amplitude * rng.uniform(0.4, 1.0) / peak) if peak > 0 else path
