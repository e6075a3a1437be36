"""Optical flow between the two views, filled per layer, and the paper's four aligned inputs.

Flows here are backward flows in the reference view's pixel grid: ``flow[y, x] = (dx, dy)`` says where the
pixel (x, y) of the reference view (view 1) is found in the other view (view 0), so ``warp(view0, flow)``
aligns view 0 on view 1. The estimator is OpenCV's DIS (no downloaded weights). Where the person and the
background mix (the trimap's unknown band) the estimate is unreliable, so each layer's flow there is its
nearest certain neighbour's (the paper's Sec. 4.2): smooth motion per layer, extrapolated into the band.
"""

from __future__ import annotations

import cv2
import numpy as np

from cuematte.engine.cues.trimap import BG, FG

FLOW_MAX_SIDE = 640  # DIS runs at most this size: parallax is a few percent of the frame, coarse is enough


def _grey(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def estimate_flow(base: np.ndarray, other: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB, uint8 or float32 in [0, 1], twice -> (H, W, 2) float32 flow with base(x) ≈ other(x + flow).

    Large frames are measured at ``FLOW_MAX_SIDE`` and the flow scaled back."""
    if base.shape[:2] != other.shape[:2]:
        raise ValueError(f"views differ in size: {base.shape[:2]} and {other.shape[:2]}")
    h, w = base.shape[:2]
    scale = min(1.0, FLOW_MAX_SIDE / max(h, w))
    a, b = _grey(base), _grey(other)
    if scale < 1.0:
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
        b = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
    dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = np.asarray(dis.calc(a, b, np.zeros((*a.shape, 2), np.float32)), np.float32)
    if scale < 1.0:
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR) / np.float32(scale)
    return np.ascontiguousarray(flow, np.float32)


def fill_flow(flow: np.ndarray, certain: np.ndarray) -> np.ndarray:
    """(H, W, 2) flow and a (H, W) bool mask -> the flow with every pixel outside the mask replaced by its nearest
    masked pixel's. An empty mask says nothing about this layer: its flow is the frame's median motion."""
    if not certain.any():
        return np.broadcast_to(np.median(flow.reshape(-1, 2), axis=0), flow.shape).astype(np.float32)
    if certain.all():
        return flow.astype(np.float32, copy=True)
    # The distance transform's labels name, for each pixel, its nearest zero pixel: the certain ones.
    _, labels = cv2.distanceTransformWithLabels((~certain).astype(np.uint8), cv2.DIST_L2, 5,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    ys, xs = np.nonzero(certain)  # label k (1-based) is the k-th zero pixel in row-major order
    lookup = np.empty((len(ys) + 1, 2), np.float32)
    lookup[0] = 0.0
    lookup[1:] = flow[ys, xs]
    return lookup[labels]


def layer_flows(flow: np.ndarray, trimap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 2) flow and the reference view's (H, W) uint8 trimap -> (foreground flow, background flow)."""
    return fill_flow(flow, trimap == FG), fill_flow(flow, trimap == BG)


def warp(image: np.ndarray, flow: np.ndarray, *, nearest: bool = False) -> np.ndarray:
    """(H, W[, C]) image and (H, W, 2) flow -> out(x) = image(x + flow(x)); borders replicate."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + flow[..., 0], gy + flow[..., 1]
    return cv2.remap(image, mx, my, cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def affine_flow(affine: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(2, 3) affine taking view-0 pixels to view-1 pixels -> the exact (H, W, 2) view-1 -> view-0 flow of a layer
    it moves (the oracle the estimator is measured against)."""
    inv = cv2.invertAffineTransform(np.asarray(affine, np.float64))
    h, w = shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    x0 = inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]
    y0 = inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]
    return np.stack([x0 - gx, y0 - gy], axis=-1).astype(np.float32)


def branch_inputs(view1: np.ndarray, view0: np.ndarray, trimap1: np.ndarray, trimap0: np.ndarray,
                  flow_fg: np.ndarray, flow_bg: np.ndarray) -> dict[str, np.ndarray]:
    """The paper's inputs for the two branches, all in the reference view's grid.

    view1, view0: (H, W, 3) float32; trimap1, trimap0: (H, W) uint8 trimaps of each view; flow_fg / flow_bg:
    (H, W, 2) filled layer flows view 1 -> view 0. Returns
    ``view`` (view 1), ``view_bg`` (view 0 aligned on view 1's background: only the person moved),
    ``view_fg`` (view 0 aligned on view 1's person: only the background moved),
    ``view_fg_pair`` (view 1 with its background moved onto ``view_fg``'s: the top branch's partner),
    ``trimap`` (view 1's) and ``trimap_fg`` (view 0's, aligned on the person).

    ``view_fg_pair`` samples view 1 at x + flow_fg(x) - flow_bg(x): a background point of ``view_fg`` sits at
    x + flow_fg in view 0, i.e. about x + flow_fg - flow_bg in view 1 (the background flow is smooth)."""
    view1 = np.asarray(view1, np.float32)
    view0 = np.asarray(view0, np.float32)
    return {
        "view": view1,
        "view_bg": warp(view0, flow_bg),
        "view_fg": warp(view0, flow_fg),
        "view_fg_pair": warp(view1, flow_fg - flow_bg),
        "trimap": trimap1,
        "trimap_fg": warp(trimap0, flow_fg, nearest=True),
    }
