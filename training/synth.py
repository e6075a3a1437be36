"""A compact procedural flash/no-flash portrait renderer (numpy + OpenCV), deterministic by seed.

It draws a person-like layer (head, hair with thin semi-transparent strands, neck, shoulders, torso,
sometimes an arm) before an indoor-like or photographic background and renders both frames in linear light:

    no-flash = albedo * ambient,   flash = albedo * (ambient + E / depth^2) [+ specular], then re-exposed,
    white-balanced and noised; the person moves slightly between the frames; the background may change
    (dynamic) between them; the flash casts a soft shadow behind the subject on near backgrounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

TRAIN_SEED_LIMIT = 1_000_000_000  # train seeds are below, eval seeds at or above: the splits never overlap


def train_seed(i: int) -> int:
    return i % TRAIN_SEED_LIMIT


def eval_seed(i: int) -> int:
    return TRAIN_SEED_LIMIT + i


@dataclass(frozen=True)
class SynthConfig:
    size: tuple[int, int] = (288, 512)  # (H, W)
    p_dynamic: float = 0.6  # paper: static pairs with probability 0.4
    p_photo_bg: float = 0.4
    p_second_person: float = 0.25
    p_pseudo_flash: float = 0.15  # paper's gamma-on-V pseudo flash instead of the physical model


@dataclass
class FlashSample:
    """All float32 in [0, 1]; images (H, W, 3) RGB, mattes (H, W)."""

    noflash: np.ndarray
    flash: np.ndarray
    alpha: np.ndarray  # GT alpha of the no-flash frame
    foreground: np.ndarray  # GT foreground colour of the no-flash frame (noise-free)
    background: np.ndarray  # background of the no-flash frame (noise-free); noflash ~ a*F + (1-a)*B + noise
    flash_alpha: np.ndarray  # GT alpha of the flash frame (the person moved a little)
    person_prior: np.ndarray  # a degraded mask imitating an off-the-shelf person segmenter
    dynamic: bool


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    try:
        import skimage

        root = Path(skimage.__file__).parent / "data"
    except ImportError:
        return ()
    out = []
    for name in ("coffee.png", "chelsea.png", "brick.png", "grass.png", "gravel.png", "motorcycle_left.png",
                 "hubble_deep_field.jpg", "color.png", "logo.png"):
        img = cv2.imread(str(root / name), cv2.IMREAD_COLOR)
        if img is not None:
            out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return tuple(out)


def _lin(x: np.ndarray) -> np.ndarray:
    return np.power(np.clip(x, 0, 1), 2.2)


def _srgb(x: np.ndarray) -> np.ndarray:
    return np.power(np.clip(x, 0, 1), 1 / 2.2)


def _texture(rng: np.random.Generator, h: int, w: int, base: np.ndarray) -> np.ndarray:
    """A cloth/skin-like texture around colour ``base`` (3,)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = rng.integers(4)
    if kind == 0:  # stripes
        f, ang = rng.uniform(0.05, 0.4), rng.uniform(0, np.pi)
        t = 0.5 + 0.5 * np.sin(f * (xx * np.cos(ang) + yy * np.sin(ang)))
    elif kind == 1:  # plaid
        f = rng.uniform(0.05, 0.25)
        t = 0.5 + 0.25 * (np.sin(f * xx) + np.sin(f * yy))
    elif kind == 2:  # smooth noise
        n = rng.random((max(2, h // 16), max(2, w // 16))).astype(np.float32)
        t = cv2.resize(n, (w, h), interpolation=cv2.INTER_CUBIC)
    else:
        t = np.full((h, w), 0.5, np.float32)
    other = rng.random(3).astype(np.float32)
    amp = rng.uniform(0.0, 0.5)
    img = base[None, None] * (1 - amp * t[..., None]) + other[None, None] * amp * t[..., None]
    return np.clip(img + rng.normal(0, 0.015, (h, w, 3)).astype(np.float32), 0, 1)


def _background(rng: np.random.Generator, h: int, w: int, cfg: SynthConfig) -> np.ndarray:
    photos = _photos()
    if photos and rng.random() < cfg.p_photo_bg:
        img = photos[rng.integers(len(photos))]
        scale = max(h / img.shape[0], w / img.shape[1]) * rng.uniform(1.0, 1.8)
        big = cv2.resize(img, (int(img.shape[1] * scale) + 1, int(img.shape[0] * scale) + 1))
        y0, x0 = rng.integers(0, big.shape[0] - h + 1), rng.integers(0, big.shape[1] - w + 1)
        bg = big[y0 : y0 + h, x0 : x0 + w].astype(np.float32) / 255
        if rng.random() < 0.5:
            bg = bg[:, ::-1]
        return np.clip(bg * rng.uniform(0.6, 1.2) + rng.normal(0, 0.05, 3).astype(np.float32), 0, 1)
    # Indoor-like: a wall with a gradient and texture, a floor line, shelves/furniture blocks, a window or lamp.
    wall = rng.uniform(0.2, 0.85, 3).astype(np.float32)
    bg = _texture(rng, h, w, wall)
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    bg = bg * (1 - rng.uniform(0, 0.4) * yy)
    for _ in range(rng.integers(2, 7)):
        x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        bw, bh = int(rng.integers(w // 12, w // 2)), int(rng.integers(h // 16, h // 2))
        color = tuple(float(c) for c in rng.uniform(0.05, 0.95, 3))
        cv2.rectangle(bg, (x0, y0), (x0 + bw, y0 + bh), color, -1)
        if rng.random() < 0.5:  # shelves with books
            for k in range(int(rng.integers(3, 12))):
                bx = x0 + k * bw // 12
                cv2.rectangle(bg, (bx, y0), (bx + bw // 14, y0 + bh // 3),
                              tuple(float(c) for c in rng.uniform(0, 1, 3)), -1)
    if rng.random() < 0.3:  # a bright window or lamp
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h // 2))
        cv2.circle(bg, (cx, cy), int(rng.integers(h // 16, h // 5)), (1.0, 0.97, 0.9), -1)
    bg = np.asarray(cv2.GaussianBlur(bg, (0, 0), rng.uniform(0.3, 2.5)))  # depth of field
    return np.clip(bg, 0, 1).astype(np.float32)


def _person(rng: np.random.Generator, h: int, w: int, ss: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(alpha (H,W), colour (H,W,3), depth offset (H,W)) of a person layer drawn at ``ss`` x supersampling."""
    H, W = h * ss, w * ss
    s = min(h, w) * ss * rng.uniform(0.75, 1.35)
    cx = W * rng.uniform(0.25, 0.75)
    head_y = H * rng.uniform(0.22, 0.45)
    tilt = rng.uniform(-12, 12)
    hr_x, hr_y = 0.15 * s * rng.uniform(0.85, 1.1), 0.2 * s * rng.uniform(0.9, 1.1)
    body = np.zeros((H, W), np.uint8)
    cv2.ellipse(body, (int(cx), int(head_y)), (int(hr_x), int(hr_y)), tilt, 0, 360, 255, -1)
    neck_w = int(hr_x * rng.uniform(0.45, 0.65))
    neck_top, neck_bot = int(head_y + hr_y * 0.6), int(head_y + hr_y * 1.45)
    cv2.rectangle(body, (int(cx) - neck_w, neck_top), (int(cx) + neck_w, neck_bot), 255, -1)
    sh_w = int(s * rng.uniform(0.38, 0.55))
    sh_y = neck_bot + int(s * 0.02)
    cv2.ellipse(body, (int(cx + rng.uniform(-0.05, 0.05) * s), int(sh_y + s * 0.6)), (sh_w, int(s * 0.62)),
                0, 180, 360, 255, -1)
    cv2.rectangle(body, (int(cx) - sh_w, int(sh_y + s * 0.6)), (int(cx) + sh_w, H), 255, -1)
    skin_mask = np.zeros((H, W), np.uint8)
    cv2.ellipse(skin_mask, (int(cx), int(head_y)), (int(hr_x), int(hr_y)), tilt, 0, 360, 255, -1)
    cv2.rectangle(skin_mask, (int(cx) - neck_w, neck_top), (int(cx) + neck_w, neck_bot), 255, -1)
    if rng.random() < 0.35:  # a raised arm / hand
        side = rng.choice([-1, 1])
        ax = int(cx + side * sh_w * rng.uniform(0.6, 1.0))
        hand = (int(ax + side * s * rng.uniform(0.0, 0.25)), int(head_y + rng.uniform(-0.1, 0.5) * s))
        thick = int(s * rng.uniform(0.08, 0.12))
        cv2.line(body, (ax, H), hand, 255, thick)
        cv2.circle(body, hand, int(thick * 0.8), 255, -1)
        cv2.circle(skin_mask, hand, int(thick * 0.8), 255, -1)
    alpha = body.astype(np.float32) / 255
    # Hair: a cap over the head plus thin strands with partial opacity.
    hair = np.zeros((H, W), np.float32)
    cap_ry = hr_y * rng.uniform(0.55, 1.0)
    cv2.ellipse(hair, (int(cx), int(head_y - hr_y * 0.25)), (int(hr_x * 1.12), int(cap_ry)), tilt, 180, 360, 1.0, -1)
    long_hair = rng.random() < 0.4
    if long_hair:
        cv2.ellipse(hair, (int(cx), int(head_y + hr_y * 0.4)), (int(hr_x * 1.25), int(hr_y * 1.3)), 0, 0, 360, 1.0, -1)
        hair[skin_mask > 0] *= 0.0
        face = np.zeros((H, W), np.uint8)
        face_axes = (int(hr_x * 0.8), int(hr_y * 0.85))
        cv2.ellipse(face, (int(cx), int(head_y + hr_y * 0.1)), face_axes, tilt, 0, 360, 255, -1)
        hair[face > 0] = 0
    strands = np.zeros((H, W), np.float32)
    for _ in range(int(rng.integers(20, 90))):
        ang = rng.uniform(np.pi * 1.05, np.pi * 1.95)
        r0 = rng.uniform(0.7, 1.05)
        x = cx + np.cos(ang) * hr_x * r0
        y = head_y - hr_y * 0.25 + np.sin(ang) * cap_ry * r0
        pts = [(x, y)]
        direction = ang + rng.uniform(-0.5, 0.5)
        for _ in range(int(rng.integers(3, 9))):
            direction += rng.uniform(-0.35, 0.35)
            step = s * rng.uniform(0.01, 0.03)
            x, y = x + np.cos(direction) * step, y + np.sin(direction) * step
            pts.append((x, y))
        cv2.polylines(strands, [np.array(pts, np.int32)], False, float(rng.uniform(0.3, 0.9)), int(max(1, ss // 2)))
    hair = np.maximum(hair, strands)
    alpha = np.maximum(alpha, hair)
    # Colours.
    skin = np.array(rng.choice([[0.93, 0.75, 0.62], [0.8, 0.58, 0.45], [0.6, 0.4, 0.28], [0.38, 0.25, 0.17]]),
                    np.float32) * rng.uniform(0.85, 1.1)
    hair_c = np.array(rng.choice([[0.08, 0.06, 0.05], [0.3, 0.18, 0.1], [0.6, 0.45, 0.25], [0.5, 0.5, 0.5],
                                  [0.75, 0.6, 0.35]]), np.float32)
    cloth = _texture(rng, H // ss + 1, W // ss + 1, rng.uniform(0.05, 0.95, 3).astype(np.float32))
    cloth = cv2.resize(cloth, (W, H), interpolation=cv2.INTER_LINEAR)
    color = cloth.copy()
    skin_img = _texture(rng, 8, 8, skin)
    color[skin_mask > 0] = cv2.resize(skin_img, (W, H))[skin_mask > 0]
    hmask = (hair > 0)[..., None]
    color = np.where(hmask, hair_c[None, None] * rng.uniform(0.8, 1.2), color)
    if rng.random() < 0.25:  # glasses
        for dx in (-0.45, 0.45):
            cv2.circle(color, (int(cx + dx * hr_x), int(head_y)), int(hr_x * 0.32), (0.05, 0.05, 0.05), max(1, ss))
    depth = np.zeros((H, W), np.float32)
    yy = np.arange(H, dtype=np.float32)[:, None]
    depth += np.clip((yy - head_y) / (3 * s), -0.1, 0.3)  # the torso leans away a little
    small = (w, h)
    return (cv2.resize(alpha, small, interpolation=cv2.INTER_AREA),
            cv2.resize(color, small, interpolation=cv2.INTER_AREA),
            cv2.resize(depth, small, interpolation=cv2.INTER_AREA))


def _warp(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    h, w = x.shape[:2]
    return cv2.warpAffine(x, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _small_affine(rng: np.random.Generator, h: int, w: int, shift: float, rot: float, scale: float) -> np.ndarray:
    m = np.asarray(cv2.getRotationMatrix2D((w / 2, h * 0.8), rng.uniform(-rot, rot), 1 + rng.uniform(-scale, scale)),
                   np.float64)
    m[:, 2] += rng.uniform(-shift, shift, 2)
    return m.astype(np.float32)


def _prior(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """Imitate a person segmenter: smooth, thresholded, slightly wrong at edges and hair."""
    h, w = alpha.shape
    small = cv2.resize(alpha, (max(8, w // 6), max(8, h // 6)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), rng.uniform(0.5, 1.5))
    m = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    k = int(rng.integers(1, max(2, h // 30)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
    m = cv2.erode(m, kernel) if rng.random() < 0.5 else cv2.dilate(m, kernel)
    if rng.random() < 0.2:  # a missed blob
        centre = (int(rng.integers(0, w)), int(rng.integers(h // 2, h)))
        cv2.circle(m, centre, int(rng.integers(h // 20, h // 6)), 0.0, -1)
    sharp = rng.uniform(2, 6)  # how hard the segmenter's edge is
    return np.clip((m - 0.5) * sharp + 0.5, 0, 1).astype(np.float32)


def render_sample(seed: int, cfg: SynthConfig = SynthConfig()) -> FlashSample:
    """One flash/no-flash training sample, bit-identical for the same seed and config."""
    rng = np.random.default_rng(seed)
    h, w = cfg.size
    alpha, fg, depth_off = _person(rng, h, w)
    bg_f = _background(rng, h, w, cfg)
    dynamic = bool(rng.random() < cfg.p_dynamic)
    bg_nf = bg_f.copy()
    if dynamic:
        kind = rng.integers(4)
        if kind == 0:  # the camera / background shifted
            bg_nf = _warp(bg_f, _small_affine(rng, h, w, 8, 1.5, 0.02))
        elif kind == 1:  # an object moved or appeared
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            corner = (x0 + int(rng.integers(w // 10, w // 3)), y0 + int(rng.integers(h // 10, h // 2)))
            cv2.rectangle(bg_nf, (x0, y0), corner,
                          tuple(float(c) for c in rng.uniform(0, 1, 3)), -1)
        elif kind == 2:  # a monitor changed content / a light switched
            x0, y0 = int(rng.integers(0, w - w // 5)), int(rng.integers(0, h - h // 5))
            bg_nf[y0 : y0 + h // 5, x0 : x0 + w // 5] = rng.uniform(0, 1, 3)
            bg_nf *= rng.uniform(0.85, 1.15)
        else:  # a person walking behind
            a2, c2, _ = _person(rng, h, w)
            a2 = cv2.resize(a2, (w // 2, h // 2))[..., None]
            c2 = cv2.resize(c2, (w // 2, h // 2))
            y0, x0 = h - h // 2, int(rng.integers(0, w - w // 2))
            region = bg_nf[y0:, x0 : x0 + w // 2]
            bg_nf[y0:, x0 : x0 + w // 2] = a2 * c2 * 0.7 + (1 - a2) * region
        bg_nf = np.clip(bg_nf, 0, 1)
    if rng.random() < cfg.p_second_person:  # a far person in both frames: background, not lit by the flash
        a2, c2, _ = _person(rng, h, w)
        sc = rng.uniform(0.3, 0.5)
        a2 = cv2.resize(a2, (int(w * sc), int(h * sc)))[..., None]
        c2 = cv2.resize(c2, (int(w * sc), int(h * sc)))
        y0, x0 = h - a2.shape[0], int(rng.integers(0, w - a2.shape[1]))
        for b in (bg_f, bg_nf):
            region = b[y0:, x0 : x0 + a2.shape[1]]
            b[y0:, x0 : x0 + a2.shape[1]] = a2 * c2 * 0.8 + (1 - a2) * region

    # The person moves a little between the flash and the no-flash frame.
    m = _small_affine(rng, h, w, rng.uniform(0, 10), 3, 0.03)
    alpha_f, fg_f, depth_f = _warp(alpha, m), _warp(fg, m), _warp(depth_off, m)

    ambient = rng.uniform(0.25, 1.0) * (1 + rng.normal(0, 0.05, 3)).astype(np.float32)
    d_person = rng.uniform(0.5, 1.2)
    d_bg = rng.uniform(1.8, 6.0)
    screen = rng.random() < 0.4
    flash_power = (rng.uniform(0.15, 0.6) if screen else rng.uniform(0.4, 1.6)) * d_person**2
    flash_tint = np.array([0.92, 0.97, 1.05] if screen else [1.05, 1.0, 0.9], np.float32) * rng.uniform(0.95, 1.05, 3)

    fg_lin_nf, bg_lin_nf, bg_lin_f, fg_lin_f = _lin(fg), _lin(bg_nf), _lin(bg_f), _lin(fg_f)
    nf_fg = fg_lin_nf * ambient
    nf_bg = bg_lin_nf * ambient
    e_person = flash_power / (d_person + depth_f) ** 2
    e_bg = flash_power / d_bg**2
    shadow = np.ones((h, w), np.float32)
    if d_bg < 3.0:  # a soft shadow of the subject on a near wall, offset from the flash axis
        offset = np.array([[1, 0, rng.uniform(-0.06, 0.06) * w], [0, 1, rng.uniform(0, 0.05) * h]], np.float32)
        sm = _warp(alpha_f, offset)
        shadow = 1 - 0.8 * cv2.GaussianBlur(sm, (0, 0), 6)
    f_fg = fg_lin_f * (ambient + e_person[..., None] * flash_tint)
    spec = np.clip(e_person * rng.uniform(0, 0.25), 0, 1)[..., None] * (fg_lin_f.mean(-1, keepdims=True) > 0.3)
    f_fg = f_fg + spec * flash_tint
    f_bg = bg_lin_f * (ambient + (e_bg * shadow)[..., None] * flash_tint)

    def compose(a: np.ndarray, f: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a[..., None] * f + (1 - a[..., None]) * b

    lin_nf = compose(alpha, nf_fg, nf_bg)
    lin_f = compose(alpha_f, f_fg, f_bg)
    expo = rng.uniform(0.5, 1.0)  # auto-exposure darkens the flash frame
    lin_f = lin_f * expo * (1 + rng.normal(0, 0.03, 3)).astype(np.float32)
    gain_nf = 1.0 / max(1e-3, float(np.percentile(lin_nf, 97))) * rng.uniform(0.7, 0.95)
    lin_nf, lin_f = lin_nf * gain_nf, lin_f * gain_nf
    fg_out = _srgb(nf_fg * gain_nf)
    bg_out = _srgb(nf_bg * gain_nf)

    def noisy(lin: np.ndarray) -> np.ndarray:
        sigma = rng.uniform(0.003, 0.02)
        out = lin + rng.normal(0, 1, lin.shape).astype(np.float32) * (sigma * np.sqrt(np.clip(lin, 0, 1)) + 0.002)
        return _srgb(out).astype(np.float32)

    noflash, flash = noisy(lin_nf), noisy(lin_f)
    if rng.random() < cfg.p_pseudo_flash:  # paper's pseudo flash: gamma on V of the foreground
        hsv = cv2.cvtColor(noflash, cv2.COLOR_RGB2HSV)
        hsv[..., 2] = np.power(hsv[..., 2], rng.uniform(0.2, 0.5))
        bright = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        wgt = cv2.blur(cv2.erode(alpha, np.ones((5, 5), np.uint8)), (9, 9))[..., None]
        flash, alpha_f = (wgt * bright + (1 - wgt) * noflash).astype(np.float32), alpha
    if rng.random() < 0.3:  # re-JPEG (paper Sec. 3.3)
        q = int(rng.integers(60, 95))

        def jpeg(x: np.ndarray) -> np.ndarray:
            _, buf = cv2.imencode(".jpg", (x * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, q])
            return np.asarray(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)).astype(np.float32) / 255

        noflash, flash = jpeg(noflash), jpeg(flash)
    return FlashSample(
        noflash=np.clip(noflash, 0, 1).astype(np.float32),
        flash=np.clip(flash, 0, 1).astype(np.float32),
        alpha=alpha.astype(np.float32),
        foreground=np.clip(fg_out, 0, 1).astype(np.float32),
        background=np.clip(bg_out, 0, 1).astype(np.float32),
        flash_alpha=alpha_f.astype(np.float32),
        person_prior=_prior(rng, alpha),
        dynamic=dynamic,
    )
