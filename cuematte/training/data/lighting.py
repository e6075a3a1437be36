"""Light transport: ambient shading of the subject, and the flash as a point (phone torch) or area (screen)
source near the camera.

Flash irradiance on a surface at distance d, normal n: ``E = P * max(n.l, 0) * beam / (d^2 + c)`` with l the
direction to the source, ``beam`` the torch's off-axis falloff and ``c`` a wide source's near-field softening
(zero for a torch). What the camera sees under the flash is ``albedo * (ambient + E * tint)`` plus specular
reflections: a broad sheen on skin and mirror-like glints on glasses, eyes, mugs and phones.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cuematte.training.data.color import F32, kelvin_rgb
from cuematte.training.data.config import FlashKind, SynthConfig
from cuematte.training.data.fastops import outer
from cuematte.training.data.layers import blur, blur_fast
from cuematte.training.data.person import Glint


@dataclass(frozen=True)
class Ambient:
    """The room light as the subject receives it."""

    level: float  # overall irradiance (1 = bright office)
    tint: F32  # (3,) linear colour, green = 1
    direction: F32  # (3,) unit, toward the dominant source (z toward the camera)
    wrap: float  # share of diffuse, direction-less light


@dataclass(frozen=True)
class Flash:
    kind: FlashKind
    tint: F32  # (3,) linear colour, green = 1
    power: float  # irradiance at 1 m, frontal, in ambient units
    offset: tuple[float, float]  # source position relative to the lens, metres (x right, y down)
    beam: float  # torch beam falloff exponent on cos(off-axis angle); 0 for the screen
    size: float  # source size (m): sets shadow penumbrae and specular spread
    soft: float  # near-field term c (m^2) of a wide source


def sample_ambient(rng: np.random.Generator) -> Ambient:
    level = float(np.exp(rng.uniform(np.log(0.08), np.log(1.2))))
    tint = kelvin_rgb(float(rng.uniform(2700, 7000)))
    # People face their screen, and usually the room's light too: mostly frontal, from above or a side.
    d = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.2), rng.uniform(0.5, 1.0)], np.float32)
    return Ambient(level=level, tint=tint, direction=d / np.linalg.norm(d), wrap=float(rng.uniform(0.3, 0.7)))


def sample_flash(rng: np.random.Generator, cfg: SynthConfig, person_depth: float, ambient: Ambient) -> Flash:
    kinds = [k for k, _ in cfg.flash_weights]
    weights = np.array([w for _, w in cfg.flash_weights], np.float64)
    kind: FlashKind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    if kind == "torch":
        (lo, hi), (p_lo, p_hi) = cfg.torch_ratio, cfg.torch_power
        tint = kelvin_rgb(float(rng.uniform(4200, 6500)))
        # The phone's LED sits a few cm from its lens; a phone held up beside a laptop can be further off.
        offset = (float(rng.normal(0, 0.06)), float(rng.normal(-0.02, 0.05)))
        beam, size, soft = float(rng.uniform(1, 5)), 0.004, 0.0
    else:
        (lo, hi), (p_lo, p_hi) = cfg.screen_ratio, cfg.screen_power
        tint = kelvin_rgb(float(rng.uniform(6500, 9000)))
        offset = (0.0, float(rng.uniform(0.08, 0.18)))  # the screen's centre is below the webcam
        beam, size, soft = 0.0, float(rng.uniform(0.25, 0.4)), float(rng.uniform(0.02, 0.06))
    # A source power, then the flash-to-ambient ratio it gives on the subject, kept in the configured range.
    power = float(np.exp(rng.uniform(np.log(p_lo), np.log(p_hi))))
    ratio = float(np.clip(power / (ambient.level * (person_depth**2 + soft)), lo, hi))
    power = ratio * ambient.level * (person_depth**2 + soft)
    return Flash(kind=kind, tint=tint, power=power, offset=offset, beam=beam, size=size, soft=soft)


def shade_ambient(normal: F32, amb: Ambient) -> F32:
    """(H, W, 3) the subject's ambient irradiance from its normals (H, W, 3)."""
    d = amb.direction
    ndl = np.maximum(normal[..., 0] * d[0] + normal[..., 1] * d[1] + normal[..., 2] * d[2], 0.0)
    s = amb.wrap + (1 - amb.wrap) * ndl
    return outer(s.astype(np.float32), amb.level * amb.tint)


