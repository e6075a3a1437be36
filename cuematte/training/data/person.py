"""A procedural webcam subject: head with jaw, ears and a face, neck, shoulders and torso running out of the
bottom of the frame, hair (cap, long locks, curls, bun) with a fuzzy edge and thin semi-transparent strands,
and sometimes glasses, a raised hand, or a held mug or phone.

Everything is painted back to front into a ``LayerStack`` at output resolution with anti-aliased coverage, so
alpha is smooth at body edges and fractional at hair. Proportions are in units of the head half-height R.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from cuematte.training.data import shapes
from cuematte.training.data.color import F32, HAIR_COLOURS, HAIR_WEIGHTS, SKIN_TONES, jitter, pick_between, to_linear
from cuematte.training.data.fastops import outer
from cuematte.training.data.layers import LayerStack, bbox, blur
from cuematte.training.data.shapes import U8, Points
from cuematte.training.data.textures import cloth, value_noise


@dataclass
class Glint:
    """A glossy spot that mirrors the flash (lens, eye, mug, phone): centre and size in pixels."""

    x: float
    y: float
    r: float
    strength: float


@dataclass
class PersonLayer:
    """The subject as maps at the output size (H, W); albedo is linear light, extended past the silhouette.

    Geometry (normals, depth, specular strength) varies smoothly and is kept at geometry resolution
    (h, w) = (H, W) // GEOMETRY_DOWNSCALE: shading is computed there and upsampled.
    """

    alpha: F32  # (H, W)
    albedo: F32  # (H, W, 3) linear
    normal: F32  # (h, w, 3) unit, z toward the camera
    depth: F32  # (h, w) metres relative to the subject's base distance (negative = nearer)
    spec: F32  # (h, w) broad (skin/hair sheen) specular strength
    hands: F32  # (H, W) coverage of arms, hands and held objects
    hair: F32  # (H, W) hair coverage (alpha of the hair parts alone)
    glints: list[Glint] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def upsample(self, x: F32) -> F32:
        """A geometry-resolution map -> (H, W[, C])."""
        h, w = self.alpha.shape
        return np.asarray(cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)


def _u8(h: int, w: int) -> U8:
    return np.zeros((h, w), np.uint8)


@dataclass
class _Pose:
    cx: float
    cy: float  # head centre
    R: float  # head half-height (px)
    rx: float  # head half-width
    tilt: float  # head roll, degrees
    turn: float  # -1..1: yaw, shifts the face and narrows one shoulder
    body_rot: float
    neck_w: float
    neck_base: float
    shoulder_y: float
    sw_left: float
    sw_right: float


def _pose(rng: np.random.Generator, h: int, w: int, head_px: float | None) -> _Pose:
    if head_px is not None:  # a sprite canvas for a far figure: head at the top, body down to the bottom
        R = head_px / 2
        cx, cy = w / 2, R * rng.uniform(1.2, 1.4)
    else:
        R = h * float(np.exp(rng.uniform(np.log(0.11), np.log(0.28))))
        cx = w * (0.5 + 0.32 * (rng.beta(2.2, 2.2) - 0.5) * 2)
        cy = h * rng.uniform(0.26, 0.46) + 0.35 * R
        cy = max(cy, R * 0.9)  # rarely cut at the top: webcams frame a little headroom
    rx = R * rng.uniform(0.72, 0.84)
    turn = float(np.clip(rng.normal(0, 0.25), -0.6, 0.6))
    neck_w = rx * rng.uniform(0.46, 0.6)
    neck_base = cy + R * rng.uniform(1.25, 1.45)
    sw = rx * rng.uniform(2.4, 3.1)
    return _Pose(
        cx=cx,
        cy=cy,
        R=R,
        rx=rx,
        tilt=float(np.clip(rng.normal(0, 5), -14, 14)),
        turn=turn,
        body_rot=float(np.clip(rng.normal(0, 3), -8, 8)),
        neck_w=neck_w,
        neck_base=neck_base,
        shoulder_y=neck_base + R * rng.uniform(0.15, 0.35),
        sw_left=sw * (1 - 0.25 * turn),
        sw_right=sw * (1 + 0.25 * turn),
    )


def _head_points(p: _Pose, jaw: float) -> Points:
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    s = np.sin(t)
    x = p.rx * np.cos(t) * (1 - jaw * np.clip(s, 0, 1) ** 2)  # narrower towards the chin
    y = p.R * s * np.where(s > 0, 1.0, 1.03)
    return shapes.transform(np.stack([x, y], 1), p.cx, p.cy, p.tilt)


def _torso_points(p: _Pose, bottom: float, flare: float) -> Points:
    nb, sy, R = p.neck_base, p.shoulder_y, p.R
    sides = []
    for sign, sw in ((-1, p.sw_left), (1, p.sw_right)):
        neck = (p.cx + sign * p.neck_w * 1.05, nb - 0.08 * R)
        sh = (p.cx + sign * sw * 0.84, sy)
        arm = (p.cx + sign * sw * 1.02, sy + 0.65 * R)
        trap = shapes.bezier(neck, (p.cx + sign * sw * 0.45, nb + 0.02 * R), sh, 14)
        rnd = shapes.bezier(sh, (p.cx + sign * sw * 1.0, sy + 0.04 * R), arm, 10)
        down = np.array([arm, (p.cx + sign * (sw * 1.05 + flare * R), bottom)])
        side = np.concatenate([trap, rnd[1:], down[1:]])
        sides.append(side if sign < 0 else side[::-1])
    pts = np.concatenate([sides[1], sides[0]])  # right side bottom-up, then left side top-down
    pts = pts[::-1]
    return shapes.transform(pts - [p.cx, nb], p.cx, nb, p.body_rot)


def _hair_shapes(
    rng: np.random.Generator, p: _Pose, style: str, h: int, w: int
) -> tuple[U8, U8, tuple[float, float, float, float]]:
    """(front coverage, back coverage, cap ellipse (cx, cy, rx, ry) in head-local units) for ``style``."""
    front, back = _u8(h, w), _u8(h, w)
    R, rx = p.R, p.rx
    if style == "curly":
        crx, cry = rx * rng.uniform(1.2, 1.45), R * rng.uniform(1.05, 1.25)
    elif style == "buzz":
        crx, cry = rx * 1.02, R * 1.0
    else:
        crx, cry = rx * rng.uniform(1.04, 1.14), R * rng.uniform(0.95, 1.04)
    ccy = -R * rng.uniform(0.06, 0.16)
    spread = 0.35 if style != "long" else 0.55
    t = np.linspace(np.pi - spread, 2 * np.pi + spread, 60)
    rad = np.ones_like(t)
    if style == "curly":  # a lumpy outline
        rad += 0.05 * np.sin(t * rng.integers(7, 13) + rng.uniform(0, 6)) + 0.03 * rng.normal(0, 1, t.shape)
    outer = np.stack([crx * rad * np.cos(t), ccy + cry * rad * np.sin(t)], 1)
    # The hairline: from one temple up over the forehead and down to the other temple.
    hl_y = -R * rng.uniform(0.5, 0.8)
    temple = (rx * 0.93, -R * rng.uniform(0.05, 0.2))
    hairline = shapes.bezier((temple[0], temple[1]), (0.0, 2 * hl_y - temple[1]), (-temple[0], temple[1]), 20)
    if rng.random() < 0.35:  # a side-swept fringe
        hairline[:, 1] += R * 0.2 * np.exp(-(((hairline[:, 0] - rx * rng.uniform(-0.5, 0.5)) / rx) ** 2) * 3)
    cap = np.concatenate([outer, hairline])
    shapes.fill(front, shapes.transform(cap, p.cx, p.cy, p.tilt))
    if style == "long":
        length = p.neck_base - p.cy + R * rng.uniform(0.2, 2.0)
        width = rx * rng.uniform(1.2, 1.6)
        backpoly = np.concatenate(
            [
                shapes.ellipse_points(0, ccy, crx, cry, 0, 24, np.pi, 2 * np.pi),
                [
                    [width, length * 0.6],
                    [width * 0.95, length],
                    [-width * 0.95, length],
                    [-width, length * 0.6],
                ],
            ]
        )
        shapes.fill(back, shapes.transform(backpoly, p.cx, p.cy, p.tilt))
        for sign in (-1, 1):  # locks falling in front of the shoulders
            if rng.random() < 0.7:
                lw = rx * rng.uniform(0.25, 0.45)
                x_in = sign * rx * 0.85
                lock = np.array(
                    [
                        [x_in, 0.0],
                        [x_in + sign * lw, 0.0],
                        [x_in + sign * lw * 1.2, length],
                        [x_in + sign * lw * 0.1, length * rng.uniform(0.85, 1.0)],
                    ]
                )
                shapes.fill(front, shapes.transform(lock, p.cx, p.cy, p.tilt))
    elif style == "bun":
        c = shapes.transform(np.array([[rx * rng.uniform(-0.3, 0.3), ccy - cry * 0.95]]), p.cx, p.cy, p.tilt)[
            0
        ]
        shapes.fill(front, shapes.ellipse_points(c[0], c[1], R * 0.38, R * 0.32, p.tilt, 32))
    elif style == "ponytail":
        pts = np.array(
            [
                [rx * 0.7, -R * 0.2],
                [rx * 1.35, R * 0.3],
                [rx * 1.45, R * 1.6],
                [rx * 1.1, R * 1.7],
                [rx * 0.95, R * 0.5],
            ]
        )
        pts[:, 0] *= rng.choice([-1, 1])
        shapes.fill(back, shapes.transform(pts, p.cx, p.cy, p.tilt))
    return front, back, (0.0, ccy, crx, cry)


def _strands(
    rng: np.random.Generator, p: _Pose, style: str, cap: tuple[float, float, float, float], n: int
) -> list[Points]:
    """Thin hairs leaving the hair mass: (n, K, 2) random walks, outward and, for long hair, downward."""
    _, ccy, crx, cry = cap
    k = 8
    theta = rng.uniform(np.pi - 0.45, 2 * np.pi + 0.45, n)
    u = rng.uniform(0.88, 1.0, n)
    x0, y0 = crx * u * np.cos(theta), ccy + cry * u * np.sin(theta)
    if style == "curly":
        heading = theta + rng.normal(0, 0.9, n)
        curl = 0.5
    else:  # hair flows from the crown down the sides, flyaways lifting off the outline
        down = np.where(np.cos(theta) > 0, 1.0, -1.0)
        heading = theta + down * (np.pi / 2 - rng.uniform(0.05, 0.45, n))
        curl = 0.12
    turns = np.cumsum(rng.normal(0, curl, (n, k)), 1) + heading[:, None]
    step = p.R * rng.uniform(0.025, 0.055, (n, 1)) * (1.6 if style == "long" else 1.0)
    xs = x0[:, None] + np.cumsum(step * np.cos(turns), 1)
    ys = y0[:, None] + np.cumsum(step * np.sin(turns), 1)
    pts = np.stack([np.concatenate([x0[:, None], xs], 1), np.concatenate([y0[:, None], ys], 1)], -1)
    a = np.deg2rad(p.tilt)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    world = pts @ rot.T + np.array([p.cx, p.cy])
    return list(world)


def _fuzzy(rng: np.random.Generator, cov: U8, width: float) -> U8:
    """Soften a hair mass's outline into a noisy semi-transparent band about ``width`` pixels wide."""
    box = bbox(cov, pad=int(width * 3) + 2)
    if box is None:
        return cov
    y0, y1, x0, x1 = box
    c = cov[y0:y1, x0:x1].astype(np.float32) * np.float32(1 / 255)
    soft = blur(c, max(0.6, width * 0.6))
    band = 4 * soft * (1 - soft)
    noise = value_noise(rng, y1 - y0, x1 - x0, max(1.2, width * 0.7)) - 0.5
    a = np.clip(1.25 * soft - 0.1 + 1.2 * noise * band, 0, 1)
    out = cov.copy()
    out[y0:y1, x0:x1] = (a * 255 + 0.5).astype(np.uint8)
    return out


