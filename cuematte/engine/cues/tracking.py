"""Following the person from the frame the flash was taken with to each later frame: explicit tracker state.

The cached flash prior lies on the person where the flash caught them; they keep moving. Each frame the
tracker fits the person's motion from the reference frame (the no-flash frame taken with the flash, at the
CMN grid) to this frame, starting from the last frame's fit, and moves the prior with it. Its state, the
reference and the last warp, lives in this object (one per cached flash), as RobustVideoMatting keeps its
recurrent state explicit, never in the session's other fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cuematte.engine.cues.align import SubjectWarp, estimate_subject_warp

# Work size (long side, px) of the fit: the person's motion is coarse, the fit needs no fine detail (the
# measurements behind the choice are in the shipped model's card).
TRACK_SIDE = 64
# ECC iterations per stage of each frame's fit (the flash's own fit keeps 100). The fit starts from the last
# frame's; where frames jump (the service drops stale ones) ECC crawled to 100 iterations on a third of the bench's
# frames, 20-30 ms a frame. Capped at 30: the same warps on the real clips (<= 0.08 CMN px, alpha <= 0.016).
TRACK_ITERS = 30
# How far a session's person may have moved from where the flash caught them (fractions of the long side).
MAX_SHIFT, MAX_SCALE = 0.4, 0.3


@dataclass
class SubjectTracker:
    """reference: (h, w, 3) uint8, the no-flash frame taken with the flash at the CMN grid; warp: (2, 3) the
    last fitted warp from a frame to the reference (identity before the first frame)."""

    reference: np.ndarray
    warp: np.ndarray = field(default_factory=lambda: np.eye(2, 3, dtype=np.float32))

    def follow(self, frame: np.ndarray, person: np.ndarray) -> SubjectWarp:
        """Fit the person's motion to ``frame`` (h, w, 3) uint8 at the CMN grid, ``person`` its (h, w) mask;
        the fit becomes the next frame's start."""
        fit = estimate_subject_warp(self.reference, frame, person, self.warp, max_shift=MAX_SHIFT,
                                    max_scale=MAX_SCALE, work_side=TRACK_SIDE, max_iters=TRACK_ITERS)
        self.warp = fit.warp
        return fit

    def move(self, prior: np.ndarray, frame: np.ndarray, person: np.ndarray) -> np.ndarray:
        """The cached prior (1, C, h, w), lying on the person in the flash's frame, moved onto where the
        person is in ``frame`` (see :meth:`follow`)."""
        fit = self.follow(frame, person)
        src = np.asarray(prior, np.float32)
        moved = np.empty_like(src)
        for c in range(src.shape[1]):  # plane by plane, straight from and into NCHW: no transposes or copies
            fit.to_noflash(src[0, c], out=moved[0, c])
        return moved
