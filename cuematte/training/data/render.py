"""Rendering samples: flash/no-flash pairs, clips with a flash frame first, and two-view parallax pairs.

A sample is a pure function of (seed, config). The seed spawns independent streams (person, background,
dynamics, light, motion, camera, noise, prior), so each part's randomness is its own.

Light is linear until the camera: the subject's radiance is ``albedo * ambient shading`` (+ ``albedo * E *
tint`` + specular under the flash), the background's ``albedo * ambient + emission`` (+ flash, minus the
subject's shadow); the camera gains (exposure, white balance, vignetting) and tone-maps foreground and
background separately, and frames are composited in display space, so ``noflash = alpha * foreground +
(1 - alpha) * background`` holds exactly before noise, quantisation and JPEG.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from cuematte.training.data import camera as camlib
from cuematte.training.data import realism
from cuematte.training.data.background import BgMaps, build_background
from cuematte.training.data.camouflage import camouflage_albedo
from cuematte.training.data.color import F32
from cuematte.training.data.config import (
    DEFAULT_CONFIG,
    DEFAULT_PARALLAX,
    DEFAULT_SEQUENCE,
    ParallaxConfig,
    SequenceConfig,
    SynthConfig,
)
from cuematte.training.data.dynamics import MAX_PAN, MAX_ZOOM, BgScene, make_events
from cuematte.training.data.fastops import expand, max3, outer, scale
from cuematte.training.data.layers import blur
from cuematte.training.data.lighting import (
    Ambient,
    Flash,
    cast_shadow,
    draw_glints,
    flash_irradiance,
    sample_ambient,
    sample_flash,
    shade_ambient,
    skin_specular,
)
from cuematte.training.data.motion import (
    Affine,
    compose,
    corner_noise,
    elastic,
    random_affine,
    remap,
    similarity,
    smooth_path,
)
from cuematte.training.data.motion import warp as warp_affine
from cuematte.training.data.person import PersonLayer, build_person
from cuematte.training.data.prior import person_prior
from cuematte.training.data.realism import Realism, draw_realism
from cuematte.training.data.samples import FlashSample, FlashSequence, ParallaxSample
from cuematte.training.data.seeds import streams

FOCAL = 0.7  # focal length / frame width: a ~70 degree horizontal field of view, typical of webcams
# Append new streams at the end: SeedSequence.spawn(n) gives the same first children for any n, so a new stream
# leaves every existing sample as it was.
_STREAMS = (
    "person", "background", "dynamics", "light", "motion", "camera", "noise", "prior", "extra", "camouflage",
    "drift", "parallax", "realism",
)


@dataclass
class _Setup:
    """Everything fixed for one sample: subject, scene, lights, camera."""

    h: int
    w: int
    focal: float
    rng: dict[str, np.random.Generator]
    person: PersonLayer
    person_depth: float
    scene: BgScene
    ambient: Ambient
    flash: Flash
    cam: camlib.Camera
    fg_ambient: F32  # (H, W, 3) the subject's linear radiance under ambient light
    defocus: float
    meta: dict[str, Any]
    realism: Realism | None = None  # photographic effects (SynthConfig.p_realism)
    bg_cache: dict[float | None, tuple[BgMaps, F32]] = field(default_factory=dict)

    @property
    def person_centre(self) -> tuple[float, float]:
        """Pivot of the subject's motion: below the head, where the body turns."""
        ys, xs = np.nonzero(self.person.alpha[::4, ::4] > 0.5)
        if len(xs) == 0:
            return self.w / 2, self.h * 0.8
        return float(np.median(xs) * 4), float(min(self.h, np.percentile(ys, 80) * 4))


@dataclass
class _Layers:
    """One frame before the camera: alpha (H, W), linear foreground and background radiance (H, W, 3)."""

    alpha: F32
    fg: F32
    bg: F32
    people: F32  # (H, W) background people's coverage


def _margin(cfg: SynthConfig, extra_pan: float = 0.0) -> int:
    """Canvas margin (px) covering camera shake, the background's pan and zoom, and an extra pan (x W)."""
    w = cfg.size[1]
    reach = cfg.camera_shake * 1.5 + MAX_PAN + extra_pan + MAX_ZOOM * 0.6 + 0.003  # 0.003: shake rotation
    return int(np.ceil(w * reach)) + 4