def _hair_image(rng: np.random.Generator, h: int, w: int, colour: F32, p: _Pose) -> F32:
    """(h, w, 3) hair colour with vertical-ish streaks, filled only around the head (where hair can be)."""
    R = p.R
    y0, y1 = int(max(0, p.cy - 2.2 * R)), int(min(h, p.neck_base + 3.5 * R))
    x0, x1 = int(max(0, p.cx - 3 * R)), int(min(w, p.cx + 3 * R))
    out = np.zeros((h, w, 3), np.float32)
    if y1 - y0 < 2 or x1 - x0 < 2:
        return out
    bh, bw = y1 - y0, x1 - x0
    gh, gw = max(2, int(bh / max(2.0, R * 0.6))), max(2, int(bw / max(1.2, R * 0.04)))
    streak = np.asarray(
        cv2.resize(rng.random((gh, gw), dtype=np.float32), (bw, bh), interpolation=cv2.INTER_LINEAR),
        np.float32,
    )
    out[y0:y1, x0:x1] = np.minimum(outer(0.75 + 0.5 * streak, colour), 1)
    return out


def _face(
    rng: np.random.Generator,
    st: LayerStack,
    p: _Pose,
    skin: F32,
    hair_col: F32,
    h: int,
    w: int,
    glints: list[Glint],
) -> None:
    """Eyes, brows, nose shadow and mouth, in head-local coordinates turned with the head."""
    R, rx = p.R, p.rx
    fx = p.turn * rx * 0.35

    def tr(pts: Points) -> Points:
        return shapes.transform(pts, p.cx, p.cy, p.tilt)

    eye_y = -R * rng.uniform(0.0, 0.08)
    iris = np.array(
        rng.choice([[0.25, 0.15, 0.08], [0.12, 0.08, 0.05], [0.3, 0.45, 0.6], [0.3, 0.4, 0.25]]), np.float32
    )
    brow_col = np.clip(hair_col * 0.8, 0, 1)
    sclera, irises, brows, lids = _u8(h, w), _u8(h, w), _u8(h, w), _u8(h, w)
    for sign in (-1, 1):
        ex = fx + sign * rx * 0.38 * (1 - 0.25 * sign * p.turn)
        shapes.fill(sclera, tr(shapes.ellipse_points(ex, eye_y, rx * 0.17, R * 0.065, 0, 24)))
        ic = tr(np.array([[ex + p.turn * rx * 0.05, eye_y]]))[0]
        shapes.fill(irises, shapes.ellipse_points(ic[0], ic[1], R * 0.06, R * 0.06, 0, 20))
        glints.append(Glint(float(ic[0]), float(ic[1]), float(R * 0.02), 0.6))
        lid = shapes.ellipse_points(
            ex, eye_y + R * 0.01, rx * 0.19, R * 0.08, 0, 12, np.pi * 1.05, np.pi * 1.95
        )
        shapes.strokes(lids, [tr(lid)], 200, max(1, int(R * 0.025)))
        brow = shapes.bezier(
            (ex - sign * rx * 0.2, eye_y - R * 0.17),
            (ex, eye_y - R * 0.26),
            (ex + sign * rx * 0.22, eye_y - R * 0.2),
            8,
        )
        shapes.strokes(brows, [tr(brow)], 230, max(1, int(R * 0.06)))
    st.add(sclera, np.array([0.85, 0.82, 0.78], np.float32), geometry=False)
    st.add(irises, iris, geometry=False)
    st.add(lids, np.clip(skin * 0.45, 0, 1), geometry=False)
    st.add(brows, brow_col, geometry=False)
    nose, mouth, lips = _u8(h, w), _u8(h, w), _u8(h, w)
    # The nose as shading only: a soft shadow under its tip and a faint line down one side.
    shapes.fill(
        nose, tr(shapes.ellipse_points(fx + p.turn * rx * 0.1, R * 0.34, rx * 0.13, R * 0.045, 0, 20))
    )
    side = np.array([[fx + rx * 0.1, R * 0.05], [fx + rx * 0.13, R * 0.27]])
    shapes.strokes(nose, [tr(side)], 60, max(1, int(R * 0.04)))
    my = R * rng.uniform(0.52, 0.6)
    mw = rx * rng.uniform(0.26, 0.36)
    shapes.fill(lips, tr(shapes.ellipse_points(fx, my, mw, R * rng.uniform(0.05, 0.09), 0, 24)))
    smile = rng.uniform(-0.03, 0.06) * R
    shapes.strokes(
        mouth,
        [tr(shapes.bezier((fx - mw, my), (fx, my + smile), (fx + mw, my), 10))],
        220,
        max(1, int(R * 0.025)),
    )
    st.add(nose, np.clip(skin * 0.72, 0, 1), opacity=0.6, geometry=False)
    st.add(lips, np.clip(skin * np.array([0.85, 0.55, 0.55], np.float32), 0, 1), opacity=0.8, geometry=False)
    st.add(mouth, np.clip(skin * 0.35, 0, 1), geometry=False)


