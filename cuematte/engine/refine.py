"""The frame graph's outputs -> the full-resolution alpha and foreground.

Models refined by a deep guided filter (config ``refine="guided"``, the shipped ``lite``) end their frame graph at
the filter's linear coefficients ``coef_a`` / ``coef_b`` (1, 4, h, w) at the CMN grid; :func:`apply_guided` applies
them here with OpenCV at the frame's size, exactly as ``GuidedUpsampler.upsample`` does in training:

    fg = up(a[:3]) * frame + up(b[:3]),  alpha = up(a[3]) * mean_c(frame) + up(b[3]),  both clamped to [0, 1]

and, given a guidance, composes it (certain pixels exactly 0 or 1; the session composes once, after its temporal
smoothing: :func:`hold_guidance`). In ONNX Runtime that full-resolution tail was ten single-pass kernels over float
tensors (10 ms of a 22 ms graph at 1280x720, its bilinear Resize alone 7x slower than OpenCV's); here it is 4 to
6 ms, it writes the uint8 foreground the compositor wants directly, and
the graph no longer needs the full-resolution frame as a float tensor. Graphs that output full-resolution
``alpha`` / ``foreground`` themselves (BMN models, older exports) are read as they are.
"""

from __future__ import annotations

import cv2
import numpy as np

from cuematte.engine.cues.trimap import BG, FG

CHANNEL_MEAN = np.full((1, 3), 1.0 / 3.0, np.float32)  # cv2.transform weights: the alpha's guide
_ZERO, _FULL = (0.0, 0.0, 0.0, 0.0), (255.0, 255.0, 255.0, 255.0)  # OpenCV reads a bare number as (v, 0, 0, 0)


