"""Small deterministic flash/no-flash scenes: a person-shaped subject before a textured wall (bench, tests, demos)."""

from __future__ import annotations

import cv2
import numpy as np


def person_mask(h: int, w: int, cx: float = 0.5, scale: float = 1.0) -> np.ndarray:
    """(H, W) float32 anti-aliased silhouette: head, neck, shoulders and torso cut off by the bottom edge."""
    ss = 4  # supersample for soft edges
    m = np.zeros((h * ss, w * ss), np.uint8)
    x = int(cx * w * ss)
    s = min(h, w) * ss * scale
    cv2.ellipse(m, (x, int(h * ss * 0.36)), (int(0.17 * s), int(0.22 * s)), 0, 0, 360, 255, -1)
    cv2.rectangle(m, (x - int(0.07 * s), int(h * ss * 0.5)), (x + int(0.07 * s), int(h * ss * 0.64)), 255, -1)
    cv2.ellipse(m, (x, int(h * ss * 1.02)), (int(0.42 * s), int(0.42 * s)), 0, 180, 360, 255, -1)
    return cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def make_pair(h: int = 360, w: int = 640, seed: int = 0, shift: int = 0, exposure: float = 1.0,
              flash_gain: float = 0.9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flash, noflash, alpha): uint8 RGB frames and the no-flash frame's alpha.

    The subject (near) gets ``flash_gain`` of extra irradiance, the wall (far) a twentieth of it; the flash
    frame may be re-exposed by ``exposure`` and the subject may move by ``shift`` pixels between frames.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wall = np.stack([0.35 + 0.1 * np.sin(xx / 23 + c) + 0.05 * np.cos(yy / 17 * (c + 1)) for c in range(3)], -1)
    wall += rng.normal(0, 0.02, (h, w, 3)).astype(np.float32)
    shelf = (np.abs(yy - 0.3 * h) < 6) | (np.abs(xx - 0.12 * w) < 10)
    wall[shelf] = [0.25, 0.18, 0.12]
    skin = np.array([0.55, 0.38, 0.30], np.float32)
    shirt = np.stack([0.15 + 0.05 * np.sin(yy / 5), 0.2 + 0 * yy, 0.35 + 0 * yy], -1)
    alpha_nf = person_mask(h, w)
    body = np.where((yy > 0.55 * h)[..., None], shirt, skin)
    alpha_f = np.roll(alpha_nf, shift, axis=1)
    body_f = np.roll(body, shift, axis=1)

    def render(alpha: np.ndarray, fg: np.ndarray, gain_fg: float, gain_bg: float) -> np.ndarray:
        img = alpha[..., None] * fg * (1 + gain_fg) + (1 - alpha[..., None]) * wall * (1 + gain_bg)
        img = img + rng.normal(0, 0.01, img.shape).astype(np.float32)
        return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)

    noflash = render(alpha_nf, body, 0.0, 0.0)
    flash = render(alpha_f, body_f, flash_gain, flash_gain / 20)
    flash = np.clip(flash.astype(np.float32) * exposure, 0, 255).astype(np.uint8)
    return flash, noflash, alpha_nf


def make_glint_pair(h: int = 360, w: int = 640, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(flash, noflash) of an empty room whose flash lit only a small glint (a mirror far away): the frame got
    brighter, yet nothing in it looks like a subject, to the flash or to a person segmenter."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wall = np.stack([0.3 + 0.3 * xx / w + 0.02 * c + 0 * yy for c in range(3)], -1)  # a plain lit wall
    wall += rng.normal(0, 0.01, (h, w, 3)).astype(np.float32)
    noflash = (np.clip(wall, 0, 1) * 255 + 0.5).astype(np.uint8)
    flash = noflash.copy()
    y, x, ph, pw = int(0.2 * h), int(0.75 * w), h // 12, w // 16
    flash[y:y + ph, x:x + pw] = np.clip(flash[y:y + ph, x:x + pw].astype(np.float32) * 1.6, 0, 255).astype(np.uint8)
    return flash, noflash