def _setup(seed: int, cfg: SynthConfig, margin: int, dynamic: bool | None) -> _Setup:
    h, w = cfg.size
    rng = dict(zip(_STREAMS, streams(seed, len(_STREAMS)), strict=True))
    focal = FOCAL * w
    person = build_person(rng["person"], h, w)
    lo, hi = cfg.person_depth_m
    person_depth = float(rng["light"].uniform(lo, hi))
    maps, info = build_background(rng["background"], h + 2 * margin, w + 2 * margin, cfg, focal, person_depth)
    if info.wall_depth <= person_depth + 0.3:  # the wall stays behind the subject
        info.wall_depth = person_depth + 0.3
        maps.depth = np.maximum(maps.depth, np.float32(person_depth + 0.3))
    camo = rng["camouflage"]
    if camo.random() < cfg.p_camouflage:
        person.albedo, kind = camouflage_albedo(camo, person.albedo, person.alpha, maps.albedo)
        person.meta["camouflage"] = kind
    real_rng = rng["realism"]
    real = draw_realism(real_rng, w) if real_rng.random() < cfg.p_realism else None
    if real is not None:
        if real.hair_texture is not None:
            realism.hair_texture(real_rng, person, real.hair_texture)
        if real.flyaways is not None:
            realism.flyaways(real_rng, person, real.flyaways)
    is_dynamic = bool(rng["dynamics"].random() < cfg.p_dynamic) if dynamic is None else dynamic
    scene = BgScene(base=maps, info=info, margin=margin)
    names: list[str] = []
    if is_dynamic:
        scene.events, scene.pan, names = make_events(rng["dynamics"], maps, info, w, person_depth)
    ambient = sample_ambient(rng["light"])
    flash = sample_flash(rng["light"], cfg, person_depth, ambient)
    cam = camlib.sample_camera(
        rng["camera"], cfg.noise_scale, cfg.p_jpeg, cfg.jpeg_quality, ambient.tint, flash.tint
    )
    # The subject sits nearer the room's lights or further from them than the wall does.
    fg_ambient = person.albedo * person.upsample(
        shade_ambient(person.normal, ambient) * np.float32(rng["light"].uniform(0.9, 1.6))
    )
    if real is not None and real.key_light is not None:
        fg_ambient = realism.key_light(fg_ambient, person.alpha, *real.key_light)
    defocus = float(rng["camera"].uniform(0.0, 1.6))
    meta: dict[str, Any] = {
        "seed": seed,
        "background": info.kind,
        "wall_depth_m": round(info.wall_depth, 3),
        "person_depth_m": round(person_depth, 3),
        "flash": flash.kind,
        "ambient_level": round(ambient.level, 4),
        "flash_ratio": round(flash.power / (ambient.level * (person_depth**2 + flash.soft)), 4),
        "events": names,
        "person": person.meta,
        "items": info.meta.get("items", []),
        "second_person": "second_person" in info.meta,
        "jpeg_quality": cam.jpeg_quality,
    }
    if real is not None:
        meta["realism"] = real.names()
    return _Setup(
        h=h,
        w=w,
        focal=focal,
        rng=rng,
        person=person,
        person_depth=person_depth,
        scene=scene,
        ambient=ambient,
        flash=flash,
        cam=cam,
        fg_ambient=fg_ambient.astype(np.float32),
        defocus=defocus,
        meta=meta,
        realism=real,
    )


def _person_flash(st: _Setup) -> F32:
    """(H, W, 3) the radiance the flash adds to the subject: diffuse, skin sheen and glints."""
    p, fl = st.person, st.flash
    # Diffuse and sheen at geometry resolution (where normals and depth live), then upsampled.
    lh, lw = p.depth.shape
    s = lw / st.w
    e = flash_irradiance(
        fl, st.person_depth + p.depth, st.focal * s, normal=p.normal, centre=(lw / 2, lh / 2)
    )
    sheen = skin_specular(fl, p.normal, e, p.spec)
    e_mirror = fl.power / (st.person_depth**2 + fl.soft) * (4.0 if fl.kind == "torch" else 1.2)
    glints = draw_glints(fl, p.glints, st.h, st.w, st.focal, st.person_depth) * np.float32(e_mirror)
    out = p.albedo * p.upsample(outer(e, fl.tint))
    out += p.upsample(outer(sheen, fl.tint))
    out += outer(glints, fl.tint)
    return out