def _glasses(rng: np.random.Generator, st: LayerStack, p: _Pose, h: int, w: int, glints: list[Glint]) -> None:
    R, rx = p.R, p.rx
    fx = p.turn * rx * 0.35
    eye_y = -R * 0.03
    lr_x, lr_y = rx * rng.uniform(0.26, 0.34), R * rng.uniform(0.15, 0.22)
    frame, lens = _u8(h, w), _u8(h, w)
    th = max(1, round(R * rng.uniform(0.02, 0.05)))
    pieces: list[Points] = []
    for sign in (-1, 1):
        ex = fx + sign * rx * 0.4
        ring = shapes.ellipse_points(ex, eye_y, lr_x, lr_y, 0, 32)
        ring = np.concatenate([ring, ring[:1]])
        pieces.append(shapes.transform(ring, p.cx, p.cy, p.tilt))
        shapes.fill(lens, shapes.transform(ring, p.cx, p.cy, p.tilt))
        temple = np.array([[ex + sign * lr_x, eye_y - lr_y * 0.3], [sign * rx * 1.0, eye_y]])
        pieces.append(shapes.transform(temple, p.cx, p.cy, p.tilt))
        c = shapes.transform(
            np.array([[ex + rng.uniform(-0.3, 0.3) * lr_x, eye_y - 0.3 * lr_y]]), p.cx, p.cy, p.tilt
        )[0]
        glints.append(Glint(float(c[0]), float(c[1]), float(lr_y * 0.9), 1.0))
    bridge = shapes.bezier(
        (fx - rx * 0.4 + lr_x, eye_y - lr_y * 0.2),
        (fx, eye_y - lr_y * 0.5),
        (fx + rx * 0.4 - lr_x, eye_y - lr_y * 0.2),
        8,
    )
    pieces.append(shapes.transform(bridge, p.cx, p.cy, p.tilt))
    shapes.strokes(frame, pieces, 255, th)
    tint = np.array(rng.choice([[0.75, 0.8, 0.85], [0.6, 0.5, 0.4], [0.9, 0.9, 0.9]]), np.float32)
    st.add(lens, tint, opacity=float(rng.uniform(0.05, 0.2)), geometry=False)
    colour = np.array(
        rng.choice([[0.05, 0.05, 0.05], [0.25, 0.15, 0.08], [0.6, 0.6, 0.62], [0.5, 0.1, 0.1]]), np.float32
    )
    st.add(frame, colour, geometry=False)


