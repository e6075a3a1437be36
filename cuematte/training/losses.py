"""FNFNet training losses (paper Sec. 4.5, eqs. 7-13), each term under its own name.

Conventions (all tensors NCHW float, values in [0, 1]):

* Every L1-type term is a *mean* over the pixels and channels it covers, pooled over the batch. A masked term
  divides by the mask area (sum of mask weights x channels), so its scale does not depend on how much of the
  frame is unknown / foreground, and a sample with a small unknown band counts per pixel, not per sample.
  An empty mask gives 0 (numerator 0, denominator clamped to a tiny epsilon).
* ``alpha_terms`` = L1 + Sobel + Laplacian-pyramid L1 (eqs. 8/9). The Sobel kernels are divided by 8 (so
  they estimate the derivative), the gradient term is ``mean(|dx| + |dy|)``; the pyramid term is the plain
  sum over 5 band-pass levels of each level's mean absolute difference, unweighted as eq. (8) is written
  (MG-Matting weights level k by 2^(k-1); we do not).
* Both operators are linear, so they are applied once to ``pred - gt`` instead of to each side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Stage = Literal["cmn", "full"]
DetailRegion = Literal["pred", "gt", "union"]

BG, UNKNOWN, FG = 0, 1, 2  # trimap class indices, as in FNFNet's trimap head
LAP_LEVELS = 5
_EPS = 1e-6

PRED_KEYS_CMN = ("trimap_logits", "detail_c", "alpha_c", "fg_c")
PRED_KEYS_FULL = (*PRED_KEYS_CMN, "trimap_up", "detail", "alpha", "fg")
BATCH_KEYS = ("noflash", "alpha", "fg", "bg")


@dataclass
class LossWeights:
    """Weight of each named term in ``total``; all 1.0 as in the paper's eqs. (12) and (13)."""

    sem_c: float = 1.0
    detail_c: float = 1.0
    alpha_c: float = 1.0
    fg_c: float = 1.0
    recons_c: float = 1.0
    detail: float = 1.0
    alpha: float = 1.0
    fg: float = 1.0


@dataclass
class LossConfig:
    """Everything about the losses that is not a weight.

    ``detail_region`` picks the unknown mask t^un of L_detail: ``"pred"`` is the paper (argmax of the
    predicted trimap), ``"gt"`` the GT trimap, ``"union"`` both (keeps a detail signal while the trimap head
    is still wrong early in training). The GT-trimap kernel is ``kernel_ref`` at a short side of
    ``kernel_ref_short_side`` pixels, scaled linearly to the resolution the trimap is built at.
    """

    detail_region: DetailRegion = "pred"
    kernel_ref: int = 25
    kernel_ref_short_side: int = 720
    trimap_tol: float = 1e-3  # alpha <= tol is background, >= 1 - tol foreground (GT is uint8/255)


# --- trimap -----------------------------------------------------------------------------------------------


def trimap_kernel(size: tuple[int, int], ref_kernel: int = 25, ref_short_side: int = 720) -> int:
    """Odd erosion/dilation kernel for a (H, W) image: ``ref_kernel`` at ``ref_short_side``, scaled, >= 3."""
    k = max(3, round(ref_kernel * min(size) / ref_short_side))
    return k | 1