def _is_translation(m: Affine) -> bool:
    return bool(np.allclose(m[:, :2], np.eye(2)) and np.allclose(m[:, 2], np.round(m[:, 2])))


def _view(x: F32, m: Affine, size: tuple[int, int], border: int = cv2.BORDER_REFLECT) -> F32:
    """Canvas map -> frame: a slice when ``m`` is an integer shift, else a bilinear warp."""
    h, w = size
    if _is_translation(m):
        tx, ty = round(-m[0, 2]), round(-m[1, 2])
        if tx >= 0 and ty >= 0 and tx + w <= x.shape[1] and ty + h <= x.shape[0]:
            return x[ty : ty + h, tx : tx + w]
    return warp_affine(x, m, size, border)


def _background(st: _Setup, t: float) -> tuple[BgMaps, F32]:
    """(maps, linear ambient radiance on the canvas) at time t; computed once for a static scene."""
    key = t if st.scene.events else None
    if key not in st.bg_cache:
        if len(st.bg_cache) >= 2:  # clips visit each time once: keep memory bounded
            st.bg_cache.clear()
        maps = st.scene.at(t)
        rad = maps.albedo * maps.ambient
        rad = scale(rad, st.ambient.level * st.ambient.tint)
        if maps.emit.any():
            rad += maps.emit * np.float32(st.ambient.level)
        st.bg_cache[key] = (maps, rad)
    return st.bg_cache[key]


def _layers(
    st: _Setup,
    t: float,
    person_m: Affine | None,
    camera_m: Affine | None,
    *,
    flash: bool,
    fg_flash: F32 | None = None,
) -> _Layers:
    """The frame at time t with the subject moved by ``person_m`` and everything by ``camera_m``."""
    size = (st.h, st.w)
    rad = st.fg_ambient if not flash or fg_flash is None else st.fg_ambient + fg_flash
    m = person_m if camera_m is None else (camera_m if person_m is None else compose(camera_m, person_m))
    if m is None:
        alpha, fg = st.person.alpha, rad
    else:  # replicate borders: the torso runs out of the frame and must keep doing so when moved
        alpha = np.clip(warp_affine(st.person.alpha, m, size, cv2.BORDER_REPLICATE), 0, 1)
        fg = warp_affine(rad, m, size, cv2.BORDER_REPLICATE)
    maps, bg_rad = _background(st, t)
    view = st.scene.view(t, size)
    if camera_m is not None:
        view = compose(camera_m, view)
    bg = _view(bg_rad, view, size)
    if flash:
        mg = st.scene.margin
        # The flash on the background varies slowly: irradiance at half resolution, upsampled.
        ch, cw = maps.depth.shape
        e = flash_irradiance(
            st.flash,
            maps.depth[::2, ::2],
            st.focal / 2,
            facing=maps.facing[::2, ::2],
            centre=((st.w / 2 + mg) / 2, (st.h / 2 + mg) / 2),
        )
        e = np.asarray(cv2.resize(e, (cw, ch), interpolation=cv2.INTER_LINEAR), np.float32)
        lit = maps.albedo * outer(e, st.flash.tint)
        lit = _view(lit, view, size)
        shadow = cast_shadow(
            alpha, st.flash, st.person_depth, float(np.median(maps.depth[::8, ::8])), st.focal
        )
        bg = bg + lit * expand(1 - shadow)
    bg = blur(np.ascontiguousarray(bg, np.float32), st.defocus)
    people = _view(maps.people, view, size) if maps.people.any() else np.zeros(size, np.float32)
    return _Layers(
        alpha=np.ascontiguousarray(alpha, np.float32),
        fg=np.ascontiguousarray(fg, np.float32),
        bg=bg,
        people=np.ascontiguousarray(people, np.float32),
    )


@dataclass
class _Frame:
    image: F32  # noisy display frame
    fg: F32  # noise-free display foreground
    bg: F32  # noise-free display background


def _develop(st: _Setup, lay: _Layers, exposure: float, *, flash: bool) -> tuple[F32, F32]:
    """(display foreground, display background), each (H, W, 3): gains and tone curve per layer."""
    g = camlib.gains(st.cam, st.h, st.w, exposure, flash)
    return camlib.tone(lay.fg * g, st.cam), camlib.tone(lay.bg * g, st.cam)


