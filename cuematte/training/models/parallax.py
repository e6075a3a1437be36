"""PPMNet: the parallax portrait matting network (paper Sec. 4.3-4.5, 5.1), with the product's guidance rule.

Two weight-shared branches look at one 448x448 patch each (Fig. 4):

* bottom: the base frame ``view`` = I_1, the other frame aligned on the background ``view_bg`` = I^B_{0->1} and
  the base trimap Tr_1 -> the alpha and premultiplied foreground alpha*F of ``view``;
* top: the other frame aligned on the subject ``view_fg`` = I^F_{0->1}, the base frame aligned on *its*
  background ``view_fg_pair`` = M^F_{0->1}(M^B_{1->0}(I_1)) and the warped trimap ``trimap_fg``.

Both branches go through the same ViT encoder (batched together, so one set of weights and one pass), then
the same decoder blocks: self-attention, then cross-attention from each branch's tokens to the *other*
branch's (both directions at once), then an MLP. The tokens of the bottom branch feed a ViTMatte-style head:
a small conv "detail capture" stream on the bottom branch's raw input at 1/2, 1/4 and 1/8 whose maps are
fused with the upsampled tokens, down to full resolution. Only the bottom branch is decoded to pixels; the
top branch exists to be attended to (the paper's top branch also predicts, but nothing here consumes it).

The product's rule is that the network only decides inside the trimap's unknown band: with g the one-hot
trimap [background, unknown, foreground],
``alpha = g_fg + g_un * alpha_net`` and ``fg = g_fg * view + g_un * fg_net``, so certain pixels come out
exactly 0 or 1 and alpha*F there is exactly the image (certain foreground) or 0 (certain background).

Unlike the paper's ViT-B (CroCo), positions come from a depthwise 3x3 conv on the token grid (a conditional
positional encoding, CPVT), so one set of weights runs at any patch size whose sides are multiples of 32
(:data:`SIZE_MULTIPLE`). All images are RGB float in [0, 1], NCHW; normalisation happens inside the network,
so an exported graph takes raw pixels.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Branches = Literal["dual", "single"]

TOKEN_STRIDE = 16  # conv stem to 1/4, then a stride-4 patch embed
# Keys/values may be pooled 2x2 on the token grid (``kv_pool``), so the grid (H/16, W/16) must be even: sides
# are multiples of 32. The paper's 448x448 patches (14 x 32) qualify.
SIZE_MULTIPLE = 32
INPUT_NAMES = ("view", "view_bg", "view_fg", "view_fg_pair", "trimap", "trimap_fg")


@dataclass(frozen=True)
class PPMConfig:
    """Hyper-parameters of :class:`PPMNet`; presets in :data:`PPM_PRESETS`."""

    name: str = "custom"
    dim: int = 96  # token width of the encoder and decoder
    heads: int = 4
    depth_enc: int = 4  # self-attention blocks of the shared encoder
    depth_dec: int = 2  # self- then cross-attention blocks of the shared decoder
    mlp_ratio: float = 2.0
    # Keys and values of every attention are average-pooled kv_pool x kv_pool on the token grid (spatial-reduction
    # attention, PVT): at 448x448 the 784 queries attend to 196 keys, a quarter of the cost. 1 = plain ViT attention.
    kv_pool: int = 1
    stem_channels: tuple[int, int] = (16, 32)  # token stem convs at 1/2 and 1/4 (stride 2 each)
    detail_channels: tuple[int, int, int] = (16, 24, 32)  # detail capture stream at 1/2, 1/4, 1/8
    # Fusion outputs at 1/8, 1/4, 1/2 and 1/1 (ViTMatte: 256, 128, 64, 32); the 1/1 map feeds a 1x1 head.
    fusion_channels: tuple[int, int, int, int] = (48, 32, 16, 8)
    branches: Branches = "dual"  # "single": bottom branch only, no cross-attention, view_bg zeroed (ablation 3)
    use_bg_view: bool = True  # False: both branches' partner images zeroed (ablation 1, w/o background-aligned)
    # Two more input channels per branch, computed in the graph from the same six inputs: the mean absolute
    # difference of the branch's image to its background-aligned partner and to its subject-aligned counterpart.
    # The parallax cue itself (the person does not line up with the background-aligned view, the background does
    # not line up with the subject-aligned one) handed to the first conv instead of left to be learnt from scratch.
    motion_channels: bool = False
    # Two more: where each layer lines up. (|image - partner| - |image - counterpart|) / their sum, both 3x3
    # means, is near +1 on the branch's person (it lines up with the subject-aligned view only) and -1 on its
    # background, between on a mix; the sum says where the picture is textured enough for the ratio to mean
    # anything. A division, which convolutions and ReLUs can only approximate.
    ratio_channels: bool = False
    norm_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    norm_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def validate(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.branches not in ("dual", "single"):
            raise ValueError(f"branches must be 'dual' or 'single', got {self.branches!r}")
        if self.kv_pool not in (1, 2):
            raise ValueError(f"kv_pool must be 1 or 2 (the token grid is only guaranteed even), got {self.kv_pool}")
        if (self.motion_channels or self.ratio_channels) and self.branches == "single":
            raise ValueError("motion_channels and ratio_channels compare the views: the single-branch model sees one")
        if self.depth_enc < 1 or self.depth_dec < 1:
            raise ValueError("depth_enc and depth_dec must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PPMConfig:
        tuples = {k: tuple(v) for k, v in d.items() if isinstance(v, list)}  # JSON gives lists
        return cls(**{**d, **tuples})


# lite: sized to run one 448x448 patch (both branches) in well under 100 ms on 2 CPU cores under ONNX Runtime and
# to train on CPU. paper: ViT-B as in Sec. 5.1 (CroCo's ViT-B encoder; its 8-block decoder at the encoder's width);
# it only needs to build here.
PPM_PRESETS: dict[str, PPMConfig] = {
    "lite": PPMConfig(name="lite", dim=128, heads=4, depth_enc=4, depth_dec=2, mlp_ratio=2.0, kv_pool=2,
                      stem_channels=(16, 32), detail_channels=(16, 24, 32), fusion_channels=(48, 32, 16, 8)),
    "paper": PPMConfig(name="paper", dim=768, heads=12, depth_enc=12, depth_dec=8, mlp_ratio=4.0, kv_pool=1,
                       stem_channels=(64, 128), detail_channels=(48, 96, 192), fusion_channels=(256, 128, 64, 32)),
}


def get_ppm_config(name: str) -> PPMConfig:
    try:
        return PPM_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown PPM preset {name!r}; choose one of {sorted(PPM_PRESETS)}") from None


# --- building blocks --------------------------------------------------------------------------------------


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (stride 1 or 2), BN, ReLU: (B, cin, H, W) -> (B, cout, H/stride, W/stride)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def to_grid(z: Tensor, hw: tuple[int, int]) -> Tensor:
    """Tokens (B, N, C) with N = h*w -> map (B, C, h, w)."""
    return z.transpose(1, 2).reshape(z.shape[0], z.shape[2], hw[0], hw[1])


def to_tokens(x: Tensor) -> Tensor:
    """Map (B, C, h, w) -> tokens (B, h*w, C)."""
    return x.flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head attention of queries x (B, N, C) over memory (B, N, C) on the same (h, w) grid -> (B, N, C).

    With ``kv_pool`` > 1 the memory is average-pooled on the grid first (M = N / kv_pool^2 keys). Written out
    (matmul, softmax, matmul) rather than through ``scaled_dot_product_attention`` so the ONNX graph is plain ops.
    """

    def __init__(self, dim: int, heads: int, kv_pool: int) -> None:
        super().__init__()
        self.heads, self.kv_pool = heads, kv_pool
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, memory: Tensor, hw: tuple[int, int]) -> Tensor:
        b, n, c = x.shape
        if self.kv_pool > 1:
            memory = to_tokens(F.avg_pool2d(to_grid(memory, hw), self.kv_pool))
        m, hd = memory.shape[1], c // self.heads
        q = self.q(x).reshape(b, n, self.heads, hd).transpose(1, 2)  # (B, heads, N, hd)
        kv = self.kv(memory).reshape(b, m, 2, self.heads, hd).permute(2, 0, 3, 1, 4)  # (2, B, heads, M, hd)
        attn = torch.softmax((q * self.scale) @ kv[0].transpose(-2, -1), dim=-1)  # (B, heads, N, M)
        return self.proj((attn @ kv[1]).transpose(1, 2).reshape(b, n, c))


