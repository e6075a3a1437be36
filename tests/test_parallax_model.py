"""PPMNet (parallax matting network): shapes, the guidance rule, branch wiring, the size rule, the paper's losses
and the ONNX export with its parity check. Tiny configs throughout, so the file runs in seconds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from torch import Tensor  # noqa: E402

from cuematte.export.parallax_onnx import (  # noqa: E402
    OUTPUT_NAMES,
    ParityError,
    check_parity,
    export_parallax,
)
from cuematte.training.models.parallax import (  # noqa: E402
    INPUT_NAMES,
    PPM_PRESETS,
    PPMConfig,
    PPMNet,
)
from cuematte.training.parallax_losses import TERMS, PPMLossWeights, parallax_loss, sep_loss  # noqa: E402

TINY = PPMConfig(name="tiny", dim=32, heads=2, depth_enc=1, depth_dec=2, mlp_ratio=2.0, kv_pool=2,
                 stem_channels=(8, 8), detail_channels=(8, 8, 8), fusion_channels=(8, 8, 8, 8))
SHIPPED_CHANNELS: dict[str, bool] = {"motion_channels": True, "ratio_channels": True}  # parallax-lite's recipe


def _net(**changes: object) -> PPMNet:
    torch.manual_seed(0)
    return PPMNet(dataclasses.replace(TINY, **changes)).eval()  # type: ignore[arg-type]


def _trimap(b: int, h: int, w: int) -> Tensor:
    """One-hot (B, 3, H, W): background on the left third, unknown in the middle, foreground on the right."""
    cls = torch.zeros(b, h, w, dtype=torch.long)
    cls[..., w // 3:] = 1
    cls[..., 2 * w // 3:] = 2
    return torch.nn.functional.one_hot(cls, 3).permute(0, 3, 1, 2).float()


def _inputs(b: int = 2, h: int = 64, w: int = 96, seed: int = 0) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(b, 3, h, w, generator=g) for _ in range(4)]
    return [*images, _trimap(b, h, w), _trimap(b, h, w)]


# --- the network ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("branches", ["dual", "single"])
def test_forward_shapes(branches: str) -> None:
    net = _net(branches=branches)
    with torch.no_grad():
        alpha, fg = net(*_inputs(2, 64, 96))
        raw = net.forward_raw(*_inputs(2, 64, 96))
    assert alpha.shape == (2, 1, 64, 96) and fg.shape == (2, 3, 64, 96)
    assert alpha.dtype == torch.float32
    assert {k: tuple(v.shape) for k, v in raw.items()} == {
        "alpha": (2, 1, 64, 96), "fg": (2, 3, 64, 96), "alpha_raw": (2, 1, 64, 96), "fg_raw": (2, 3, 64, 96),
    }
    assert float(raw["alpha_raw"].min()) >= 0.0 and float(raw["alpha_raw"].max()) <= 1.0


def test_certain_pixels_are_the_trimaps_verdict() -> None:
    x = _inputs(2, 64, 96)
    with torch.no_grad():
        out = _net().forward_raw(*x)
    view, tri = x[0], x[4]
    bg, un, fg = (tri[:, i:i + 1].expand(-1, 3, -1, -1) > 0.5 for i in range(3))
    alpha3 = out["alpha"].expand(-1, 3, -1, -1)
    assert torch.equal(alpha3[bg], torch.zeros_like(alpha3[bg]))
    assert torch.equal(alpha3[fg], torch.ones_like(alpha3[fg]))
    assert torch.equal(out["fg"][fg], view[fg])
    assert torch.equal(out["fg"][bg], torch.zeros_like(out["fg"][bg]))
    # Inside the band the network decides.
    assert torch.equal(out["alpha"].expand(-1, 3, -1, -1)[un], out["alpha_raw"].expand(-1, 3, -1, -1)[un])
    assert torch.equal(out["fg"][un], out["fg_raw"][un])


def test_single_branch_sees_only_view_and_trimap() -> None:
    net = _net(branches="single")
    a, b = _inputs(seed=0), _inputs(seed=1)
    changed = [a[0], b[1], b[2], b[3], a[4], torch.roll(a[5], 7, dims=-1)]
    with torch.no_grad():
        ref = net.forward_raw(*a)
        out = net.forward_raw(*changed)
    for k in ("alpha_raw", "fg_raw"):
        assert torch.equal(ref[k], out[k])
    assert not hasattr(net.decoder[0], "norm_q")  # no cross-attention weights at all


def test_dual_branch_attends_to_the_other_branch() -> None:
    net = _net()
    a, b = _inputs(seed=0), _inputs(seed=1)
    with torch.no_grad():
        ref = net.forward_raw(*a)
        out = net.forward_raw(a[0], a[1], b[2], a[3], a[4], a[5])  # only view_fg changed
    # At ViT init the cross-attention's share is small (~1e-5), but nothing else links the branches: any change
    # at all, and a gradient from the bottom's output to the top's input, shows the wiring.
    assert not torch.equal(ref["alpha_raw"], out["alpha_raw"])
    assert not torch.equal(ref["fg_raw"], out["fg_raw"])
    view_fg = a[2].clone().requires_grad_(True)
    net.forward_raw(a[0], a[1], view_fg, a[3], a[4], a[5])["alpha_raw"].sum().backward()
    assert view_fg.grad is not None and float(view_fg.grad.abs().sum()) > 0


def test_without_bg_view_partner_images_are_ignored() -> None:
    net = _net(use_bg_view=False)
    a, b = _inputs(seed=0), _inputs(seed=1)
    with torch.no_grad():
        ref = net.forward_raw(*a)
        same = net.forward_raw(a[0], b[1], a[2], b[3], a[4], a[5])  # view_bg and view_fg_pair changed
        moved = net.forward_raw(a[0], a[1], b[2], a[3], a[4], a[5])  # view_fg changed
    assert torch.equal(ref["alpha_raw"], same["alpha_raw"])
    assert not torch.equal(ref["alpha_raw"], moved["alpha_raw"])


def test_motion_channels_hand_the_views_differences_to_the_first_conv() -> None:
    """With ``motion_channels`` each branch also sees mean |image - partner| and |image - counterpart| (computed
    in the graph from the same six inputs: ``tiny_export`` below exports and checks them); without the
    background-aligned view its difference is zeroed too; the single branch has nothing to compare."""
    net = _net(motion_channels=True)
    assert net.in_channels == 11 and net.stem[0][0].in_channels == 11
    a = _inputs()
    x = net._branch_input(a[0], a[1], a[4], a[2])
    assert torch.allclose(x[:, 9], (a[0] - a[1]).abs().mean(1) * 4.0)
    assert torch.allclose(x[:, 10], (a[0] - a[2]).abs().mean(1) * 4.0)
    no_bg = _net(motion_channels=True, use_bg_view=False)
    assert float(no_bg._branch_input(a[0], a[1], a[4], a[2])[:, 9].abs().max()) == 0.0
    with pytest.raises(ValueError, match="single"):
        _net(motion_channels=True, branches="single")


def test_ratio_channels_say_which_layer_lines_up() -> None:
    """With ``ratio_channels`` each branch also sees where its image lines up with the subject-aligned view but
    not the background-aligned one (+1: its person), the reverse (-1: its background), or neither differs (0, and
    the texture channel 0); the same six inputs (``tiny_export`` exports this configuration and checks parity)."""
    net = _net(motion_channels=True, ratio_channels=True)
    assert net.in_channels == 13 and net.stem[0][0].in_channels == 13
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 32, 96, generator=g)
    other = torch.rand(1, 3, 32, 96, generator=g)
    # Left third: the person (matches the subject-aligned counterpart); middle: background (matches the
    # background-aligned partner); right: flat, both views the same.
    partner, counterpart = other.clone(), other.clone()
    partner[..., 32:] = image[..., 32:]
    counterpart[..., :32] = image[..., :32]
    counterpart[..., 64:] = image[..., 64:]
    x = net._branch_input(image, partner, _trimap(1, 32, 96), counterpart)
    ratio, texture = x[0, 11], x[0, 12]
    inner = slice(2, -2)  # away from the 3x3 means' reach across the thirds
    assert float(ratio[:, 2:30].min()) > 0.8 and float(ratio[:, 34:62].max()) < -0.8
    assert float(ratio[:, 66:].abs().max()) == 0.0 and float(texture[:, 66:].abs().max()) == 0.0
    assert float(texture[inner, 2:62].min()) > 0.5
    no_bg = _net(motion_channels=True, ratio_channels=True, use_bg_view=False)
    assert float(no_bg._branch_input(image, partner, _trimap(1, 32, 96), counterpart)[:, 11:].abs().max()) == 0.0
    with pytest.raises(ValueError, match="single"):
        _net(ratio_channels=True, branches="single")


@pytest.mark.parametrize("size", [(64, 80), (48, 96), (100, 128)])
def test_size_must_be_a_multiple_of_32(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        _net()(*_inputs(1, *size))


def test_presets_build() -> None:
    lite = PPMNet(PPM_PRESETS["lite"])
    assert sum(p.numel() for p in lite.parameters()) < 4_000_000  # the ONNX must stay <= 16 MB in fp32
    with torch.device("meta"):  # ViT-B sized: build the module tree without allocating 100M+ weights
        paper = PPMNet(PPM_PRESETS["paper"])
    assert sum(p.numel() for p in paper.parameters()) > 80_000_000
    assert PPMConfig.from_dict(PPM_PRESETS["lite"].to_dict()) == PPM_PRESETS["lite"]
    with pytest.raises(ValueError, match="divisible"):
        PPMNet(dataclasses.replace(TINY, heads=3))


def test_a_training_step_reaches_every_weight() -> None:
    net = _net().train()
    x = _inputs(2, 64, 64)
    tri = torch.zeros_like(x[4])
    tri[:, 1] = 1.0  # all unknown, so the loss reaches the network everywhere
    alpha, fg = net(x[0], x[1], x[2], x[3], tri, tri)
    batch = {"alpha": torch.rand(2, 1, 64, 64), "bg": x[1], "view": x[0]}
    parallax_loss(alpha, fg, batch)["total"].backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_both_branches_decoded_predict_each_and_the_bottom_as_forward() -> None:
    """The paper's symmetric training: the top branch predicts its own image (``view_fg``) under its own
    trimap; the bottom's prediction is exactly :meth:`forward`'s, so the exported graph needs nothing new."""
    net = _net(**SHIPPED_CHANNELS)
    x = _inputs(2, 64, 96)
    top_trimap = torch.flip(x[5], dims=[-1])  # its own certain regions: foreground on the left
    with torch.no_grad():
        alpha, fg = net(x[0], x[1], x[2], x[3], x[4], top_trimap)
        out = net.forward_raw(x[0], x[1], x[2], x[3], x[4], top_trimap, both=True)
    torch.testing.assert_close(out["alpha"], alpha, rtol=0, atol=1e-6)
    torch.testing.assert_close(out["fg"], fg, rtol=0, atol=1e-6)
    assert out["alpha_top"].shape == (2, 1, 64, 96) and out["fg_top"].shape == (2, 3, 64, 96)
    certain_fg, certain_bg = top_trimap[:, 2:3] == 1, top_trimap[:, 0:1] == 1
    assert (out["alpha_top"][certain_fg] == 1).all() and (out["alpha_top"][certain_bg] == 0).all()
    torch.testing.assert_close(out["fg_top"][certain_fg.expand(-1, 3, -1, -1)],
                               x[2][certain_fg.expand(-1, 3, -1, -1)])  # its own image where certain
    with pytest.raises(ValueError, match="dual"):
        _net(branches="single").forward_raw(*x, both=True)


# --- losses -----------------------------------------------------------------------------------------------


def _gt_batch(b: int = 2, h: int = 32, w: int = 48) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(3)
    alpha = torch.rand(b, 1, h, w, generator=g)
    alpha[..., : w // 3] = 0.0
    alpha[..., 2 * w // 3:] = 1.0
    fg, bg = torch.rand(b, 3, h, w, generator=g), torch.rand(b, 3, h, w, generator=g)
    return {"alpha": alpha, "fg": fg, "bg": bg, "view": alpha * fg + (1 - alpha) * bg}


def test_losses_vanish_on_the_ground_truth() -> None:
    batch = _gt_batch()
    terms = parallax_loss(batch["alpha"].clone(), batch["alpha"] * batch["fg"], batch)
    assert set(terms) == {*TERMS, "total"}
    for name, value in terms.items():
        assert value.shape == () and float(value) <= 1e-6, name


def test_each_term_responds_and_weights_apply() -> None:
    batch = _gt_batch()
    alpha = (batch["alpha"] + 0.1 * torch.rand_like(batch["alpha"])).clamp(0, 1)
    fg = (batch["alpha"] * batch["fg"] + 0.05).clamp(0, 1)
    terms = parallax_loss(alpha, fg, batch)
    assert all(float(terms[k]) > 0 for k in TERMS)
    assert torch.allclose(terms["total"], sum(terms[k] for k in TERMS))
    w = PPMLossWeights(sep=2.0, laplacian=0.0, grad=0.5, composition=1.0)
    weighted = parallax_loss(alpha, fg, batch, w)["total"]
    assert torch.allclose(weighted, 2 * terms["sep"] + 0.5 * terms["grad"] + terms["composition"])
    with pytest.raises(KeyError, match="view"):
        parallax_loss(alpha, fg, {k: v for k, v in batch.items() if k != "view"})


def test_sep_normalises_soft_and_hard_pixels_separately() -> None:
    gt = torch.zeros(1, 1, 16, 16)
    gt[..., 8:, :] = 1.0
    gt[0, 0, 3, 5] = 0.5  # the only soft pixel
    one_soft_wrong = gt.clone()
    one_soft_wrong[0, 0, 3, 5] = 0.9  # error 0.4 on 1 pixel
    all_hard_wrong = (gt - 0.4 * (gt == 1) + 0.4 * (gt == 0)).clamp(0, 1)  # error 0.4 on the 255 hard pixels
    all_hard_wrong[0, 0, 3, 5] = 0.5
    assert float(sep_loss(one_soft_wrong, gt)) == pytest.approx(0.4, abs=1e-6)
    assert float(sep_loss(all_hard_wrong, gt)) == pytest.approx(0.4, abs=1e-6)
    # No soft pixel at all: the empty set adds 0, not NaN.
    hard_only = torch.zeros(1, 1, 8, 8)
    assert float(sep_loss(hard_only + 0.25, hard_only)) == pytest.approx(0.25, abs=1e-6)


# --- ONNX export ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[PPMNet, Path]:
    """The tiny network in the shipped model's form (motion and ratio channels, computed inside the graph)."""
    net = _net(**SHIPPED_CHANNELS)
    return net, export_parallax(net, tmp_path_factory.mktemp("ppm") / "ppm.onnx", size=(64, 64))


