"""Model configurations: the paper's FNFNet and the real-time `lite` variant."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from cuematte.engine.cues.guidance import GUIDANCE_BANDS
from cuematte.engine.graphspec import coef_grid
from cuematte.engine.model import REMOVED_SWITCHES, removed_switches_message

Refine = Literal["bmn", "guided"]
Decoder = Literal["split", "shared", "half"]


@dataclass(frozen=True)
class FNFConfig:
    """Hyper-parameters of a flash/no-flash matting network.

    The CMN works at the fixed resolution ``cmn_size`` (H, W); the per-frame graph accepts any frame size,
    resizes it to ``cmn_size`` internally and refines back to the frame's own resolution.
    """

    name: str
    backbone: str  # timm model name, created with features_only=True and no pretrained weights
    cmn_size: tuple[int, int]  # (H, W) of the coarse network; multiples of 16
    aspp_channels: int
    aspp_dilations: tuple[int, ...] = (3, 6, 9)
    embed_dim: int = 256  # C' of the FCM token space
    heads: int = 8
    flash_layers: int = 2  # L_f self-attention layers -> T^f
    noflash_layers: int = 2  # L_nf cross-attention layers (queries no-flash, keys/values T^f)
    mlp_ratio: float = 2.0
    trimap_channels: tuple[int, int] = (128, 64)  # D_trimap: 2 Conv-BN-ReLU groups
    detail_channels: tuple[int, int, int] = (64, 32, 32)  # D_detail: 3 groups
    fg_channels: tuple[int, int, int, int] = (128, 64, 32, 32)  # D_foreground: 4 groups
    refine: Refine = "bmn"  # paper BMN (full-res convs) or a guided-filter upsampler (cheap)
    # "split": the paper's three decoders. "shared": one trunk for all three (live speed, issue 23): the trimap
    # decoder's two groups (``trimap_channels``) continue, with the trimap probabilities joined, through two
    # more groups (``shared_channels``, at 1/2 and 1/1 of the CMN grid) into one head for detail and foreground.
    # The paper's decoders spend 70 % of the per-frame graph's FLOPs at 1/2 and 1/1 of the grid, twice over.
    # "half": the paper's three decoders, stopped at 1/2 of the grid (the frame at that size joins their last
    # shortcut); the guided filter's coefficients come from there, so no convolution runs at the full grid.
    decoder: Decoder = "split"
    # "half" only: the decoders' groups at 1/2 of the grid are depthwise-separable (UpGroup(separable=True)); with
    # the frame and the stem's shortcut joined there they were over a quarter of the per-frame graph's time.
    separable_half: bool = False
    shared_channels: tuple[int, int] = (16, 16)
    bmn_channels: tuple[int, int] = (32, 16)  # half-res and full-res widths of BMN
    person_mask: bool = False  # per-frame graph takes a segmenter person mask as a 4th input channel
    # The flash half also caches its own input at the CMN grid (normalised flash RGB + trimap, 6 channels) and
    # the per-frame encoder takes it as extra input channels: the flash cue reaches every pixel from the first
    # conv on, not only through the 1/16-resolution cross-attention (which lite, trained from scratch, barely uses).
    flash_prior: bool = False
    # Not weights but how the flash inputs are prepared: warped into the no-flash frame's geometry by the
    # subject's own motion (cuematte.engine.cues.align.estimate_subject_warp), so the cached prior lies on the person.
    align_flash: bool = False
    # The per-frame graph takes the engine's guidance trimap at the CMN grid (cuematte.engine.cues.guidance: the
    # segmenter's confident person and background, less where the flash contradicts it) as three more input
    # channels, and its alpha replaces the guidance only where the guidance is unknown: pixels the real-data
    # cues are sure of come out exactly 0 or 1, whatever the network learnt from rendered people.
    guidance: bool = False
    # The guidance's unknown band inside the segmenter's confident person and inside its confident background,
    # as fractions of the CMN grid's short side (cuematte.engine.cues.guidance.GuidanceParams.inner / outer).
    guidance_bands: tuple[float, float] = GUIDANCE_BANDS
    # Once the flash located the subject, certain background needs the flash to agree with the segmenter
    # (GuidanceParams.confirm_background): where the flash cannot say, the network may add to the person.
    guidance_confirm_bg: bool = False
    # Pockets the certain person encloses, where the segmenter is nowhere sure of background, are certain person
    # too (GuidanceParams.fill_pockets): hair over a forehead that MediaPipe is unsure of.
    guidance_fill_pockets: bool = False
    norm_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    norm_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    stride: int = field(default=16, init=False)  # encoder output stride (timm output_stride)

    @property
    def coef_grid(self) -> tuple[int, int]:
        """(h, w) of the coarse outputs and the guided filter's coefficients: the CMN grid, or half of it."""
        return coef_grid(self.cmn_size, self.decoder)

    @property
    def token_grid(self) -> tuple[int, int]:
        """(h, w) of the FCM token grid: ``cmn_size / stride``."""
        return self.cmn_size[0] // self.stride, self.cmn_size[1] // self.stride

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("stride")
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FNFConfig:
        # Switches no shipped model used were removed (a git tag keeps each); a checkpoint that left them off
        # loads as before, one that turned them on names what it needs.
        on = [k for k in REMOVED_SWITCHES if d.get(k)]
        if on:
            raise ValueError(f"this model uses {removed_switches_message(on)}")
        d = {k: v for k, v in d.items() if k not in REMOVED_SWITCHES}
        tuples = {k: tuple(v) for k, v in d.items() if isinstance(v, list)}
        return cls(**{**d, **tuples})

    def validate(self) -> None:
        h, w = self.cmn_size
        if h % self.stride or w % self.stride:
            raise ValueError(f"cmn_size {self.cmn_size} must be a multiple of {self.stride}")
        if self.embed_dim % self.heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by heads {self.heads}")
        if self.guidance and not (self.person_mask and self.flash_prior):
            raise ValueError("guidance is built from the segmenter's person mask and the cached flash prior's "
                             "trimap: set person_mask and flash_prior")
        if self.decoder in ("shared", "half") and self.refine != "guided":
            raise ValueError(f"the {self.decoder} decoder feeds the guided-filter upsampler: set refine = 'guided'")
        if self.separable_half and self.decoder != "half":
            raise ValueError("separable_half changes the half decoder's last groups: set decoder = 'half'")
        if (self.guidance_confirm_bg or self.guidance_fill_pockets) and not self.guidance:
            raise ValueError("guidance_confirm_bg / guidance_fill_pockets change how the guidance is built: "
                             "set guidance")

    @property
    def prior_channels(self) -> int:
        """Channels of the flash half's input and cached prior: flash RGB, trimap one-hot."""
        return 6