def _shoot(
    st: _Setup,
    lay: _Layers,
    exposure: float,
    *,
    flash: bool,
    rng: np.random.Generator,
    developed: tuple[F32, F32] | None = None,
) -> _Frame:
    """Camera: gains, tone curve per layer, display-space composite, noise, 8-bit, optional JPEG.

    ``developed``: the display layers already made (``_develop``, then edited, e.g. colour-matched)."""
    fg, bg = _develop(st, lay, exposure, flash=flash) if developed is None else developed
    clean = fg - bg
    clean *= expand(lay.alpha)
    clean += bg
    image = camlib.to_8bit(camlib.add_noise(rng, clean, st.cam, exposure))
    if st.cam.jpeg_quality:
        image = camlib.jpeg(image, st.cam.jpeg_quality)
    return _Frame(image=image, fg=fg, bg=bg)


def _pseudo_flash(
    rng: np.random.Generator, frame: _Frame, alpha: F32, gamma_range: tuple[float, float]
) -> tuple[F32, F32]:
    """The paper's pseudo flash: V (HSV) ** gamma, gamma in [0.2, 0.5], on the foreground only.

    Scaling RGB by V**gamma / V keeps hue and saturation and sets V to V**gamma. The weight is the alpha
    eroded and box-filtered (PM-10K recipe). Returns (flash image, flash foreground).
    """
    gamma = float(rng.uniform(*gamma_range))

    def brighten(x: F32) -> F32:
        v = np.maximum(max3(x), np.float32(1e-4))
        gain: F32 = (np.power(v, np.float32(gamma)) / v).astype(np.float32)
        return np.clip(x * expand(gain), 0, 1)

    k = max(3, int(alpha.shape[1] / 100) | 1)
    wgt = expand(
        np.asarray(cv2.blur(cv2.erode(alpha, np.ones((k, k), np.uint8)), (2 * k + 1, 2 * k + 1)), np.float32)
    )
    image = wgt * brighten(frame.image) + (1 - wgt) * frame.image
    return camlib.to_8bit(image), brighten(frame.fg)


def _exposures(st: _Setup, nf: _Layers, fl: _Layers, beta: float) -> tuple[float, float]:
    """(no-flash, flash) exposures: AE meters each frame; ``beta`` is how far AE compensates the flash."""
    m_nf = camlib.metered(nf.alpha, nf.fg, nf.bg)
    k_nf = float(np.clip(st.cam.target / max(m_nf, 1e-6), 0.05, 16.0))
    m_f = camlib.metered(fl.alpha, fl.fg, fl.bg)
    k_f = k_nf * float((m_nf / max(m_f, 1e-6)) ** beta)
    return k_nf, k_f


def _small_motion(st: _Setup, cfg: SynthConfig) -> tuple[Affine, Affine]:
    """(person motion, camera shake) between the flash and the no-flash frame."""
    r = st.rng["motion"]
    person_m = random_affine(
        r, cfg.person_shift * st.w, cfg.person_rot_deg, cfg.person_scale, st.person_centre
    )
    s = cfg.camera_shake * st.w
    shake = similarity(
        float(r.uniform(-0.3, 0.3)),
        1.0,
        float(r.uniform(-s, s)),
        float(r.uniform(-s, s)),
        (st.w / 2, st.h / 2),
    )
    return person_m, shake


def _drift(st: _Setup, cfg: SynthConfig) -> Affine | None:
    """Where the subject stood at the flash relative to now (``cfg.p_drift`` of samples), else None."""
    r = st.rng["drift"]
    if r.random() >= cfg.p_drift:
        return None
    shift = cfg.drift_shift * st.w
    return similarity(
        float(r.uniform(-cfg.drift_rot_deg, cfg.drift_rot_deg)),
        float(np.exp(r.uniform(-cfg.drift_scale, cfg.drift_scale))),
        float(r.uniform(-shift, shift)),
        float(r.uniform(-0.3 * shift, 0.3 * shift)),
        st.person_centre,
    )


