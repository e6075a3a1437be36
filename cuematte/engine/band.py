"""The full-resolution refinement where the network has a say, and nowhere else: the guidance's unknown band.

Outside the band the guidance is certain, so the dense path's result is known without computing it: alpha is
exactly 0 or 1 there (the guidance is held after the smoothing), and the foreground to composite is the frame itself
where alpha is 1 (:func:`~cuematte.engine.refine.opaque_foreground`); where alpha is 0 no compositor reads it, and
the frame stands there too. So the guided filter, the temporal smoothing, the hold and the opaque blend run on a
few rectangles that cover the band (a real talking head at 1280x720: a fifth of the frame), not on every pixel.
The rectangles of one height are laid side by side into one strip, so each step is one OpenCV call for all of
them: a call costs 5-30 us whatever its size, and per rectangle those calls cost more than the pixels saved.

The same numbers as the dense path, not an approximation (``tests/test_band.py``):
* the coefficients are upsampled as OpenCV's bilinear resize does it, in its two passes: along x once for the
  whole width at the coefficient rows, then along y per rectangle, from one coefficient row around it (bilinear
  reads at most one beyond), which needs the frame's height to be a whole multiple of the grid's;
* the smoother's blurred luma difference is taken over the whole frame (two uint8 passes);
* the guidance's bounds are picked with the indices of OpenCV's nearest resize.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from cuematte.engine.cues.trimap import BG, FG, UNKNOWN
from cuematte.engine.refine import CHANNEL_MEAN, opaque_foreground
from cuematte.engine.temporal import TemporalSmoother

# Measured on a real talking head: in process 7-9 ms against 8-17 ms for every pixel at 1280x720 (the whole-frame
# path varies with how its fresh arrays fault in), 2.7-3.2 against 4.1-4.4 ms at 640x360; in the service, beside
# the codecs, 17.8 against 38.0 ms at 1280x720.
STRIP = 80  # px: the height of a strip of rows, rounded to whole coefficient rows (thinner: more calls)
MERGE_GAP = 32  # px: two runs of the band in one strip closer than this are computed as one rectangle

Rect = tuple[int, int, int, int]  # y0, y1, x0, x1 in pixels at the working size


@functools.lru_cache(maxsize=16)
def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """(n_out,) int: the source index of each output index of OpenCV's nearest resize (n_in -> n_out); cached
    per size pair (read-only), as every frame of a stream asks for the same ones."""
    src = np.arange(n_in, dtype=np.float32).reshape(n_in, 1)
    index = cv2.resize(src, (1, n_out), interpolation=cv2.INTER_NEAREST)[:, 0].astype(np.intp)
    index.flags.writeable = False
    return index


def band_rects(guidance: np.ndarray, coef_shape: tuple[int, int], size: tuple[int, int],
               strip: int = STRIP) -> list[Rect] | None:
    """guidance (gh, gw) uint8 trimap, the coefficient grid (ch, cw) and the working size (H, W) -> rectangles
    (y0, y1, x0, x1) in pixels that cover every pixel whose guidance is unknown: in strips of about ``strip``
    px (whole coefficient rows), one per run of unknown columns. [] when nothing is unknown; None when the
    frame's height is not a whole multiple of the coefficient grid's (use the dense path)."""
    (h, w), (ch, _), (gh, gw) = size, coef_shape, guidance.shape[:2]
    if h % ch:
        return None
    rows, cols = nearest_index(gh, h), nearest_index(gw, w)
    unknown = guidance == UNKNOWN
    step = max(1, round(strip / (h // ch))) * (h // ch)
    rects: list[Rect] = []
    for y0 in range(0, h, step):
        y1 = min(h, y0 + step)
        hit = unknown[np.unique(rows[y0:y1])].any(axis=0)[cols]  # (W,) pixel columns with unknown guidance
        xs = np.flatnonzero(hit)
        if xs.size == 0:
            continue
        breaks = np.flatnonzero(np.diff(xs) > MERGE_GAP)
        starts = np.concatenate([xs[:1], xs[breaks + 1]])
        ends = np.concatenate([xs[breaks], xs[-1:]]) + 1
        rects.extend((y0, y1, int(a), int(b)) for a, b in zip(starts, ends, strict=True))
    return rects


def refine_band(frame: np.ndarray, coef_a: np.ndarray, coef_b: np.ndarray, guidance: np.ndarray,
                rects: list[Rect], smoother: TemporalSmoother) -> tuple[np.ndarray, np.ndarray]:
    """frame (H, W, 3) uint8 RGB at the working size, coef_a / coef_b (4, ch, cw) float32, guidance (gh, gw)
    uint8 and its :func:`band_rects` -> alpha (H, W) float32 and the foreground to composite (H, W, 3) uint8,
    both new arrays: what ``guided filter -> smoother -> hold -> opaque_foreground`` gives on the whole frame.
    Advances the smoother by one frame."""
    h, w = frame.shape[:2]
    ch = coef_a.shape[1]
    sy = h // ch
    # Outside the band: exactly the guidance (1 on certain person, 0 elsewhere) and the frame itself.
    lo, hi = (guidance == FG).astype(np.float32), (guidance != BG).astype(np.float32)
    alpha = cv2.resize(lo, (w, h), interpolation=cv2.INTER_NEAREST)
    fg = frame.copy()
    luma, previous = smoother.begin(frame)
    # The smoother's blurred luma difference over the whole frame: two uint8 passes, cheaper than the margins
    # each rectangle would need.
    diff = None if previous is None or luma is None else cv2.blur(cv2.absdiff(luma, previous[0]), (5, 5))
    gy = nearest_index(guidance.shape[0], h)
    hi_rows = cv2.resize(hi, (w, hi.shape[0]), interpolation=cv2.INTER_NEAREST)  # x upsampled; rows picked by gy
    # The coefficients in the frame's units (0..255), as refine._guided scales them, upsampled along x at the
    # coefficient rows: the first pass of OpenCV's bilinear resize. One edge row repeated above and below stands
    # for its clamping, so that every rectangle reads the same number of rows for the second pass, along y.
    a, b = coef_a.transpose(1, 2, 0), coef_b.transpose(1, 2, 0)
    rows = [cv2.copyMakeBorder(cv2.resize(np.ascontiguousarray(c), (w, ch), interpolation=cv2.INTER_LINEAR),
                               1, 1, 0, 0, cv2.BORDER_REPLICATE)
            for c in (a[..., :3], b[..., :3] * np.float32(255.0), a[..., 3] * np.float32(1 / 255), b[..., 3])]
    by_height: dict[int, list[Rect]] = {}
    for r in rects:
        by_height.setdefault(r[1] - r[0], []).append(r)
    for rh, group in by_height.items():
        # The group's rectangles side by side in one strip: every step below is one OpenCV call for all of them
        # (each costs ~25 calls' overhead alone). Nothing below mixes columns, except the y pass, which reads
        # one coefficient row around each rectangle (bilinear reads at most one beyond).
        n = rh // sy

        def strip(src: np.ndarray, group: list[Rect] = group) -> np.ndarray:
            return np.concatenate([src[y0:y1, x0:x1] for y0, y1, x0, x1 in group], axis=1)

        a_fg, b_fg, a_al, b_al = (
            cv2.resize(np.concatenate([r[y0 // sy:y0 // sy + n + 2, x0:x1] for y0, _, x0, x1 in group], axis=1),
                       (sum(x1 - x0 for *_, x0, x1 in group), (n + 2) * sy),
                       interpolation=cv2.INTER_LINEAR)[sy:(n + 1) * sy] for r in rows)
        part = strip(frame)
        net_fg = cv2.add(cv2.multiply(part, a_fg, dtype=cv2.CV_32F), b_fg, dtype=cv2.CV_8U)
        al = cv2.add(cv2.multiply(cv2.transform(part.astype(np.float32), CHANNEL_MEAN), a_al), b_al)
        cv2.max(cv2.min(al, 1.0, dst=al), 0.0, dst=al)
        if previous is not None and diff is not None:
            al = smoother.blend(al, strip(previous[1]), smoother.weight(strip(diff)))
        # The hold: the guidance's bounds at these pixels, as the whole frame's nearest upsampling gives them.
        hi_part = np.concatenate([hi_rows[gy[y0:y1], x0:x1] for y0, y1, x0, x1 in group], axis=1)
        cv2.max(cv2.min(al, hi_part, dst=al), strip(alpha), dst=al)
        fg_part = opaque_foreground(part, al, net_fg)
        at = 0
        for y0, y1, x0, x1 in group:
            alpha[y0:y1, x0:x1] = al[:, at:at + x1 - x0]
            fg[y0:y1, x0:x1] = fg_part[:, at:at + x1 - x0]
            at += x1 - x0
    smoother.remember(luma, alpha)
    return alpha, fg