# The paper: two non-shared ResNet-50 encoders, ASPP 3/6/9, L_f = L_nf = 2, BMN to full resolution.
# c = 0.25 of 1280x720 is 320x180; 176 keeps the grid a multiple of the stride.
PAPER = FNFConfig(
    name="paper",
    backbone="resnet50",
    cmn_size=(176, 320),
    aspp_channels=256,
    embed_dim=256,
    heads=8,
    refine="bmn",
)

# Real-time: MobileNetV3-small encoders, a 144x256 CMN (144 tokens) and a guided-filter upsampler, so the
# full-resolution work per frame is two bilinear upsamplings and a multiply-add.
LITE = FNFConfig(
    name="lite",
    backbone="mobilenetv3_small_100",
    cmn_size=(144, 256),
    aspp_channels=64,
    embed_dim=64,
    heads=4,
    trimap_channels=(48, 32),
    detail_channels=(32, 24, 16),
    fg_channels=(48, 32, 24, 16),
    refine="guided",
)

# `lite` with its decoders stopped at 1/2 of the grid (72x128), where the guided filter takes over: the full-grid
# groups, heads and softmax were half of the per-frame graph's time (issue 23).
LITE_HALF = replace(LITE, name="lite-half", decoder="half")
# `lite-half` with depthwise-separable groups at 1/2 of the grid (issue 23: 640x360 at RVM's cost).
LITE_HALF_SEP = replace(LITE_HALF, name="lite-half-sep", separable_half=True)
# `lite` with one shared decoder trunk (1.0 instead of 1.9 GFLOP per frame at 640x360).
LITE_SHARED = replace(LITE, name="lite-shared", decoder="shared")
# The same trunk half again as wide at 1/2 of the grid, where lite-shared lost detail in hair (docs/engine.md).
LITE_SHARED_24 = replace(LITE_SHARED, name="lite-shared-24", shared_channels=(24, 16))

CONFIGS: dict[str, FNFConfig] = {"paper": PAPER, "lite": LITE, "lite-half": LITE_HALF,
                                 "lite-half-sep": LITE_HALF_SEP, "lite-shared": LITE_SHARED,
                                 "lite-shared-24": LITE_SHARED_24}


def get_config(name: str, *, person_mask: bool | None = None, flash_prior: bool | None = None,
               align_flash: bool | None = None, guidance: bool | None = None,
               guidance_confirm_bg: bool | None = None) -> FNFConfig:
    """Look a named config up; ``person_mask`` / ``flash_prior`` / ``align_flash`` / ``guidance`` /
    ``guidance_confirm_bg`` override those switches."""
    try:
        cfg = CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown config {name!r}; choose one of {sorted(CONFIGS)}") from None
    if person_mask is not None:
        cfg = replace(cfg, person_mask=person_mask)
    if flash_prior is not None:
        cfg = replace(cfg, flash_prior=flash_prior)
    if align_flash is not None:
        cfg = replace(cfg, align_flash=align_flash)
    if guidance is not None:
        cfg = replace(cfg, guidance=guidance)
    if guidance_confirm_bg is not None:
        cfg = replace(cfg, guidance_confirm_bg=guidance_confirm_bg)
    return cfg