def render_sample(
    seed: int, cfg: SynthConfig = DEFAULT_CONFIG, *, dynamic: bool | None = None
) -> FlashSample:
    """One flash/no-flash pair; ``dynamic`` forces the background to change (True) or not (False)."""
    st = _setup(seed, cfg, margin=_margin(cfg), dynamic=dynamic)
    person_m, shake = _small_motion(st, cfg)
    drift = _drift(st, cfg)
    pseudo = cfg.pseudo_flash or bool(st.rng["extra"].random() < cfg.p_pseudo_flash)
    nf = _layers(st, 1.0, None, None, flash=False)
    if st.realism is not None and st.realism.motion_blur is not None:
        nf.alpha, nf.fg = realism.motion_blur(nf.alpha, nf.fg, *st.realism.motion_blur)
    flash_m = person_m if drift is None else compose(person_m, drift)
    fl = _layers(st, 0.0, flash_m, shake, flash=not pseudo, fg_flash=None if pseudo else _person_flash(st))
    beta = float(st.rng["camera"].uniform(*cfg.auto_exposure))
    k_nf, k_f = _exposures(st, nf, fl, beta)
    noise = st.rng["noise"]
    frame_nf = _shoot(st, nf, k_nf, flash=False, rng=noise)
    if pseudo:
        frame_f = _shoot(st, fl, k_nf, flash=False, rng=noise)
        flash_img, flash_fg = _pseudo_flash(st.rng["extra"], frame_f, fl.alpha, cfg.pseudo_gamma)
        frame_f = _Frame(image=flash_img, fg=flash_fg, bg=frame_f.bg)
    else:
        frame_f = _shoot(st, fl, k_f, flash=True, rng=noise)
    reference = None
    if drift is not None:  # its noise from the drift stream: every other draw stays as without drift
        at_ref = _layers(st, 0.0, drift, None, flash=False)
        reference = _shoot(st, at_ref, k_nf, flash=False, rng=st.rng["drift"]).image
    if st.realism is not None and st.realism.webcam is not None:
        frame_nf.image = realism.webcam(frame_nf.image, *st.realism.webcam)
        frame_f.image = realism.webcam(frame_f.image, *st.realism.webcam)
        if reference is not None:
            reference = realism.webcam(reference, *st.realism.webcam)
    # The flash-time background as the no-flash camera sees it: the same ops as ``background`` for a static
    # scene, hence bit-identical, and different exactly where the scene changed.
    if st.scene.dynamic:
        at_flash = _layers(st, 0.0, None, None, flash=False)
        g = camlib.gains(st.cam, st.h, st.w, k_nf, False)
        bg_at_flash = camlib.tone(at_flash.bg * g, st.cam)
    else:
        bg_at_flash = frame_nf.bg.copy()
    prior = person_prior(
        st.rng["prior"],
        nf.alpha,
        st.person.hands,
        nf.people,
        cfg.p_prior_miss_hand,
        cfg.p_prior_second_person,
    )
    meta = st.meta | {
        "dynamic": st.scene.dynamic,
        "pseudo_flash": pseudo,
        "exposure_nf": round(k_nf, 4),
        "exposure_ratio": round(k_f / k_nf, 4),
        "ae_beta": round(beta, 3),
        "drift": drift is not None,
    }
    return FlashSample(
        noflash=frame_nf.image,
        flash=frame_f.image,
        alpha=nf.alpha.copy(),
        foreground=frame_nf.fg,
        background=frame_nf.bg,
        flash_alpha=fl.alpha,
        person_prior=prior,
        dynamic=st.scene.dynamic,
        flash_foreground=frame_f.fg,
        flash_background=frame_f.bg,
        background_at_flash=bg_at_flash,
        meta=meta,
        reference=reference,
    )


