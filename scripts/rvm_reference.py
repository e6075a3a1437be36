"""Export Robust Video Matting's MobileNetV3 architecture as ONNX, for ``cuematte bench --compare`` (speed only).

Nothing can be downloaded here, so RVM's released weights are out of reach; its speed does not depend on them.
This rebuilds the architecture of Lin et al., "Robust High-Resolution Video Matting with Temporal Guidance"
(WACV 2022), RVM-MobileNetV3 variant, with random weights: a MobileNetV3-Large encoder (timm, last stage
dilated to stride 16), LR-ASPP (128 channels), the recurrent decoder (ConvGRU on half the channels at 1/16,
1/8, 1/4 and 1/2; 80/40/32/16 channels), a 4-channel projection and the deep guided filter that brings the
result from ``downsample_ratio`` back to full resolution. Inputs and outputs carry RVM's names
(``src``, ``r1i``..``r4i`` -> ``fgr``, ``pha``, ``r1o``..``r4o``), so the bench feeds it as it feeds the real
graph (states at 1x1x1x1 zeros); the ``downsample_ratio`` input is fixed inside the graph at 0.25, the value the
bench gives the real one.

    .venv/bin/python scripts/rvm_reference.py --out runs/rvm/rvm_mobilenetv3_arch.onnx
    .venv/bin/cuematte bench --sizes 640x360,1280x720 --compare runs/rvm/rvm_mobilenetv3_arch.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

RATIO = 0.25  # RVM's downsample_ratio for HD portraits; what the bench feeds the real graph


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


class ConvGRU(nn.Module):
    """(B, C, h, w) features and (B, C, h, w) state (or 1x1x1x1 zeros, broadcast) -> output, new state."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.ih = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.Sigmoid())
        self.hh = nn.Sequential(nn.Conv2d(2 * c, c, 3, padding=1), nn.Tanh())

    def forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        h = h.expand_as(x)
        r, z = self.ih(torch.cat([x, h], 1)).split(x.shape[1], 1)
        c = self.hh(torch.cat([x, r * h], 1))
        h = (1 - z) * h + z * c
        return h, h


class Up(nn.Module):
    """Upsample 2x, concatenate the encoder feature and the downsampled source, conv, GRU on half."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.conv = conv_bn_relu(cin + cskip + 3, cout)
        self.gru = ConvGRU(cout // 2)

    def forward(self, x: Tensor, skip: Tensor, src: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self.conv(torch.cat([x, skip, src], 1))
        a, b = x.split(x.shape[1] // 2, 1)
        b, r = self.gru(b, r)
        return torch.cat([a, b], 1), r


class RVMMobileNetV3(nn.Module):
    mean: Tensor
    std: Tensor
    backbone: Any  # timm's MobileNetV3Features

    def __init__(self) -> None:
        super().__init__()
        self.backbone = timm.create_model("mobilenetv3_large_100", features_only=True, pretrained=False,
                                          out_indices=(0, 1, 2, 4), output_stride=16)
        c1, c2, c3, c4 = self.backbone.feature_info.channels()  # 16, 24, 40, 960
        self.aspp1 = nn.Sequential(nn.Conv2d(c4, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(True))
        self.aspp2 = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c4, 128, 1, bias=False), nn.Sigmoid())
        self.gru4 = ConvGRU(64)
        self.up3, self.up2, self.up1 = Up(128, c3, 80), Up(80, c2, 40), Up(40, c1, 32)
        self.out = nn.Sequential(conv_bn_relu(32 + 3, 16), conv_bn_relu(16, 16))
        self.project = nn.Conv2d(16, 4, 1)
        self.refine = nn.Sequential(nn.Conv2d(4 * 2 + 16, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(True),
                                    nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(True),
                                    nn.Conv2d(16, 4, 1))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, src: Tensor, r1: Tensor, r2: Tensor, r3: Tensor, r4: Tensor) -> tuple[Tensor, ...]:
        """src (1, 3, H, W) in [0, 1]; states -> fgr (1, 3, H, W), pha (1, 1, H, W), new states. The downsample
        ratio is fixed at RATIO (a scale the exported Resize applies at any size)."""
        h, w = src.shape[-2:]
        small = F.interpolate(src, scale_factor=RATIO, mode="bilinear", align_corners=False,
                              recompute_scale_factor=False)
        f1, f2, f3, f4 = self.backbone((small - self.mean) / self.std)
        x4 = self.aspp1(f4) * self.aspp2(f4)
        s1 = F.avg_pool2d(small, 2, ceil_mode=True)
        s2 = F.avg_pool2d(s1, 2, ceil_mode=True)
        s3 = F.avg_pool2d(s2, 2, ceil_mode=True)
        a, b = x4.split(64, 1)
        b, r4 = self.gru4(b, r4)
        x = torch.cat([a, b], 1)
        x, r3 = self.up3(x, f3, s3, r3)
        x, r2 = self.up2(x, f2, s2, r2)
        x, r1 = self.up1(x, f1, s1, r1)
        x = F.interpolate(x, size=small.shape[-2:], mode="bilinear", align_corners=False)
        hid = self.out(torch.cat([x, small], 1))
        out = self.project(hid)
        # Deep guided filter: coefficients at the low resolution, applied at full resolution.
        guide = torch.cat([small, small.mean(1, keepdim=True)], 1)
        mean_x, mean_y = F.avg_pool2d(guide, 3, 1, 1), F.avg_pool2d(out, 3, 1, 1)
        cov = F.avg_pool2d(guide * out, 3, 1, 1) - mean_x * mean_y
        var = F.avg_pool2d(guide * guide, 3, 1, 1) - mean_x * mean_x
        coef_a = self.refine(torch.cat([cov, var, hid], 1))
        coef_b = mean_y - coef_a * mean_x
        coef_a = F.interpolate(coef_a, size=(h, w), mode="bilinear", align_corners=False)
        coef_b = F.interpolate(coef_b, size=(h, w), mode="bilinear", align_corners=False)
        full = coef_a * torch.cat([src, src.mean(1, keepdim=True)], 1) + coef_b
        fgr = (full[:, :3]).clamp(0, 1)
        pha = full[:, 3:].clamp(0, 1)
        return fgr, pha, r1, r2, r3, r4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/rvm/rvm_mobilenetv3_arch.onnx"))
    args = ap.parse_args()
    torch.manual_seed(0)
    net = RVMMobileNetV3().eval()
    src = torch.rand(1, 3, 360, 640)
    z = torch.zeros(1, 1, 1, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    names_in = ["src", "r1i", "r2i", "r3i", "r4i"]
    names_out = ["fgr", "pha", "r1o", "r2o", "r3o", "r4o"]
    dyn = {"src": {2: "h", 3: "w"}, **{f"r{i}i": {1: f"c{i}", 2: f"y{i}", 3: f"x{i}"} for i in range(1, 5)}}
    torch.onnx.export(net, (src, z, z, z, z), str(args.out), input_names=names_in, output_names=names_out,
                      dynamic_axes=dyn, opset_version=17, dynamo=False)
    import onnx

    onnx.checker.check_model(onnx.load(str(args.out)))
    params = sum(p.numel() for p in net.parameters())
    print(f"wrote {args.out} ({params / 1e6:.2f} M parameters; RVM-MobileNetV3 has 3.75 M)")


if __name__ == "__main__":
    main()
