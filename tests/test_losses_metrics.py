"""Losses (torch), metrics (numpy) and the classical flash baseline against hand-computed values."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from cuematte.training import metrics
from cuematte.training.baselines import classical_flash_matte, guided_filter

torch = pytest.importorskip("torch")
from torch import Tensor  # noqa: E402 - after the torch skip
from torch.nn import functional as F  # noqa: E402

from cuematte.training.losses import (  # noqa: E402
    FG,
    UNKNOWN,
    DetailRegion,
    LossConfig,
    LossWeights,
    Stage,
    alpha_terms,
    collapse_pyramid,
    detail_loss,
    downsample_gt,
    fg_loss,
    fnf_loss,
    gt_trimap,
    laplacian_pyramid,
    recons_loss,
    sem_loss,
    sobel,
    trimap_kernel,
)

CMN_KEYS = {"sem_c", "detail_c", "alpha_c", "fg_c", "recons_c", "total"}
FULL_KEYS = CMN_KEYS | {"detail", "alpha", "fg"}


def _t(a: list[list[float]] | np.ndarray) -> Tensor:
    """(H, W) -> (1, 1, H, W) float32."""
    return torch.as_tensor(np.asarray(a, dtype=np.float32))[None, None]


def _ramp(s: float) -> Tensor:
    """4x4 image rising by s per column: [0, s, 2s, 3s] in every row."""
    return _t(np.tile(np.arange(4, dtype=np.float32) * s, (4, 1)))


# --- trimap -----------------------------------------------------------------------------------------------


def test_trimap_kernel_scales_with_short_side() -> None:
    assert trimap_kernel((720, 1280)) == 25
    assert trimap_kernel((1280, 720)) == 25
    assert trimap_kernel((144, 256)) == 5
    assert trimap_kernel((10, 10)) == 3
    assert all(trimap_kernel((h, 2 * h)) % 2 == 1 for h in range(1, 2000, 37))


def test_gt_trimap_by_hand() -> None:
    a = np.zeros((7, 7), np.float32)
    a[2:5, 2:5] = 1.0
    a[1, 3] = 0.4  # a soft pixel is never foreground
    tri = gt_trimap(_t(a), 3)
    assert tri.shape == (1, 7, 7) and tri.dtype == torch.long
    want = np.zeros((7, 7), np.int64)
    want[1:6, 1:6] = UNKNOWN  # 3x3 dilation of the block
    want[0, 2:5] = UNKNOWN  # ... and of the soft pixel
    want[3, 3] = FG  # 3x3 erosion of the block
    np.testing.assert_array_equal(tri[0].numpy(), want)
    # The image border does not erode: a subject cut by the left edge stays foreground there.
    b = np.zeros((5, 6), np.float32)
    b[:, :3] = 1.0
    edge = gt_trimap(torch.as_tensor(b)[None], 3)[0].numpy()
    np.testing.assert_array_equal(edge[:, :2], FG)
    np.testing.assert_array_equal(edge[:, 2:4], UNKNOWN)
    np.testing.assert_array_equal(edge[:, 4:], 0)
    with pytest.raises(ValueError):
        gt_trimap(_t(a), 4)


# --- operators --------------------------------------------------------------------------------------------


def test_sobel_on_ramp() -> None:
    g = sobel(_ramp(0.2))[0, 0]
    # (f[x+1] - f[x-1]) * 4 / 8 = s inside; replicated borders see half a step.
    np.testing.assert_allclose(g[0].numpy(), np.tile([0.1, 0.2, 0.2, 0.1], (4, 1)), atol=1e-6)
    np.testing.assert_allclose(g[1].numpy(), 0.0, atol=1e-7)


def test_laplacian_first_band_of_an_impulse() -> None:
    x = np.zeros((13, 13), np.float32)
    x[6, 6] = 1.0
    # Blur [1,4,6,4,1]/16 then keep even samples: [1,6,1]/16 at 4, 6, 8 (per axis). Expanding (zero-insert,
    # same kernel x 2 per axis) gives u below; the band is the impulse minus outer(u, u).
    u = np.array([0, 0, 2, 8, 24, 56, 76, 56, 24, 8, 2, 0, 0], np.float32) / 256.0
    pyr = laplacian_pyramid(_t(x))
    assert len(pyr) == 6 and pyr[1].shape[-2:] == (7, 7) and pyr[-1].shape[-2:] == (1, 1)
    np.testing.assert_allclose(pyr[0][0, 0].numpy(), x - np.outer(u, u), atol=1e-6)


def test_laplacian_pyramid_collapses_and_ignores_constants() -> None:
    x = torch.rand(2, 3, 13, 17, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(collapse_pyramid(laplacian_pyramid(x)), x, atol=1e-5, rtol=0)
    for band in laplacian_pyramid(torch.full((1, 1, 7, 5), 0.3))[:-1]:
        assert float(band.abs().max()) < 1e-6
    for h, w in [(1, 1), (2, 2), (3, 5)]:  # tiny images do not break the 5-level pyramid
        assert len(laplacian_pyramid(torch.rand(1, 1, h, w))) == 6


# --- loss terms -------------------------------------------------------------------------------------------


def test_alpha_terms_by_hand() -> None:
    gt = _ramp(0.2)
    l1, grad, lap = alpha_terms(torch.zeros_like(gt), gt)
    assert float(l1) == pytest.approx(0.3, abs=1e-6)  # mean of 0, .2, .4, .6
    assert float(grad) == pytest.approx(0.15, abs=1e-6)  # mean |d/dx| of [.1, .2, .2, .1], d/dy = 0
    assert float(lap) > 0
    # A constant offset is all L1: no gradient, no band-pass content.
    l1, grad, lap = alpha_terms(gt + 0.25, gt)
    assert (float(l1), float(grad), float(lap)) == pytest.approx((0.25, 0.0, 0.0), abs=1e-6)


def test_detail_loss_normalised_by_mask_area() -> None:
    gt = torch.zeros(1, 1, 4, 4)
    pred = gt.clone()
    pred[0, 0, 1, 1] = 1.0
    mask = torch.zeros_like(gt)
    mask[0, 0, 0:2, 0:2] = 1.0  # 4 pixels, one of them wrong by 1
    assert float(alpha_terms(pred, gt, mask)[0]) == pytest.approx(0.25)
    # Constant error inside a mask: L1 = offset / area * area, the other two terms vanish.
    assert float(detail_loss(gt + 0.5, gt, mask)) == pytest.approx(0.5, abs=1e-6)
    # An empty unknown region contributes nothing (not NaN).
    assert float(detail_loss(pred, gt, torch.zeros_like(gt))) == 0.0


def test_sem_loss_by_hand() -> None:
    tri = torch.zeros(1, 2, 2, dtype=torch.long)
    assert float(sem_loss(torch.zeros(1, 3, 2, 2), tri)) == pytest.approx(math.log(3.0), abs=1e-6)
    logits = torch.zeros(1, 3, 2, 2)
    logits[:, 0] = 2.0
    assert float(sem_loss(logits, tri)) == pytest.approx(-math.log(math.e**2 / (math.e**2 + 2)), abs=1e-6)
    assert float(sem_loss(30.0 * F.one_hot(tri, 3).permute(0, 3, 1, 2).float(), tri)) < 1e-10


def test_fg_loss_only_where_alpha_positive() -> None:
    alpha = torch.zeros(1, 1, 4, 4)
    alpha[0, 0, 0, :2] = torch.tensor([1.0, 0.3])
    fg_gt = torch.full((1, 3, 4, 4), 0.5)
    fg = fg_gt + 0.9  # wrong everywhere ...
    fg[:, :, 0, :2] = 0.7  # ... but only by 0.2 where alpha > 0
    assert float(fg_loss(fg, fg_gt, alpha)) == pytest.approx(0.2, abs=1e-6)


def test_recons_loss_by_hand() -> None:
    fg, bg, img = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)
    assert float(recons_loss(torch.full((1, 1, 2, 2), 0.5), fg, bg, img)) == pytest.approx(0.0)
    assert float(recons_loss(torch.zeros(1, 1, 2, 2), fg, bg, img)) == pytest.approx(0.5)
    a = torch.tensor([[[[0.5, 0.0], [1.0, 0.5]]]])  # errors 0, .5, .5, 0
    assert float(recons_loss(a, fg, bg, img)) == pytest.approx(0.25)


# --- fnf_loss ---------------------------------------------------------------------------------------------


def _batch(b: int = 2, h: int = 32, w: int = 48) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    r = torch.sqrt((yy - h / 2) ** 2 + (xx - w / 2) ** 2)
    alpha = ((h / 3 - r) / 3 + 0.5).clamp(0, 1).expand(b, 1, h, w).contiguous()
    fg = torch.rand(b, 3, h, w, generator=gen)
    bg = torch.rand(b, 3, h, w, generator=gen)
    return {"noflash": alpha * fg + (1 - alpha) * bg, "alpha": alpha, "fg": fg, "bg": bg,
            "flash": torch.rand(b, 3, h, w, generator=gen)}  # extra keys are ignored


def _onehot_logits(tri: Tensor) -> Tensor:
    return 30.0 * F.one_hot(tri, 3).permute(0, 3, 1, 2).float()


def _perfect(batch: dict[str, Tensor], cmn: tuple[int, int]) -> dict[str, Tensor]:
    gt_c = downsample_gt(batch, cmn)
    full = (batch["alpha"].shape[-2], batch["alpha"].shape[-1])
    return {
        "trimap_logits": _onehot_logits(gt_trimap(gt_c["alpha"], trimap_kernel(cmn))),
        "detail_c": gt_c["alpha"], "alpha_c": gt_c["alpha"], "fg_c": gt_c["fg"],
        "trimap_up": _onehot_logits(gt_trimap(batch["alpha"], trimap_kernel(full))),
        "detail": batch["alpha"], "alpha": batch["alpha"], "fg": batch["fg"],
    }


@pytest.mark.parametrize("stage", ["cmn", "full"])
def test_fnf_loss_zero_for_perfect_predictions(stage: Stage) -> None:
    batch = _batch()
    out = fnf_loss(_perfect(batch, (16, 24)), batch, stage)
    assert set(out) == (FULL_KEYS if stage == "full" else CMN_KEYS)
    for k, v in out.items():
        assert v.dim() == 0 and float(v) < 1e-5, (k, float(v))


def test_downsample_gt_keeps_compositing_exact() -> None:
    batch = _batch()
    gt_c = downsample_gt(batch, (8, 12))
    comp = gt_c["alpha"] * gt_c["fg"] + (1 - gt_c["alpha"]) * gt_c["bg"]
    torch.testing.assert_close(comp, gt_c["noflash"], atol=1e-5, rtol=0)
    assert downsample_gt(batch, (32, 48))["alpha"] is batch["alpha"]  # same size: untouched


def _random_pred(b: int, cmn: tuple[int, int], full: tuple[int, int]) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(2)
    shapes = {"trimap_logits": (3, *cmn), "detail_c": (1, *cmn), "alpha_c": (1, *cmn), "fg_c": (3, *cmn),
              "trimap_up": (3, *full), "detail": (1, *full), "alpha": (1, *full), "fg": (3, *full)}
    return {k: torch.rand(b, *s, generator=gen).requires_grad_() for k, s in shapes.items()}


def test_fnf_loss_backward_and_weights() -> None:
    batch = _batch()
    pred = _random_pred(2, (16, 24), (32, 48))
    out = fnf_loss(pred, batch, "full")
    out["total"].backward()
    for k, t in pred.items():
        if k == "trimap_up":  # only its argmax is used (t^un of the full-res detail term)
            assert t.grad is None
            continue
        assert t.grad is not None and torch.isfinite(t.grad).all() and float(t.grad.abs().sum()) > 0, k
    w = LossWeights(fg=0.0, recons_c=2.0, sem_c=0.5)
    weighted = fnf_loss(pred, batch, "full", w)
    want = sum(getattr(w, k) * v.item() for k, v in weighted.items() if k != "total")
    assert weighted["total"].item() == pytest.approx(want, rel=1e-5)
    cmn = fnf_loss(pred, batch, "cmn")
    assert cmn["total"].item() == pytest.approx(sum(cmn[k].item() for k in CMN_KEYS - {"total"}), rel=1e-5)


@pytest.mark.parametrize("region", ["gt", "union"])
def test_fnf_loss_detail_regions(region: DetailRegion) -> None:
    batch = _batch()
    cfg = LossConfig(detail_region=region)
    out = fnf_loss(_random_pred(2, (16, 24), (32, 48)), batch, "full", config=cfg)
    assert all(torch.isfinite(v) for v in out.values())
    perfect = fnf_loss(_perfect(batch, (16, 24)), batch, "full", config=cfg)
    assert float(perfect["total"]) < 1e-5


def test_fnf_loss_rejects_bad_input() -> None:
    batch = _batch()
    pred = _perfect(batch, (16, 24))
    with pytest.raises(ValueError):
        fnf_loss(pred, batch, "bmn")  # type: ignore[arg-type]
    del pred["fg"]
    fnf_loss(pred, batch, "cmn")  # the CMN stage does not need full-resolution outputs
    with pytest.raises(KeyError, match="fg"):
        fnf_loss(pred, batch, "full")


# --- metrics ----------------------------------------------------------------------------------------------


def test_sad_mse_by_hand() -> None:
    gt = np.zeros((4, 4))
    pred = gt.copy()
    pred[0, :2] = 0.5
    assert metrics.sad(pred, gt) == pytest.approx(1.0 / 1000)
    assert metrics.mse(pred, gt) == pytest.approx(2 * 0.25 / 16)
    mask = np.zeros((4, 4), bool)
    mask[0, :4] = True
    assert metrics.sad(pred, gt, mask) == pytest.approx(1.0 / 1000)
    assert metrics.mse(pred, gt, mask) == pytest.approx(2 * 0.25 / 4)  # mean over the mask's 4 pixels
    assert metrics.sad(np.full((2, 2), 255, np.uint8), np.zeros((2, 2), np.uint8)) == pytest.approx(4 / 1000)


def _soft_disc(h: int = 40, w: int = 48, r: float = 12.0) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return np.clip(r - np.hypot(yy - h / 2, xx - w / 2) + 0.5, 0, 1)


def test_grad_metric() -> None:
    g = _soft_disc()
    assert metrics.grad(g, g) == 0.0
    assert metrics.grad(g * 0.8 + 0.1, g * 0.8) == pytest.approx(0.0, abs=1e-12)  # constant shift
    blurred = np.asarray(cv2.GaussianBlur(g, (0, 0), 2.0))
    e = metrics.grad(blurred, g)
    assert e > 0 and metrics.grad(g, blurred) == pytest.approx(e)
    # Squared magnitude difference: a matte vs empty scales with the square of its contrast.
    assert metrics.grad(g, 0 * g) == pytest.approx(4 * metrics.grad(g / 2, 0 * g))


def test_conn_metric() -> None:
    g = _soft_disc()
    assert metrics.conn(g, g) == 0.0
    # GT all ones, prediction all zeros: l = 0 everywhere, phi_pred = 1, phi_gt = 1 - 1 = 0 -> 9 / 1000.
    assert metrics.conn(np.zeros((3, 3)), np.ones((3, 3))) == pytest.approx(9 / 1000)
    mask = np.zeros((3, 3), bool)
    mask[0] = True
    assert metrics.conn(np.zeros((3, 3)), np.ones((3, 3)), mask) == pytest.approx(3 / 1000)
    # A detached blob scores worse than the same blob attached to the main component.
    pred = g.copy()
    pred[2:6, 2:6] = 1.0
    assert metrics.conn(pred, g) > 0


def test_mse_alpha_fg_by_hand() -> None:
    a = np.ones((2, 2))
    f = np.full((2, 2, 3), 0.5)
    f2 = f.copy()
    f2[0, 0] = 0.7  # one pixel off by 0.2 in all channels
    assert metrics.mse_alpha_fg(a, f2, a, f) == pytest.approx(0.04 / 4)
    # Colour under zero alpha is irrelevant.
    z = np.zeros((2, 2))
    assert metrics.mse_alpha_fg(z, f2, z, f) == 0.0


def test_dtssd() -> None:
    g = np.stack([_soft_disc()] * 4)
    assert metrics.dtssd(g, g) == 0.0
    assert metrics.dtssd(g + 0.05, g) == pytest.approx(0.0, abs=1e-12)  # a static error is not flicker
    flicker = g.copy()
    flicker[1::2] += 0.1  # +0.1, -0.1, +0.1 frame to frame: sqrt(0.01) = 0.1 per pair, x 1e2
    assert metrics.dtssd(flicker, g) == pytest.approx(10.0)
    assert metrics.dtssd(flicker, g, scale=1.0) == pytest.approx(0.1)
    mask = np.zeros(g.shape[1:], bool)
    mask[:5] = True
    assert metrics.dtssd(flicker, g, mask) == pytest.approx(10.0)


def test_matting_metrics_keys() -> None:
    g = _soft_disc()
    assert metrics.matting_metrics(g, g) == {"sad": 0.0, "mse": 0.0, "grad": 0.0, "conn": 0.0}


# --- classical baseline -----------------------------------------------------------------------------------


def test_guided_filter_properties() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((20, 30, 3)).astype(np.float32)
    grey = np.ascontiguousarray(img[..., 1])
    # With a vanishing regulariser the filter reproduces a source equal to the guide.
    np.testing.assert_allclose(guided_filter(grey, grey, 2, 1e-9), grey, atol=1e-3)
    np.testing.assert_allclose(guided_filter(img, grey, 2, 1e-9), grey, atol=1e-3)
    const = np.full((20, 30), 0.3, np.float32)
    np.testing.assert_allclose(guided_filter(img, const, 3, 1e-3), const, atol=1e-5)


def test_classical_flash_matte_recovers_a_disc() -> None:
    rng = np.random.default_rng(0)
    h, w, r = 240, 320, 60.0
    yy, xx = np.mgrid[:h, :w]
    dist = np.hypot(yy - 120, xx - 160)
    disc = np.clip(r - dist + 0.5, 0, 1).astype(np.float32)[..., None]
    bg = np.array([0.10, 0.12, 0.15], np.float32)

    def noise() -> np.ndarray:
        return rng.normal(0, 0.02, (h, w, 3)).astype(np.float32)

    noflash = np.clip(disc * np.array([0.35, 0.30, 0.25]) + (1 - disc) * bg + noise(), 0, 1)
    lit = disc * np.array([0.9, 0.8, 0.7]) + (1 - disc) * (bg + 0.01) + noise()
    flash = np.clip(0.8 * lit, 0, 1).astype(np.float32)  # the camera also re-exposed for the flash
    alpha = classical_flash_matte(flash, noflash.astype(np.float32))
    assert alpha.shape == (h, w) and alpha.dtype == np.float32
    assert alpha.min() >= 0 and alpha.max() <= 1
    pm, gm = alpha > 0.5, disc[..., 0] > 0.5
    assert (pm & gm).sum() / (pm | gm).sum() > 0.9
    soft = (alpha > 0.05) & (alpha < 0.95)
    assert soft.sum() > 2 * math.pi * r  # a soft band all around the rim ...
    assert np.abs(dist[soft] - r).max() < 10  # ... and only at the rim


def test_classical_flash_matte_without_flash_is_empty() -> None:
    img = np.random.default_rng(1).random((30, 40, 3)).astype(np.float32)
    assert classical_flash_matte(img, img).max() == 0.0


def test_ratio_interval_is_a_point_for_a_constant_ratio_and_wide_for_one_outlier() -> None:
    ref = np.linspace(2.0, 20.0, 30)
    assert metrics.ratio_interval(0.5 * ref, ref) == pytest.approx([0.5, 0.5])
    # Every sample at 0.4x but one at 10x: the ratio of means (0.72x) rests on that one sample. Resamples
    # without it fall back to 0.4x, those drawing it twice or more pass 1x, so the interval spans both.
    ref = np.full(30, 10.0)
    ours = np.full(30, 4.0)
    ours[7] = 100.0
    lo, hi = metrics.ratio_interval(ours, ref)
    assert ours.mean() / ref.mean() == pytest.approx(0.72)
    assert lo < 0.5 and hi > 1.0
    assert metrics.ratio_interval(ours, ref) == [lo, hi]  # seeded: the same figures every run
    assert metrics.ratio_interval(ours, ref, level=0.5)[1] < hi  # a lower level gives a narrower interval
