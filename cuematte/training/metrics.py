"""Matting metrics in numpy + OpenCV only (no torch), so the eval CLI and engine-side tools can share them.

Inputs are alpha mattes (H, W) (or a clip (T, H, W) for ``dtssd``) as float in [0, 1]; integer arrays are
read as full-scale (uint8 / 255, uint16 / 65535). ``mask`` (bool, same H x W; e.g. ``trimap == 128``)
restricts the sum / mean to those pixels (the usual "unknown region" evaluation); the image is still
filtered as a whole, so edges next to the mask count as they do in the reference code.

Scales, as matting papers print them (Rhemann et al. 2009 via the DIM / GCA evaluation code):

* ``sad``   sum |a - g| / 1000
* ``mse``   mean (a - g)^2, returned RAW; papers print it x 1e3 ("MSE scaled by 10^-3"): ``mse(...) * 1e3``
* ``grad``  sum (|grad a| - |grad g|)^2 / 1000, first-order Gaussian derivatives with sigma 1.4
* ``conn``  connectivity error with a 0.1 threshold sweep / 1000
* ``mse_alpha_fg``  mean over pixels and RGB of (a F_a - g F_g)^2, raw like ``mse``
* ``dtssd`` RVM's temporal coherence, returned x 1e2 as RVM prints it (``scale=1`` gives the raw value)
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

ArrayLike = npt.NDArray[np.generic]
F64 = npt.NDArray[np.float64]


def _unit(x: ArrayLike) -> F64:
    """float64 copy in [0, 1] units; integer mattes are taken as full-scale."""
    a = np.asarray(x)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.float64) / float(np.iinfo(a.dtype.name).max)
    return a.astype(np.float64)


def _check(pred: F64, gt: F64, mask: ArrayLike | None) -> npt.NDArray[np.bool_] | None:
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in shape")
    if mask is None:
        return None
    m = np.asarray(mask).astype(bool)
    if m.shape != pred.shape[-2:] and m.shape != pred.shape:
        raise ValueError(f"mask {m.shape} does not match {pred.shape}")
    return np.broadcast_to(m, pred.shape)


def sad(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Sum of absolute differences / 1000 (over ``mask`` if given)."""
    p, g = _unit(pred), _unit(gt)
    m = _check(p, g, mask)
    err = np.abs(p - g)
    return float((err if m is None else err[m]).sum() / 1000.0)