def mlp(dim: int, ratio: float) -> nn.Sequential:
    hidden = int(dim * ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class EncoderBlock(nn.Module):
    """Pre-norm ViT block: self-attention, MLP, both residual. (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, kv_pool: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, kv_pool)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = mlp(dim, mlp_ratio)

    def forward(self, z: Tensor, hw: tuple[int, int]) -> Tensor:
        h = self.norm1(z)
        z = z + self.attn(h, h, hw)
        return z + self.mlp(self.norm2(z))


class DecoderBlock(nn.Module):
    """CroCo/DUSt3R-style decoder block: self-attention, cross-attention to the other branch's tokens, MLP.

    z (B, N, C), other (B, N, C) (the other branch at this block's input) -> (B, N, C). Without ``cross`` (the
    single-branch model) it is an :class:`EncoderBlock` and ``other`` is ignored.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, kv_pool: int, cross: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, kv_pool)
        self.cross: Attention | None = None
        if cross:
            self.norm_q = nn.LayerNorm(dim)
            self.norm_mem = nn.LayerNorm(dim)
            self.cross = Attention(dim, heads, kv_pool)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = mlp(dim, mlp_ratio)

    def forward(self, z: Tensor, other: Tensor | None, hw: tuple[int, int]) -> Tensor:
        h = self.norm1(z)
        z = z + self.attn(h, h, hw)
        if self.cross is not None:
            assert other is not None
            z = z + self.cross(self.norm_q(z), self.norm_mem(other), hw)
        return z + self.mlp(self.norm2(z))