def _arm(
    rng: np.random.Generator,
    st: LayerStack,
    p: _Pose,
    h: int,
    w: int,
    skin_img: F32,
    sleeve: F32,
    hands: U8,
    glints: list[Glint],
) -> str:
    """A forearm rising from the bottom edge with a hand; maybe holding a mug or a phone. Returns the kind."""
    R = p.R
    kind = str(rng.choice(["wave", "chin", "mug", "phone"], p=[0.3, 0.2, 0.3, 0.2]))
    side = float(rng.choice([-1, 1]))
    sw = p.sw_right if side > 0 else p.sw_left
    if kind == "wave":
        hx, hy = p.cx + side * sw * rng.uniform(0.7, 1.2), p.cy + R * rng.uniform(-0.6, 1.0)
    elif kind == "chin":
        hx, hy = p.cx + side * p.rx * rng.uniform(0.1, 0.6), p.cy + R * rng.uniform(1.05, 1.3)
    else:
        hx, hy = p.cx + side * sw * rng.uniform(0.0, 0.8), p.neck_base + R * rng.uniform(0.5, 1.6)
    thick = R * rng.uniform(0.5, 0.65)
    elbow = (hx + side * sw * rng.uniform(0.1, 0.5), h + R * rng.uniform(0.2, 1.5))
    arm = _u8(h, w)
    shapes.strokes(arm, [np.array([elbow, (hx, hy + thick * 0.6)])], 255, max(1, int(thick)))
    depth = -float(rng.uniform(0.1, 0.3))
    bulge = thick * 0.5
    short_sleeve = rng.random() < 0.4
    st.add(
        arm,
        skin_img if short_sleeve else sleeve,
        bulge=bulge,
        bulge_sigma=thick * 0.35,
        depth=depth,
        spec=0.1 if short_sleeve else 0.02,
    )
    hands |= arm
    if kind in ("mug", "phone"):
        obj = _u8(h, w)
        if kind == "mug":
            ow, oh = R * rng.uniform(0.55, 0.75), R * rng.uniform(0.65, 0.85)
            ox = hx - side * ow * 0.9
            body = np.array(
                [
                    [ox - ow / 2, hy - oh / 2],
                    [ox + ow / 2, hy - oh / 2],
                    [ox + ow * 0.46, hy + oh / 2],
                    [ox - ow * 0.46, hy + oh / 2],
                ]
            )
            shapes.fill(obj, body)
            handle = shapes.ellipse_points(ox - side * ow * 0.55, hy, ow * 0.25, oh * 0.25, 0, 24)
            shapes.strokes(obj, [np.concatenate([handle, handle[:1]])], 255, max(1, int(ow * 0.1)))
            colour = np.array(
                rng.choice(
                    [[0.92, 0.92, 0.9], [0.8, 0.2, 0.15], [0.15, 0.3, 0.6], [0.1, 0.1, 0.1], [0.9, 0.75, 0.3]]
                ),
                np.float32,
            )
            st.add(
                obj,
                jitter(rng, colour, 0.05),
                bulge=ow * 0.6,
                bulge_sigma=ow * 0.3,
                depth=depth - 0.03,
                spec=0.4,
            )
            rim = _u8(h, w)
            shapes.fill(rim, shapes.ellipse_points(ox, hy - oh / 2, ow * 0.46, oh * 0.06, 0, 24))
            st.add(rim, np.array([0.18, 0.1, 0.05], np.float32), geometry=False)
            glints.append(Glint(float(ox + side * ow * 0.2), float(hy - oh * 0.15), float(ow * 0.12), 0.7))
        else:
            ow, oh = R * rng.uniform(0.4, 0.5), R * rng.uniform(0.8, 1.0)
            ox = hx - side * ow * 0.2
            ang = rng.uniform(-15, 15)
            rect = np.array([[-ow / 2, -oh / 2], [ow / 2, -oh / 2], [ow / 2, oh / 2], [-ow / 2, oh / 2]])
            shapes.fill(obj, shapes.transform(rect, ox, hy - oh * 0.25, ang))
            colour = np.array(
                rng.choice([[0.05, 0.05, 0.06], [0.85, 0.85, 0.86], [0.2, 0.3, 0.5], [0.6, 0.2, 0.3]]),
                np.float32,
            )
            st.add(obj, colour, bulge=ow * 0.1, bulge_sigma=ow * 0.2, depth=depth - 0.02, spec=0.5)
            cam = _u8(h, w)
            cc = shapes.transform(np.array([[-ow * 0.25, -oh * 0.38]]), ox, hy - oh * 0.25, ang)[0]
            shapes.fill(cam, shapes.ellipse_points(cc[0], cc[1], ow * 0.12, ow * 0.12, 0, 16))
            st.add(cam, np.array([0.02, 0.02, 0.03], np.float32), geometry=False)
            glints.append(Glint(float(ox), float(hy - oh * 0.3), float(ow * 0.3), 0.8))
        hands |= obj
    # The hand: palm plus fingers (spread for a wave, curled round an object otherwise).
    hand = _u8(h, w)
    pw, ph = R * rng.uniform(0.32, 0.4), R * rng.uniform(0.38, 0.46)
    shapes.fill(hand, shapes.ellipse_points(hx, hy, pw, ph, rng.uniform(-20, 20), 28))
    fingers = []
    fw = max(1, int(R * 0.13))
    for i in range(4):
        if kind == "wave":
            a = -np.pi / 2 + (i - 1.5) * 0.28 + rng.normal(0, 0.05)
            length = R * rng.uniform(0.45, 0.6) * (1 - 0.15 * abs(i - 1.5))
            fingers.append(
                np.array(
                    [
                        [hx + np.cos(a) * ph * 0.6, hy + np.sin(a) * ph * 0.6],
                        [hx + np.cos(a) * (ph * 0.6 + length), hy + np.sin(a) * (ph * 0.6 + length)],
                    ]
                )
            )
        else:  # curled: short horizontal stubs across the palm's inner side
            fy = hy - ph * 0.6 + i * ph * 0.38
            fingers.append(np.array([[hx, fy], [hx - side * pw * 1.3, fy + R * 0.03]]))
    thumb_a = -np.pi / 2 - side * rng.uniform(0.8, 1.3)
    fingers.append(np.array([[hx, hy], [hx + np.cos(thumb_a) * R * 0.55, hy + np.sin(thumb_a) * R * 0.55]]))
    shapes.strokes(hand, fingers, 255, fw)
    st.add(hand, skin_img, bulge=pw * 0.8, bulge_sigma=pw * 0.4, depth=depth - 0.04, spec=0.12)
    hands |= hand
    return kind


