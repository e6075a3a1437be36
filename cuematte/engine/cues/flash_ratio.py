"""The paper's flash-ratio map (Sec. 4.2): histogram evidence of which flash pixels the flash brightened.

Both frames are down-sampled by c' (the paper's c' = 20, so the map ignores fine texture and small motions);
their joint RGB histograms H^f, H^nf are compared bin by bin:

    r^f_p = (h^f_k - h^nf_k) / h^f_k,   k = the bin of flash pixel p            (paper eq. 2)

then truncated below delta (eq. 3; the paper's best delta = 0.7) and median-filtered (k = 5). Because
histograms are global, a bin can be 'new' in the flash frame for reasons other than the flash (a monitor that
changed); we therefore also require that the pixel itself got brighter once the pair is aligned and
exposure-compensated — our addition, which is what the alignment step is for.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cuematte.engine.cues.align import Alignment
from cuematte.engine.frames import luma, resize


@dataclass(frozen=True)
class FlashRatioParams:
    downsample: float = 20.0  # c': the map is computed at 1/c' of the frame size
    min_side: int = 36  # ... but never on fewer pixels than this on the short side
    bins: int = 8  # histogram bins per RGB channel (8^3 = 512 joint bins)
    delta: float = 0.7  # truncation threshold of eq. (3)
    median_kernel: int = 5
    min_brightening: float = 0.12  # relative luma gain a seed pixel must show after compensation


@dataclass(frozen=True)
class FlashRatio:
    ratio: np.ndarray  # (h', w') float32 truncated, median-filtered r^f in [0, 1]
    brightening: np.ndarray  # (h', w') float32 relative luma gain (flash / compensated no-flash - 1)
    confident: np.ndarray  # (h', w') bool: ratio >= delta and the pixel really brightened


def _joint_bins(img: np.ndarray, bins: int) -> np.ndarray:
    q = (img.astype(np.int32) * bins) >> 8
    return (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]


def flash_ratio_map(flash: np.ndarray, noflash: np.ndarray, alignment: Alignment,
                    params: FlashRatioParams = FlashRatioParams()) -> FlashRatio:
    """Flash (H, W, 3) uint8 RGB, no-flash (H, W, 3) uint8 RGB (same size) -> :class:`FlashRatio`."""
    h, w = flash.shape[:2]
    scale = max(1.0 / params.downsample, params.min_side / min(h, w))
    size = (max(4, round(h * scale)), max(4, round(w * scale)))
    aligned = alignment.warp_noflash(noflash)
    f_small = resize(flash, size)
    # Exposure / white-balance compensation: bring the no-flash frame to the flash frame's background level.
    n_small = np.clip(resize(aligned, size).astype(np.float32) * alignment.gains, 0, 255).astype(np.uint8)

    n_bins = params.bins**3
    kf, kn = _joint_bins(f_small, params.bins), _joint_bins(n_small, params.bins)
    hf = np.bincount(kf.ravel(), minlength=n_bins).astype(np.float32)
    hn = np.bincount(kn.ravel(), minlength=n_bins).astype(np.float32)
    r_bins = (hf - hn) / np.maximum(hf, 1.0)  # eq. (2); empty bins never index a flash pixel
    ratio = r_bins[kf]
    ratio = np.where(ratio >= params.delta, ratio, 0.0).astype(np.float32)  # eq. (3)
    ratio_u8 = cv2.medianBlur((ratio * 255).astype(np.uint8), params.median_kernel)
    ratio = ratio_u8.astype(np.float32) / 255.0

    lf = luma(f_small.astype(np.float32))
    ln = luma(n_small.astype(np.float32))
    brightening = np.asarray(cv2.medianBlur(((lf + 4.0) / (ln + 4.0) - 1.0).astype(np.float32), 3))
    confident = (ratio >= params.delta) & (brightening >= params.min_brightening)
    return FlashRatio(ratio=ratio, brightening=brightening.astype(np.float32), confident=confident)


def pick_seeds(confident: np.ndarray, strength: np.ndarray, q: int, full_size: tuple[int, int]) -> np.ndarray:
    """q point seeds spread over the confident region (farthest-point sampling from the strongest pixel,
    deterministic), in full-resolution (x, y) pixel coordinates -> (k, 2) int32 with k <= q."""
    ys, xs = np.nonzero(confident)
    if len(xs) == 0:
        return np.zeros((0, 2), np.int32)
    pts = np.stack([xs, ys], axis=1).astype(np.float32)
    chosen = [int(np.argmax(strength[ys, xs]))]
    dist = np.linalg.norm(pts - pts[chosen[0]], axis=1)
    while len(chosen) < min(q, len(pts)):
        nxt = int(np.argmax(dist))
        if dist[nxt] <= 0:
            break
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(pts - pts[nxt], axis=1))
    h, w = confident.shape
    fh, fw = full_size
    sel = pts[chosen]
    out = np.stack([(sel[:, 0] + 0.5) * fw / w, (sel[:, 1] + 0.5) * fh / h], axis=1)
    return np.clip(out, 0, [fw - 1, fh - 1]).astype(np.int32)