def render_sequence(
    seed: int,
    length: int,
    cfg: SynthConfig = DEFAULT_CONFIG,
    seq: SequenceConfig = DEFAULT_SEQUENCE,
    *,
    dynamic: bool | None = None,
) -> FlashSequence:
    """A flash frame, then ``length`` no-flash frames of a subject wandering smoothly (RVM-style dtSSD clips).

    The flash is taken just before frame 0 (a small motion away); background events run from the flash
    (t = 0) through the last frame (t = 1); exposure is held over the clip, as AE settles slowly.
    """
    if length < 1:
        raise ValueError("length must be >= 1")
    h, w = cfg.size
    travel = seq.person_travel * w
    st = _setup(seed, cfg, margin=_margin(cfg, seq.camera_pan), dynamic=dynamic)
    if st.scene.dynamic:  # a slow pan of the background over the clip on top of the events
        r = st.rng["dynamics"]
        a = r.uniform(0, 2 * np.pi)
        amp = seq.camera_pan * w * r.uniform(0.3, 1.0)
        st.scene.pan = (st.scene.pan[0] + amp * np.cos(a), st.scene.pan[1] + amp * np.sin(a), st.scene.pan[2])
    r = st.rng["motion"]
    n = length + 1  # the path starts at frame 0
    xs, ys = smooth_path(r, n, travel), smooth_path(r, n, travel * 0.3)
    rots, scales = smooth_path(r, n, seq.person_rot_deg), smooth_path(r, n, seq.person_scale)
    centre = st.person_centre
    mats = [
        similarity(float(rots[k]), float(np.exp(scales[k])), float(xs[k]), float(ys[k]), centre)
        for k in range(length)
    ]
    person_m, shake = _small_motion(st, cfg)
    fl = _layers(st, 0.0, person_m, shake, flash=True, fg_flash=_person_flash(st))
    times = [(k + 1) / length for k in range(length)]
    frames = [_layers(st, t, m, None, flash=False) for t, m in zip(times, mats, strict=True)]
    beta = float(st.rng["camera"].uniform(*cfg.auto_exposure))
    k_nf, k_f = _exposures(st, frames[0], fl, beta)
    noise = st.rng["noise"]
    flash_frame = _shoot(st, fl, k_f, flash=True, rng=noise)
    shots = [_shoot(st, lay, k_nf, flash=False, rng=noise) for lay in frames]
    prior_seed = int(st.rng["prior"].integers(1 << 62))  # one segmenter "personality" for the whole clip
    priors = [
        person_prior(
            np.random.default_rng(prior_seed),
            lay.alpha,
            warp_affine(st.person.hands, m, (h, w), cv2.BORDER_REPLICATE),
            lay.people,
            cfg.p_prior_miss_hand,
            cfg.p_prior_second_person,
        )
        for lay, m in zip(frames, mats, strict=True)
    ]
    meta = st.meta | {
        "dynamic": st.scene.dynamic,
        "length": length,
        "exposure_nf": round(k_nf, 4),
        "exposure_ratio": round(k_f / k_nf, 4),
    }
    return FlashSequence(
        flash=flash_frame.image,
        flash_alpha=fl.alpha,
        noflash=np.stack([s.image for s in shots]),
        alpha=np.stack([lay.alpha for lay in frames]),
        foreground=np.stack([s.fg for s in shots]),
        background=np.stack([s.bg for s in shots]),
        person_prior=np.stack(priors),
        dynamic=st.scene.dynamic,
        meta=meta,
    )


def plane_homography(
    focal: float,
    centre: tuple[float, float],
    depth: float,
    move: tuple[float, float, float],
    rot_deg: tuple[float, float, float],
) -> npt.NDArray[np.float64]:
    """(3, 3) view-0 -> view-1 pixel homography of a fronto-parallel plane ``depth`` metres away.

    The camera's centre moves by ``move`` (metres, in view 0's camera frame: x right, y down, z forward) and it
    turns by ``rot_deg`` = (pitch, yaw, roll) degrees (``cv2.Rodrigues`` of them takes view-0 camera
    coordinates to view-1 ones): a point P0 of the plane n.P0 = depth is seen at P1 = R (P0 - move), so
    H = K R (I - move n^T / depth) K^-1. A sideways move shifts the plane by -focal * move / depth pixels.
    """
    k = np.array([[focal, 0.0, centre[0]], [0.0, focal, centre[1]], [0.0, 0.0, 1.0]])
    rot = np.asarray(cv2.Rodrigues(np.deg2rad(np.asarray(rot_deg, np.float64)))[0], np.float64)
    plane = np.eye(3) - np.outer(np.asarray(move, np.float64), [0.0, 0.0, 1.0 / depth])
    hom: npt.NDArray[np.float64] = k @ rot @ plane @ np.linalg.inv(k)
    return hom / hom[2, 2]