def build_person(
    rng: np.random.Generator, h: int, w: int, *, far: bool = False, head_px: float | None = None
) -> PersonLayer:
    """Paint one subject at (h, w). ``far``: a simpler figure for the background (no hands, glasses), with a
    head ``head_px`` tall (default: a sprite-filling size)."""
    if far and head_px is None:
        head_px = h * 0.28
    p = _pose(rng, h, w, head_px if far else None)
    st = LayerStack(h, w)
    glints: list[Glint] = []
    skin = jitter(rng, pick_between(rng, SKIN_TONES), 0.03)
    hair_col = jitter(rng, pick_between(rng, HAIR_COLOURS, HAIR_WEIGHTS), 0.05)
    if rng.random() < 0.03:  # dyed
        hair_col = rng.uniform(0.1, 0.8, 3).astype(np.float32)
    styles = ["short", "long", "curly", "bun", "ponytail", "buzz"]
    style = str(rng.choice(styles, p=[0.3, 0.3, 0.14, 0.08, 0.08, 0.1]))
    R, rx = p.R, p.rx
    # Skin with mottling, warmer cheeks: a smooth modulation made at low resolution, display values.
    lh, lw = st.lh, st.lw
    s = lh / h
    ly, lx = np.mgrid[0:lh, 0:lw].astype(np.float32)
    mod = (
        np.ones((lh, lw, 3), np.float32)
        * (1 + 0.06 * (value_noise(rng, lh, lw, max(1.5, R * s * 0.3)) - 0.5))[..., None]
    )
    for sign in (-1, 1):
        cxk, cyk = (p.cx + sign * rx * 0.5 + p.turn * rx * 0.3) * s, (p.cy + R * 0.25) * s
        blush = np.exp(-((lx - cxk) ** 2 + (ly - cyk) ** 2) / (2 * (R * s * 0.22) ** 2 + 1e-3))
        mod *= 1 - outer(0.12 * blush.astype(np.float32), (0.0, 1.0, 0.8))
    skin_img = st.upsampled(np.clip(mod * skin, 0, 1).astype(np.float32))
    hair_img = _hair_image(rng, h, w, hair_col, p)
    # The garment texture only where the torso can be: from the shoulders' top down.
    y_top = int(np.clip(p.neck_base - 0.6 * R, 0, h - 1))
    garment = np.zeros((h, w, 3), np.float32)
    garment[y_top:] = cloth(rng, h - y_top, w, (p.sw_left + p.sw_right))
    sleeve = (garment[y_top::4, ::4].mean((0, 1)) * rng.uniform(0.85, 1.0)).astype(np.float32)
    hair_front, hair_back, cap = _hair_shapes(rng, p, style, h, w)
    hair_alpha = np.zeros((h, w), np.float32)
    fuzz = R * rng.uniform(0.03, 0.08)

    # Back to front: hair behind the head, torso, neck, head, face, hair in front, strands, glasses, arm.
    if hair_back.any():
        hb = _fuzzy(rng, hair_back, fuzz)
        st.add(hb, hair_img, bulge=R * 0.3, bulge_sigma=R * 0.4, depth=0.08, spec=0.01)
        hair_alpha = np.maximum(hair_alpha, hb.astype(np.float32) / 255)
    torso = _u8(h, w)
    hip = p.cy + 7 * R  # a far figure is seen whole: torso to the hips, then legs
    shapes.fill(torso, _torso_points(p, hip if far else h + 2 * R, rng.uniform(0, 0.4)))
    depth_torso = (0.06 + 0.12 * np.clip((ly / s - p.neck_base) / (4 * R), 0, 1)).astype(np.float32)
    sw = (p.sw_left + p.sw_right) / 2
    if far:
        limbs, legs = _u8(h, w), _u8(h, w)
        for sign, swk in ((-1, p.sw_left), (1, p.sw_right)):
            shapes.strokes(
                limbs,
                [
                    np.array(
                        [
                            [p.cx + sign * swk * 0.92, p.shoulder_y + 0.4 * R],
                            [p.cx + sign * swk * rng.uniform(0.95, 1.2), hip + 0.4 * R],
                        ]
                    )
                ],
                255,
                max(1, int(R * 0.55)),
            )
            stride = rng.uniform(-0.8, 0.8) * R
            shapes.strokes(
                legs,
                [
                    np.array(
                        [
                            [p.cx + sign * swk * 0.4, hip - 0.5 * R],
                            [p.cx + sign * swk * 0.45 + stride, p.cy + 14 * R],
                        ]
                    )
                ],
                255,
                max(1, int(R * 0.75)),
            )
        trousers = np.array(
            rng.choice([[0.1, 0.12, 0.2], [0.2, 0.2, 0.2], [0.35, 0.3, 0.25], [0.5, 0.5, 0.55]]), np.float32
        )
        st.add(legs, trousers, bulge=R * 0.5, bulge_sigma=R * 0.3, depth=0.1)
        st.add(limbs, sleeve, bulge=R * 0.4, bulge_sigma=R * 0.25, depth=0.05)
    st.add(torso, garment, bulge=sw * 0.5, bulge_sigma=sw * 0.35, depth=depth_torso, spec=0.02)
    neck = _u8(h, w)
    nw, nb = p.neck_w, p.neck_base
    neckpoly = np.array(
        [
            [p.cx - nw, p.cy + 0.5 * R],
            [p.cx + nw, p.cy + 0.5 * R],
            [p.cx + nw * 1.12, nb + 0.1 * R],
            [p.cx - nw * 1.12, nb + 0.1 * R],
        ]
    )
    shapes.fill(neck, neckpoly)
    if rng.random() < 0.6:  # a neckline showing skin under the neck
        if rng.random() < 0.5:
            shapes.fill(
                neck,
                np.array(
                    [
                        [p.cx - nw * 1.5, nb - 0.05 * R],
                        [p.cx + nw * 1.5, nb - 0.05 * R],
                        [p.cx, nb + R * rng.uniform(0.4, 1.1)],
                    ]
                ),
            )
        else:
            shapes.fill(
                neck, shapes.ellipse_points(p.cx, nb, nw * 1.5, R * rng.uniform(0.15, 0.35), 0, 24, 0, np.pi)
            )
    st.add(neck, skin_img * np.float32(0.85), bulge=nw, bulge_sigma=nw * 0.6, depth=0.05, spec=0.05)
    head = _u8(h, w)
    shapes.fill(head, _head_points(p, rng.uniform(0.12, 0.28)))
    for sign in (-1, 1):  # ears
        e = shapes.transform(np.array([[sign * rx * 0.97, R * 0.05]]), p.cx, p.cy, p.tilt)[0]
        shapes.fill(head, shapes.ellipse_points(e[0], e[1], rx * 0.17, R * 0.27, p.tilt + sign * 10, 20))
    st.add(head, skin_img, bulge=rx * 1.1, bulge_sigma=rx * 0.55, depth=0.0, spec=0.1)
    if R > 6:
        _face(rng, st, p, skin, hair_col, h, w, glints)
    if style != "buzz" or rng.random() < 0.5:
        hf = _fuzzy(rng, hair_front, fuzz)
        opacity = 0.55 if style == "buzz" else 1.0
        a = st.add(hf, hair_img, opacity=opacity, bulge=R * 0.9, bulge_sigma=R * 0.5, depth=-0.01, spec=0.015)
        hair_alpha = np.maximum(hair_alpha, hf.astype(np.float32) / 255 * opacity)
        del a
    n_strands = 0 if style == "buzz" else int(rng.integers(20, 70) * (2.0 if style == "curly" else 1.0))
    if far:
        n_strands //= 4
    if n_strands:
        lines = _strands(rng, p, style, cap, n_strands)
        groups = np.array_split(np.arange(n_strands), 3)
        strand_col = np.minimum(hair_img * np.float32(1.15), 1)
        for g, value in zip(groups, (40, 70, 110), strict=True):
            m = shapes.strokes(_u8(h, w), [lines[i] for i in g], value, 1)
            st.add(m, strand_col, geometry=False)
            hair_alpha = np.maximum(hair_alpha, m.astype(np.float32) / 255)
    meta: dict[str, Any] = {"hair": style, "head_px": float(2 * R)}
    hands = _u8(h, w)
    if not far and rng.random() < 0.25:
        _glasses(rng, st, p, h, w, glints)
        meta["glasses"] = True
    if not far and rng.random() < 0.35:
        meta["arm"] = _arm(rng, st, p, h, w, skin_img, sleeve, hands, glints)
    albedo = to_linear(st.colour())
    return PersonLayer(
        alpha=np.clip(st.alpha, 0, 1),
        albedo=albedo,
        normal=st.normals_lowres(),
        depth=st.depth,
        spec=st.spec,
        hands=hands.astype(np.float32) * np.float32(1 / 255),
        hair=hair_alpha,
        glints=glints,
        meta=meta,
    )
