"""FNFNet forward passes for both configs, the cache split, and safetensors checkpoints."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from cuematte.training.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint  # noqa: E402
from cuematte.training.models.config import FNFConfig, get_config  # noqa: E402
from cuematte.training.models.fnfnet import build_model  # noqa: E402


def _inputs(h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    frame = torch.rand(1, 3, h, w, generator=g)
    flash = torch.rand(1, 3, h, w, generator=g)
    labels = torch.randint(0, 3, (1, h, w), generator=g)
    trimap = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    return frame, flash, trimap


@pytest.mark.parametrize("name", ["lite", "lite-half", "lite-half-sep", "lite-shared", "paper"])
def test_forward_shapes_and_ranges(name: str) -> None:
    torch.manual_seed(0)
    cfg = get_config(name)
    net = build_model(cfg).eval()
    h, w = 200, 360  # not the CMN size and not a multiple of 16: the per-frame half takes any size
    frame, flash, trimap = _inputs(h, w)
    with torch.no_grad():
        out = net(frame, flash, trimap)
    ch, cw = cfg.coef_grid  # the CMN grid; half of it where the decoders stop there
    assert (ch, cw) == ((72, 128) if name.startswith("lite-half") else cfg.cmn_size)
    assert out["trimap_logits"].shape == (1, 3, ch, cw)
    assert out["detail_c"].shape == out["alpha_c"].shape == (1, 1, ch, cw)
    assert out["fg_c"].shape == (1, 3, ch, cw)
    assert out["alpha"].shape == out["detail"].shape == (1, 1, h, w)
    assert out["fg"].shape == (1, 3, h, w)
    assert out["trimap_up"].shape == (1, 3, h, w)
    if cfg.refine == "guided":
        assert out["coef_a"].shape == out["coef_b"].shape == (1, 4, ch, cw)
    for key in ("alpha", "alpha_c", "fg", "fg_c", "detail_c"):
        assert float(out[key].min()) >= 0.0 and float(out[key].max()) <= 1.0, key
    assert torch.isfinite(out["alpha"]).all()


def test_cache_split_equals_end_to_end() -> None:
    torch.manual_seed(0)
    net = build_model(get_config("lite")).eval()
    frame, flash, trimap = _inputs(144, 256, seed=1)
    with torch.no_grad():
        tokens = net.encode_flash(net.to_cmn(flash), net.to_cmn(trimap))
        cached = net.forward_frame(frame, net.to_cmn(frame), tokens)["alpha"]
        full = net(frame, flash, trimap)["alpha"]
    n, c = tokens.shape[1:]
    assert (n, c) == (net.cfg.token_grid[0] * net.cfg.token_grid[1], net.cfg.embed_dim)
    assert torch.equal(cached, full)


def test_flash_features_matter() -> None:
    """The per-frame half must actually use T^f: alpha has a gradient with respect to the cached tokens."""
    torch.manual_seed(0)
    net = build_model(get_config("lite")).eval()
    frame, flash, trimap = _inputs(144, 256, seed=2)
    tokens = net.encode_flash(net.to_cmn(flash), net.to_cmn(trimap)).detach().requires_grad_(True)
    net.forward_frame(frame, net.to_cmn(frame), tokens)["alpha"].sum().backward()
    assert tokens.grad is not None and float(tokens.grad.abs().sum()) > 0


def test_person_mask_switch() -> None:
    torch.manual_seed(0)
    net = build_model(get_config("lite", person_mask=True)).eval()
    frame, flash, trimap = _inputs(144, 256)
    with torch.no_grad():
        tokens = net.encode_flash(net.to_cmn(flash), net.to_cmn(trimap))
        out = net.forward_frame(frame, net.to_cmn(frame), tokens, torch.rand(1, 1, 72, 128))
        with pytest.raises(ValueError, match="person mask"):
            net.forward_frame(frame, net.to_cmn(frame), tokens)
    assert out["alpha"].shape == (1, 1, 144, 256)
    assert net.noflash_encoder.body.conv_stem.in_channels == 4


def test_flash_prior_reaches_the_per_frame_encoder() -> None:
    """With ``flash_prior`` the cached flash input (normalised RGB + trimap at the CMN grid) is a per-frame input:
    the cached path equals end to end, the prior is required, and the trimap changes alpha through it."""
    torch.manual_seed(0)
    net = build_model(get_config("lite", person_mask=True, flash_prior=True)).eval()
    frame, flash, trimap = _inputs(180, 320, seed=3)
    mask = torch.rand(1, 1, 144, 256)
    with torch.no_grad():
        flash_c, trimap_c, frame_c = net.to_cmn(flash), net.to_cmn(trimap), net.to_cmn(frame)
        tokens, prior = net.encode_flash(flash_c, trimap_c), net.flash_prior(flash_c, trimap_c)
        cached = net.forward_frame(frame, frame_c, tokens, mask, prior)["alpha"]
        assert torch.equal(cached, net(frame, flash, trimap, mask)["alpha"])
        with pytest.raises(ValueError, match="flash prior"):
            net.forward_frame(frame, frame_c, tokens, mask)
    assert prior.shape == (1, 6, *net.cfg.cmn_size)
    assert torch.equal(prior[:, 3:], trimap_c)
    assert net.noflash_encoder.body.conv_stem.in_channels == 3 + 1 + 6
    prior = prior.detach().requires_grad_(True)
    net.forward_frame(frame, frame_c, tokens.detach(), mask, prior)["alpha"].sum().backward()
    assert prior.grad is not None and float(prior.grad[:, 3:].abs().sum()) > 0


def test_paper_config_matches_paper() -> None:
    cfg = get_config("paper")
    assert cfg.backbone == "resnet50" and cfg.aspp_dilations == (3, 6, 9)
    assert cfg.flash_layers == cfg.noflash_layers == 2 and cfg.refine == "bmn"
    net = build_model(cfg)
    # Two non-shared encoders; the flash one takes RGB + a 3-channel trimap.
    assert net.flash_encoder.body.conv1.in_channels == 6
    assert net.noflash_encoder.body.conv1.in_channels == 3
    assert net.flash_encoder.body.conv1.weight.data_ptr() != net.noflash_encoder.body.conv1.weight.data_ptr()


def test_config_validation_and_round_trip() -> None:
    cfg = get_config("lite")
    assert FNFConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="multiple"):
        FNFConfig(name="x", backbone="resnet18", cmn_size=(100, 256), aspp_channels=32).validate()
    with pytest.raises(ValueError, match="unknown config"):
        get_config("huge")
    with pytest.raises(ValueError, match="separable_half"):
        replace(cfg, separable_half=True).validate()


def test_separable_half_groups_are_cheaper_and_keep_the_contract() -> None:
    """lite-half-sep differs from lite-half only in its two 1/2-grid groups: a 1x1 conv down to the group's width,
    then a depthwise 3x3 conv on it; a fifth of the weights there and the same inputs and outputs."""
    half, sep = build_model(get_config("lite-half")), build_model(get_config("lite-half-sep"))
    for name in ("detail_groups", "fg_groups"):
        dense, light = getattr(half, name)[-1].conv, getattr(sep, name)[-1].conv
        cin, cout = dense[0].in_channels, dense[0].out_channels
        assert (light[0][0].in_channels, light[0][0].out_channels, light[0][0].kernel_size) == (cin, cout, (1, 1))
        assert (light[1].groups, light[1].in_channels, light[1].kernel_size) == (cout, cout, (3, 3))
        n_dense = sum(p.numel() for p in dense.parameters())
        assert sum(p.numel() for p in light.parameters()) < 0.2 * n_dense
    changed = ("detail_groups.1.", "fg_groups.2.")
    shapes = [{k: v.shape for k, v in net.state_dict().items() if not k.startswith(changed)} for net in (half, sep)]
    assert shapes[0] == shapes[1]


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_model(get_config("lite")).eval()
    path = save_checkpoint(tmp_path / "ckpt.safetensors", net, step=42, extra={"loss": 0.5})
    loaded, meta = load_checkpoint(path)
    loaded.eval()
    assert meta["step"] == 42 and meta["extra"] == {"loss": 0.5} and meta["config"] == net.cfg
    frame, flash, trimap = _inputs(144, 256)
    with torch.no_grad():
        assert torch.equal(net(frame, flash, trimap)["alpha"], loaded(frame, flash, trimap)["alpha"])
    assert read_metadata(path)["step"] == 42


def test_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        read_metadata(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        read_metadata(bad)
