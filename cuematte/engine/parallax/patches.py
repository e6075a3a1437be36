"""Patch-based inference (the parallax paper's Sec. 4.5): overlapping square patches over the pixels that need the
network, merged with a Gaussian window so that patch seams do not show.

The network runs on ``size`` x ``size`` patches laid on a grid of stride ``size - overlap`` whose last row and
column are flush with the far edges (so every pixel lies in some grid patch). Only the patches holding a pixel of
the trimap's unknown band are run; each output is weighted by a window that falls off towards the patch's
borders, where the network saw the least context.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PATCH = 448  # the paper's patch side ...
OVERLAP = 224  # ... and the overlap between neighbouring patches
WINDOW_SIGMA = 0.25  # Gaussian sigma of the merge window, as a share of the patch side


def _starts(length: int, size: int, stride: int) -> list[int]:
    """Grid starts along one axis: 0, stride, 2 stride, ... and a last one flush with the far edge."""
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def patch_boxes(shape: tuple[int, int], need: np.ndarray | None = None, size: int = PATCH,
                overlap: int = OVERLAP) -> list[tuple[int, int]]:
    """(H, W) and an optional (H, W) bool mask of the pixels that need the network -> the (y, x) top-left corners
    of the ``size`` x ``size`` patches to run, row by row: the whole grid, or only its patches holding a ``need``
    pixel (which then cover every ``need`` pixel). H and W must be at least ``size``: the caller pads."""
    h, w = shape
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"patch size {size} and overlap {overlap} need 0 <= overlap < size")
    if h < size or w < size:
        raise ValueError(f"shape {h}x{w} is smaller than one {size}x{size} patch; pad it first")
    stride = size - overlap
    ys, xs = _starts(h, size, stride), _starts(w, size, stride)
    if need is None:
        return [(y, x) for y in ys for x in xs]
    if need.shape != (h, w):
        raise ValueError(f"need mask is {need.shape}, not {(h, w)}")
    # Summed-area table: the count of need pixels in any box in four look-ups.
    table = np.zeros((h + 1, w + 1), np.int64)
    table[1:, 1:] = np.cumsum(np.cumsum(need, axis=0, dtype=np.int64), axis=1)
    return [(y, x) for y in ys for x in xs
            if table[y + size, x + size] - table[y, x + size] - table[y + size, x] + table[y, x] > 0]


def gaussian_window(size: int, sigma: float = WINDOW_SIGMA) -> np.ndarray:
    """(size, size) float32 separable Gaussian, 1 at the centre and > 0 everywhere (exp(-2) per axis at the
    edges with the default sigma), so a pixel covered by one patch only still gets that patch's value."""
    c = (size - 1) / 2.0
    g = np.exp(-0.5 * ((np.arange(size) - c) / (sigma * size)) ** 2)
    return np.outer(g, g).astype(np.float32)


def merge_patches(outputs: Sequence[np.ndarray], boxes: Sequence[tuple[int, int]], shape: tuple[int, int],
                  size: int = PATCH) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch outputs (C, size, size) at ``boxes`` (y, x) -> (the window-weighted mean (C, H, W) float32, the
    summed weight (H, W) float32). Pixels no patch covers have weight 0 and value 0.

    Accumulated in float64: a value every patch agrees on comes back exactly (a constant merges to itself)."""
    if len(outputs) != len(boxes):
        raise ValueError(f"{len(outputs)} outputs for {len(boxes)} boxes")
    h, w = shape
    if not outputs:
        return np.zeros((0, h, w), np.float32), np.zeros((h, w), np.float32)
    channels = outputs[0].shape[0]
    window = gaussian_window(size).astype(np.float64)
    acc = np.zeros((channels, h, w), np.float64)
    weight = np.zeros((h, w), np.float64)
    for out, (y, x) in zip(outputs, boxes, strict=True):
        if out.shape != (channels, size, size):
            raise ValueError(f"patch output is {out.shape}, not {(channels, size, size)}")
        acc[:, y : y + size, x : x + size] += window * out
        weight[y : y + size, x : x + size] += window
    merged = np.divide(acc, weight, out=np.zeros_like(acc), where=weight > 0)
    return merged.astype(np.float32), weight.astype(np.float32)


__all__ = ["OVERLAP", "PATCH", "gaussian_window", "merge_patches", "patch_boxes"]
