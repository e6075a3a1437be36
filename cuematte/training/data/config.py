"""Configuration of the procedural flash/no-flash compositor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FlashKind = Literal["torch", "screen"]
BackgroundKind = Literal["indoor", "texture", "photo"]


@dataclass(frozen=True)
class SynthConfig:
    """Everything a sample's distribution depends on; samples are a pure function of (seed, config).

    Probabilities are per sample. Motions are fractions of the frame width W unless named ``*_px``.
    """

    size: tuple[int, int] = (288, 512)  # (H, W)
    # Dynamic background between the flash and the no-flash frame; the paper keeps pairs static w.p. 0.4.
    p_dynamic: float = 0.6
    p_second_person: float = 0.2  # a small, far person in the background (never in the alpha)
    # Background kinds and their relative weights (photo falls back to indoor when skimage is missing).
    bg_weights: tuple[tuple[BackgroundKind, float], ...] = (
        ("indoor", 0.6),
        ("texture", 0.15),
        ("photo", 0.25),
    )
    # Flash kinds and weights: a phone torch (warm/white, strong, off-axis) or the screen going white.
    flash_weights: tuple[tuple[FlashKind, float], ...] = (("torch", 0.55), ("screen", 0.45))
    # Source power (irradiance at 1 m, in units of a bright office's ambient light), log-uniform; the
    # flash-to-ambient ratio on the subject follows from the room's light and the subject's distance (a dim
    # room gets a strong flash effect), clipped to the ratio ranges.
    torch_power: tuple[float, float] = (0.08, 0.8)
    screen_power: tuple[float, float] = (0.02, 0.25)
    torch_ratio: tuple[float, float] = (0.35, 8.0)
    screen_ratio: tuple[float, float] = (0.15, 2.5)
    person_depth_m: tuple[float, float] = (0.5, 1.2)
    background_depth_m: tuple[float, float] = (1.5, 6.0)  # log-uniform; walls under 2 m show the shadow
    # The paper's pseudo flash (gamma on V of the foreground, gamma in [0.2, 0.5]) instead of the physical
    # model: always when ``pseudo_flash``, else with probability ``p_pseudo_flash``.
    pseudo_flash: bool = False
    p_pseudo_flash: float = 0.1
    pseudo_gamma: tuple[float, float] = (0.2, 0.5)
    # Sensor: noise scales multiply the physical shot/read model (0 disables noise).
    noise_scale: float = 1.0
    p_jpeg: float = 0.3
    jpeg_quality: tuple[int, int] = (55, 95)
    # Motion between the flash and the no-flash frame.
    person_shift: float = 0.02  # x W: max person translation
    person_rot_deg: float = 3.0
    person_scale: float = 0.03
    camera_shake: float = 0.006  # x W: max global shift (camera shake)
    auto_exposure: tuple[float, float] = (0.0, 0.6)  # how much AE compensates the flash (0 = locked)
    # Person prior (imitation of an off-the-shelf segmenter).
    p_prior_miss_hand: float = 0.3
    p_prior_second_person: float = 0.5  # given a second person is present
    # Subjects dressed in the background's colours/textures (cuematte/training/data/camouflage.py), drawn from their own
    # stream, so every other draw of a sample is the same at any value; 0 keeps the evaluation splits as they are.
    p_camouflage: float = 0.0
    # Session drift: T^f is cached once, and the subject then wanders (clips: SequenceConfig). A share p_drift
    # of pairs takes the flash, and a no-flash reference with it (what ``set_flash`` sees), with the subject at a
    # far point of such a walk; the frame to matte stays as it was. Own stream, like camouflage.
    p_drift: float = 0.0
    drift_shift: float = 0.12  # x W, horizontal; vertical is 0.3 of it, as in SequenceConfig
    drift_rot_deg: float = 6.0
    drift_scale: float = 0.08
    # Photographic effects (cuematte/training/data/realism.py: real fur texture and flyaway strands in the hair, a
    # key light, motion blur, a webcam's softness and compression). Own stream, like camouflage; 0 keeps the
    # evaluation splits as they are.
    p_realism: float = 0.0


@dataclass(frozen=True)
class SequenceConfig:
    """Motion of a rendered clip, in pixels of W per clip and degrees."""

    person_travel: float = 0.12  # x W: amplitude of the subject's wandering
    person_rot_deg: float = 6.0
    person_scale: float = 0.08
    camera_pan: float = 0.02  # x W: slow background pan amplitude


ParallaxMotion = Literal["depth", "affine"]


@dataclass(frozen=True)
class ParallaxConfig:
    """Per-layer motion between the two views (the parallax-matting paper's augmentation).

    ``motion="depth"``: a virtual camera move (translation in metres, small rotation) and the two layers' depths
    give each layer's motion, so the near subject moves more than the far background (parallax ~ 1 / depth).
    ``motion="affine"``: the paper's independent random affines (``fg_shift`` ... ``scale``); with
    ``p_hist_match=0`` it renders the pairs made before the depth mode, bit for bit.
    """

    fg_shift: float = 0.04  # x W  (affine mode)
    bg_shift: float = 0.02  # x W  (affine mode)
    rot_deg: float = 3.0  # (affine mode)
    scale: float = 0.04  # (affine mode)
    motion_noise_px: float = 10.0  # noise of the reported (estimated) affines: the paper's ~10 px
    elastic_px: float = 1.5  # small non-rigid foreground motion (hair, breathing)
    motion: ParallaxMotion = "depth"
    # Depth mode. The subject's depth is the sample's person depth (SynthConfig.person_depth_m); the background is
    # a fronto-parallel plane at a log-uniform depth.
    bg_depth_m: tuple[float, float] = (2.0, 8.0)
    # Sideways camera travel (baseline, m), in a random direction, its vertical part scaled by ``baseline_vertical``
    # (a hand-held phone or a swaying laptop user moves sideways more than up and down).
    baseline_m: tuple[float, float] = (0.01, 0.05)
    baseline_vertical: float = 0.5
    dolly_m: float = 0.03  # max |tz|: towards / away from the scene
    cam_rot_deg: tuple[float, float, float] = (1.0, 1.0, 2.0)  # max |pitch|, |yaw|, |roll|; shared by both layers
    subject_sway: float = 0.004  # x W: the subject's own small rigid shift between the views
    # The paper matches the foreground's colours to the background's for half of its composites (harder, closer
    # to real scenes whose subject resembles the room); the same mapping is applied to both views.
    p_hist_match: float = 0.5


# Shared defaults (configs are frozen, so one instance can serve as every default argument).
DEFAULT_CONFIG = SynthConfig()
DEFAULT_SEQUENCE = SequenceConfig()
DEFAULT_PARALLAX = ParallaxConfig()
