"""Backgrounds as physical maps: linear albedo, ambient illumination, emission, depth and facing.

Three kinds: an indoor room seen through a pinhole camera (back wall, side walls, floor and ceiling in
perspective; windows, pictures, shelves, doors, monitors, lamps, plants, furniture boxes), a procedural
texture plane, or a real photo plane. Maps are painted on a canvas slightly larger than the frame so camera
motion can be applied without borders. Depth is in metres, so the flash falls off by the inverse square law.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from cuematte.training.data import photos, shapes
from cuematte.training.data.color import F32, jitter, kelvin_rgb, to_linear
from cuematte.training.data.config import BackgroundKind, SynthConfig
from cuematte.training.data.fastops import expand, mix, outer
from cuematte.training.data.layers import blur_fast
from cuematte.training.data.person import build_person
from cuematte.training.data.textures import fbm, value_noise, wall


@dataclass
class BgMaps:
    """Background maps on the canvas (h, w)."""

    albedo: F32  # (h, w, 3) linear reflectance
    ambient: F32  # (h, w, 3) relative ambient illumination (about 1 on average)
    emit: F32  # (h, w, 3) emitted radiance (windows, lamp shades, screens) in ambient units
    depth: F32  # (h, w) metres from the camera
    facing: F32  # (h, w) cosine between the surface normal and the direction to the camera
    people: F32  # (h, w) coverage of background people (a segmenter may pick them up)

    def copy(self, fields: set[str] | None = None) -> BgMaps:
        """A copy whose ``fields`` (default: all) are private; the rest are shared, read-only by contract."""
        if fields is not None:
            return replace(self, **{k: getattr(self, k).copy() for k in fields})
        return BgMaps(
            *(x.copy() for x in (self.albedo, self.ambient, self.emit, self.depth, self.facing, self.people))
        )


@dataclass
class Screen:
    """A monitor / TV on the background: its glass rectangle in canvas pixels."""

    x0: int
    y0: int
    x1: int
    y1: int


@dataclass
class Lamp:
    """A lamp that can be switched: its shade coverage and the glow it adds to the ambient map."""

    shade: F32  # (h, w) coverage
    glow: F32  # (h, w) relative extra illumination when on
    colour: F32  # (3,)
    on: bool


@dataclass
class BgInfo:
    """Geometry the dynamic events need to place things plausibly."""

    kind: BackgroundKind
    focal: float
    vx: float  # vanishing point / principal point (canvas px)
    vy: float
    wall_depth: float
    cam_height: float  # metres above the floor
    screens: list[Screen] = field(default_factory=list)
    lamps: list[Lamp] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def floor_row(self, z: float) -> float:
        """Canvas row where the floor is at distance ``z``."""
        return self.vy + self.focal * self.cam_height / z


def _col(c: F32 | np.ndarray) -> tuple[float, float, float]:
    return (float(c[0]), float(c[1]), float(c[2]))


def _rect(img: F32, x0: float, y0: float, x1: float, y1: float, colour: F32 | np.ndarray) -> None:
    cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), _col(colour), -1)


def _content(rng: np.random.Generator, h: int, w: int) -> F32:
    """(h, w, 3) display-space picture content: a photo crop or abstract colour noise."""
    img = photos.random_crop(rng, h, w, zoom=(1.0, 3.0)) if rng.random() < 0.7 else None
    if img is None:
        cols = rng.uniform(0, 1, (3, 3)).astype(np.float32)
        n = np.stack([value_noise(rng, h, w, max(2.0, w / rng.uniform(1.5, 5))) for _ in range(2)], -1)
        img = cols[0] * (1 - n[..., :1]) + cols[1] * n[..., :1] * (1 - n[..., 1:]) + cols[2] * n[..., 1:]
    return np.clip(img, 0, 1).astype(np.float32)


def _paste(dst: F32, src: F32, x0: int, y0: int) -> None:
    """Paste ``src`` into ``dst`` at (x0, y0), clipped to ``dst``."""
    h, w = dst.shape[:2]
    sh, sw = src.shape[:2]
    ax0, ay0, ax1, ay1 = max(0, x0), max(0, y0), min(w, x0 + sw), min(h, y0 + sh)
    if ax1 > ax0 and ay1 > ay0:
        dst[ay0:ay1, ax0:ax1] = src[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0]


class _Room:
    """Paints an indoor room. All placements are in metres on the back wall, projected to the canvas."""

    def __init__(self, rng: np.random.Generator, h: int, w: int, focal: float, depth: float) -> None:
        self.rng, self.h, self.w, self.f, self.D = rng, h, w, focal, depth
        self.vx = w / 2 + focal * np.tan(rng.uniform(-0.2, 0.2))
        self.vy = h / 2 + focal * np.tan(rng.uniform(-0.12, 0.08))
        self.wl, self.wr = rng.uniform(0.9, 2.6), rng.uniform(0.9, 2.6)
        self.hf, self.hc = rng.uniform(0.95, 1.3), rng.uniform(1.2, 1.8)
        self.alb = np.zeros((h, w, 3), np.float32)  # display space while painting
        self.emit = np.zeros((h, w, 3), np.float32)  # display space, then scaled
        self.amb = np.ones((h, w), np.float32)
        self.glow = np.zeros((h, w, 3), np.float32)
        self.screens: list[Screen] = []
        self.lamps: list[Lamp] = []
        self.items: list[str] = []

    def px(self, x_m: float, height_m: float, z: float | None = None) -> tuple[float, float]:
        """Canvas position of a point ``x_m`` right of the axis and ``height_m`` above the floor at ``z``."""
        z = self.D if z is None else z
        return self.vx + self.f * x_m / z, self.vy + self.f * (self.hf - height_m) / z

    def structure(self) -> tuple[F32, F32]:
        """Walls, floor, ceiling: paints albedo and returns (depth, facing)."""
        rng, h, w = self.rng, self.h, self.w
        xs, ys = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
        bx0, bx1 = self.vx - self.f * self.wl / self.D, self.vx + self.f * self.wr / self.D
        by0, by1 = self.vy - self.f * self.hc / self.D, self.vy + self.f * self.hf / self.D
        # Each surface is a plane parallel to the view axis, so its depth is D / r with r the ratio of the
        # pixel's distance from the vanishing point to the back wall edge's: separable in x and y.
        rl, rr = (self.vx - xs) / max(1e-3, self.vx - bx0), (xs - self.vx) / max(1e-3, bx1 - self.vx)
        rt, rb = (self.vy - ys) / max(1e-3, self.vy - by0), (ys - self.vy) / max(1e-3, by1 - self.vy)
        rx_, ry_ = np.maximum(rl, rr)[None, :], np.maximum(rt, rb)[:, None]
        r = np.maximum(np.maximum(rx_, ry_), 1.0)
        horiz = np.where(rl > rr, 0, 1)[None, :]
        vert = np.where(rt > rb, 2, 3)[:, None]
        region = np.where(
            r > 1, np.where(rx_ >= ry_, horiz, vert), 4
        )  # 0 left 1 right 2 ceiling 3 floor 4 back
        depth = (self.D / r).astype(np.float32)
        dx, dy = ((xs - w / 2) / self.f)[None, :], ((ys - h / 2) / self.f)[:, None]
        inv = 1 / np.sqrt(dx * dx + dy * dy + 1)
        facing = np.where(region == 4, inv, np.where(region < 2, np.abs(dx) * inv, np.abs(dy) * inv))
        wall_col = jitter(
            rng,
            np.array(
                rng.choice(
                    [
                        [0.92, 0.9, 0.86],
                        [0.85, 0.85, 0.85],
                        [0.9, 0.85, 0.75],
                        [0.7, 0.78, 0.82],
                        [0.75, 0.82, 0.72],
                        [0.6, 0.6, 0.62],
                        [0.88, 0.78, 0.7],
                        [0.35, 0.4, 0.5],
                        [0.95, 0.95, 0.95],
                    ]
                ),
                np.float32,
            ),
            0.05,
        )
        self.alb[:] = wall(rng, h, w, wall_col)
        shade = np.ones((h, w), np.float32)
        for k, s in ((0, rng.uniform(0.7, 1.05)), (1, rng.uniform(0.7, 1.05)), (2, rng.uniform(0.8, 1.1))):
            shade[region == k] = s
        if (region == 3).any():
            floor_col = np.array(
                rng.choice(
                    [
                        [0.45, 0.3, 0.18],
                        [0.6, 0.45, 0.3],
                        [0.5, 0.5, 0.5],
                        [0.3, 0.3, 0.35],
                        [0.7, 0.65, 0.55],
                    ]
                ),
                np.float32,
            )
            self.alb[region == 3] = self._floor(floor_col, region == 3)
            shade[region == 3] = rng.uniform(0.6, 0.9)
        if (region == 2).any():
            self.alb[region == 2] = np.array([0.92, 0.92, 0.9], np.float32)
        # Light falls across the room from one side and from above.
        g, v = rng.uniform(-0.5, 0.5), rng.uniform(-0.35, 0.15)
        self.amb = (shade * (1 + g * (xs[None, :] / w - 0.5)) * (1 + v * (ys[:, None] / h - 0.5))).astype(
            np.float32
        )
        self.back = (bx0, by0, bx1, by1)
        return depth, facing.astype(np.float32)

    def _floor(self, colour: F32, mask: np.ndarray) -> F32:
        """Floor texture under ``mask``: carpet noise, or planks whose seams run to the vanishing point."""
        rng, h, w = self.rng, self.h, self.w
        rows = np.nonzero(mask.any(1))[0]
        y0 = int(rows[0])
        fh = h - y0
        lum = 1 + 0.08 * fbm(rng, fh, w, 6.0, 2)
        if rng.random() < 0.6:
            ys = np.arange(y0, h, dtype=np.float32)[:, None] - self.vy
            xs = np.arange(w, dtype=np.float32)[None, :] - self.vx
            u = xs / np.maximum(ys, 1.0) * self.hf  # metres across the floor: constant along seams
            pw = rng.uniform(0.1, 0.25)
            seam = (u / pw) % 1.0 < 0.04 * (1 + 200 / np.maximum(ys, 1.0))
            plank = (np.sin(np.floor(u / pw) * 12.9898) * 43758.5453) % 1.0
            lum = lum * (0.85 + 0.25 * plank) * np.where(seam, 0.7, 1.0)
        return np.minimum(outer(lum.astype(np.float32), colour), 1)[mask[y0:]]

    def window(self) -> None:
        rng = self.rng
        ww, wh = rng.uniform(0.7, 1.6), rng.uniform(0.9, 1.4)
        xc = rng.uniform(-self.wl + ww / 2, self.wr - ww / 2)
        bottom = rng.uniform(0.75, 1.0)
        x0, y1 = self.px(xc - ww / 2, bottom)
        x1, y0 = self.px(xc + ww / 2, bottom + wh)
        ix0, iy0, ix1, iy1 = int(x0), int(y0), int(x1), int(y1)
        if ix1 - ix0 < 4 or iy1 - iy0 < 4:
            return
        gh, gw = iy1 - iy0, ix1 - ix0
        t = np.linspace(0, 1, gh, dtype=np.float32)[:, None, None]
        sky_top = np.array(rng.choice([[0.45, 0.65, 0.95], [0.8, 0.85, 0.9], [0.95, 0.85, 0.7]]), np.float32)
        sky = sky_top * (1 - t) + np.array([0.95, 0.96, 0.98], np.float32) * t
        view = np.broadcast_to(sky, (gh, gw, 3)).copy()
        if rng.random() < 0.6:  # trees or buildings outside
            line = (0.4 + 0.5 * value_noise(rng, 1, gw, max(2.0, gw / 6))[0]) * gh
            mask = (np.arange(gh, dtype=np.float32)[:, None] > gh - line[None]).astype(np.float32)
            out_col = np.array(
                rng.choice([[0.2, 0.35, 0.15], [0.45, 0.45, 0.5], [0.6, 0.55, 0.5]]), np.float32
            )
            tex = outer(0.7 + 0.5 * value_noise(rng, gh, gw, 3.0), out_col)
            m3 = expand(mask)
            view = view * (1 - m3) + tex * m3
        if rng.random() < 0.3:  # blinds
            slat = max(2.0, gh / rng.uniform(8, 20))
            m = ((np.arange(gh) % slat) < slat * rng.uniform(0.5, 0.85)).astype(np.float32)[:, None, None]
            view = view * (1 - m) + m * np.array([0.85, 0.83, 0.8], np.float32) * 0.6
        brightness = rng.uniform(1.5, 5.0)
        _paste(self.emit, view * np.float32(brightness), ix0, iy0)
        _paste(self.alb, np.full((gh, gw, 3), 0.04, np.float32), ix0, iy0)
        frame_col = np.array(rng.choice([[0.95, 0.95, 0.95], [0.4, 0.28, 0.18], [0.2, 0.2, 0.2]]), np.float32)
        th = max(1, int(self.f * 0.05 / self.D))
        cv2.rectangle(self.alb, (ix0, iy0), (ix1, iy1), _col(frame_col), th)
        cv2.rectangle(self.emit, (ix0, iy0), (ix1, iy1), (0.0, 0.0, 0.0), th)
        if rng.random() < 0.6:  # mullions
            mx = (ix0 + ix1) // 2
            cv2.line(self.alb, (mx, iy0), (mx, iy1), _col(frame_col), th)
            cv2.line(self.emit, (mx, iy0), (mx, iy1), (0.0, 0.0, 0.0), th)
        if rng.random() < 0.5:  # curtains either side
            cw = int((ix1 - ix0) * rng.uniform(0.15, 0.3))
            ccol = np.array(jitter(rng, np.asarray(rng.uniform(0.2, 0.9, 3), np.float32), 0.1))
            fold = 0.8 + 0.2 * np.sin(np.arange(cw) * rng.uniform(0.4, 0.9))[None, :, None]
            curtain = (ccol * fold * np.ones((iy1 - iy0 + 2 * th, 1, 1))).astype(np.float32)
            for cx0 in (ix0 - cw // 2, ix1 - cw // 2):
                _paste(self.alb, curtain, cx0, iy0 - th)
                _paste(self.emit, np.zeros_like(curtain), cx0, iy0 - th)
        # Daylight spills into the room near the window (cool).
        glow = np.zeros((self.h, self.w), np.float32)
        cv2.rectangle(glow, (ix0, iy0), (ix1, iy1), 1.0, -1)
        glow = blur_fast(glow, max(4.0, (ix1 - ix0) * 0.8))
        self.glow += outer(glow, kelvin_rgb(rng.uniform(6000, 8000)) * rng.uniform(0.3, 1.0))
        self.items.append("window")

    def picture(self) -> None:
        rng = self.rng
        pw, ph = rng.uniform(0.25, 0.9), rng.uniform(0.25, 0.7)
        xc, yc = rng.uniform(-self.wl, self.wr), rng.uniform(1.2, 1.9)
        x0, y1 = self.px(xc - pw / 2, yc - ph / 2)
        x1, y0 = self.px(xc + pw / 2, yc + ph / 2)
        if x1 - x0 < 4 or y1 - y0 < 4:
            return
        frame = np.array(
            rng.choice([[0.1, 0.1, 0.1], [0.9, 0.9, 0.88], [0.5, 0.35, 0.2], [0.7, 0.6, 0.3]]), np.float32
        )
        _rect(self.alb, x0, y0, x1, y1, frame)
        b = max(1, int((x1 - x0) * rng.uniform(0.04, 0.12)))
        ih, iw = int(y1) - int(y0) - 2 * b, int(x1) - int(x0) - 2 * b
        if ih > 2 and iw > 2:
            _paste(self.alb, _content(rng, ih, iw), int(x0) + b, int(y0) + b)
        self.items.append("picture")

    def shelf(self) -> None:
        rng = self.rng
        sw = rng.uniform(0.6, 1.6)
        xc = rng.uniform(-self.wl + sw / 2, self.wr - sw / 2)
        board_col = np.array(rng.choice([[0.9, 0.9, 0.88], [0.45, 0.3, 0.18], [0.2, 0.2, 0.2]]), np.float32)
        for level in range(int(rng.integers(1, 4))):
            hb = rng.uniform(0.9, 1.1) + level * rng.uniform(0.32, 0.4)
            x0, yb = self.px(xc - sw / 2, hb)
            x1, _ = self.px(xc + sw / 2, hb)
            scale = self.f / self.D
            # Books: widths and heights drawn at once, then placed left to right.
            n = int(rng.integers(4, 22))
            widths = rng.uniform(0.02, 0.06, n) * scale
            heights = rng.uniform(0.15, 0.3, n) * scale
            lean = rng.random(n) < 0.1
            cols = (rng.uniform(0.1, 0.85, (n, 3)) * rng.uniform(0.5, 1.0, (n, 1))).astype(np.float32)
            x = x0 + rng.uniform(0, 0.2) * (x1 - x0)
            for i in range(n):
                if x + widths[i] > x1:
                    break
                if lean[i]:
                    pts = np.array(
                        [
                            [x, yb],
                            [x + widths[i], yb],
                            [x + widths[i] + heights[i] * 0.4, yb - heights[i]],
                            [x + heights[i] * 0.4, yb - heights[i]],
                        ],
                        np.int32,
                    )
                    cv2.fillConvexPoly(self.alb, pts, _col(cols[i]))
                else:
                    _rect(self.alb, x, yb - heights[i], x + widths[i] - 1, yb, cols[i])
                x += widths[i] + (scale * rng.uniform(0.0, 0.2) if rng.random() < 0.15 else 0)
            _rect(self.alb, x0, yb, x1, yb + max(2.0, 0.025 * scale), board_col)
        self.items.append("shelf")

    def door(self) -> None:
        rng = self.rng
        dw = rng.uniform(0.75, 0.9)
        xc = rng.uniform(-self.wl + dw / 2, self.wr - dw / 2)
        x0, y1 = self.px(xc - dw / 2, 0.0)
        x1, y0 = self.px(xc + dw / 2, 2.05)
        col = np.array(
            rng.choice([[0.92, 0.92, 0.9], [0.5, 0.35, 0.22], [0.35, 0.25, 0.18], [0.6, 0.65, 0.7]]),
            np.float32,
        )
        _rect(self.alb, x0, y0, x1, y1, col)
        cv2.rectangle(
            self.alb, (int(x0), int(y0)), (int(x1), int(y1)), _col(col * 0.7), max(1, int((x1 - x0) / 30))
        )
        hx, hy = self.px(xc + dw * 0.38 * rng.choice([-1, 1]), 1.0)
        cv2.circle(self.alb, (int(hx), int(hy)), max(1, int((x1 - x0) / 25)), (0.75, 0.7, 0.55), -1)
        self.items.append("door")

    def screen(self) -> None:
        rng = self.rng
        sw = rng.uniform(0.45, 1.2)
        sh = sw * rng.uniform(0.56, 0.65)
        xc, yc = rng.uniform(-self.wl + sw / 2, self.wr - sw / 2), rng.uniform(0.9, 1.6)
        x0, y1 = self.px(xc - sw / 2, yc - sh / 2)
        x1, y0 = self.px(xc + sw / 2, yc + sh / 2)
        if x1 - x0 < 8 or y1 - y0 < 6:
            return
        _rect(self.alb, x0, y0, x1, y1, np.array([0.03, 0.03, 0.035], np.float32))
        b = max(1, int((x1 - x0) * 0.03))
        # The glass, clipped to the canvas (a screen may be partly out of view).
        s = Screen(
            max(0, int(x0) + b), max(0, int(y0) + b), min(self.w, int(x1) - b), min(self.h, int(y1) - b)
        )
        if s.x1 - s.x0 > 2 and s.y1 - s.y0 > 2:
            _paste(self.emit, _content(rng, s.y1 - s.y0, s.x1 - s.x0) * rng.uniform(0.6, 1.5), s.x0, s.y0)
            self.screens.append(s)
        self.items.append("screen")

    def lamp(self) -> None:
        rng = self.rng
        xc = rng.uniform(-self.wl + 0.3, self.wr - 0.3)
        z = self.D - rng.uniform(0.2, min(1.0, self.D * 0.4))
        top = rng.uniform(1.2, 1.7)
        bx, by = self.px(xc, 0.0, z)
        tx, ty = self.px(xc, top, z)
        scale = self.f / z
        cv2.line(
            self.alb, (int(bx), int(by)), (int(tx), int(ty)), (0.15, 0.15, 0.15), max(1, int(0.03 * scale))
        )
        shade_w, shade_h = 0.35 * scale, 0.3 * scale
        pts = np.array(
            [
                [tx - shade_w * 0.3, ty - shade_h],
                [tx + shade_w * 0.3, ty - shade_h],
                [tx + shade_w * 0.5, ty],
                [tx - shade_w * 0.5, ty],
            ]
        )
        shade = shapes.coverage(shapes.fill(np.zeros((self.h, self.w), np.uint8), pts))
        colour = kelvin_rgb(rng.uniform(2600, 3500))
        glow = blur_fast((shade > 0.5).astype(np.float32), max(4.0, shade_w * 1.5)) * rng.uniform(1.0, 3.0)
        on = bool(rng.random() < 0.7)
        self.alb[:] = self.alb * (1 - expand(shade)) + outer(shade, (0.9, 0.85, 0.7))
        self.lamps.append(Lamp(shade=shade, glow=glow, colour=colour, on=on))
        self.items.append("lamp")

    def plant(self) -> None:
        rng = self.rng
        z = self.D - rng.uniform(0.1, min(1.2, self.D * 0.45))
        xc = rng.uniform(-self.wl + 0.2, self.wr - 0.2)
        base = rng.uniform(0.0, 0.8)
        scale = self.f / z
        px, py = self.px(xc, base, z)
        pot_w, pot_h = 0.25 * scale, 0.25 * scale
        pot = np.array(
            [
                [px - pot_w / 2, py - pot_h],
                [px + pot_w / 2, py - pot_h],
                [px + pot_w * 0.38, py],
                [px - pot_w * 0.38, py],
            ],
            np.int32,
        )
        cv2.fillConvexPoly(
            self.alb,
            pot,
            _col(np.array(rng.choice([[0.7, 0.4, 0.25], [0.9, 0.9, 0.9], [0.2, 0.2, 0.2]]), np.float32)),
        )
        green = np.array(rng.choice([[0.15, 0.4, 0.12], [0.25, 0.5, 0.2], [0.1, 0.3, 0.15]]), np.float32)
        n = int(rng.integers(8, 25))
        ang = rng.uniform(-np.pi * 0.95, -np.pi * 0.05, n)
        length = rng.uniform(0.2, 0.7, n) * scale
        for i in range(n):
            ex, ey = px + np.cos(ang[i]) * length[i] * 0.6, py - pot_h + np.sin(ang[i]) * length[i]
            cv2.ellipse(
                self.alb,
                (int(ex), int(ey)),
                (max(1, int(length[i] * 0.25)), max(1, int(length[i] * 0.1))),
                float(np.rad2deg(ang[i])),
                0,
                360,
                _col(jitter(rng, green, 0.15)),
                -1,
            )
        self.items.append("plant")

    def furniture(self, depth: F32) -> None:
        """A box (cabinet, desk, sofa block) standing on the floor, drawn with its visible faces."""
        rng = self.rng
        bw, bh, bd = rng.uniform(0.5, 1.6), rng.uniform(0.4, 1.1), rng.uniform(0.3, 0.8)
        z0 = rng.uniform(max(1.0, self.D * 0.45), max(1.05, self.D - bd - 0.05))
        xc = rng.uniform(-self.wl + bw / 2, self.wr - bw / 2) if self.wl + self.wr > bw else 0.0
        col = np.array(
            rng.choice(
                [
                    [0.45, 0.3, 0.18],
                    [0.9, 0.9, 0.88],
                    [0.25, 0.25, 0.28],
                    [0.55, 0.5, 0.45],
                    [0.3, 0.35, 0.5],
                    [0.6, 0.25, 0.2],
                ]
            ),
            np.float32,
        )

        def p(x: float, y: float, z: float) -> list[float]:
            return list(self.px(x, y, z))

        xl, xr, z1 = xc - bw / 2, xc + bw / 2, z0 + bd
        faces = []
        if bh < self.hf:  # the top is seen from above
            faces.append(([p(xl, bh, z0), p(xr, bh, z0), p(xr, bh, z1), p(xl, bh, z1)], 1.1, z0 + bd / 2))
        if xl > 0:
            faces.append(([p(xl, 0, z0), p(xl, bh, z0), p(xl, bh, z1), p(xl, 0, z1)], 0.7, z0 + bd / 2))
        if xr < 0:
            faces.append(([p(xr, 0, z0), p(xr, bh, z0), p(xr, bh, z1), p(xr, 0, z1)], 0.7, z0 + bd / 2))
        faces.append(([p(xl, 0, z0), p(xr, 0, z0), p(xr, bh, z0), p(xl, bh, z0)], 0.9, z0))
        for pts, shade, z in faces:
            poly = np.round(np.array(pts)).astype(np.int32)
            cv2.fillConvexPoly(self.alb, poly, _col(col * shade))
            cv2.fillConvexPoly(self.emit, poly, (0.0, 0.0, 0.0))
            cv2.fillConvexPoly(depth, poly, float(z))
        if rng.random() < 0.5:  # drawers / doors on the front
            fx0, fy0 = self.px(xl, bh, z0)
            fx1, fy1 = self.px(xr, 0, z0)
            for k in range(1, int(rng.integers(2, 4))):
                xk = fx0 + (fx1 - fx0) * k / 3
                cv2.line(self.alb, (int(xk), int(fy0)), (int(xk), int(fy1)), _col(col * 0.6), 1)
        self.items.append("furniture")


def _indoor(rng: np.random.Generator, h: int, w: int, focal: float, depth_m: float) -> tuple[BgMaps, BgInfo]:
    room = _Room(rng, h, w, focal, depth_m)
    depth, facing = room.structure()
    painters = [
        (room.window, 0.35),
        (room.picture, 0.5),
        (room.picture, 0.3),
        (room.shelf, 0.35),
        (room.door, 0.15),
        (room.screen, 0.2),
        (room.plant, 0.3),
        (room.lamp, 0.3),
    ]
    for paint, p in painters:
        if rng.random() < p:
            paint()
    for _ in range(int(rng.choice([0, 1, 2], p=[0.45, 0.4, 0.15]))):
        room.furniture(depth)
    amb = expand(room.amb) + room.glow
    for lamp in room.lamps:
        if lamp.on:
            amb = amb + outer(lamp.glow, lamp.colour)
    emit = to_linear(room.emit) if room.emit.any() else room.emit
    for lamp in room.lamps:  # lit shades glow (emission follows the lamp's switch)
        if lamp.on:
            emit = emit + outer(lamp.shade, lamp.colour * 2.0)
    info = BgInfo(
        kind="indoor",
        focal=focal,
        vx=room.vx,
        vy=room.vy,
        wall_depth=depth_m,
        cam_height=room.hf,
        screens=room.screens,
        lamps=room.lamps,
        meta={"items": room.items},
    )
    maps = BgMaps(
        albedo=to_linear(room.alb),
        ambient=amb.astype(np.float32),
        emit=emit.astype(np.float32),
        depth=depth,
        facing=facing,
        people=np.zeros((h, w), np.float32),
    )
    return maps, info


def _plane(rng: np.random.Generator, h: int, w: int, depth_m: float) -> tuple[F32, F32, F32]:
    """(depth, facing, ambient) of a flat background slightly turned away from the camera."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tilt = rng.uniform(-0.3, 0.3)
    depth = (depth_m * (1 + tilt * (xx / w - 0.5))).astype(np.float32)
    facing = np.full((h, w), float(np.cos(tilt)), np.float32)
    g = rng.uniform(-0.4, 0.4)
    amb = (1 + g * (xx / w - 0.5)) * (1 + rng.uniform(-0.3, 0.1) * (yy / h - 0.5))
    return depth, facing, expand(amb.astype(np.float32))