def mse(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Mean squared error over all pixels (or the ``mask`` pixels). Raw: multiply by 1e3 for paper tables."""
    p, g = _unit(pred), _unit(gt)
    m = _check(p, g, mask)
    err = (p - g) ** 2
    sel = err if m is None else err[m]
    return float(sel.mean()) if sel.size else 0.0


def mse_alpha_fg(
    pred_alpha: ArrayLike,
    pred_fg: ArrayLike,
    gt_alpha: ArrayLike,
    gt_fg: ArrayLike,
    mask: ArrayLike | None = None,
) -> float:
    """MSE of the premultiplied foreground alpha * F: alphas (H, W), foregrounds (H, W, 3) RGB.

    Mean over the (masked) pixels and the three channels; raw, like ``mse``. Premultiplying makes the
    colour of fully transparent pixels (undefined in the GT) irrelevant.
    """
    pa, ga = _unit(pred_alpha), _unit(gt_alpha)
    pf, gf = _unit(pred_fg), _unit(gt_fg)
    m = _check(pa, ga, mask)
    if pf.shape != (*pa.shape, 3) or gf.shape != pf.shape:
        raise ValueError(f"foregrounds must be {(*pa.shape, 3)}, got {pf.shape} and {gf.shape}")
    err = ((pa[..., None] * pf - ga[..., None] * gf) ** 2).mean(axis=-1)
    sel = err if m is None else err[m]
    return float(sel.mean()) if sel.size else 0.0


def _gauss_derivative_kernel(sigma: float) -> F64:
    """The DIM / Rhemann et al. derivative-of-Gaussian kernel (d/dx), unit L2 norm, truncated at 1% mass."""
    eps = 1e-2
    half = math.ceil(sigma * math.sqrt(-2.0 * math.log(math.sqrt(2.0 * math.pi) * sigma * eps)))
    u = np.arange(-half, half + 1, dtype=np.float64)
    gauss = np.exp(-(u**2) / (2.0 * sigma**2)) / (sigma * math.sqrt(2.0 * math.pi))
    dgauss = -u * gauss / sigma**2
    hx = gauss[:, None] * dgauss[None, :]  # rows: smoothing along y, columns: derivative along x
    result: F64 = hx / np.sqrt((hx**2).sum())
    return result


def gradient_magnitude(alpha: ArrayLike, sigma: float = 1.4) -> F64:
    """|grad alpha| with Gaussian-derivative filters, replicated borders (scipy.ndimage 'nearest')."""
    a = _unit(alpha)
    hx = _gauss_derivative_kernel(sigma)
    # filter2D correlates where the reference convolves; only the sign differs, the magnitude does not.
    gx = cv2.filter2D(a, cv2.CV_64F, hx, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(a, cv2.CV_64F, np.ascontiguousarray(hx.T), borderType=cv2.BORDER_REPLICATE)
    result: F64 = np.sqrt(gx**2 + gy**2)
    return result


def grad(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None, sigma: float = 1.4) -> float:
    """Gradient error: sum over (masked) pixels of (|grad pred| - |grad gt|)^2 / 1000; (H, W) inputs."""
    p, g = _unit(pred), _unit(gt)
    m = _check(p, g, mask)
    if p.ndim != 2:
        raise ValueError(f"grad takes (H, W) mattes, got {p.shape}")
    err = (gradient_magnitude(p, sigma) - gradient_magnitude(g, sigma)) ** 2
    return float((err if m is None else err[m]).sum() / 1000.0)


def _largest_component(binary: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """The largest 4-connected component (skimage's connectivity=1, as in the reference code)."""
    n, labels = cv2.connectedComponents(binary.astype(np.uint8), connectivity=4)
    if n <= 1:
        return np.zeros_like(binary)
    counts = np.bincount(labels.ravel(), minlength=n)
    counts[0] = 0
    out: npt.NDArray[np.bool_] = labels == int(counts.argmax())
    return out


def conn(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None, step: float = 0.1) -> float:
    """Connectivity error (Rhemann et al. 2009, DIM code): threshold sweep in ``step``s / 1000.

    For each threshold t the largest component of (pred >= t) & (gt >= t) is found; l is the last threshold
    at which a pixel still belonged to it. phi = 1 - (a - l) * [a - l >= 0.15] for pred and gt, and the error
    is sum |phi_pred - phi_gt| over the (masked) pixels.
    """
    p, g = _unit(pred), _unit(gt)
    m = _check(p, g, mask)
    if p.ndim != 2:
        raise ValueError(f"conn takes (H, W) mattes, got {p.shape}")
    steps = np.linspace(0.0, 1.0, round(1.0 / step) + 1)
    l_map = np.full(p.shape, -1.0)
    for i in range(1, len(steps)):
        omega = _largest_component((p >= steps[i]) & (g >= steps[i]))
        l_map[(l_map == -1) & ~omega] = steps[i - 1]
    l_map[l_map == -1] = 1.0
    pd, gd = p - l_map, g - l_map
    p_phi = 1.0 - pd * (pd >= 0.15)
    g_phi = 1.0 - gd * (gd >= 0.15)
    err = np.abs(p_phi - g_phi)
    return float((err if m is None else err[m]).sum() / 1000.0)


def dtssd(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None, scale: float = 1e2) -> float:
    """Temporal coherence error (Erofeev et al. 2015) as computed by RVM, times ``scale`` (RVM prints x 1e2).

    pred, gt: (T, H, W) clips, T >= 2. Per consecutive pair: sqrt(mean(((a_t - a_{t-1}) - (g_t - g_{t-1}))^2))
    over the pixels (or the ``mask`` pixels, mask (H, W) or (T, H, W) taken at frame t); averaged over the
    T - 1 pairs. A perfect or perfectly static-error prediction scores 0; flicker raises it.
    """
    p, g = _unit(pred), _unit(gt)
    m = _check(p, g, mask)
    if p.ndim != 3 or p.shape[0] < 2:
        raise ValueError(f"dtssd takes (T >= 2, H, W) clips, got {p.shape}")
    d = (p[1:] - p[:-1]) - (g[1:] - g[:-1])
    vals = []
    for t in range(d.shape[0]):
        sq = d[t] ** 2
        sel = sq if m is None else sq[m[t + 1]]
        vals.append(math.sqrt(float(sel.mean())) if sel.size else 0.0)
    return float(np.mean(vals)) * scale


def matting_metrics(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None) -> dict[str, float]:
    """SAD, MSE (raw), Grad and Conn of one (H, W) matte, keyed "sad", "mse", "grad", "conn"."""
    return {"sad": sad(pred, gt, mask), "mse": mse(pred, gt, mask), "grad": grad(pred, gt, mask),
            "conn": conn(pred, gt, mask)}


def ratio_interval(ours: F64, ref: F64, level: float = 0.95, resamples: int = 4000,
                   seed: int = 0) -> list[float]:
    """Paired percentile bootstrap of mean(ours) / mean(ref) over samples (both (N,)) -> [low, high].

    A target like "≤ 0.5× the ablation" is read off a ratio of two means over a few dozen samples, where one
    hard sample can move it by 0.1; the interval says how far the split's choice of samples alone can move it
    (not how far another training seed would). Resampling pairs keeps each sample's two errors together.
    """
    idx = np.random.default_rng(seed).integers(0, ours.size, (resamples, ours.size))
    ratios = ours[idx].mean(axis=1) / np.maximum(ref[idx].mean(axis=1), 1e-12)
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail))]


__all__ = ["conn", "dtssd", "grad", "gradient_magnitude", "matting_metrics", "mse", "mse_alpha_fg", "ratio_interval",
           "sad"]