def affine_at(hom: npt.NDArray[np.float64], point: tuple[float, float]) -> Affine:
    """(2, 3) the affine agreeing with the (3, 3) homography ``hom`` to first order at ``point`` (px).

    For the small rotations of a hand-held move the homography's projective part moves the frame's corners by
    a pixel or two; the render uses the affine, so the sample's affines stay its exact motion."""
    p = np.array([point[0], point[1], 1.0])
    num, den = hom[:2] @ p, float(hom[2] @ p)
    jac = (hom[:2, :2] * den - np.outer(num, hom[2, :2])) / den**2
    return np.hstack([jac, (num / den - jac @ p[:2])[:, None]])


def _depth_margin(par: ParallaxConfig, cfg: SynthConfig, focal: float) -> int:
    """Canvas margin (px) bounding the background's motion in depth mode at any draw of the config."""
    h, w = cfg.size
    z = par.bg_depth_m[0]
    half_diag = float(np.hypot(h, w)) / 2
    pitch, yaw, roll = np.deg2rad(par.cam_rot_deg)
    shift = focal * (par.baseline_m[1] * np.hypot(1.0, par.baseline_vertical) / z + np.hypot(pitch, yaw))
    return int(np.ceil(1.1 * (shift + half_diag * (roll + par.dolly_m / z)))) + 4


def _depth_motion(st: _Setup, par: ParallaxConfig) -> tuple[Affine, Affine, dict[str, Any]]:
    """(foreground, background) view-0 -> view-1 affines from a virtual camera move and the layers' depths.

    Each layer is a fronto-parallel plane (the subject at its depth, the background at ``par.bg_depth_m``); its
    homography is linearised at the layer's centre (the subject's pivot, the frame's centre). The subject also
    sways a little on its own."""
    r = st.rng["motion"]
    z_fg = st.person_depth
    lo, hi = par.bg_depth_m
    z_bg = max(float(np.exp(r.uniform(np.log(lo), np.log(hi)))), z_fg + 0.3)  # the background stays behind
    base, angle = float(r.uniform(*par.baseline_m)), float(r.uniform(0.0, 2 * np.pi))
    move = (base * np.cos(angle), par.baseline_vertical * base * np.sin(angle), float(r.uniform(-1, 1)) * par.dolly_m)
    rot = tuple(float(v) for v in r.uniform(-1.0, 1.0, 3) * np.asarray(par.cam_rot_deg, np.float64))
    move_t = (float(move[0]), float(move[1]), float(move[2]))
    rot_t = (rot[0], rot[1], rot[2])
    centre = (st.w / 2, st.h / 2)
    fg_m = affine_at(plane_homography(st.focal, centre, z_fg, move_t, rot_t), st.person_centre)
    bg_m = affine_at(plane_homography(st.focal, centre, z_bg, move_t, rot_t), centre)
    sway = par.subject_sway * st.w
    fg_m[:, 2] += r.uniform(-sway, sway, 2)
    meta = {
        "motion": "depth",
        "z_fg_m": round(z_fg, 4),
        "z_bg_m": round(z_bg, 4),
        "cam_move_m": [round(v, 5) for v in move_t],
        "cam_rot_deg": [round(v, 4) for v in rot_t],
        "focal_px": round(st.focal, 3),
    }
    return fg_m, bg_m, meta


def colour_match(fg: F32, bg: F32, alpha: F32) -> Callable[[F32], F32] | None:
    """A per-channel monotone colour map taking the subject's display colours (alpha > 0.5 of ``fg``) to the
    distribution of ``bg`` (scikit-image's ``match_histograms``), to apply to every view's foreground layer so
    the views stay consistent; None where the subject is too small to have a histogram."""
    from skimage.exposure import match_histograms

    src = fg[alpha > 0.5]  # (N, 3)
    if len(src) < 64:
        return None
    ref = bg[::2, ::2]  # the same distribution at a quarter of the sorting
    matched = np.asarray(match_histograms(src[:, None], ref, channel_axis=-1))[:, 0]
    # Equal inputs map to equal outputs, so the map is a function of the value: tabulated at 1024 levels and
    # looked up with linear interpolation (np.interp over every pixel would search the subject's ~10^4 values).
    levels = 1024
    grid = np.linspace(0.0, 1.0, levels + 1)
    lut = np.empty((3, levels + 2), np.float32)
    for c in range(3):
        xs, first = np.unique(src[:, c], return_index=True)
        lut[c, :-1] = np.interp(grid, xs, matched[first, c])
        lut[c, -1] = lut[c, -2]  # so that index levels + 1 exists for x == 1

    def apply(x: F32) -> F32:
        pos = np.clip(x, 0.0, 1.0) * np.float32(levels)
        i = pos.astype(np.int32)
        frac = pos - i
        out = np.empty_like(pos)
        for c in range(3):
            lo, hi = lut[c][i[..., c]], lut[c][i[..., c] + 1]
            out[..., c] = lo + (hi - lo) * frac[..., c]
        return out

    return apply