def _texture_bg(rng: np.random.Generator, h: int, w: int) -> F32:
    kind = rng.choice(["noise", "bokeh", "stripes"], p=[0.45, 0.35, 0.2])
    if kind == "noise":
        cols = rng.uniform(0.05, 0.95, (3, 3)).astype(np.float32)
        a, b = (np.clip(0.5 + 0.3 * fbm(rng, h, w, rng.uniform(20, 120), 3), 0, 1) for _ in range(2))
        img = mix(a, cols[0], cols[1]) * expand(1 - b) + outer(a * b, cols[2])
    elif kind == "bokeh":  # out-of-focus lights and shapes
        img = np.ones((h, w, 3), np.float32) * rng.uniform(0.05, 0.6, 3).astype(np.float32)
        for _ in range(int(rng.integers(8, 40))):
            c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
            cv2.circle(img, c, int(rng.uniform(0.02, 0.12) * w), _col(rng.uniform(0, 1, 3)), -1)
        img = blur_fast(img, rng.uniform(2, 8))
    else:
        return wall(rng, h, w, rng.uniform(0.2, 0.9, 3).astype(np.float32))
    return np.clip(img, 0, 1).astype(np.float32)


def person_sprite(rng: np.random.Generator, info: BgInfo, z: float) -> tuple[F32, F32, int] | None:
    """(alpha, shaded linear albedo, sprite top row) of a whole standing figure at distance ``z``, feet on the
    floor; None when too small to matter."""
    head_px = info.focal * 0.23 / z
    if head_px < 5:
        return None
    sh, sw = int(head_px * 7.6), int(head_px * 4.5)
    top = int(info.floor_row(z) - sh)
    sprite = build_person(rng, sh, sw, far=True, head_px=head_px)
    shade = sprite.upsample(np.ascontiguousarray(0.55 + 0.45 * sprite.normal[..., 2]))
    return sprite.alpha, sprite.albedo * expand(shade), top


