"""Flash/no-flash pair alignment: people move and cameras re-expose between the two frames.

Geometry: a Euclidean (rotation + shift) ECC fit on blurred grey images at low resolution; ECC's
correlation criterion is insensitive to global brightness/contrast changes, so the flash does not bias it
much. Photometry: per-channel gains from a low percentile of flash/no-flash ratios, i.e. from the pixels the
flash barely reaches (the far background), which absorbs auto-exposure and white-balance shifts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from cuematte.engine.frames import resize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alignment:
    """How the no-flash frame maps onto the flash frame."""

    warp: np.ndarray  # (2, 3) float32 affine, no-flash pixel coords -> flash pixel coords (full resolution)
    gains: np.ndarray  # (3,) float32 per-channel flash/no-flash gain of the un-flashed background
    converged: bool

    def warp_noflash(self, noflash: np.ndarray) -> np.ndarray:
        """No-flash (H, W, C) resampled into the flash frame's geometry."""
        h, w = noflash.shape[:2]
        if np.allclose(self.warp, np.eye(2, 3, dtype=np.float32), atol=1e-4):
            return noflash
        return cv2.warpAffine(noflash, self.warp, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _grey_small(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    g = cv2.cvtColor(resize(rgb, size), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    return cv2.GaussianBlur(g, (5, 5), 1.0)


def estimate_alignment(flash: np.ndarray, noflash: np.ndarray, *, work_side: int = 256,
                       gain_percentile: float = 20.0) -> Alignment:
    """Fit the no-flash -> flash warp and photometric gains. Both (H, W, 3) uint8 RGB of equal size."""
    h, w = flash.shape[:2]
    scale = min(1.0, work_side / max(h, w))
    small = (max(8, round(h * scale)), max(8, round(w * scale)))
    f_s, n_s = _grey_small(flash, small), _grey_small(noflash, small)
    warp_s = np.eye(2, 3, dtype=np.float32)
    converged = True
    try:
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
        _, warp_s = cv2.findTransformECC(  # type: ignore[call-overload]
            f_s, n_s, warp_s, cv2.MOTION_EUCLIDEAN, criteria, None, 3
        )
    except cv2.error:
        # Flat or too different images: no reliable geometry, keep identity rather than a wild warp.
        converged = False
        warp_s = np.eye(2, 3, dtype=np.float32)
    # ECC gives flash->no-flash sampling coords (template = flash); invert to map no-flash onto flash.
    sx, sy = w / small[1], h / small[0]
    warp_full = warp_s.copy()
    warp_full[0, 2] *= sx
    warp_full[1, 2] *= sy
    if np.abs(warp_full[:, 2]).max() > 0.15 * max(h, w):
        converged, warp_full = False, np.eye(2, 3, dtype=np.float32)
    inv = cv2.invertAffineTransform(warp_full).astype(np.float32)
    aligned = cv2.warpAffine(noflash, inv, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    gains = estimate_gains(flash, aligned, percentile=gain_percentile)
    return Alignment(warp=inv, gains=gains, converged=converged)


def estimate_gains(flash: np.ndarray, noflash: np.ndarray, *, percentile: float = 20.0) -> np.ndarray:
    """Per-channel flash/no-flash gain of the least-lit pixels (the background), clipped to a sane range."""
    f = resize(flash, (90, 160)).reshape(-1, 3).astype(np.float32) + 1.0
    n = resize(noflash, (90, 160)).reshape(-1, 3).astype(np.float32) + 1.0
    usable = (n.min(axis=1) > 12) & (n.max(axis=1) < 243) & (f.max(axis=1) < 250)
    if usable.sum() < 50:
        return np.ones(3, np.float32)
    ratios = f[usable] / n[usable]
    gains = np.percentile(ratios, percentile, axis=0).astype(np.float32)
    # Auto-exposure darkens a flash frame, it never brightens the unlit background much.
    return np.clip(gains, 0.25, 1.1)


# -- the subject's own motion ---------------------------------------------------------------------------------
# The global fit above follows the camera; the person moves on their own between the flash and the no-flash
# frame (rendered pairs: up to 0.02 W, 3°, 3 %), more than a matte's edge band. Models with ``align_flash`` take
# their flash inputs warped by the subject's motion, fitted on the person alone.


@dataclass(frozen=True)
class SubjectWarp:
    """How the flash frame maps onto the no-flash frame, fitted on the subject."""

    warp: np.ndarray  # (2, 3) float32 affine, no-flash pixel coords -> flash pixel coords (full resolution)
    # "affine", "euclidean" (the affine fit failed or was implausible), "global" (the start warp), "cached"
    # (a stored warp applied again, as the training batches do), or the tracker's corrections of a fit that slid
    # off the person, "recentred" and "shifted" (cues.tracking.checked_against_masks)
    kind: str

    def to_noflash(self, image: np.ndarray, *, nearest: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        """A flash-geometry image (H, W[, C]) resampled into the no-flash frame's geometry (same dtype), into
        ``out`` if given (same shape and dtype, contiguous)."""
        h, w = image.shape[:2]
        flags = (cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
        return cv2.warpAffine(image, self.warp, (w, h), dst=out, flags=flags, borderMode=cv2.BORDER_REPLICATE)


def _local_contrast(g: np.ndarray, sigma: float) -> np.ndarray:
    """Grey (h, w) -> its detail over a ``sigma``-px neighbourhood in units of the local spread: the flash
    brightens the person more than the wall behind, which a single gain (all ECC allows for) cannot undo, but
    edges and texture stay where they are."""
    d = g - cv2.GaussianBlur(g, (0, 0), sigma)
    return (d / np.sqrt(cv2.GaussianBlur(d * d, (0, 0), sigma) + 1e-4)).astype(np.float32)


def _plausible(warp: np.ndarray, side: int, max_shift: float, max_scale: float) -> bool:
    s = np.linalg.svd(warp[:, :2], compute_uv=False)
    return bool(np.abs(warp[:, 2]).max() < max_shift * side and s.max() < 1 + max_scale and s.min() > 1 - max_scale)


# (motion model, local-contrast scale in work-size px): coarse to fine, each stage starting from the last.
_STAGES = (("euclidean", cv2.MOTION_EUCLIDEAN, 8.0), ("affine", cv2.MOTION_AFFINE, 8.0),
           ("affine", cv2.MOTION_AFFINE, 2.0))


def estimate_subject_warp(flash: np.ndarray, noflash: np.ndarray, person: np.ndarray, start: np.ndarray, *,
                          work_side: int = 256, band: int = 9, max_shift: float = 0.08,
                          max_scale: float = 0.12, max_iters: int = 100) -> SubjectWarp:
    """Fit the subject's no-flash -> flash warp.

    flash, noflash: (H, W, 3) uint8 RGB of equal size; person: (h, w) person probability of the no-flash frame
    at any size (the segmenter's); start: (2, 3) the warp to start from and fall back to, the whole-frame fit
    (``estimate_alignment(...).warp``). The same fit tracks the person from the frame taken with the flash
    ("flash") to a later one ("noflash").

    ECC on the person region (dilated by ``band`` work-size px, so the silhouette is in it) of local-contrast
    images: rotation + shift, then a full affine (a person turning), then the affine again on finer detail. A
    stage that fails or moves implausibly far (``max_shift`` x the long side, ``max_scale``) ends the fit at the
    stage before. Rendered pairs: the flash's matte lies 10x closer to the frame's than as shot (alpha MSE
    2.3e-3 vs 22e-3, 80 evaluation samples); the whole-frame fit alone halves it.
    """
    h, w = flash.shape[:2]
    scale = min(1.0, work_side / max(h, w))
    small = (max(8, round(h * scale)), max(8, round(w * scale)))
    region = cv2.dilate((resize(person.astype(np.float32), small) > 0.5).astype(np.uint8),
                        np.ones((band, band), np.uint8))
    best = SubjectWarp(warp=start.astype(np.float32), kind="global")
    if region.mean() < 0.01:  # no person to fit on
        return best
    grey_f, grey_n = _grey_small(flash, small), _grey_small(noflash, small)
    to_small = np.array([[1.0, 1.0, scale]] * 2, np.float32)
    init = start.astype(np.float32) * to_small
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, max_iters, 1e-5)
    contrast = {sigma: (_local_contrast(grey_n, sigma), _local_contrast(grey_f, sigma))
                for sigma in {st[2] for st in _STAGES}}  # once per scale, not per stage
    for kind, motion, sigma in _STAGES:
        try:
            _, found = cv2.findTransformECC(*contrast[sigma], init.copy(), motion, criteria, region, 3)
        except cv2.error:
            break
        fit = np.asarray(found, np.float32)
        full = (fit / to_small).astype(np.float32)
        if not _plausible(full, max(h, w), max_shift, max_scale):
            break
        best, init = SubjectWarp(warp=full, kind=kind), fit
    return best
