"""Scene drift: has the scene moved so far from the flash that the cached flash features no longer fit?

The cached T^f describes the scene at flash time. If the camera moves or the lights change, every later frame
is matted against a flash of a different scene, and the right answer is to ask the user to flash again.

The check compares a tiny grey thumbnail (32x18) of the frame with the no-flash reference's, over the cells
that the flash trimap called background (the person moving is normal; the room moving is not):

* **brightness**: |log(mean / mean_ref)|, the global change (a lamp switched on, the sun behind a cloud);
* **structure**: after dividing each thumbnail by its mean (so exposure changes do not count), the share of
  background cells that changed by more than ``cell_tol`` (the camera moved: the wall's texture and edges
  land in other cells; a person leaning into a few cells stays below the threshold).

Hysteresis (enter above one threshold for a few checks in a row, leave below a lower one for a few checks)
keeps a momentary flicker or a hand waved past the camera from raising and clearing the prompt every second.
A check is a strided subsample, one colour conversion and a 32x18 area resize: about 0.1 ms at 640x480.
No torch, no model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

Transition = Literal["drifted", "settled"]


@dataclass(frozen=True)
class DriftParams:
    size: tuple[int, int] = (18, 32)  # thumbnail (H, W)
    brightness_enter: float = 0.35  # |log ratio| of mean brightness: ~x1.4 or /1.4
    brightness_leave: float = 0.2
    cell_tol: float = 0.12  # a cell changed if its brightness-normalised value moved by more than this
    structure_enter: float = 0.4  # share of background cells changed
    structure_leave: float = 0.25
    enter_checks: int = 3  # consecutive checks above the enter thresholds before reporting drift
    leave_checks: int = 3  # consecutive checks below the leave thresholds before clearing it
    min_background: float = 0.9  # a cell counts as background if this share of it is trimap background
    min_cells: int = 32  # fewer background cells than this: use every cell


@dataclass(frozen=True)
class DriftScore:
    brightness: float  # |log(mean / mean_ref)| over the background cells
    structure: float  # share of background cells that changed after normalising brightness


def thumbnail(frame: np.ndarray, size: tuple[int, int] = (18, 32)) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (h, w) float32 grey thumbnail, cheaply: subsample, grey, area-resize."""
    h, w = size
    step = max(1, min(frame.shape[0] // (h * 4), frame.shape[1] // (w * 4)))
    small = np.ascontiguousarray(frame[::step, ::step])
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)


class DriftDetector:
    """Holds the reference thumbnail and the hysteresis state of one session. Not thread-safe."""

    def __init__(self, params: DriftParams | None = None) -> None:
        self.params = params or DriftParams()
        self._ref: np.ndarray | None = None
        self._ref_mean = 1.0
        self._weights: np.ndarray | None = None  # (h, w) bool: the cells compared
        self._above = 0
        self._below = 0
        self.drifted = False
        self.last: DriftScore | None = None

    @property
    def has_reference(self) -> bool:
        return self._ref is not None

    def set_reference(self, frame: np.ndarray, background: np.ndarray | None = None) -> None:
        """The no-flash reference frame and optionally a (H', W') bool background mask of the same aspect
        (the flash trimap's background); clears any drift."""
        p = self.params
        ref = thumbnail(frame, p.size)
        cells = np.ones(p.size, bool)
        if background is not None:
            share = cv2.resize(background.astype(np.float32), (p.size[1], p.size[0]), interpolation=cv2.INTER_AREA)
            bg_cells = share >= p.min_background
            if int(bg_cells.sum()) >= p.min_cells:
                cells = bg_cells
        self._ref = ref
        self._weights = cells
        self._ref_mean = max(1.0, float(ref[cells].mean()))
        self._above = self._below = 0
        self.drifted = False
        self.last = None

    def clear(self) -> None:
        self._ref = None
        self._weights = None
        self._above = self._below = 0
        self.drifted = False
        self.last = None

    def score(self, frame: np.ndarray) -> DriftScore:
        if self._ref is None or self._weights is None:
            raise ValueError("DriftDetector.score() before set_reference()")
        cur = thumbnail(frame, self.params.size)[self._weights]
        ref = self._ref[self._weights]
        mean = max(1.0, float(cur.mean()))
        brightness = abs(float(np.log(mean / self._ref_mean)))
        changed = np.abs(cur / mean - ref / self._ref_mean) > self.params.cell_tol
        return DriftScore(brightness=brightness, structure=float(changed.mean()))

    def update(self, frame: np.ndarray) -> Transition | None:
        """Score ``frame``; ``"drifted"`` when drift starts, ``"settled"`` when it ends, else None."""
        p = self.params
        s = self.score(frame)
        self.last = s
        above = s.brightness > p.brightness_enter or s.structure > p.structure_enter
        below = s.brightness < p.brightness_leave and s.structure < p.structure_leave
        if not self.drifted:
            self._above = self._above + 1 if above else 0
            if self._above >= p.enter_checks:
                self.drifted, self._above, self._below = True, 0, 0
                return "drifted"
        else:
            self._below = self._below + 1 if below else 0
            if self._below >= p.leave_checks:
                self.drifted, self._above, self._below = False, 0, 0
                return "settled"
        return None
