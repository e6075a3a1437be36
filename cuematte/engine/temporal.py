"""Motion-aware temporal smoothing of alpha, against flicker (the first thing video-call users notice).

Where the picture did not change since the previous frame, the new alpha is blended with the previous one;
where it changed (the person moved), the new alpha is taken as it is, so smoothing never drags a ghost behind
motion. The weight of the previous alpha is ``strength * clip(1 - |dY| / motion, 0, 1)`` with |dY| the blurred
luma difference between consecutive frames. Cheap: a few element-wise passes at the working size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from cuematte.engine.errors import InputError

VIDEO_SMOOTHING = 0.5  # live video default (server, virtual webcam, videos); measured in the model card


@dataclass
class TemporalSmoother:
    """State for one stream; :meth:`reset` when the stream or the cached flash changes."""

    strength: float = 0.6  # weight of the previous alpha where nothing moved; 0 disables smoothing
    motion: float = 10.0  # luma difference (0..255) at which the previous alpha stops counting
    _luma: np.ndarray | None = field(default=None, init=False, repr=False)
    _alpha: np.ndarray | None = field(default=None, init=False, repr=False)
    _lut: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength < 1.0:
            raise InputError(f"temporal smoothing strength must be in [0, 1), got {self.strength}")
        if self.motion <= 0:
            raise InputError(f"temporal motion threshold must be > 0, got {self.motion}")

    def reset(self) -> None:
        self._luma = self._alpha = None

    def __call__(self, frame: np.ndarray, alpha: np.ndarray, fixed: np.ndarray | None = None) -> np.ndarray:
        """frame (H, W, 3) uint8 RGB and its alpha (H, W) float32 -> smoothed alpha (H, W) float32.
        ``fixed`` (H, W) bool: pixels whose alpha is final (the guidance is certain there), never blended."""
        if self.strength == 0.0:
            return alpha
        y, previous = self.begin(frame)
        assert y is not None
        if previous is None:
            out: np.ndarray = alpha.astype(np.float32, copy=False)
        else:
            prev_y, prev_a = previous
            w = self.weight(cv2.blur(cv2.absdiff(y, prev_y), (5, 5)))
            if fixed is not None:
                w[fixed] = 0.0
            out = self.blend(alpha, prev_a, w)
        self.remember(y, out)
        return out

    # The steps of one call, public for callers that smooth only part of a frame (cuematte.engine.band).
    def begin(self, frame: np.ndarray) -> tuple[np.ndarray | None, tuple[np.ndarray, np.ndarray] | None]:
        """frame (H, W, 3) uint8 RGB -> its luma (H, W) uint8 (None with smoothing off) and the previous frame's
        (luma, alpha), or None where there is nothing to blend with (the first frame, a new size, smoothing off)."""
        if self.strength == 0.0:
            return None, None
        # uint8 luma, difference and blur, then a 256-entry table for the weight: ~1 ms at 720p.
        y = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        prev_y, prev_a = self._luma, self._alpha
        if prev_y is None or prev_a is None or prev_y.shape != y.shape:
            return y, None
        return y, (prev_y, prev_a)

    def weight(self, diff: np.ndarray) -> np.ndarray:
        """Blurred luma difference (h, w) uint8 -> the previous alpha's weight (h, w) float32."""
        return np.asarray(cv2.LUT(diff, self._table()))

    @staticmethod
    def blend(alpha: np.ndarray, prev_alpha: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """alpha + weight * (prev_alpha - alpha), all (h, w) float32 -> a new array."""
        return np.asarray(cv2.add(alpha, cv2.multiply(weight, cv2.subtract(prev_alpha, alpha, dtype=cv2.CV_32F),
                                                      dtype=cv2.CV_32F), dtype=cv2.CV_32F))

    def remember(self, luma: np.ndarray | None, alpha: np.ndarray) -> None:
        """Keep this frame's luma (H, W) uint8 and alpha (H, W) float32 for the next one (not copied: the
        caller's later in-place changes to ``alpha``, the guidance held, are what the next frame blends with)."""
        if luma is not None:
            self._luma, self._alpha = luma, alpha

    def _table(self) -> np.ndarray:
        """(256,) float32: the weight of the previous alpha for each blurred luma difference."""
        if self._lut is None:
            d = np.arange(256, dtype=np.float32)
            self._lut = (np.clip(1.0 - d / self.motion, 0.0, 1.0) * self.strength).astype(np.float32)
        return self._lut
