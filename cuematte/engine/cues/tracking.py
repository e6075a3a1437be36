"""Following the person from the frame the flash was taken with to each later frame: explicit tracker state.

The cached flash prior lies on the person where the flash caught them; they keep moving. Each frame the
tracker fits the person's motion from the reference frame (the no-flash frame taken with the flash, at the
CMN grid) to this frame, starting from the last frame's fit, and moves the prior with it. Its state, the
reference and the last warp, lives in this object (one per cached flash), as RobustVideoMatting keeps its
recurrent state explicit, never in the session's other fields.

ECC follows texture, at a 64-px work size. On a real talking head that turns as it moves, it can slide off the
person and stay off: the flash's person trailed a woman by 23 CMN px (9 % of the width) over a few frames, and
its background vote took her confident hair out of the guidance, which the network then dropped (3.9 % of her
confident person in one frame). So each fit is checked against where the segmenter finds the person: of the ECC
fit, that fit moved so the two person masks' centres meet, and that move alone, the tracker keeps the one under
which the reference frame's person mask disagrees least with this frame's (ECC's own fit on a tie: a frame
that is the reference keeps the identity).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
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
    last fitted warp from a frame to the reference (identity before the first frame); reference_person: (h, w)
    the segmenter's person probability in the reference (None: ECC's fits unchecked)."""

    reference: np.ndarray
    warp: np.ndarray = field(default_factory=lambda: np.eye(2, 3, dtype=np.float32))
    reference_person: np.ndarray | None = None
    _reference_mask: np.ndarray | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if self.reference_person is not None:  # fixed for the flash's life: thresholded once, not every frame
            self._reference_mask = (self.reference_person >= 0.5).astype(np.uint8)

    def follow(self, frame: np.ndarray, person: np.ndarray) -> SubjectWarp:
        """Fit the person's motion to ``frame`` (h, w, 3) uint8 at the CMN grid, ``person`` its (h, w) person
        probability; the fit becomes the next frame's start."""
        fit = estimate_subject_warp(self.reference, frame, person, self.warp, max_shift=MAX_SHIFT,
                                    max_scale=MAX_SCALE, work_side=TRACK_SIDE, max_iters=TRACK_ITERS)
        if self._reference_mask is not None:
            fit = checked_against_masks(fit, self._reference_mask, person >= 0.5)
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


def _centre(mask: np.ndarray) -> np.ndarray | None:
    m = cv2.moments(mask.astype(np.uint8), binaryImage=True)
    return None if m["m00"] == 0 else np.array([m["m10"] / m["m00"], m["m01"] / m["m00"]], np.float32)


def checked_against_masks(fit: SubjectWarp, reference: np.ndarray, person: np.ndarray) -> SubjectWarp:
    """``fit`` (frame -> reference) against the person masks (h, w) of the reference (bool or 0/1 uint8) and of
    the frame (bool): the
    fit itself, the fit with its shift set so that the masks' centres meet ("recentred"), or that shift alone
    ("shifted"), whichever leaves the fewest pixels in one mask and not the other once the reference's is moved
    onto the frame (the fit on a tie)."""
    c_ref, c_now = _centre(reference), _centre(person)
    if c_ref is None or c_now is None:
        return fit
    recentred = fit.warp.copy()
    recentred[:, 2] = c_ref - recentred[:, :2] @ c_now
    shifted = np.eye(2, 3, dtype=np.float32)
    shifted[:, 2] = c_ref - c_now
    ref_u8 = reference.astype(np.uint8, copy=False)
    best, best_err = fit, None
    for cand in (fit, SubjectWarp(warp=recentred, kind="recentred"), SubjectWarp(warp=shifted, kind="shifted")):
        err = int(np.count_nonzero((cand.to_noflash(ref_u8, nearest=True) > 0) != person))
        if best_err is None or err < best_err:
            best, best_err = cand, err
    return best