def _second_person(
    rng: np.random.Generator, maps: BgMaps, info: BgInfo, min_depth: float
) -> dict[str, Any] | None:
    """A small, far person standing in the background (part of the background: never in the alpha)."""
    w = maps.depth.shape[1]
    z = float(rng.uniform(min_depth, max(min_depth, info.wall_depth - 0.3)))
    made = person_sprite(rng, info, z)
    if made is None:
        return None
    alpha, albedo, top = made
    x0 = int(rng.uniform(-alpha.shape[1] * 0.3, w - alpha.shape[1] * 0.7))
    paste_sprite(maps, alpha, albedo, z, x0, top)
    return {"depth": z, "x": x0}


def paste_sprite(
    maps: BgMaps,
    alpha: F32,
    albedo: F32,
    depth: float,
    x0: int,
    y0: int,
    *,
    person: bool = True,
    emit: F32 | None = None,
) -> None:
    """Composite a sprite (alpha (sh, sw), linear albedo (sh, sw, 3)) into the maps at (x0, y0)."""
    h, w = maps.depth.shape
    sh, sw = alpha.shape
    ax0, ay0, ax1, ay1 = max(0, x0), max(0, y0), min(w, x0 + sw), min(h, y0 + sh)
    if ax1 <= ax0 or ay1 <= ay0:
        return
    a = alpha[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0]
    a3 = expand(a)
    sl = (slice(ay0, ay1), slice(ax0, ax1))
    maps.albedo[sl] = maps.albedo[sl] * (1 - a3) + a3 * albedo[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0]
    e = 0.0 if emit is None else emit[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0]
    maps.emit[sl] = maps.emit[sl] * (1 - a3) + a3 * e
    maps.depth[sl] = maps.depth[sl] * (1 - a) + a * depth
    maps.facing[sl] = maps.facing[sl] * (1 - a) + a * 0.9
    if person:
        maps.people[sl] = np.maximum(maps.people[sl], a)