def gt_trimap(alpha: Tensor, kernel: int, tol: float = 1e-3) -> Tensor:
    """GT trimap by erosion/dilation of GT alpha (paper Sec. 4.5.1, square ``kernel`` x ``kernel``).

    alpha: (B, 1, H, W) or (B, H, W) in [0, 1] -> (B, H, W) long, 0 background, 1 unknown, 2 foreground.
    Foreground is the eroded ``alpha >= 1 - tol`` region, unknown the rest of the dilated ``alpha > tol``
    region, so every soft pixel is unknown. Max-pooling pads with -inf, so the image border neither erodes
    nor dilates: a portrait cut by the bottom edge stays foreground there.
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"trimap kernel must be odd and positive, got {kernel}")
    a = alpha.detach()
    if a.dim() == 3:
        a = a.unsqueeze(1)
    if a.dim() != 4 or a.shape[1] != 1:
        raise ValueError(f"alpha must be (B,1,H,W) or (B,H,W), got {tuple(alpha.shape)}")
    a = a.float()
    pad = kernel // 2
    sure_fg = (a >= 1.0 - tol).float()
    maybe_fg = (a > tol).float()
    fg = 1.0 - F.max_pool2d(1.0 - sure_fg, kernel, stride=1, padding=pad)
    maybe = F.max_pool2d(maybe_fg, kernel, stride=1, padding=pad)
    tri = torch.full_like(a, BG, dtype=torch.long)
    tri[maybe > 0.5] = UNKNOWN
    tri[fg > 0.5] = FG
    return tri[:, 0]


# --- linear operators -------------------------------------------------------------------------------------


def sobel(x: Tensor) -> Tensor:
    """Sobel derivatives (kernels / 8, replicate border so a constant image has zero gradient everywhere).

    x: (B, C, H, W) -> (B, C, 2, H, W) with [:, :, 0] = d/dx (along W) and [:, :, 1] = d/dy (along H).
    """
    b, c, h, w = x.shape
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype)
    k = torch.stack([kx, kx.t()]).unsqueeze(1) / 8.0
    xp = F.pad(x.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    return F.conv2d(xp, k).reshape(b, c, 2, h, w)


def _gauss5(x: Tensor) -> Tensor:
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device, dtype=x.dtype) / 16.0
    return (k1[:, None] * k1[None, :]).view(1, 1, 5, 5)


def laplacian_pyramid(x: Tensor, levels: int = LAP_LEVELS) -> list[Tensor]:
    """Burt-Adelson Laplacian pyramid: ``levels`` band-pass images, then the low-pass residual.

    x: (B, C, H, W) -> [(B, C, H, W), (B, C, ceil(H/2), ceil(W/2)), ...] (``levels + 1`` tensors); summing
    the expanded levels gives back x exactly. Blur (5x5 binomial) and expand use normalised convolution at
    the borders (divide by the kernel mass that falls inside the image), so any size down to 1x1 works and a
    constant image has all-zero bands.
    """
    b, c, h, w = x.shape
    k = _gauss5(x)
    cur = x.reshape(b * c, 1, h, w)
    out: list[Tensor] = []
    for _ in range(levels):
        hh, ww = cur.shape[-2:]
        ones = cur.new_ones(1, 1, hh, ww)
        down = (F.conv2d(cur, k, padding=2) / F.conv2d(ones, k, padding=2))[..., ::2, ::2]
        out.append((cur - _expand(down, (hh, ww), k)).reshape(b, c, hh, ww))
        cur = down
    out.append(cur.reshape(b, c, *cur.shape[-2:]))
    return out


def collapse_pyramid(pyr: list[Tensor]) -> Tensor:
    """Inverse of ``laplacian_pyramid``: (levels + 1) tensors -> (B, C, H, W)."""
    cur = pyr[-1]
    for band in reversed(pyr[:-1]):
        b, c, h, w = band.shape
        up = _expand(cur.reshape(b * c, 1, *cur.shape[-2:]), (h, w), _gauss5(band))
        cur = band + up.reshape(b, c, h, w)
    return cur


def _expand(down: Tensor, size: tuple[int, int], k: Tensor) -> Tensor:
    """Zero-insert ``down`` to ``size`` and interpolate with the binomial kernel (normalised at borders)."""
    op = (size[0] - (2 * down.shape[-2] - 1), size[1] - (2 * down.shape[-1] - 1))
    num = F.conv_transpose2d(down, k, stride=2, padding=2, output_padding=op)
    den = F.conv_transpose2d(down.new_ones(1, 1, *down.shape[-2:]), k, stride=2, padding=2, output_padding=op)
    return num / den


def _masked_mean(err: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of err (B, C, H, W) over the pixels weighted by mask (B, 1, H, W), pooled over the batch."""
    if mask is None:
        return err.mean()
    return (err * mask).sum() / (mask.sum() * err.shape[1]).clamp_min(_EPS)


# --- loss terms -------------------------------------------------------------------------------------------