def render_parallax_pair(
    seed: int, cfg: SynthConfig = DEFAULT_CONFIG, par: ParallaxConfig = DEFAULT_PARALLAX
) -> ParallaxSample:
    """Two no-flash views: the foreground and the background each move by their own affine, the foreground
    also by a small non-rigid jitter (hair, breathing), as in the parallax-matting paper.

    ``par.motion="depth"`` (default): the affines follow from a virtual camera move and the layers' depths
    (recorded in ``meta["parallax"]``); ``"affine"``: independent random affines. With probability
    ``par.p_hist_match`` the foreground layer's colours are matched to the background's (``meta["hist_match"]``).
    """
    h, w = cfg.size
    if par.motion == "depth":
        margin = _depth_margin(par, cfg, FOCAL * w)
    else:
        margin = int(np.ceil(w * (par.bg_shift + np.deg2rad(par.rot_deg) + par.scale) * 0.6)) + 4
    st = _setup(seed, cfg, margin=margin, dynamic=False)
    r = st.rng["motion"]
    if par.motion == "depth":
        fg_m, bg_m, motion_meta = _depth_motion(st, par)
    else:
        fg_m = random_affine(r, par.fg_shift * w, par.rot_deg, par.scale, st.person_centre, shear=0.01)
        bg_m = random_affine(r, par.bg_shift * w, par.rot_deg * 0.5, par.scale * 0.5, (w / 2, h / 2))
        motion_meta = {"motion": "affine"}
    v0 = _layers(st, 0.0, None, None, flash=False)
    v1 = _layers(st, 0.0, fg_m, None, flash=False)
    # Background: the second view re-samples the canvas through its own affine (the margin hides borders).
    view = compose(bg_m, st.scene.view(0.0, (h, w)))
    _, bg_rad = _background(st, 0.0)
    v1.bg = blur(np.ascontiguousarray(_view(bg_rad, view, (h, w)), np.float32), st.defocus)
    jitter = None
    if par.elastic_px > 0:  # the subject is not rigid
        field = elastic(r, h, w, par.elastic_px, max(8.0, w / 10))
        both = remap(np.concatenate([v1.fg, v1.alpha[..., None]], -1), field)
        v1.fg, v1.alpha = both[..., :3], np.clip(both[..., 3], 0, 1)
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        jitter = np.stack([field[0] - gx, field[1] - gy], -1)
    k = float(np.clip(st.cam.target / max(camlib.metered(v0.alpha, v0.fg, v0.bg), 1e-6), 0.05, 16.0))
    noise = st.rng["noise"]
    # Colour matching happens on the display layers before compositing, one map for both views.
    dev0, dev1 = _develop(st, v0, k, flash=False), _develop(st, v1, k, flash=False)
    match = colour_match(dev0[0], dev0[1], v0.alpha) if st.rng["parallax"].random() < par.p_hist_match else None
    if match is not None:
        dev0, dev1 = (match(dev0[0]), dev0[1]), (match(dev1[0]), dev1[1])
    f0 = _shoot(st, v0, k, flash=False, rng=noise, developed=dev0)
    f1 = _shoot(st, v1, k, flash=False, rng=noise, developed=dev1)
    sigma = par.motion_noise_px / np.sqrt(2)
    return ParallaxSample(
        image0=f0.image,
        image1=f1.image,
        alpha0=v0.alpha,
        alpha1=v1.alpha,
        foreground0=f0.fg,
        foreground1=f1.fg,
        background0=f0.bg,
        background1=f1.bg,
        fg_affine=fg_m,
        bg_affine=bg_m,
        fg_affine_noisy=corner_noise(r, fg_m, h, w, sigma),
        bg_affine_noisy=corner_noise(r, bg_m, h, w, sigma),
        meta=st.meta | {"parallax": motion_meta, "hist_match": match is not None},
        fg_jitter=jitter,
    )
