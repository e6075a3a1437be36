"""A flash burst: the no-flash reference taken as it starts, then the brightest frame while the flash is lit.

Brightest, not first: a screen needs a frame or two to turn white, a phone torch to warm up, and the camera's
auto-exposure then starts pulling the brightness back down. Frames are whatever the caller has (RGB arrays, or
decoded video frames with a cheap luma of their own); ``measure`` gives a frame's brightness.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np

from cuematte.engine.errors import CuematteError
from cuematte.engine.frames import luma

F = TypeVar("F")


class FlashCaptureError(CuematteError):
    """A flash burst gave no usable pair: no frame before it, or none while it was lit."""


def mean_luma(rgb: np.ndarray) -> float:
    """Mean Rec. 601 luma of an (H, W, 3) uint8 RGB frame from every 8th pixel: cheap enough for every frame."""
    return float(luma(rgb[::8, ::8].astype(np.float32)).mean())


class FlashCapture(Generic[F]):
    """One burst at a time. ``delay``: seconds after :meth:`begin` before frames can show the flash (they are
    not measured); ``duration``: seconds after which the burst is over by itself (None: the caller ends it)."""

    def __init__(self, measure: Callable[[F], float], *, delay: float = 0.0, duration: float | None = None) -> None:
        self.luma = measure
        self.delay = delay
        self.duration = duration
        self.active = False
        self.frames = 0  # frames measured in this burst
        self._noflash: F | None = None
        self._best: tuple[float, F] | None = None
        self._start = 0.0

    def begin(self, noflash: F | None, now: float | None = None) -> None:
        """Start a burst; ``noflash`` is the newest frame before the flash (None: none arrived yet)."""
        self._noflash, self._best, self.frames = noflash, None, 0
        self._start = time.perf_counter() if now is None else now
        self.active = True

    def offer(self, frame: F, now: float | None = None) -> bool:
        """Measure ``frame`` if the burst is on; True once its ``duration`` is over (then it is no longer active)."""
        if not self.active:
            return False
        now = time.perf_counter() if now is None else now
        if now - self._start >= self.delay:
            lum = self.luma(frame)
            self.frames += 1
            if self._best is None or lum > self._best[0]:
                self._best = (lum, frame)
        if self.duration is not None and now - self._start >= self.duration:
            self.active = False
        return not self.active

    def end(self) -> tuple[F, F]:
        """Close the burst: (flash, noflash), or :class:`FlashCaptureError` saying which frame is missing."""
        self.active = False
        if self._noflash is None:
            raise FlashCaptureError("no camera frame arrived before the flash; start the camera first")
        if self._best is None:
            raise FlashCaptureError("no camera frame arrived while the flash was lit; flash for longer")
        return self._best[1], self._noflash
