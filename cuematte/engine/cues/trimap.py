"""Flash trimap t^f for the flash frame: flash-ratio seeds + a person segmenter + erode/dilate.

The flash says what is *near* the camera, the segmenter says what is a *person*: we keep the segmenter's
person components that the flash lit clearly more than the background (so a colleague walking behind, out of
the flash's reach, is background), keep all of them when the flash is too weak to tell (the segmenter is
right far more often than a weak flash), and use GrabCut seeded by the flash evidence only when there is no
segmenter person at all. Where the two disagree the trimap says unknown, not a confident class.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

import cv2
import numpy as np

from cuematte.engine.cues.align import Alignment, estimate_alignment
from cuematte.engine.cues.flash_ratio import FlashRatio, FlashRatioParams, flash_ratio_map, pick_seeds
from cuematte.engine.errors import FlashCueError, SizeMismatchError
from cuematte.engine.frames import check_frame, luma, resize

log = logging.getLogger(__name__)

BG, UNKNOWN, FG = 0, 128, 255
Method = Literal["segmenter", "segmenter-only", "grabcut", "unknown"]


class PersonSegmenter(Protocol):
    """Anything with ``segment((H, W, 3) uint8 RGB[, size (h, w)]) -> (H, W) (or size) float32 person
    probability``."""

    name: str

    def segment(self, image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class TrimapParams:
    ratio: FlashRatioParams = field(default_factory=FlashRatioParams)
    seeds: int = 5  # q point seeds (paper: q = 5)
    band: float = 0.025  # erode/dilate kernel as a fraction of the short side (paper: 25 px at ~1000 px)
    min_lit_fraction: float = 0.004  # below this share of brightened pixels the flash frame is rejected
    # Flash evidence relative to the background's gain (FlashEvidence), in background noise spreads and gains.
    noise_floor: float = 0.005
    lit_noise: float = 3.0  # a cell counts as brightened above this many spreads ...
    lit_floor: float = 0.025  # ... and this excess gain
    component_noise: float = 3.0  # a person component is lit when its median excess passes both
    component_floor: float = 0.02
    component_share: float = 0.35  # lit components under this share of the most lit one are dropped
    component_large: float = 0.25  # components this share of the largest one's area decide what is lit
    strong_noise: float = 6.0  # without a segmenter person, GrabCut needs cells this far above the background
    strong_floor: float = 0.05
    strong_min_share: float = 0.01  # ... covering this share of the frame
    outside_share: float = 0.5  # background-side cells lit at this share of the subject's gain -> unknown
    inside_noise: float = 1.5  # foreground-side cells under both of these -> unknown
    inside_share: float = 0.2


@dataclass(frozen=True)
class FlashCue:
    """Everything the flash pre-processing found, kept for inspection (``--trimap-out``) and the server."""

    trimap: np.ndarray  # (H, W) uint8: 0 background, 128 unknown, 255 foreground (flash frame geometry)
    person: np.ndarray  # (H, W) float32 fused foreground probability
    ratio: FlashRatio
    seeds: np.ndarray  # (k, 2) int32 (x, y)
    alignment: Alignment
    evidence: FlashEvidence  # the flash's brightening over the background's, at the ratio-map grid
    # segmenter: fused with the flash evidence; segmenter-only: the flash was too weak to locate the subject
    # (the trimap is the segmenter's mask; trimap_for_model may clear it); unknown: nothing located, every pixel
    # unknown
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


@dataclass(frozen=True)
class FlashEvidence:
    """How much more the flash brightened each cell than it brightened the background, at the ratio-map grid.

    Relative luma gain is albedo-free and the flash falls off with distance squared, so a subject at 0.7 m gains
    several times what a wall at 2-3 m gains, even from a weak screen flash; the absolute gain (what
    ``FlashRatio.confident`` asks for) is not, since exposure, the room's light and the flash's power scale it.
    """

    excess: np.ndarray  # (h', w') float32 brightening minus the background's
    noise: float  # robust spread (1.4826 MAD) of the background's brightening, floored

    def lit(self, k_noise: float, floor: float) -> np.ndarray:
        """(h', w') bool: cells brightened beyond ``k_noise`` background spreads and ``floor``."""
        return self.excess >= max(k_noise * self.noise, floor)


def flash_evidence(ratio: FlashRatio, person_small: np.ndarray | None, params: TrimapParams) -> FlashEvidence:
    """Background level and spread from the cells the segmenter calls background (``person_small`` (h', w')
    probability), or from the darker half of the gains when there is no segmenter or it sees nothing else."""
    b = ratio.brightening
    bg = person_small < 0.1 if person_small is not None else None
    if bg is None or bg.mean() < 0.1:
        bg = b <= np.median(b)
    level = float(np.median(b[bg]))
    noise = max(params.noise_floor, 1.4826 * float(np.median(np.abs(b[bg] - level))))
    return FlashEvidence(excess=(b - level).astype(np.float32), noise=noise)


def _grabcut(flash: np.ndarray, probable: np.ndarray, sure: np.ndarray, seeds: np.ndarray,
             work_side: int = 320) -> np.ndarray:
    """GrabCut seeded by the flash evidence (``probable``/``sure`` (h', w') bool), at low resolution ->
    (H, W) float32 {0, 1}."""
    h, w = flash.shape[:2]
    scale = min(1.0, work_side / max(h, w))
    size = (max(16, round(h * scale)), max(16, round(w * scale)))
    img = resize(flash, size)
    mask = np.full(size, cv2.GC_PR_BGD, np.uint8)
    lit = resize(probable.astype(np.uint8), size, nearest=True) > 0
    mask[lit] = cv2.GC_PR_FGD
    conf = resize(sure.astype(np.uint8), size, nearest=True) > 0
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
    # GrabCut starts its colour models with k-means on OpenCV's global RNG: without a fixed seed the same flash
    # pair gives a different trimap depending on what ran before in the process (seen flipping a whole matte).
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(img, mask, None, bgd, fgd, 4, cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]
    except cv2.error as exc:  # degenerate colour models (a flat frame): keep the flash evidence alone
        log.warning("grabcut failed (%s); using the flash evidence alone", exc)
    fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.float32)
    return resize(fg, (h, w))


def _lit_components(person: np.ndarray, excess_full: np.ndarray, evidence: FlashEvidence,
                    params: TrimapParams) -> tuple[np.ndarray, float | None]:
    """Keep the segmenter's person components the flash lit -> (fused (H, W) probability, the subject's excess
    gain, or None when no component is lit).

    A component is lit when its median excess gain is significant over the background's noise; of the lit ones,
    those far weaker than the most lit (a colleague walking behind, out of the flash's reach) are dropped.
    When no component is significantly lit the flash cannot tell them apart and all are kept.
    """
    binary = (person > 0.5).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    gains = np.array([float(np.median(excess_full[labels == i])) for i in range(1, n)], np.float32)
    areas = stats[1:, cv2.CC_STAT_AREA]
    significant = gains >= max(params.component_noise * evidence.noise, params.component_floor)
    # Only sizeable components decide: a few lit specks (a lamp, a glint) must not outweigh the body.
    large = areas >= params.component_large * areas.max()
    if not (significant & large).any():
        return person.astype(np.float32), None
    reference = float(gains[significant & large].max())
    keep = np.concatenate([[False], significant & (gains >= params.component_share * reference)])
    kept = keep[labels]
    # Soft edges survive: a kept component's probability ramp extends a little beyond its 0.5 contour.
    grown = cv2.dilate(kept.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    return np.where(grown, person, 0.0).astype(np.float32), reference


def _flash_seeds(evidence: FlashEvidence, params: TrimapParams,
                 size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sure, probable) (h', w') bool cells relative to the most lit ones, and the q point seeds in the sure
    cells ((k, 2) int32 full-resolution (x, y))."""
    top = float(np.percentile(evidence.excess, 98))
    sure = evidence.lit(params.strong_noise, max(params.strong_floor, 0.5 * top))
    probable = evidence.lit(params.lit_noise, max(params.lit_floor, 0.25 * top))
    return sure, probable, pick_seeds(sure, evidence.excess, params.seeds, size)


def _flash_grabcut(flash: np.ndarray, evidence: FlashEvidence, sure: np.ndarray, probable: np.ndarray,
                   seeds: np.ndarray, params: TrimapParams) -> np.ndarray | None:
    """The subject from the flash evidence alone (no segmenter, or it sees no person) -> (H, W) {0, 1}, or None
    when the flash singles out too little to seed GrabCut."""
    if evidence.lit(params.strong_noise, params.strong_floor).mean() < params.strong_min_share:
        return None
    return _grabcut(flash, probable, sure, seeds)


def _mark_disagreement(trimap: np.ndarray, excess_full: np.ndarray, gain: float, evidence: FlashEvidence,
                       params: TrimapParams) -> np.ndarray:
    """Where the flash contradicts the segmenter the trimap says unknown rather than a confident class:
    background-side pixels lit like the subject (a body or held object the segmenter missed), foreground-side
    pixels the flash left at the background's level (a segmenter blob over the wall)."""
    out = trimap.copy()
    lit = excess_full >= max(params.lit_noise * evidence.noise, params.outside_share * gain)
    unlit = excess_full < max(params.inside_noise * evidence.noise, params.inside_share * gain)
    out[(trimap == BG) & lit] = UNKNOWN
    out[(trimap == FG) & unlit] = UNKNOWN
    return out


def build_flash_trimap(flash: np.ndarray, noflash: np.ndarray, segmenter: PersonSegmenter | None,
                       params: TrimapParams = TrimapParams()) -> FlashCue:
    """Flash and no-flash frames, (H, W, 3) uint8 RGB of the same size -> :class:`FlashCue`: what the flash
    measured, whatever model will use it (:func:`trimap_for_model` applies a model's policy).

    Raises :class:`SizeMismatchError` for different sizes and :class:`FlashCueError` when the flash frame is
    no brighter than the no-flash frame (after exposure compensation). A flash that lit nothing that looks like
    a subject gives ``method = "unknown"`` and an all-unknown trimap; one too weak to confirm the segmenter's
    person gives ``"segmenter-only"`` and the trimap of the segmenter's mask.
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
    h, w = flash.shape[:2]
    prob = segmenter.segment(flash) if segmenter is not None else None
    evidence = flash_evidence(ratio, resize(prob, ratio.brightening.shape) if prob is not None else None, params)
    abs_share = float((ratio.brightening >= params.ratio.min_brightening).mean())
    rel_share = float(evidence.lit(params.lit_noise, params.lit_floor).mean())
    if max(abs_share, rel_share) < params.min_lit_fraction:
        raw_gain = (luma(flash.astype(np.float32)).mean() + 1) / (luma(noflash.astype(np.float32)).mean() + 1)
        raise FlashCueError(
            "the flash frame is no brighter than the no-flash frame "
            f"({max(abs_share, rel_share):.1%} of pixels brightened, mean brightness ratio {raw_gain:.2f}); "
            "take the flash frame with the torch or screen flash on, close to the subject"
        )
    excess_full = resize(evidence.excess, (h, w))
    sure, probable, seeds = _flash_seeds(evidence, params, (h, w))
    person: np.ndarray | None = None
    gain: float | None = None
    method: Method = "grabcut"
    if prob is not None and (prob > 0.5).any():
        person, gain = _lit_components(prob, excess_full, evidence, params)
        if gain is not None:
            method = "segmenter"
        else:
            # The flash brightened the frame but too weakly to tell the segmenter's people apart (torch far
            # away, strong daylight): its mask alone still gives a usable trimap, coarser at the edges.
            log.info("flash too weak to confirm the segmenter's person; trimap from the segmenter alone")
            method = "segmenter-only"
    else:
        person = _flash_grabcut(flash, evidence, sure, probable, seeds, params)
    if person is None or not (person > 0.5).any():
        log.info("no subject located in the flash frame; the trimap is all unknown")
        return FlashCue(trimap=np.full((h, w), UNKNOWN, np.uint8), person=np.zeros((h, w), np.float32),
                        ratio=ratio, seeds=seeds, alignment=alignment, evidence=evidence, method="unknown")
    trimap = trimap_from_mask(person > 0.5, params.band)
    if gain is not None:
        trimap = _mark_disagreement(trimap, excess_full, gain, evidence, params)
    return FlashCue(trimap=trimap, person=person, ratio=ratio, seeds=seeds, alignment=alignment, evidence=evidence,
                    method=method)


def trimap_for_model(cue: FlashCue, *, reads_flash: bool) -> FlashCue:
    """A model's policy on a measured cue. ``reads_flash``: the model takes the cached flash prior per frame
    (``flash_prior``) and mattes from an all-unknown trimap; a model that does not needs a located subject.

    * nothing located (``"unknown"``): :class:`FlashCueError`, unless the model reads the flash;
    * ``"segmenter-only"`` for a model that reads the flash: the trimap becomes all unknown. The flash confirmed
      nothing, so a trimap copied from the segmenter's mask would repeat the segmenter as if the flash had said
      so (the model reads that mask per frame anyway); ``person`` keeps the mask (the shipped model's card
      has the measurement).
    """
    if cue.method == "unknown" and not reads_flash:
        raise FlashCueError("no foreground found in the flash frame: the flash lit nothing that looks like a subject")
    if cue.method == "segmenter-only" and reads_flash:
        return replace(cue, trimap=np.full_like(cue.trimap, UNKNOWN))
    return cue
