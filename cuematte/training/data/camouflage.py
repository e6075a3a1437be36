"""Camouflage: a subject dressed in the colours and textures of the wall behind it.

The renderer's people are cartoons whose skin and clothes rarely look like the room, so a network can learn
"person" from appearance alone and then cut holes into real people who don't look like that. A camouflaged
subject looks like its background in the no-flash frame; only the flash (it is nearer, so it brightens more)
and the segmenter tell it apart, which is the cue the flash model is for.
"""

from __future__ import annotations

import numpy as np

from cuematte.training.data.color import F32

# How a camouflaged subject's albedo is made, with relative weights: the background's own texture copied
# under the subject (shifted and mirrored), or the subject's texture recoloured to the background's colours.
CAMOUFLAGE_KINDS: dict[str, float] = {"texture": 0.5, "colour": 0.5}


def _crop(rng: np.random.Generator, canvas: F32, h: int, w: int) -> F32:
    """(h, w, 3) a window of the background canvas (ch >= h, cw >= w), maybe mirrored, shifted by up to a
    tenth of the frame so the copied texture is the room's but not aligned with what is behind the subject."""
    ch, cw = canvas.shape[:2]
    y = int(rng.integers(0, ch - h + 1))
    x = int(rng.integers(0, cw - w + 1))
    out = canvas[y:y + h, x:x + w]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    shift = int(rng.integers(-w // 10, w // 10 + 1))
    return np.roll(out, shift, axis=1)


def camouflage_albedo(rng: np.random.Generator, albedo: F32, alpha: F32, background: F32) -> tuple[F32, str]:
    """Blend the subject's albedo toward the background's.

    ``albedo``: (H, W, 3) linear, the subject's; ``alpha``: (H, W) its coverage; ``background``: (h, w, 3)
    linear background albedo with h >= H, w >= W (the canvas, margins included). Returns the new (H, W, 3)
    albedo in [0, 1] and the kind used.
    """
    h, w = alpha.shape
    kinds = list(CAMOUFLAGE_KINDS)
    p = np.array([CAMOUFLAGE_KINDS[k] for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    bg = _crop(rng, background, h, w)
    if kind == "texture":
        target = bg
    else:
        # The subject's own texture with the background's mean colour and contrast (under the subject).
        wgt = np.maximum(alpha, 1e-3)[..., None]
        mu_p = (albedo * wgt).sum((0, 1)) / wgt.sum()
        sd_p = np.sqrt((((albedo - mu_p) ** 2) * wgt).sum((0, 1)) / wgt.sum()) + 1e-4
        mu_b, sd_b = bg.mean((0, 1)), bg.std((0, 1)) + 1e-4
        target = (albedo - mu_p) * (sd_b / sd_p) + mu_b
    mix = np.float32(rng.uniform(0.6, 1.0))
    out = (1 - mix) * albedo + mix * target
    return np.clip(out, 0.0, 1.0).astype(np.float32), kind