class Workspace:
    """Full-resolution scratch buffers, reused from frame to frame (one per session: not thread-safe).

    A fresh 11 MB array per step costs more in page faults than the step itself (measured 1.95 ms for a resize
    and a multiply into new arrays at 1280x720, 0.7 ms into kept ones)."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        key = (name, shape)
        buf = self._buffers.get(key)
        if buf is None:
            if len(self._buffers) > 32:  # the frame size changed: drop the old size's buffers
                self._buffers.clear()
            buf = self._buffers[key] = np.empty(shape, np.float32)
        return buf


def _up(coarse: np.ndarray, size: tuple[int, int], dst: np.ndarray) -> np.ndarray:
    """(h, w[, C]) float32 -> (H, W[, C]) bilinear with half-pixel centres (PyTorch's align_corners=False)."""
    return cv2.resize(coarse, (size[1], size[0]), dst=dst, interpolation=cv2.INTER_LINEAR)


def _nearest(coarse: np.ndarray, size: tuple[int, int], dst: np.ndarray) -> np.ndarray:
    """(h, w) -> (H, W) nearest (floor of the scaled index, as PyTorch's "nearest")."""
    return cv2.resize(coarse, (size[1], size[0]), dst=dst, interpolation=cv2.INTER_NEAREST)


def _guided(frame: np.ndarray, coef_a: np.ndarray, coef_b: np.ndarray, guidance: np.ndarray | None,
            ws: Workspace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The filter's two halves at the frame's size: alpha (H, W) float32 in [0, 1] (a new array), and the
    foreground's a * frame (H, W, 3) and 255 b (H, W, 3), float32 workspace buffers still to be added."""
    size = frame.shape[:2]
    s3, s1 = (*size, 3), size
    # The frame stays in 0..255: fg in those units is a * frame + 255 b; the alpha's guide is the channel mean
    # in [0, 1], so its slope takes the 1/255.
    a = coef_a.transpose(1, 2, 0)
    b = coef_b.transpose(1, 2, 0)
    a_fg, b_fg = np.ascontiguousarray(a[..., :3]), np.ascontiguousarray(b[..., :3]) * np.float32(255.0)
    a_al, b_al = np.ascontiguousarray(a[..., 3]) * np.float32(1 / 255), np.ascontiguousarray(b[..., 3])
    fg_a = ws.get("fg", s3)
    cv2.multiply(frame, _up(a_fg, size, ws.get("a3", s3)), dst=fg_a, dtype=cv2.CV_32F)
    fg_b = _up(b_fg, size, ws.get("b3", s3))
    frame_f = ws.get("frame", s3)
    np.copyto(frame_f, frame)
    mean = cv2.transform(frame_f, CHANNEL_MEAN, dst=ws.get("mean", s1))
    alpha = cv2.multiply(mean, _up(a_al, size, ws.get("a1", s1)))
    cv2.add(alpha, _up(b_al, size, ws.get("b1", s1)), dst=alpha)
    # Clamp and compose in two passes: certain foreground floors alpha at 1, certain background caps it at 0,
    # unknown clamps it to [0, 1] (= g_fg + g_un * clamp(alpha)). Nearest upsampling keeps the guidance exact.
    if guidance is None:
        cv2.max(cv2.min(alpha, 1.0, dst=alpha), 0.0, dst=alpha)
    else:
        hold_guidance(alpha, guidance, ws)
    return alpha, fg_a, fg_b


def guided_float(frame: np.ndarray, coef_a: np.ndarray, coef_b: np.ndarray, guidance: np.ndarray | None = None,
                 workspace: Workspace | None = None) -> tuple[np.ndarray, np.ndarray]:
    """frame (H, W, 3) uint8 RGB, coef_a / coef_b (4, h, w) float32 [fg r, g, b, alpha], guidance (h, w) uint8
    trimap (0 / 128 / 255) or None -> alpha (H, W) float32 in [0, 1] (a new array) and foreground (H, W, 3)
    float32 in [0, 255], not rounded (a workspace buffer; export parity compares this one)."""
    alpha, fg, fg_b = _guided(frame, coef_a, coef_b, guidance, workspace or Workspace())
    cv2.add(fg, fg_b, dst=fg)
    cv2.min(cv2.max(fg, _ZERO, dst=fg), _FULL, dst=fg)
    return alpha, fg


def hold_guidance(alpha: np.ndarray, guidance: np.ndarray, workspace: Workspace | None = None) -> np.ndarray:
    """alpha (H, W) float32, in place: 1 where the guidance (h, w) is certain foreground, 0 where it is certain
    background, clamped to [0, 1] where unknown. After the guided filter this composes the guidance; after
    temporal smoothing it keeps certain pixels exact (a blend of 1 with an earlier alpha is pulled back to 1),
    which is what a mask of the certain pixels would do, at a fraction of a boolean-indexed write's cost."""
    ws = workspace or Workspace()
    size = alpha.shape[:2]
    # The bounds are made at the CMN grid, where they are cheap, then upsampled like the guidance.
    hi = _nearest((guidance != BG).astype(np.float32), size, ws.get("hi", size))
    lo = _nearest((guidance == FG).astype(np.float32), size, ws.get("lo", size))
    return cv2.max(cv2.min(alpha, hi, dst=alpha), lo, dst=alpha)


def apply_guided(frame: np.ndarray, coef_a: np.ndarray, coef_b: np.ndarray, guidance: np.ndarray | None = None,
                 workspace: Workspace | None = None) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`guided_float`, with the foreground rounded to a new (H, W, 3) uint8 array."""
    alpha, fg, fg_b = _guided(frame, coef_a, coef_b, guidance, workspace or Workspace())
    # One saturating add rounds and clamps to uint8 (a third of add, clamp and round as three passes at 720p).
    return alpha, cv2.add(fg, fg_b, dtype=cv2.CV_8U)


OPAQUE_FROM = 0.9  # alpha from which the foreground leans on the frame itself (opaque_foreground)


def opaque_foreground(frame: np.ndarray, alpha: np.ndarray, fg: np.ndarray,
                      workspace: Workspace | None = None) -> np.ndarray:
    """frame (H, W, 3) uint8, final alpha (H, W) float32, network foreground (H, W, 3) uint8 -> the foreground
    to composite: the frame itself where alpha is 1, the network's where alpha <= 0.9, a linear blend between.

    Where alpha is 1 the camera saw the person alone (I = alpha F + (1 - alpha) B gives F = I), so any other F is
    an error, and on real faces the network's F is one: softer than the frame, with colour fringes at eyes and
    brows (the check-real sheets). Decontamination is only needed where the old background shows through."""
    # Into kept buffers: 1.4 ms at 720p, where fresh weight arrays made it 6 ms.
    ws = workspace or Workspace()
    w, rest = ws.get("opaque_w", alpha.shape), ws.get("opaque_rest", alpha.shape)
    np.multiply(alpha, np.float32(1.0 / (1.0 - OPAQUE_FROM)), out=w)
    np.subtract(w, np.float32(OPAQUE_FROM / (1.0 - OPAQUE_FROM)), out=w)
    cv2.min(cv2.max(w, 0.0, dst=w), 1.0, dst=w)
    np.subtract(np.float32(1.0), w, out=rest)
    return np.asarray(cv2.blendLinear(frame, fg, w, rest), np.uint8)


def frame_result(out: dict[str, np.ndarray], frame: np.ndarray, guidance: np.ndarray | None = None,
                 workspace: Workspace | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A frame graph's outputs for ``frame`` (H, W, 3) uint8 (the size the graph was fed at) -> alpha (H, W)
    float32 in [0, 1] and foreground (H, W, 3) uint8, whichever form the graph ends in."""
    if "coef_a" in out:
        return apply_guided(frame, out["coef_a"][0], out["coef_b"][0], guidance, workspace)
    # OpenCV scales, rounds and saturates each plane in one pass: a third of numpy's cost at 720p.
    fg = cv2.merge([cv2.convertScaleAbs(plane, alpha=255.0) for plane in out["foreground"][0]])
    return out["alpha"][0, 0], fg