def _rays(h: int, w: int, focal: float, cx: float, cy: float) -> tuple[F32, F32]:
    xs = ((np.arange(w, dtype=np.float32) - cx) / focal)[None, :]
    ys = ((np.arange(h, dtype=np.float32) - cy) / focal)[:, None]
    return xs, ys


def flash_irradiance(
    flash: Flash,
    depth: F32,
    focal: float,
    *,
    normal: F32 | None = None,
    facing: F32 | None = None,
    centre: tuple[float, float] | None = None,
) -> F32:
    """(H, W) irradiance from the flash on surfaces at ``depth`` (H, W) metres.

    Give ``normal`` (H, W, 3) for a shaded subject, or ``facing`` (H, W) (cosine to the camera) for walls.
    ``centre`` is the principal point (defaults to the image centre).
    """
    h, w = depth.shape
    cx, cy = centre if centre is not None else (w / 2, h / 2)
    xs, ys = _rays(h, w, focal, cx, cy)
    bx, by = flash.offset
    lx, ly, lz = bx - xs * depth, by - ys * depth, depth  # surface -> source, z toward the camera
    d2 = lx * lx + ly * ly + lz * lz
    inv = 1 / np.sqrt(d2)
    if normal is not None:
        cos = np.maximum((normal[..., 0] * lx + normal[..., 1] * ly + normal[..., 2] * lz) * inv, 0)
    else:
        cos = facing if facing is not None else np.ones_like(depth)
    e = flash.power * cos / (d2 + flash.soft)
    if flash.beam > 0:  # off-axis falloff of the torch's beam
        e = e * (lz * inv) ** flash.beam
    return e.astype(np.float32)


def skin_specular(flash: Flash, normal: F32, irradiance: F32, strength: F32) -> F32:
    """(H, W) Blinn-Phong sheen (the source is next to the lens, so the half vector ~ the view axis)."""
    nz = np.clip(normal[..., 2], 0, 1)
    shininess = 25.0 if flash.kind == "torch" else 8.0  # a big screen gives broad, dim highlights
    return (strength * irradiance * nz**shininess).astype(np.float32)


def draw_glints(flash: Flash, glints: list[Glint], h: int, w: int, focal: float, depth: float) -> F32:
    """(H, W) mirror reflections of the source: small dots for a torch, soft rectangles for a screen."""
    out = np.zeros((h, w), np.float32)
    if not glints:
        return out
    bx, by = flash.offset
    for g in glints:
        # The reflection sits between the glint's centre and the side the source is on.
        x = g.x + np.clip(bx / depth, -0.5, 0.5) * g.r
        y = g.y + np.clip(by / depth, -0.5, 0.5) * g.r
        if flash.kind == "torch":
            r = max(0.6, g.r * 0.18)
            cv2.circle(out, (round(x * 16), round(y * 16)), round(r * 16), g.strength, -1, cv2.LINE_AA, 4)
        else:
            rw, rh = g.r * 0.55, g.r * 0.35
            cv2.rectangle(out, (int(x - rw), int(y - rh)), (int(x + rw), int(y + rh)), g.strength * 0.5, -1)
    return blur(out, 0.7)


def cast_shadow(alpha: F32, flash: Flash, person_depth: float, wall_depth: float, focal: float) -> F32:
    """(H, W) how much of the flash the subject (alpha in frame coordinates) hides from the background.

    A point at depth d_p casts its shadow on a plane at d_b displaced by f * b * (1/d_b - 1/d_p) (away from
    the source offset b), with a penumbra ~ f * size * (d_b - d_p) / (d_p * d_b).
    """
    if wall_depth <= person_depth:
        return np.zeros_like(alpha)
    k = focal * (1 / wall_depth - 1 / person_depth)
    dx, dy = flash.offset[0] * k, flash.offset[1] * k
    m = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    h, w = alpha.shape
    shifted = np.asarray(
        cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), np.float32
    )
    penumbra = focal * flash.size * (wall_depth - person_depth) / (person_depth * wall_depth)
    return np.clip(blur_fast(shifted, max(0.8, penumbra * 0.5)), 0, 1)
