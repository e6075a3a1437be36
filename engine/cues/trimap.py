"""Flash trimap t^f for the flash frame: flash-ratio seeds + a person segmenter + erode/dilate.

The flash says what is *near* the camera, the segmenter says what is a *person*: we keep the segmenter's
person components that the flash actually lit (so a colleague walking behind, out of the flash's reach, is
background), and fall back to GrabCut seeded by the flash evidence when no segmenter is configured or when it
finds no lit person.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, Protocol

import cv2
import numpy as np

from engine.cues.align import Alignment, estimate_alignment
from engine.cues.flash_ratio import FlashRatio, FlashRatioParams, flash_ratio_map, pick_seeds
from engine.errors import FlashCueError, SizeMismatchError
from engine.frames import check_frame, luma, resize

log = logging.getLogger(__name__)

BG, UNKNOWN, FG = 0, 128, 255
Method = Literal["segmenter", "segmenter-only", "grabcut", "unknown"]


class PersonSegmenter(Protocol):
    """Anything with ``segment((H, W, 3) uint8 RGB) -> (H, W) float32 person probability``."""

    name: str

    def segment(self, image: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class TrimapParams:
    ratio: FlashRatioParams = field(default_factory=FlashRatioParams)
    seeds: int = 5  # q point seeds (paper: q = 5)
    band: float = 0.025  # erode/dilate kernel as a fraction of the short side (paper: 25 px at ~1000 px)
    min_lit_fraction: float = 0.004  # below this share of brightened pixels the flash frame is rejected
    component_support: float = 0.02  # a person component is kept if this share of it is flash-confident


@dataclass(frozen=True)
class FlashCue:
    """Everything the flash pre-processing found, kept for inspection (``--trimap-out``) and the server."""

    trimap: np.ndarray  # (H, W) uint8: 0 background, 128 unknown, 255 foreground (flash frame geometry)
    person: np.ndarray  # (H, W) float32 fused foreground probability
    ratio: FlashRatio
    seeds: np.ndarray  # (k, 2) int32 (x, y)
    alignment: Alignment
    # segmenter: fused with the flash evidence; segmenter-only: the flash was too weak to locate the subject;
    # unknown: nothing located at all, every pixel unknown (only when the caller allows it)
    method: Method

    def one_hot(self) -> np.ndarray:
        """(3, H, W) float32 one-hot [background, unknown, foreground] as the flash graph expects."""
        return trimap_one_hot(self.trimap)


def trimap_one_hot(trimap: np.ndarray) -> np.ndarray:
    """(H, W) uint8 trimap (0 / 128 / 255) -> (3, H, W) float32 one-hot [background, unknown, foreground]."""
    return np.stack([trimap == BG, trimap == UNKNOWN, trimap == FG]).astype(np.float32)


def _kernel(size: tuple[int, int], band: float) -> np.ndarray:
    k = max(3, round(min(size) * band)) | 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


def trimap_from_mask(mask: np.ndarray, band: float = 0.025) -> np.ndarray:
    """Binary (H, W) mask -> uint8 trimap: eroded mask is foreground, outside the dilated mask background."""
    m = (mask > 0).astype(np.uint8)
    kernel = _kernel(m.shape, band)
    fg = cv2.erode(m, kernel)
    maybe = cv2.dilate(m, kernel)
    tri = np.full(m.shape, UNKNOWN, np.uint8)
    tri[maybe == 0] = BG
    tri[fg == 1] = FG
    return tri


def _grabcut(flash: np.ndarray, ratio: FlashRatio, seeds: np.ndarray, work_side: int = 320) -> np.ndarray:
    """GrabCut seeded by the flash evidence, at low resolution -> (H, W) float32 {0, 1}."""
    h, w = flash.shape[:2]
    scale = min(1.0, work_side / max(h, w))
    size = (max(16, round(h * scale)), max(16, round(w * scale)))
    img = resize(flash, size)
    mask = np.full(size, cv2.GC_PR_BGD, np.uint8)
    lit = resize(ratio.brightening, size) > 0.5 * float(np.percentile(ratio.brightening, 95))
    mask[lit] = cv2.GC_PR_FGD
    conf = resize(ratio.confident.astype(np.uint8), size, nearest=True) > 0
    mask[cv2.erode(conf.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0] = cv2.GC_FGD
    r = max(2, min(size) // 40)
    for x, y in seeds:
        cv2.circle(mask, (int(x * scale), int(y * scale)), r, int(cv2.GC_FGD), -1)
    # The frame border is background unless the flash lit it (people are cut off at the bottom edge).
    border = np.zeros(size, bool)
    border[:2, :], border[:, :2], border[:, -2:] = True, True, True
    mask[border & ~lit] = cv2.GC_BGD
    if not (mask == cv2.GC_FGD).any():
        return np.zeros((h, w), np.float32)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(img, mask, None, bgd, fgd, 4, cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]
    except cv2.error as exc:  # degenerate colour models (a flat frame): keep the flash evidence alone
        log.warning("grabcut failed (%s); using the flash evidence alone", exc)
    fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.float32)
    return resize(fg, (h, w))


def _keep_lit_components(person: np.ndarray, confident_full: np.ndarray, support: float) -> np.ndarray:
    """Zero the person components that the flash did not light."""
    binary = (person > 0.5).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    keep = np.zeros(n, bool)
    for i in range(1, n):
        comp = labels == i
        lit = float(confident_full[comp].mean()) if stats[i, cv2.CC_STAT_AREA] else 0.0
        keep[i] = lit >= support
    kept = keep[labels]
    # Soft edges survive: a kept component's probability ramp extends a little beyond its 0.5 contour.
    grown = cv2.dilate(kept.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    return np.where(grown, person, 0.0).astype(np.float32)


def build_flash_trimap(flash: np.ndarray, noflash: np.ndarray, segmenter: PersonSegmenter | None,
                       params: TrimapParams = TrimapParams(), *, allow_unknown: bool = False) -> FlashCue:
    """Flash and no-flash frames, (H, W, 3) uint8 RGB of the same size -> :class:`FlashCue`.

    Raises :class:`SizeMismatchError` for different sizes and :class:`FlashCueError` when the flash frame is
    no brighter than the no-flash frame (after exposure compensation), or when it lit nothing that looks like
    a subject, unless ``allow_unknown`` (a model that reads the flash frame per frame): then the trimap is all
    unknown and ``method`` is ``"unknown"``.
    """
    check_frame(flash, "flash frame")
    check_frame(noflash, "no-flash frame")
    if flash.shape != noflash.shape:
        raise SizeMismatchError(
            f"flash frame is {flash.shape[1]}x{flash.shape[0]} but no-flash frame is "
            f"{noflash.shape[1]}x{noflash.shape[0]}; they must come from the same camera mode"
        )
    alignment = estimate_alignment(flash, noflash)
    ratio = flash_ratio_map(flash, noflash, alignment, params.ratio)
    lit_share = float((ratio.brightening >= params.ratio.min_brightening).mean())
    if lit_share < params.min_lit_fraction:
        raw_gain = (luma(flash.astype(np.float32)).mean() + 1) / (luma(noflash.astype(np.float32)).mean() + 1)
        raise FlashCueError(
            "the flash frame is no brighter than the no-flash frame "
            f"({lit_share:.1%} of pixels brightened, mean brightness ratio {raw_gain:.2f}); "
            "take the flash frame with the torch or screen flash on, close to the subject"
        )
    h, w = flash.shape[:2]
    seeds = pick_seeds(ratio.confident, ratio.ratio * ratio.brightening, params.seeds, (h, w))
    person: np.ndarray | None = None
    prob: np.ndarray | None = None
    method: Method = "grabcut"
    if segmenter is not None:
        prob = segmenter.segment(flash)
        confident_full = resize(ratio.confident.astype(np.uint8), (h, w), nearest=True) > 0
        fused = _keep_lit_components(prob, confident_full, params.component_support)
        if (fused > 0.5).any():
            person, method = fused, "segmenter"
        else:
            log.info("segmenter found no flash-lit person; falling back to GrabCut")
    if person is None:
        person = _grabcut(flash, ratio, seeds)
    if not (person > 0.5).any() and prob is not None and (prob > 0.5).any():
        # The flash brightened the frame but too weakly to single out the subject (torch far away, strong
        # daylight): the person segmenter's mask alone still gives a usable trimap, coarser at the edges.
        log.info("flash too weak to locate the subject; trimap from the person segmenter alone")
        person, method = prob.astype(np.float32), "segmenter-only"
    if not (person > 0.5).any():
        if not allow_unknown:
            raise FlashCueError(
                "no foreground found in the flash frame: the flash lit nothing that looks like a subject"
            )
        log.info("no subject located in the flash frame; the trimap is all unknown")
        return FlashCue(trimap=np.full((h, w), UNKNOWN, np.uint8), person=np.zeros((h, w), np.float32),
                        ratio=ratio, seeds=seeds, alignment=alignment, method="unknown")
    trimap = trimap_from_mask(person > 0.5, params.band)
    return FlashCue(trimap=trimap, person=person, ratio=ratio, seeds=seeds, alignment=alignment, method=method)