def test_export_passes_checker_with_named_dynamic_io(tiny_export: tuple[PPMNet, Path]) -> None:
    _, path = tiny_export
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)

    def dims(v: Any) -> list[str | int]:  # onnx.ValueInfoProto
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    assert [(i.name, dims(i)) for i in model.graph.input] == [(n, [1, 3, "height", "width"]) for n in INPUT_NAMES]
    assert [(o.name, dims(o)) for o in model.graph.output] == [
        (OUTPUT_NAMES[0], [1, 1, "height", "width"]), (OUTPUT_NAMES[1], [1, 3, "height", "width"]),
    ]
    meta = {p.key: p.value for p in model.metadata_props}
    assert PPMConfig.from_dict(json.loads(meta["cuematte.config"])) == dataclasses.replace(TINY, **SHIPPED_CHANNELS)


@pytest.mark.parametrize("size", [(64, 64), (96, 160)])
def test_onnx_runtime_matches_pytorch(tiny_export: tuple[PPMNet, Path], size: tuple[int, int]) -> None:
    net, path = tiny_export
    err = check_parity(net, path, size, tol=1e-4)
    assert np.isfinite(err) and err <= 1e-4


def test_parity_failure_is_a_named_error(tiny_export: tuple[PPMNet, Path]) -> None:
    _, path = tiny_export
    other = _net(**SHIPPED_CHANNELS)
    assert other.head.bias is not None
    with torch.no_grad():
        other.head.bias.add_(1.0)  # a different model than the one exported
    with pytest.raises(ParityError, match="differs from PyTorch"):
        check_parity(other, path, (64, 64))
