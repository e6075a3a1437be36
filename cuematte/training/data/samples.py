"""The rendered sample types. Images are float32 RGB in [0, 1], (H, W, 3); mattes float32 (H, W) in [0, 1].

Consistency contract (noise-free layers): ``noflash == alpha * foreground + (1 - alpha) * background`` up to
sensor noise, 8-bit quantisation and optional JPEG; likewise ``flash`` with ``flash_alpha``,
``flash_foreground`` and ``flash_background``. ``foreground`` / ``background`` themselves carry no noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


@dataclass
class FlashSample:
    noflash: F32  # (H, W, 3) the frame to matte (noisy, as a camera delivers it)
    flash: F32  # (H, W, 3) the flash frame (noisy)
    alpha: F32  # (H, W) ground-truth alpha of the no-flash frame
    foreground: F32  # (H, W, 3) GT foreground colour of the no-flash frame (noise-free)
    background: F32  # (H, W, 3) background of the no-flash frame (noise-free)
    flash_alpha: F32  # (H, W) GT alpha of the flash frame (the person moved a little; far under p_drift)
    person_prior: F32  # (H, W) degraded person mask imitating an off-the-shelf segmenter
    dynamic: bool  # the background changed between the two frames
    flash_foreground: F32 = field(default_factory=lambda: np.zeros((0, 0, 3), np.float32))  # (H, W, 3)
    flash_background: F32 = field(default_factory=lambda: np.zeros((0, 0, 3), np.float32))  # (H, W, 3)
    # (H, W, 3) the background scene at the flash instant as the no-flash camera sees it (no flash light, no
    # shake): bit-identical to ``background`` for static samples, so it is the GT of "what changed".
    background_at_flash: F32 = field(default_factory=lambda: np.zeros((0, 0, 3), np.float32))
    meta: dict[str, Any] = field(default_factory=dict)  # how the sample was made (flash kind, depths...)
    # (H, W, 3) the no-flash frame taken with the flash when the subject has drifted since (SynthConfig.p_drift);
    # None: the no-flash frame itself is that reference.
    reference: F32 | None = None


@dataclass
class FlashSequence:
    """A flash frame taken just before frame 0, then T no-flash frames of a moving subject."""

    flash: F32  # (H, W, 3)
    flash_alpha: F32  # (H, W)
    noflash: F32  # (T, H, W, 3)
    alpha: F32  # (T, H, W)
    foreground: F32  # (T, H, W, 3) noise-free
    background: F32  # (T, H, W, 3) noise-free
    person_prior: F32  # (T, H, W)
    dynamic: bool
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParallaxSample:
    """Two no-flash views; foreground and background layers each moved by their own affine (+ jitter, noise).

    ``*_affine`` map view-0 pixel coordinates to view-1 ones (2x3, x' = A @ [x, y, 1]); ``*_affine_noisy``
    are the same with corner noise, imitating motion estimates a network sees at training time.
    """

    image0: F32  # (H, W, 3)
    image1: F32  # (H, W, 3)
    alpha0: F32  # (H, W)
    alpha1: F32  # (H, W)
    foreground0: F32  # (H, W, 3)
    foreground1: F32  # (H, W, 3)
    background0: F32  # (H, W, 3)
    background1: F32  # (H, W, 3)
    fg_affine: npt.NDArray[np.float64]  # (2, 3)
    bg_affine: npt.NDArray[np.float64]  # (2, 3)
    fg_affine_noisy: npt.NDArray[np.float64]  # (2, 3)
    bg_affine_noisy: npt.NDArray[np.float64]  # (2, 3)
    meta: dict[str, Any] = field(default_factory=dict)
    # (H, W, 2) the foreground's non-rigid jitter in view 1: its pixel x shows what the rigidly moved foreground
    # shows at x + fg_jitter(x), so view 0's point is fg_affine^-1(x + fg_jitter(x)). None: no jitter.
    fg_jitter: F32 | None = None