def alpha_terms(pred: Tensor, gt: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(L1, Sobel-gradient L1, 5-level Laplacian L1) of pred vs gt, each a (masked) mean; see module doc.

    pred, gt: (B, 1, H, W); mask: (B, 1, H, W) weights in [0, 1] or None. Pyramid level k uses the mask
    area-downsampled to that level's size, normalised by its own area.
    """
    diff = pred - gt
    l1 = _masked_mean(diff.abs(), mask)
    grad = _masked_mean(sobel(diff).abs().sum(dim=2), mask)
    lap = diff.new_zeros(())
    for band in laplacian_pyramid(diff, LAP_LEVELS)[:LAP_LEVELS]:
        m = None if mask is None else F.adaptive_avg_pool2d(mask, (band.shape[-2], band.shape[-1]))
        lap = lap + _masked_mean(band.abs(), m)
    return l1, grad, lap


def sem_loss(logits: Tensor, trimap: Tensor) -> Tensor:
    """L_sem (eq. 7): cross-entropy of logits (B, 3, H, W) against trimap (B, H, W) long, mean per pixel."""
    return F.cross_entropy(logits, trimap)


def detail_loss(detail: Tensor, alpha_gt: Tensor, unknown: Tensor) -> Tensor:
    """L_detail (eq. 8): ``alpha_terms`` of detail (B,1,H,W) vs alpha_gt (B,1,H,W) in unknown (B,1,H,W)."""
    return torch.stack(alpha_terms(detail, alpha_gt, unknown)).sum()


def alpha_loss(alpha: Tensor, alpha_gt: Tensor) -> Tensor:
    """L_alpha (eq. 9): ``alpha_terms`` of alpha (B,1,H,W) vs alpha_gt (B,1,H,W) over the whole image."""
    return torch.stack(alpha_terms(alpha, alpha_gt)).sum()


def fg_loss(fg: Tensor, fg_gt: Tensor, alpha_gt: Tensor) -> Tensor:
    """L_fg (eq. 10): L1 of fg (B,3,H,W) vs fg_gt where alpha_gt (B,1,H,W) > 0, mean over that area x 3."""
    return _masked_mean((fg - fg_gt).abs(), (alpha_gt > 0).to(fg.dtype))


def recons_loss(alpha: Tensor, fg_gt: Tensor, bg: Tensor, image: Tensor) -> Tensor:
    """L_recons (eq. 11): mean |alpha F_GT + (1 - alpha) B - I|; alpha (B,1,H,W), the rest (B,3,H,W)."""
    return (alpha * fg_gt + (1.0 - alpha) * bg - image).abs().mean()


# --- composition ------------------------------------------------------------------------------------------


def downsample_gt(batch: dict[str, Tensor], size: tuple[int, int]) -> dict[str, Tensor]:
    """GT at the CMN resolution ``size`` (h, w) by area interpolation: "noflash", "alpha", "fg", "bg".

    Colours are downsampled premultiplied (fg = area(alpha F) / area(alpha), bg likewise with 1 - alpha):
    F is undefined where alpha = 0, and averaging it there would bleed background-coloured junk into the
    edge. It also keeps eq. (1) exact at low resolution: alpha_c F_c + (1 - alpha_c) B_c = area(I).
    """

    def area(x: Tensor) -> Tensor:
        return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="area")

    a_full = batch["alpha"]
    a = area(a_full)
    fg_plain, bg_plain = area(batch["fg"]), area(batch["bg"])
    fg = torch.where(a > _EPS, area(a_full * batch["fg"]) / a.clamp_min(_EPS), fg_plain)
    bg = torch.where(1.0 - a > _EPS, area((1.0 - a_full) * batch["bg"]) / (1.0 - a).clamp_min(_EPS), bg_plain)
    return {"noflash": area(batch["noflash"]), "alpha": a, "fg": fg, "bg": bg}


def _unknown_mask(logits: Tensor, gt_tri: Tensor | None, region: DetailRegion) -> Tensor:
    """t^un as a (B, 1, H, W) float mask; argmax of the predicted trimap carries no gradient anyway."""
    masks = []
    if region in ("pred", "union"):
        # argmax(dim=1) == UNKNOWN by two comparisons (ties go to the lower index, as argmax's): a strided
        # argmax over 3 channels cost ~180 ms a call on the CPU.
        lg = logits.detach()
        masks.append((lg[:, UNKNOWN] > lg[:, 0]) & (lg[:, UNKNOWN] >= lg[:, 2]))
    if region in ("gt", "union"):
        if gt_tri is None:
            raise ValueError(f"detail_region {region!r} needs the GT trimap")
        masks.append(gt_tri == UNKNOWN)
    if not masks:
        raise ValueError(f"unknown detail_region {region!r}")
    m = masks[0] if len(masks) == 1 else masks[0] | masks[1]
    return m.unsqueeze(1).to(logits.dtype)


def fnf_loss(
    pred: dict[str, Tensor],
    batch: dict[str, Tensor],
    stage: Stage,
    weights: LossWeights | None = None,
    config: LossConfig | None = None,
) -> dict[str, Tensor]:
    """Paper eq. (12) (``stage="cmn"``) or eq. (13) (``stage="full"``), every term under its own name.

    pred (FNFNet.forward): "trimap_logits" (B,3,h,w), "detail_c" (B,1,h,w), "alpha_c" (B,1,h,w),
    "fg_c" (B,3,h,w) at the CMN resolution (h, w); for "full" also "trimap_up" (B,3,H,W) logits,
    "detail" (B,1,H,W), "alpha" (B,1,H,W), "fg" (B,3,H,W).
    batch: "noflash" (B,3,H,W), "alpha" (B,1,H,W), "fg" (B,3,H,W), "bg" (B,3,H,W), all in [0, 1]; other
    keys are ignored. GT is area-downsampled to (h, w) inside (``downsample_gt``) and the GT trimap built
    there with ``trimap_kernel`` scaled to that resolution.

    Returns scalar tensors "sem_c", "detail_c", "alpha_c", "fg_c", "recons_c" (+ "detail", "alpha", "fg"
    for "full") and their weighted sum "total".
    """
    if stage not in ("cmn", "full"):
        raise ValueError(f"stage must be 'cmn' or 'full', got {stage!r}")
    w = weights or LossWeights()
    cfg = config or LossConfig()
    need = PRED_KEYS_FULL if stage == "full" else PRED_KEYS_CMN
    missing = [f"pred[{k!r}]" for k in need if k not in pred] + [f"batch[{k!r}]" for k in BATCH_KEYS
                                                                   if k not in batch]
    if missing:
        raise KeyError(f"fnf_loss({stage!r}) is missing {', '.join(missing)}")
    # Losses in float32 even under autocast: the masked sums cover up to a million pixels.
    p = {k: pred[k].float() for k in need}
    gt = {k: batch[k].float() for k in BATCH_KEYS}

    size = (p["alpha_c"].shape[-2], p["alpha_c"].shape[-1])
    gt_c = downsample_gt(gt, size)
    tri_c = gt_trimap(gt_c["alpha"], trimap_kernel(size, cfg.kernel_ref, cfg.kernel_ref_short_side),
                      cfg.trimap_tol)
    terms: dict[str, Tensor] = {
        "sem_c": sem_loss(p["trimap_logits"], tri_c),
        "detail_c": detail_loss(p["detail_c"], gt_c["alpha"],
                                _unknown_mask(p["trimap_logits"], tri_c, cfg.detail_region)),
        "alpha_c": alpha_loss(p["alpha_c"], gt_c["alpha"]),
        "fg_c": fg_loss(p["fg_c"], gt_c["fg"], gt_c["alpha"]),
        "recons_c": recons_loss(p["alpha_c"], gt_c["fg"], gt_c["bg"], gt_c["noflash"]),
    }
    if stage == "full":
        full = (gt["alpha"].shape[-2], gt["alpha"].shape[-1])
        if tuple(p["alpha"].shape[-2:]) != full:
            raise ValueError(f"pred['alpha'] is {tuple(p['alpha'].shape[-2:])}, GT is {full}")
        tri = None
        if cfg.detail_region != "pred":
            tri = gt_trimap(gt["alpha"], trimap_kernel(full, cfg.kernel_ref, cfg.kernel_ref_short_side),
                            cfg.trimap_tol)
        terms["detail"] = detail_loss(p["detail"], gt["alpha"], _unknown_mask(p["trimap_up"], tri,
                                                                               cfg.detail_region))
        terms["alpha"] = alpha_loss(p["alpha"], gt["alpha"])
        terms["fg"] = fg_loss(p["fg"], gt["fg"], gt["alpha"])
    total = torch.stack([getattr(w, k) * v for k, v in terms.items()]).sum()
    terms["total"] = total
    return terms


__all__ = [
    "BG",
    "FG",
    "LAP_LEVELS",
    "UNKNOWN",
    "LossConfig",
    "LossWeights",
    "alpha_loss",
    "alpha_terms",
    "collapse_pyramid",
    "detail_loss",
    "downsample_gt",
    "fg_loss",
    "fnf_loss",
    "gt_trimap",
    "laplacian_pyramid",
    "recons_loss",
    "sem_loss",
    "sobel",
    "trimap_kernel",
]

