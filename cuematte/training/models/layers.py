"""Building blocks of FNFNet: ASPP, transformer layers of the FCM, CBAM, decoder groups, guided filter."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn_relu(cin: int, cout: int, k: int = 3, dilation: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def resize_to(x: Tensor, ref: Tensor) -> Tensor:
    """Bilinearly resize ``x`` (B, C, h, w) to the spatial size of ``ref`` (B, *, H, W)."""
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabV3) with the paper's dilations 3/6/9.

    (B, C_in, h, w) -> (B, C_out, h, w).
    """

    def __init__(self, cin: int, cout: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(cin, cout, k=1)] + [conv_bn_relu(cin, cout, 3, dilation=d) for d in dilations]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU())
        self.project = conv_bn_relu(cout * (len(dilations) + 2), cout, k=1)

    def forward(self, x: Tensor) -> Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, x.shape[2], x.shape[3]))
        return self.project(torch.cat(outs, dim=1))


class SelfAttentionLayer(nn.Module):
    """A pre-norm transformer layer of T^f: MHSA + FFN, both residual. (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, z: Tensor) -> Tensor:
        h = self.norm1(z)
        z = z + self.attn(h, h, h, need_weights=False)[0]
        return z + self.ffn(self.norm2(z))


class CrossAttentionLayer(nn.Module):
    """A layer of T^nf: MHSA on no-flash tokens, MHCA with queries from them and keys/values from the
    cached flash tokens T^f, then FFN; all residual.

    z (B, N, C), memory (B, M, C) -> (B, N, C).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.norm_mem = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm3 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, z: Tensor, memory: Tensor) -> Tensor:
        h = self.norm1(z)
        z = z + self.self_attn(h, h, h, need_weights=False)[0]
        mem = self.norm_mem(memory)
        z = z + self.cross_attn(self.norm2(z), mem, mem, need_weights=False)[0]
        return z + self.ffn(self.norm3(z))


class CBAM(nn.Module):
    """Convolutional block attention (Woo et al. 2018): channel then spatial re-weighting. (B,C,h,w) -> same."""

    def __init__(self, channels: int, reduction: int = 8, kernel: int = 7) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: Tensor) -> Tensor:
        avg = x.mean(dim=(2, 3), keepdim=True)
        mx = x.amax(dim=(2, 3), keepdim=True)
        x = x * torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(s))


class UpGroup(nn.Module):
    """One decoder group: upsample to the shortcut's size, concatenate it, 3x3 Conv-BN-ReLU.

    ``separable``: a 1x1 conv first mixes the joined channels down to ``cout``, then a depthwise 3x3 conv (each
    with BN and ReLU): a fifth of the multiply-adds where a group's input is wide (issue 23). In this order the
    3x3 runs on ``cout`` channels (a multiple of 8 in our configs), which ONNX Runtime's blocked layout needs;
    depthwise first, on the 51-54 joined channels, measured slower."""

    def __init__(self, cin: int, cskip: int, cout: int, separable: bool = False) -> None:
        super().__init__()
        c = cin + cskip
        self.conv = (nn.Sequential(
            conv_bn_relu(c, cout, k=1),
            nn.Conv2d(cout, cout, 3, padding=1, groups=cout, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        ) if separable else conv_bn_relu(c, cout))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([resize_to(x, skip), skip], dim=1))


def box_filter(x: Tensor, r: int) -> Tensor:
    """Mean over a (2r+1)^2 window, border-normalised. (B, C, H, W) -> same."""
    return F.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False)


class GuidedUpsampler(nn.Module):
    """Deep guided filter (Wu et al. 2018, as RVM uses it): learns per-pixel linear coefficients A, b at the
    coarse resolution from the coarse image, outputs and hidden features, upsamples only A and b, and applies
    ``A * image + b`` at full resolution. The full-resolution cost is two bilinear resizes and a multiply-add.

    fine (B,3,H,W), coarse (B,3,h,w), coarse_out (B,4,h,w) [fg rgb, alpha], hidden (B,Ch,h,w) ->
    fg (B,3,H,W), alpha (B,1,H,W).
    """

    def __init__(self, hidden: int, width: int = 16) -> None:
        super().__init__()
        self.coef = nn.Sequential(
            nn.Conv2d(8 + hidden, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 4, 1),
        )

    def coefficients(self, coarse: Tensor, coarse_out: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """-> the linear coefficients a, b (B, 4, h, w) [fg r, g, b, alpha] at the coarse grid: where the frame
        graph ends (the engine applies them at full resolution, ``cuematte.engine.refine``)."""
        # Guide = RGB + grey so a single alpha channel can follow luminance edges.
        x = torch.cat([coarse, coarse.mean(1, keepdim=True)], dim=1)
        y = coarse_out
        mean_x, mean_y = box_filter(x, 1), box_filter(y, 1)
        cov_xy = box_filter(x * y, 1) - mean_x * mean_y
        var_x = box_filter(x * x, 1) - mean_x * mean_x
        a = self.coef(torch.cat([cov_xy, var_x, hidden], dim=1))
        return a, mean_y - a * mean_x

    @staticmethod
    def upsample(fine: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        """fine (B, 3, H, W), a / b from :meth:`coefficients` -> foreground (B, 3, H, W) and alpha (B, 1, H, W),
        both unclamped. The full-resolution cost is two bilinear resizes and a multiply-add."""
        size = fine.shape[-2:]

        def up(t: Tensor) -> Tensor:
            return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

        fg = up(a[:, :3]) * fine + up(b[:, :3])
        alpha = up(a[:, 3:]) * fine.mean(1, keepdim=True) + up(b[:, 3:])
        return fg, alpha

    def forward(self, fine: Tensor, coarse: Tensor, coarse_out: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """-> foreground (B, 3, H, W) and alpha (B, 1, H, W), both unclamped."""
        return self.upsample(fine, *self.coefficients(coarse, coarse_out, hidden))