class Fusion(nn.Module):
    """ViTMatte fusion block: upsample x2 (bilinear), concatenate the detail map, 3x3 Conv-BN-ReLU.

    x (B, cin, h, w), detail (B, cdet, 2h, 2w) -> (B, cout, 2h, 2w).
    """

    def __init__(self, cin: int, cdet: int, cout: int) -> None:
        super().__init__()
        self.conv = conv_bn_relu(cin + cdet, cout)

    def forward(self, x: Tensor, detail: Tensor) -> Tensor:
        up = F.interpolate(x, size=detail.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([up, detail], dim=1))


# --- the network ------------------------------------------------------------------------------------------


class PPMNet(nn.Module):
    """Weight-shared two-branch parallax matting network; see the module docstring.

    Every input is (B, 3, H, W) float32 with H and W multiples of :data:`SIZE_MULTIPLE` (32) (a ValueError
    otherwise): images in [0, 1], trimaps one-hot [background, unknown, foreground].
    """

    mean: Tensor
    std: Tensor

    def __init__(self, cfg: PPMConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d = cfg.dim
        s1, s2 = cfg.stem_channels
        cin = self.in_channels
        # Token path (both branches): two stride-2 convs to 1/4, a stride-4 patch embed to 1/16, conv positions.
        self.stem = nn.Sequential(conv_bn_relu(cin, s1, 2), conv_bn_relu(s1, s2, 2))
        self.patch_embed = nn.Conv2d(s2, d, 4, stride=4)
        self.pos = nn.Conv2d(d, d, 3, padding=1, groups=d)  # depthwise: positions from the neighbourhood
        self.encoder = nn.ModuleList(
            [EncoderBlock(d, cfg.heads, cfg.mlp_ratio, cfg.kv_pool) for _ in range(cfg.depth_enc)]
        )
        self.enc_norm = nn.LayerNorm(d)
        dual = cfg.branches == "dual"
        self.decoder = nn.ModuleList(
            [DecoderBlock(d, cfg.heads, cfg.mlp_ratio, cfg.kv_pool, cross=dual) for _ in range(cfg.depth_dec)]
        )
        self.dec_norm = nn.LayerNorm(d)
        # Detail capture (bottom branch only): the raw branch input at 1/2, 1/4, 1/8.
        c2, c4, c8 = cfg.detail_channels
        self.detail = nn.ModuleList([conv_bn_relu(cin, c2, 2), conv_bn_relu(c2, c4, 2), conv_bn_relu(c4, c8, 2)])
        f8, f4, f2, f1 = cfg.fusion_channels
        self.fusion = nn.ModuleList([Fusion(d, c8, f8), Fusion(f8, c4, f4), Fusion(f4, c2, f2), Fusion(f2, cin, f1)])
        self.head = nn.Conv2d(f1, 4, 1)  # alpha logit, then alpha*F logits
        self.register_buffer("mean", torch.tensor(cfg.norm_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.norm_std).view(1, 3, 1, 1), persistent=False)
        self.apply(self._init_linear)

    @staticmethod
    def _init_linear(m: nn.Module) -> None:
        # ViT's init (timm, CroCo): small truncated-normal weights keep the residual stream near identity at the
        # start, which training from scratch (no CroCo weights here) needs more than a pretrained ViT does.
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # -- helpers -------------------------------------------------------------------------------------------
    def _normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    @property
    def in_channels(self) -> int:
        """Channels of a branch input: image, partner, trimap (9), then two motion and two ratio channels if
        configured."""
        return 9 + 2 * self.cfg.motion_channels + 2 * self.cfg.ratio_channels

    def _branch_input(self, image: Tensor, partner: Tensor, trimap: Tensor, counterpart: Tensor) -> Tensor:
        """(B, 3, H, W) x 4 -> (B, in_channels, H, W): normalised image, normalised partner (zeros if ablated),
        trimap[, mean |image - partner| (zeros if ablated) and mean |image - counterpart|, x4 to about unit range].
        ``counterpart``: the same frame aligned the other way (the bottom branch's is view_fg, the top's view)."""
        use_partner = self.cfg.use_bg_view and self.cfg.branches == "dual"
        # Exactly zero input channels where ablated: no information from the partner frame.
        p = self._normalize(partner) if use_partner else torch.zeros_like(partner)
        parts = [self._normalize(image), p, trimap]
        if not (self.cfg.motion_channels or self.cfg.ratio_channels):
            return torch.cat(parts, dim=1)
        # Mean over colour of how far the image is from each aligned view: its person is off in the partner
        # (aligned on the background), its background off in the counterpart (aligned on the subject).
        off_subject = (image - partner).abs().mean(1, keepdim=True)
        off_background = (image - counterpart).abs().mean(1, keepdim=True)
        if self.cfg.motion_channels:
            parts += [off_subject * 4.0 if use_partner else torch.zeros_like(off_subject), off_background * 4.0]
        if self.cfg.ratio_channels:
            if use_partner:
                subject, background = (F.avg_pool2d(d, 3, stride=1, padding=1, count_include_pad=False)
                                       for d in (off_subject, off_background))
                total = subject + background
                parts += [(subject - background) / (total + 0.02), total * 4.0]  # +-1 where one layer lines up
            else:
                parts += [torch.zeros_like(off_subject)] * 2
        return torch.cat(parts, dim=1)

    @staticmethod
    def check_size(h: int, w: int) -> None:
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE or h <= 0 or w <= 0:
            raise ValueError(f"PPMNet needs H and W that are positive multiples of {SIZE_MULTIPLE}, got {h}x{w}")

    def encode(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Branch inputs (N, in_channels, H, W) -> encoder tokens (N, H/16 * W/16, dim) and the grid (H/16, W/16)."""
        t = self.patch_embed(self.stem(x))
        t = t + self.pos(t)
        hw = (t.shape[2], t.shape[3])
        z = to_tokens(t)
        for blk in self.encoder:
            z = blk(z, hw)
        return self.enc_norm(z), hw

    def decode(self, z: Tensor, hw: tuple[int, int], batch: int, *, both: bool = False) -> Tensor:
        """Encoder tokens of [bottom; top] (2B, N, C) (dual) or bottom (B, N, C) (single) -> bottom (B, N, C),
        or with ``both`` (dual, training the top branch too) [bottom; top] (2B, N, C)."""
        if self.cfg.branches == "single":
            for blk in self.decoder:
                z = blk(z, None, hw)
            return self.dec_norm(z)
        last = len(self.decoder) - 1
        for i, blk in enumerate(self.decoder):
            other = torch.cat([z[batch:], z[:batch]], dim=0)  # each branch attends to the other one
            # At inference only the bottom branch is decoded to pixels: the top's last block would feed nothing.
            z = blk(z[:batch], other[:batch], hw) if i == last and not both else blk(z, other, hw)
        return self.dec_norm(z)

    def head_forward(self, tokens: Tensor, hw: tuple[int, int], x: Tensor) -> tuple[Tensor, Tensor]:
        """Bottom tokens (B, N, C) and the bottom input (B, in_channels, H, W) -> raw alpha (B, 1, H, W), raw alpha*F
        (B, 3, H, W), both sigmoid outputs of the network alone (no guidance)."""
        feats: list[Tensor] = []
        d = x
        for conv in self.detail:
            d = conv(d)
            feats.append(d)  # 1/2, 1/4, 1/8
        h = to_grid(tokens, hw)
        for fuse, skip in zip(self.fusion, (feats[2], feats[1], feats[0], x), strict=True):
            h = fuse(h, skip)
        out = torch.sigmoid(self.head(h))
        return out[:, :1], out[:, 1:]

    # -- forward -------------------------------------------------------------------------------------------
    def forward_raw(self, view: Tensor, view_bg: Tensor, view_fg: Tensor, view_fg_pair: Tensor, trimap: Tensor,
                    trimap_fg: Tensor, *, both: bool = False) -> dict[str, Tensor]:
        """Inputs as :meth:`forward` -> dict of ``alpha`` (B,1,H,W), ``fg`` (B,3,H,W) (guidance applied) and
        ``alpha_raw`` (B,1,H,W), ``fg_raw`` (B,3,H,W) (the network's own sigmoid outputs everywhere).

        ``both`` (dual only; training the paper's symmetric design, where each branch predicts its own image):
        the top branch is decoded too, adding ``alpha_top`` (B,1,H,W) and ``fg_top`` (B,3,H,W) of ``view_fg``
        composed with ``trimap_fg``. The bottom's outputs are the same either way, so the exported graph (bottom
        only) needs nothing new."""
        b, _, h, w = view.shape
        if not torch.compiler.is_exporting():  # the export states the size rule through its dynamic dims
            self.check_size(int(h), int(w))
        if both and self.cfg.branches != "dual":
            raise ValueError("decoding both branches needs the dual-branch model")
        bottom = self._branch_input(view, view_bg, trimap, view_fg)
        if self.cfg.branches == "dual":
            top = self._branch_input(view_fg, view_fg_pair, trimap_fg, view)
            z, hw = self.encode(torch.cat([bottom, top], dim=0))  # one batched pass through the shared encoder
        else:
            z, hw = self.encode(bottom)
        tokens = self.decode(z, hw, b, both=both)
        if both:  # each branch's prediction of its own image, under its own trimap
            x, image, tri = (torch.cat(p, dim=0) for p in ((bottom, top), (view, view_fg), (trimap, trimap_fg)))
        else:
            x, image, tri = bottom, view, trimap
        alpha_raw, fg_raw = self.head_forward(tokens, hw, x)
        g_un, g_fg = tri[:, 1:2], tri[:, 2:3]
        alpha, fg = g_fg + g_un * alpha_raw, g_fg * image + g_un * fg_raw
        if not both:
            return {"alpha": alpha, "fg": fg, "alpha_raw": alpha_raw, "fg_raw": fg_raw}
        return {"alpha": alpha[:b], "fg": fg[:b], "alpha_raw": alpha_raw[:b], "fg_raw": fg_raw[:b],
                "alpha_top": alpha[b:], "fg_top": fg[b:]}

    def forward(self, view: Tensor, view_bg: Tensor, view_fg: Tensor, view_fg_pair: Tensor, trimap: Tensor,
                trimap_fg: Tensor) -> tuple[Tensor, Tensor]:
        """Six (B, 3, H, W) tensors, H and W multiples of 32:

        * ``view`` I_1 and ``view_bg`` I^B_{0->1} (the other frame aligned on the background) with ``trimap`` Tr_1:
          the bottom branch, the one that is predicted;
        * ``view_fg`` I^F_{0->1} (the other frame aligned on the subject) and ``view_fg_pair`` (I_1 aligned on
          view_fg's background) with ``trimap_fg`` M^F_{0->1}(Tr_0): the top branch, attended to.

        -> alpha (B, 1, H, W) and premultiplied foreground alpha*F (B, 3, H, W) of ``view``; exactly the trimap's
        verdict (0/1, 0 / view) wherever it is certain. The single-branch model ignores all but view and trimap.
        """
        out = self.forward_raw(view, view_bg, view_fg, view_fg_pair, trimap, trimap_fg)
        return out["alpha"], out["fg"]


def build_ppm(cfg: PPMConfig | str) -> PPMNet:
    """A randomly initialised PPMNet from a config or a preset name (seeds are the caller's)."""
    return PPMNet(get_ppm_config(cfg) if isinstance(cfg, str) else cfg)


__all__ = [
    "INPUT_NAMES",
    "PPM_PRESETS",
    "SIZE_MULTIPLE",
    "TOKEN_STRIDE",
    "PPMConfig",
    "PPMNet",
    "build_ppm",
    "get_ppm_config",
]
