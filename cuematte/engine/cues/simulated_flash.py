"""A flash simulated for footage shot without one, so that the flash path (located subject, tracking, the
flash's votes in the guidance) can be exercised on real photos and videos: ``check-real --rendered-flash`` and
``python -m cuematte.training.photo_flash``.

Real footage comes with no depth, so the flash is rendered from a depth proxy: the person (the segmenter's mask,
thresholded, edges softened by 2 px) stands at distance 1 and everything else at ``bg_distance``; the added
irradiance falls with distance squared and is proportional to the pixel's linear colour (its albedo under
roughly even ambient light). Auto exposure, sensor noise and a small shift of the subject (they moved) follow.
"""

from __future__ import annotations

import cv2
import numpy as np


def render_flash(noflash: np.ndarray, person: np.ndarray, *, bg_distance: float = 2.5, strength: float = 1.5,
                 exposure: float = 0.8, shift: tuple[float, float] = (2.0, 1.0), seed: int = 0) -> np.ndarray:
    """Flash frame (H, W, 3) uint8 for a no-flash photo (H, W, 3) uint8 and a person mask (H, W) in [0, 1]."""
    rng = np.random.default_rng(seed)
    lin = (noflash.astype(np.float32) / 255.0) ** 2.2
    near = cv2.GaussianBlur((person > 0.5).astype(np.float32), (5, 5), 0)
    inv_d2 = near + (1.0 - near) / bg_distance**2
    lit = lin * (1.0 + strength * inv_d2[..., None])
    lit *= exposure  # auto exposure pulls the brighter frame part of the way back
    lit += rng.normal(0.0, 0.004, lit.shape).astype(np.float32)
    toned = (np.clip(lit, 0.0, 1.0) ** (1 / 2.2)).astype(np.float32)
    m = np.array([[1, 0, shift[0]], [0, 1, shift[1]]], np.float32)
    out = cv2.warpAffine(toned, m, (toned.shape[1], toned.shape[0]), borderMode=cv2.BORDER_REFLECT)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
