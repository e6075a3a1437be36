"""The per-frame guidance: what the real-data cues are sure of, and the band the network may decide.

The per-frame alpha is a refinement of a guidance trimap, as in the paper's own composition
alpha = t_fg + t_un * d and Mask-Guided Matting's progressive refinement: the network's output replaces the
guidance only where the guidance is unknown. The guidance comes from cues trained on real data or measured
physically, never from a network trained on rendered people:

* the person segmenter's mask of this frame (MediaPipe, trained on real people): certain where it is
  confident, a band around every edge left unknown. The band is thin on the person's side and wide on the
  background's: the network may add what the segmenter missed (hair, a held object) well outside its edge,
  but may take away from its confident person only at the very edge, since on real people the segmenter's
  confident interior is right far more often than a network that has seen rendered people only;
* the cached flash trimap, moved onto the person by the subject tracking: where it contradicts the segmenter
  (a flash-lit held object the segmenter calls background, an unlit person behind it calls person) the guidance
  says unknown, so the network decides there with the flash in view. With ``confirm_background`` (models
  configured so), once the flash has located the subject, certain background needs the flash to call it
  background too: where the flash cannot say (its edge band), the network may add to the person. Certain
  person never needs it: on a real face the flash is often unsure, and a network trained on rendered people
  must not decide there. A flash that located nobody leaves the guidance to the segmenter alone.

So pixels both cues call certain come out exactly 0 or 1, and a network that has never seen a real face cannot
cut a hole through one. Everything here works at the CMN grid (h, w).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cuematte.engine.cues.trimap import BG, FG, UNKNOWN, trimap_one_hot

GUIDANCE_BANDS = (0.015, 0.04)  # the default (inner, outer) band: GuidanceParams, FNFConfig.guidance_bands


@dataclass(frozen=True)
class GuidanceParams:
    sure: float = 0.9  # segmenter probability at or above which a pixel may be certain person ...
    unsure: float = 0.1  # ... at or below which it may be certain background
    # Radius of the unknown band inside the segmenter's confident person and inside its confident background,
    # as fractions of the short side (FNFConfig.guidance_bands: a model is trained with its own).
    inner: float = GUIDANCE_BANDS[0]
    outer: float = GUIDANCE_BANDS[1]
    # Once the flash located the subject, certain background needs the flash's agreement, not just its
    # silence (FNFConfig.guidance_confirm_bg).
    confirm_background: bool = False
    # A pocket inside the certain person where the segmenter is unsure (never sure of background) is person:
    # left unknown, a network trained on rendered people cut holes through real hair there (check-real;
    # FNFConfig.guidance_fill_pockets).
    fill_pockets: bool = False


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius < 1:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    # The frame border erodes nothing: a person cut by the bottom edge is still certain there.
    return cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE) > 0


def enclosed(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> the parts of it that do not reach the image border (4-connected): the holes of the rest."""
    # One flood fill from a ring around the frame marks what reaches the border (0.05 ms at the CMN grid, a tenth
    # of labelling the components).
    ring = np.pad(mask.astype(np.uint8), 1, constant_values=1)
    cv2.floodFill(ring, None, (0, 0), 2, flags=4)
    return ring[1:-1, 1:-1] == 1


def _pockets(fg: np.ndarray, unsure: np.ndarray) -> np.ndarray:
    """Parts of ~fg (h, w) bool that the certain person encloses (they reach no border) and where the segmenter is
    nowhere sure of background (``unsure`` everywhere): hair over a forehead, a shadowed cheek."""
    holes = enclosed(~fg)
    if not holes.any():  # most frames: labelling only when there is a pocket
        return holes
    n, labels = cv2.connectedComponents(holes.astype(np.uint8), connectivity=4)
    keep = np.ones(n, bool)
    keep[0] = False  # not a pocket
    # A gap the segmenter is sure of (between an arm and the body) is not one either.
    keep[np.bincount(labels[~unsure], minlength=n) > 0] = False
    return keep[labels]


def build_guidance(person: np.ndarray, flash_trimap: np.ndarray | None = None,
                   params: GuidanceParams = GuidanceParams()) -> np.ndarray:
    """Segmenter person probability (h, w) float in [0, 1] and the flash trimap on this frame (h, w) uint8
    0/128/255 (None or all unknown: the flash located nobody) -> the guidance trimap (h, w) uint8 0/128/255.

    Certain person: the segmenter is sure, ``inner`` inside its edge (with ``params.fill_pockets``, also the
    pockets that region encloses where it is nowhere sure of background), and the flash does not call it
    background. Certain background: the segmenter is sure, ``outer`` away from its edge, and the flash does not
    call it person (with ``params.confirm_background`` and a flash that found someone: the flash calls it
    background). Everything else is unknown.
    """
    short = min(person.shape[:2])
    fg = _erode(person >= params.sure, max(1, round(short * params.inner)))
    if params.fill_pockets:
        fg |= _pockets(fg, person > params.unsure)
    bg = _erode(person <= params.unsure, max(1, round(short * params.outer)))
    if flash_trimap is not None:
        fg &= flash_trimap != BG
        if params.confirm_background and (flash_trimap == FG).any():
            bg &= flash_trimap == BG
        else:
            bg &= flash_trimap != FG
    out = np.full(person.shape[:2], UNKNOWN, np.uint8)
    out[fg] = FG
    out[bg] = BG
    return out


def trimap_from_one_hot(one_hot: np.ndarray) -> np.ndarray:
    """(3, h, w) [background, unknown, foreground] scores (a one-hot trimap resized or warped to the CMN grid)
    -> (h, w) uint8 0/128/255 by the largest score (the first of equal ones, as argmax; two comparisons are a
    quarter of argmax's cost over the channel axis, on every frame)."""
    bg, unknown, fg = one_hot
    out = np.where(unknown > bg, np.uint8(UNKNOWN), np.uint8(BG))
    out[fg > np.maximum(bg, unknown)] = FG
    return out


def guidance_input(guidance: np.ndarray) -> np.ndarray:
    """(h, w) uint8 guidance -> (1, 3, h, w) float32 one-hot, the per-frame graph's ``guidance`` input."""
    return trimap_one_hot(guidance)[None]
