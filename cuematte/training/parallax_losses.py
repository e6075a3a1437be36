"""PPMNet training losses (parallax matting paper Sec. 4.4), each term under its own name.

L_total = L_sep + L_laplacian + L_grad + L_composition, all weights 1 as in the paper (:class:`PPMLossWeights`).
Conventions follow :mod:`cuematte.training.losses`: tensors NCHW float in [0, 1], every term a mean pooled over
the batch, and the Laplacian and gradient terms apply their (linear) operator once to ``pred - gt``:

* ``sep``: L1 over the "soft" pixels (0 < alpha_gt < 1) divided by their count, plus L1 over the "hard" ones
  (alpha_gt exactly 0 or 1) divided by theirs, so a thin band of soft pixels weighs as much as the rest of the
  patch. An empty set contributes 0.
* ``laplacian``: the sum over the 5 band-pass levels of :func:`~cuematte.training.losses.laplacian_pyramid` of
  each level's mean absolute difference (the low-pass residual left out, as in ``alpha_terms``).
* ``grad``: mean of ``|d/dx| + |d/dy|`` of :func:`~cuematte.training.losses.sobel` on the difference.
* ``composition``: mean ``|I - (alphaF_pred + (1 - alpha_gt) B_gt)|`` over pixels and channels: the predicted
  premultiplied foreground recomposed on the ground-truth background must give back the image.

Pass the network's guided outputs (``PPMNet.forward``): pixels the trimap is certain of are exact, so their
error is 0 when the trimap agrees with the ground truth, and the gradient reaches the network through the band.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cuematte.training.losses import LAP_LEVELS, laplacian_pyramid, sobel

BATCH_KEYS = ("alpha", "bg", "view")  # what the terms read; a batch's "fg" (F) is not needed by any of them
TERMS = ("sep", "laplacian", "grad", "composition")


@dataclass(frozen=True)
class PPMLossWeights:
    """Weight of each named term in ``total``; all 1.0 as in the paper's L_total."""

    sep: float = 1.0
    laplacian: float = 1.0
    grad: float = 1.0
    composition: float = 1.0


def sep_loss(alpha: Tensor, alpha_gt: Tensor) -> Tensor:
    """L_sep: alpha, alpha_gt (B, 1, H, W) -> mean L1 over soft GT pixels + mean L1 over hard GT pixels, each
    normalised by its own count over the whole batch (an empty set gives 0)."""
    err = (alpha - alpha_gt).abs()
    soft = ((alpha_gt > 0) & (alpha_gt < 1)).to(err.dtype)
    hard = 1.0 - soft

    def mean_over(mask: Tensor) -> Tensor:
        return (err * mask).sum() / mask.sum().clamp_min(1.0)  # numerator is 0 when the set is empty

    return mean_over(soft) + mean_over(hard)


def laplacian_loss(alpha: Tensor, alpha_gt: Tensor, levels: int = LAP_LEVELS) -> Tensor:
    """L_laplacian: alpha, alpha_gt (B, 1, H, W) -> sum over ``levels`` band-pass levels of mean |band(diff)|."""
    bands = laplacian_pyramid(alpha - alpha_gt, levels)[:levels]
    return torch.stack([band.abs().mean() for band in bands]).sum()


def grad_loss(alpha: Tensor, alpha_gt: Tensor) -> Tensor:
    """L_grad: alpha, alpha_gt (B, 1, H, W) -> mean(|d/dx| + |d/dy|) of the Sobel derivatives of the difference."""
    return sobel(alpha - alpha_gt).abs().sum(dim=2).mean()


def composition_loss(fg: Tensor, alpha_gt: Tensor, bg_gt: Tensor, view: Tensor) -> Tensor:
    """L_composition: premultiplied fg (B, 3, H, W), alpha_gt (B, 1, H, W), bg_gt and view (B, 3, H, W) ->
    mean |view - (fg + (1 - alpha_gt) bg_gt)|."""
    return (view - (fg + (1.0 - alpha_gt) * bg_gt)).abs().mean()


def parallax_loss(alpha: Tensor, fg: Tensor, batch: dict[str, Tensor],
                  weights: PPMLossWeights | None = None) -> dict[str, Tensor]:
    """The paper's L_total with every term under its own name.

    alpha (B, 1, H, W) and premultiplied fg (B, 3, H, W) from the network; batch: ``alpha`` (B, 1, H, W) ground
    truth, ``bg`` (B, 3, H, W) ground-truth background, ``view`` (B, 3, H, W) the image. Other keys, such as
    ``fg`` (the ground-truth colour F), are ignored: the paper supervises alpha*F only through the composition.

    Returns scalar tensors ``sep``, ``laplacian``, ``grad``, ``composition`` and their weighted sum ``total``.
    """
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise KeyError(f"parallax_loss: batch is missing {', '.join(repr(k) for k in missing)}")
    if alpha.shape[-2:] != batch["alpha"].shape[-2:]:
        raise ValueError(f"alpha is {tuple(alpha.shape)}, ground truth is {tuple(batch['alpha'].shape)}")
    w = weights or PPMLossWeights()
    # float32 even under autocast: the sums run over whole patches.
    a, f = alpha.float(), fg.float()
    a_gt, bg, view = batch["alpha"].float(), batch["bg"].float(), batch["view"].float()
    terms: dict[str, Tensor] = {
        "sep": sep_loss(a, a_gt),
        "laplacian": laplacian_loss(a, a_gt),
        "grad": grad_loss(a, a_gt),
        "composition": composition_loss(f, a_gt, bg, view),
    }
    terms["total"] = torch.stack([getattr(w, k) * v for k, v in terms.items()]).sum()
    return terms

__all__ = [
    "TERMS",
    "PPMLossWeights",
    "composition_loss",
    "grad_loss",
    "laplacian_loss",
    "parallax_loss",
    "sep_loss",
]
