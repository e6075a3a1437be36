"""FNFNet (flash/no-flash matting network, paper Sec. 4) with a cache boundary at T^f.

The network splits in two halves, exactly where the product caches:

* :meth:`FNFNet.encode_flash` — flash encoder (RGB + one-hot flash trimap), ASPP and the L_f self-attention
  layers of the FCM -> the flash tokens T^f. Runs once per flash.
* :meth:`FNFNet.forward_frame` — no-flash encoder, ASPP, the L_nf cross-attention layers that attend to the
  cached T^f, CBAM, the three decoders (trimap / detail / foreground) and the refinement to full resolution
  (paper BMN, or a guided-filter upsampler in ``lite``). Runs on every frame.

With ``flash_prior`` the cache also holds the flash half's own input at the CMN grid (normalised flash RGB +
trimap, :meth:`FNFNet.flash_prior`), which the per-frame encoder takes as extra input channels.

All images are RGB float in [0, 1]; normalisation happens inside the network so exported graphs take raw
[0, 1] pixels.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cuematte.training.models.config import FNFConfig
from cuematte.training.models.layers import (
    ASPP,
    CBAM,
    CrossAttentionLayer,
    GuidedUpsampler,
    SelfAttentionLayer,
    UpGroup,
    conv_bn_relu,
    resize_to,
)


class Encoder(nn.Module):
    """A timm backbone (``features_only``, random init) returning features at strides 2, 4, 8, 16."""

    body: Any  # timm's feature wrappers differ by family (FeatureListNet, MobileNetV3Features, ...)

    def __init__(self, backbone: str, in_chans: int, output_stride: int) -> None:
        super().__init__()
        self.body = timm.create_model(
            backbone, features_only=True, pretrained=False, in_chans=in_chans, output_stride=output_stride
        )
        self.channels: list[int] = list(self.body.feature_info.channels())
        # The stem (first conv, BN, activation; stride 2) is reused by BMN for low-level features; it is read
        # from the body on use, not registered twice, so checkpoints hold each weight once.
        first = self.body.conv1 if hasattr(self.body, "conv1") else self.body.conv_stem
        self.stem_channels = int(first.out_channels)

    def stem(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_stem, H/2, W/2): the backbone's first conv-BN-activation."""
        b = self.body
        if hasattr(b, "conv1"):
            return b.act1(b.bn1(b.conv1(x)))
        return b.bn1(b.conv_stem(x))  # timm's MobileNet BN layer carries the activation

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, C_in, H, W) -> [s2, s4, s8, s16, s16'] feature maps (channels in ``self.channels``)."""
        return list(self.body(x))


class BoundaryMattingNetwork(nn.Module):
    """Paper BMN for one output (detail map or foreground residual).

    Coarse feature (B, C, h, w) is upsampled to half resolution, fused with the stem's low-level feature
    (B, C_s, H/2, W/2) through two Conv-BN-ReLU groups, upsampled to full resolution, concatenated with the
    image (B, 3, H, W) and mapped by two more groups (the last without ReLU) to (B, C_out, H, W).
    """

    def __init__(self, c_feat: int, c_stem: int, widths: tuple[int, int], c_out: int) -> None:
        super().__init__()
        w_half, w_full = widths
        self.half_res = nn.Sequential(conv_bn_relu(c_feat + c_stem, w_half), conv_bn_relu(w_half, w_half))
        self.full_res = nn.Sequential(conv_bn_relu(w_half + 3, w_full), nn.Conv2d(w_full, c_out, 3, padding=1))

    def forward(self, feat: Tensor, stem: Tensor, image: Tensor) -> Tensor:
        h = self.half_res(torch.cat([resize_to(feat, stem), stem], dim=1))
        return self.full_res(torch.cat([resize_to(h, image), image], dim=1))


def compose_guidance(alpha: Tensor, guidance: Tensor) -> Tensor:
    """alpha (B, 1, H, W), guidance one-hot (B, 3, h, w) [bg, unknown, fg] -> guidance_fg + guidance_un * alpha
    at (H, W). Nearest upsampling keeps the guidance one-hot, so certain pixels are exactly 0 or 1; the two
    channels are taken at the guidance's grid, before upsampling (no full-resolution slices)."""
    g_un, g_fg = guidance[:, 1:2], guidance[:, 2:3]
    if guidance.shape[-2:] != alpha.shape[-2:]:
        g_un = F.interpolate(g_un, size=alpha.shape[-2:], mode="nearest")
        g_fg = F.interpolate(g_fg, size=alpha.shape[-2:], mode="nearest")
    return g_fg + g_un * alpha


class FNFNet(nn.Module):
    """Flash/no-flash matting network; see the module docstring for the cache split."""

    mean: Tensor
    std: Tensor

    def __init__(self, cfg: FNFConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        a, e = cfg.aspp_channels, cfg.embed_dim
        self.flash_encoder = Encoder(cfg.backbone, cfg.prior_channels, cfg.stride)
        self.noflash_encoder = Encoder(
            cfg.backbone,
            3 + cfg.person_mask + cfg.prior_channels * cfg.flash_prior + 3 * cfg.guidance,
            cfg.stride,
        )
        c = self.noflash_encoder.channels
        s2, s4, s8 = c[0], c[1], c[2]
        n_tokens = cfg.token_grid[0] * cfg.token_grid[1]

        # FCM, flash half: T^f.
        self.flash_aspp = ASPP(self.flash_encoder.channels[-1], a, cfg.aspp_dilations)
        self.flash_embed = nn.Conv2d(a, e, 1)
        self.flash_pos = nn.Parameter(torch.zeros(1, n_tokens, e))
        self.flash_layers = nn.ModuleList(
            [SelfAttentionLayer(e, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.flash_layers)]
        )
        self.flash_norm = nn.LayerNorm(e)
        # FCM, no-flash half: T^nf cross-attends to T^f.
        self.noflash_aspp = ASPP(c[-1], a, cfg.aspp_dilations)
        self.noflash_embed = nn.Conv2d(a, e, 1)
        self.noflash_pos = nn.Parameter(torch.zeros(1, n_tokens, e))
        self.noflash_layers = nn.ModuleList(
            [CrossAttentionLayer(e, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.noflash_layers)]
        )
        self.unembed = nn.Conv2d(e, a, 1)
        self.cbam = CBAM(a)
        nn.init.trunc_normal_(self.flash_pos, std=0.02)
        nn.init.trunc_normal_(self.noflash_pos, std=0.02)

        # D_trimap: 2 groups, 1/16 -> 1/4, 3 classes (0 background, 1 unknown, 2 foreground).
        t0, t1 = cfg.trimap_channels
        self.trimap_groups = nn.ModuleList([UpGroup(a, s8, t0), UpGroup(t0, s4, t1)])
        self.trimap_head = nn.Conv2d(t1, 3, 1)
        fine = 3  # the last shortcut of the detail and foreground decoders: the frame at the CMN grid
        if cfg.decoder == "half":
            # The paper's detail and foreground decoders without their full-grid group: both end at 1/2, where
            # the frame (area-halved) joins the stem's shortcut; the guided filter upsamples from there.
            d0, d1, _ = cfg.detail_channels
            sep = cfg.separable_half
            self.detail_groups = nn.ModuleList([UpGroup(s8, s4, d0), UpGroup(d0 + 3, s2 + fine, d1, sep)])
            self.detail_head = nn.Conv2d(d1, 1, 3, padding=1)
            f0, f1, f2, _ = cfg.fg_channels
            self.fg_groups = nn.ModuleList([UpGroup(a, s8, f0), UpGroup(f0, s4, f1),
                                            UpGroup(f1, s2 + fine, f2, sep)])
            self.fg_head = nn.Conv2d(f2, 3, 3, padding=1)
            d2, f3 = d1, f2
        elif cfg.decoder == "shared":
            # The trimap trunk goes on to 1/2 and 1/1 with its probabilities joined; one head gives detail + fg.
            u0, u1 = cfg.shared_channels
            self.shared_groups = nn.ModuleList([UpGroup(t1 + 3, s2, u0), UpGroup(u0, fine, u1)])
            self.shared_head = nn.Conv2d(u1, 4, 3, padding=1)
            d2 = f3 = u1
        else:
            # D_detail: 3 groups from the 1/8 shortcut; trimap probabilities join before the second group.
            d0, d1, d2 = cfg.detail_channels
            self.detail_groups = nn.ModuleList([UpGroup(s8, s4, d0), UpGroup(d0 + 3, s2, d1),
                                                UpGroup(d1, fine, d2)])
            self.detail_head = nn.Conv2d(d2, 1, 3, padding=1)
            # D_foreground: 4 groups 1/16 -> 1/1, predicts a residual on the image plus hidden features.
            f0, f1, f2, f3 = cfg.fg_channels
            self.fg_groups = nn.ModuleList(
                [UpGroup(a, s8, f0), UpGroup(f0, s4, f1), UpGroup(f1, s2, f2), UpGroup(f2, fine, f3)]
            )
            self.fg_head = nn.Conv2d(f3, 3, 3, padding=1)

        self.refiner: nn.Module
        if cfg.refine == "bmn":
            stem_c = self.noflash_encoder.stem_channels
            self.bmn_detail = BoundaryMattingNetwork(d2, stem_c, cfg.bmn_channels, 1)
            self.bmn_fg = BoundaryMattingNetwork(f3, stem_c, cfg.bmn_channels, 3)
        else:
            self.guided = GuidedUpsampler(f3)

        self.register_buffer("mean", torch.tensor(cfg.norm_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.norm_std).view(1, 3, 1, 1), persistent=False)

    # -- helpers -------------------------------------------------------------------------------------------
    def _normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def to_cmn(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, h, w) at the CMN grid by area averaging: what the engine does with OpenCV's
        INTER_AREA before it feeds the graphs (the same at integer ratios, such as training's 2x). The graphs take
        their CMN-grid inputs ready-made, so no antialiased Resize sits in them (TensorRT cannot build one)."""
        return F.interpolate(x, size=self.cfg.cmn_size, mode="area")

    def _tokens(self, x: Tensor, embed: nn.Module, pos: Tensor) -> Tensor:
        return embed(x).flatten(2).transpose(1, 2) + pos

    # -- the flash half (cached) -----------------------------------------------------------------------------
    def flash_prior(self, flash: Tensor, flash_trimap: Tensor) -> Tensor:
        """Flash frame (B, 3, h, w) in [0,1] and one-hot flash trimap (B, 3, h, w) [bg, unknown, fg], both at the
        CMN grid (:meth:`to_cmn`) -> the flash encoder's input (B, 6, h, w): normalised RGB, then the trimap."""
        return torch.cat([self._normalize(flash), flash_trimap], dim=1)

    def encode_flash(self, flash: Tensor, flash_trimap: Tensor) -> Tensor:
        """Inputs as :meth:`flash_prior` -> flash tokens T^f (B, N, C') with N = (h/16)(w/16)."""
        return self.encode_prior(self.flash_prior(flash, flash_trimap))

    def encode_prior(self, x: Tensor) -> Tensor:
        """(B, 6, h, w) from :meth:`flash_prior` -> T^f (B, N, C')."""
        feats = self.flash_encoder(x)
        z = self._tokens(self.flash_aspp(feats[-1]), self.flash_embed, self.flash_pos)
        for layer in self.flash_layers:
            z = layer(z)
        return self.flash_norm(z)

    # -- the per-frame half --------------------------------------------------------------------------------
    def forward_frame(
        self, frame: Tensor | None, frame_cmn: Tensor, flash_tokens: Tensor, person_mask: Tensor | None = None,
        flash_prior: Tensor | None = None, guidance: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """No-flash frame (B, 3, H, W) in [0,1] and the same at the CMN grid (B, 3, h, w) (:meth:`to_cmn`),
        cached T^f (B, N, C'), optional person mask (B, 1, h', w'),
        cached flash prior (B, 6, h, w) (models with ``flash_prior``), guidance one-hot (B, 3, h, w)
        [bg, unknown, fg] at the CMN grid (models with ``guidance``) -> dict with CMN-resolution outputs
        ``trimap_logits`` (B,3,h,w), ``detail_c`` (B,1,h,w), ``alpha_c`` (B,1,h,w), ``fg_c`` (B,3,h,w) (at
        (h/2, w/2) for the ``half`` decoder) and
        full-resolution ``trimap_up`` (B,3,H,W), ``detail`` (B,1,H,W), ``alpha`` (B,1,H,W), ``fg`` (B,3,H,W).
        With ``guidance`` both alphas are the network's only inside the guidance's unknown region.
        ``guided`` models also return the guided filter's ``coef_a`` / ``coef_b`` (B,4,h,w) (at the coarse outputs'
        grid), and with ``frame`` None stop there (no full-resolution outputs): the frame graph's end, applied by
        the engine."""
        cfg = self.cfg
        if frame is None and cfg.refine != "guided":
            raise ValueError("only guided-refinement models can stop at the CMN grid (frame=None)")
        if cfg.guidance and guidance is None:
            raise ValueError("this model was configured with guidance=True and needs the guidance trimap")
        if cfg.person_mask and person_mask is None:
            raise ValueError("this model was configured with person_mask=True and needs a person mask")
        img_c = frame_cmn
        x = self._normalize(img_c)
        mask_c: Tensor | None = None
        if cfg.person_mask:
            assert person_mask is not None
            mask_c = F.interpolate(person_mask, size=cfg.cmn_size, mode="bilinear", align_corners=False)
            x = torch.cat([x, mask_c], dim=1)
        if cfg.flash_prior:
            if flash_prior is None:
                raise ValueError("this model was configured with flash_prior=True and needs the cached flash prior")
            x = torch.cat([x, flash_prior], dim=1)
        if cfg.guidance:
            assert guidance is not None
            x = torch.cat([x, guidance], dim=1)
        s2, s4, s8, _, deep = self.noflash_encoder(x)

        x_nf = self.noflash_aspp(deep)
        z = self._tokens(x_nf, self.noflash_embed, self.noflash_pos)
        for layer in self.noflash_layers:
            z = layer(z, flash_tokens)
        b, _, e = z.shape
        z_map = z.transpose(1, 2).reshape(b, e, x_nf.shape[2], x_nf.shape[3])
        feat = self.cbam(x_nf + self.unembed(z_map))

        h4 = self.trimap_groups[1](self.trimap_groups[0](feat, s8), s4)
        if cfg.decoder == "half":
            # Every coarse output at 1/2 of the grid (B, C, h/2, w/2); so is the image the filter is guided by.
            img_c = F.avg_pool2d(img_c, 2)
        trimap_logits = resize_to(self.trimap_head(h4), img_c)
        probs = torch.softmax(trimap_logits, dim=1)

        if cfg.decoder == "half":
            skip = torch.cat([s2, img_c], dim=1)
            h = self.detail_groups[0](s8, s4)
            detail_feat = self.detail_groups[1](torch.cat([h, resize_to(probs, h)], dim=1), skip)
            detail_c = torch.sigmoid(self.detail_head(detail_feat))
            h = feat
            for group, sk in zip(self.fg_groups, (s8, s4, skip), strict=True):
                h = group(h, sk)
            fg_feat = h
            fg_c = (img_c + self.fg_head(fg_feat)).clamp(0.0, 1.0)
        elif cfg.decoder == "shared":
            h = self.shared_groups[0](torch.cat([h4, resize_to(probs, h4)], dim=1), s2)
            fg_feat = detail_feat = self.shared_groups[1](h, img_c)
            head = self.shared_head(fg_feat)
            detail_c = torch.sigmoid(head[:, :1])
            fg_c = (img_c + head[:, 1:]).clamp(0.0, 1.0)
        else:
            h = self.detail_groups[0](s8, s4)
            h = torch.cat([h, resize_to(probs, h)], dim=1)
            h = self.detail_groups[1](h, s2)
            detail_feat = self.detail_groups[2](h, img_c)
            detail_c = torch.sigmoid(self.detail_head(detail_feat))

            h = feat
            for group, skip in zip(self.fg_groups, (s8, s4, s2, img_c), strict=True):
                h = group(h, skip)
            fg_feat = h
            fg_c = (img_c + self.fg_head(fg_feat)).clamp(0.0, 1.0)
        alpha_c = detail_c * probs[:, 1:2] + probs[:, 2:3]
        if guidance is not None and cfg.guidance:
            # At half the grid the guidance is area-averaged: a pixel all of whose four are certain stays so.
            alpha_c = compose_guidance(alpha_c, guidance if cfg.decoder != "half" else F.avg_pool2d(guidance, 2))

        coarse = {"trimap_logits": trimap_logits, "detail_c": detail_c, "alpha_c": alpha_c, "fg_c": fg_c}
        if cfg.refine == "guided":
            coef_a, coef_b = self.guided.coefficients(img_c, torch.cat([fg_c, alpha_c], dim=1), fg_feat)
            coarse |= {"coef_a": coef_a, "coef_b": coef_b}
            if frame is None:
                return coarse
        assert frame is not None
        trimap_up = resize_to(trimap_logits, frame)
        if cfg.refine == "bmn":
            full_in = self._normalize(frame)
            if mask_c is not None:
                full_in = torch.cat([full_in, resize_to(mask_c, frame)], dim=1)
            stem = self.noflash_encoder.stem(full_in)
            detail = torch.sigmoid(self.bmn_detail(detail_feat, stem, frame))
            fg = (frame + self.bmn_fg(fg_feat, stem, frame)).clamp(0.0, 1.0)
            probs_up = torch.softmax(trimap_up, dim=1)
            alpha = detail * probs_up[:, 1:2] + probs_up[:, 2:3]
        else:
            fg, alpha = self.guided.upsample(frame, coarse["coef_a"], coarse["coef_b"])
            fg, alpha = fg.clamp(0.0, 1.0), alpha.clamp(0.0, 1.0)
            detail = alpha
        if guidance is not None and cfg.guidance:
            alpha = compose_guidance(alpha, guidance)
        return coarse | {
            "trimap_up": trimap_up,
            "detail": detail,
            "alpha": alpha,
            "fg": fg,
        }

    def forward(
        self, noflash: Tensor, flash: Tensor, flash_trimap: Tensor, person_mask: Tensor | None = None,
        guidance: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """End to end (training, first frame): both halves. noflash, flash and flash_trimap (B, 3, H, W) at full
        resolution (brought to the CMN grid here, as the engine does before the graphs); the rest as in
        :meth:`forward_frame`."""
        prior = self.flash_prior(self.to_cmn(flash), self.to_cmn(flash_trimap))
        return self.forward_frame(noflash, self.to_cmn(noflash), self.encode_prior(prior), person_mask,
                                  prior if self.cfg.flash_prior else None, guidance)


class FlashGraph(nn.Module):
    """Export wrapper of the cached half: (flash, flash_trimap) at the CMN grid -> flash_features[, flash_prior]."""

    def __init__(self, net: FNFNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, flash: Tensor, flash_trimap: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        prior = self.net.flash_prior(flash, flash_trimap)
        tokens = self.net.encode_prior(prior)
        return (tokens, prior) if self.net.cfg.flash_prior else tokens


class FrameGraph(nn.Module):
    """Export wrapper of the per-frame half: (frame, frame_cmn, flash_features[, person_mask][, flash_prior]
    [, guidance]) -> (alpha, foreground) at the frame's size; ``guided`` models take no full-resolution frame
    (None) and end at the guided filter's coefficients (coef_a, coef_b) at the CMN grid."""

    def __init__(self, net: FNFNet) -> None:
        super().__init__()
        self.net = net

    def forward(
        self, frame: Tensor | None, frame_cmn: Tensor, flash_features: Tensor, person_mask: Tensor | None = None,
        flash_prior: Tensor | None = None, guidance: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        out = self.net.forward_frame(frame, frame_cmn, flash_features, person_mask, flash_prior, guidance)
        if frame is None:
            return out["coef_a"], out["coef_b"]
        return out["alpha"], out["fg"]


def build_model(cfg: FNFConfig) -> FNFNet:
    """A randomly initialised FNFNet (no pretrained download; seeds are the caller's)."""
    return FNFNet(cfg)