def build_background(
    rng: np.random.Generator, h: int, w: int, cfg: SynthConfig, focal: float, min_person_depth: float
) -> tuple[BgMaps, BgInfo]:
    """Paint a background canvas (h, w). ``min_person_depth``: background people stay behind this."""
    kinds = [k for k, _ in cfg.bg_weights]
    weights = np.array([wt for _, wt in cfg.bg_weights], np.float64)
    kind: BackgroundKind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    lo, hi = cfg.background_depth_m
    depth_m = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    photo = photos.random_crop(rng, h, w) if kind == "photo" else None
    if kind == "photo" and photo is None:
        kind = "indoor"
    if kind == "indoor":
        maps, info = _indoor(rng, h, w, focal, depth_m)
    else:
        img = photo if photo is not None else _texture_bg(rng, h, w)
        depth, facing, amb = _plane(rng, h, w, depth_m)
        maps = BgMaps(
            albedo=to_linear(img),
            ambient=amb,
            emit=np.zeros((h, w, 3), np.float32),
            depth=depth,
            facing=facing,
            people=np.zeros((h, w), np.float32),
        )
        info = BgInfo(
            kind=kind,
            focal=focal,
            vx=w / 2,
            vy=h / 2 + focal * np.tan(rng.uniform(-0.1, 0.1)),
            wall_depth=depth_m,
            cam_height=rng.uniform(1.0, 1.3),
        )
    if rng.random() < cfg.p_second_person and depth_m > max(2.2, min_person_depth + 1.0):
        sp = _second_person(rng, maps, info, max(1.9, min_person_depth + 0.8))
        if sp is not None:
            info.meta["second_person"] = sp
    return maps, info
