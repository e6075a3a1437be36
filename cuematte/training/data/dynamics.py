"""The background over time: a static canvas plus events that change it (a person walking behind, an object
moving, a monitor changing content, a lamp switched, the room light drifting, a curtain swaying, the
background camera panning), as in the paper's dynamic-background pairs.

Time t runs over [0, 1]: a flash pair shows the scene at t = 0 (flash) and t = 1 (no-flash); a clip samples t
along the way. A scene without events is static: ``at(t)`` returns the very same maps for every t.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import cv2
import numpy as np

from cuematte.training.data import shapes
from cuematte.training.data.background import BgInfo, BgMaps, Lamp, Screen, _content, paste_sprite, person_sprite
from cuematte.training.data.color import F32, jitter, to_linear
from cuematte.training.data.fastops import outer
from cuematte.training.data.motion import Affine, compose, similarity
from cuematte.training.data.textures import value_noise

MAX_PAN = 0.015  # x frame width: the background camera's drift between two frames of a pair
MAX_ZOOM = 0.015  # log-scale


class Event(Protocol):
    name: str
    fields: ClassVar[set[str]]  # the BgMaps fields ``apply`` modifies

    def apply(self, maps: BgMaps, t: float) -> None:
        """Change ``maps`` (a private copy) in place to the state at time ``t``."""


@dataclass
class MovingSprite:
    """Something crossing the scene: a far walker or an object (box, ball, chair, pet)."""

    name: str
    alpha: F32  # (sh, sw)
    albedo: F32  # (sh, sw, 3) linear
    depth: float
    start: tuple[float, float]  # top-left at t = 0, canvas px
    end: tuple[float, float]  # top-left at t = 1
    person: bool
    fields: ClassVar[set[str]] = {"albedo", "emit", "depth", "facing", "people"}

    def apply(self, maps: BgMaps, t: float) -> None:
        x = self.start[0] + (self.end[0] - self.start[0]) * t
        y = self.start[1] + (self.end[1] - self.start[1]) * t
        # Sub-pixel motion: shift the sprite by the fractional part so slow motion stays smooth in clips.
        fx, fy = x - np.floor(x), y - np.floor(y)
        m = np.array([[1, 0, fx], [0, 1, fy]], np.float32)
        sh, sw = self.alpha.shape
        a = np.asarray(cv2.warpAffine(self.alpha, m, (sw + 1, sh + 1)), np.float32)
        c = np.asarray(
            cv2.warpAffine(self.albedo, m, (sw + 1, sh + 1), borderMode=cv2.BORDER_REPLICATE), np.float32
        )
        paste_sprite(maps, a, c, self.depth, int(np.floor(x)), int(np.floor(y)), person=self.person)


@dataclass
class ScreenChange:
    """A monitor whose picture changes at the given times."""

    screen: Screen
    contents: list[F32]  # linear emission (sh, sw, 3), one per interval
    switches: list[float]
    name: str = "screen"
    fields: ClassVar[set[str]] = {"emit"}

    def apply(self, maps: BgMaps, t: float) -> None:
        k = sum(t >= s for s in self.switches)
        s = self.screen
        maps.emit[s.y0 : s.y1, s.x0 : s.x1] = self.contents[k % len(self.contents)]


@dataclass
class LightSwitch:
    """A lamp toggled at the given times; the static maps hold its initial state."""

    lamp: Lamp
    switches: list[float]
    name: str = "lamp"
    fields: ClassVar[set[str]] = {"ambient", "emit"}

    def apply(self, maps: BgMaps, t: float) -> None:
        if sum(t >= s for s in self.switches) % 2 == 0:
            return
        sign = -1.0 if self.lamp.on else 1.0
        maps.ambient += outer(self.lamp.glow, sign * self.lamp.colour)
        np.maximum(maps.ambient, 0.02, out=maps.ambient)
        maps.emit += outer(self.lamp.shade, sign * self.lamp.colour * 2.0)
        np.maximum(maps.emit, 0, out=maps.emit)


@dataclass
class RoomLight:
    """The room light drifts (a cloud, a dimmer): ambient scaled and tinted progressively."""

    scale: float
    tint: F32  # (3,) at t = 1
    name: str = "room-light"
    fields: ClassVar[set[str]] = {"ambient"}

    def apply(self, maps: BgMaps, t: float) -> None:
        f = (1 + (self.scale - 1) * t) * (1 + (self.tint - 1) * t)
        maps.ambient *= f.astype(np.float32)


@dataclass
class Sway:
    """A curtain or plant moving: a smooth displacement in a region, growing with t."""

    box: tuple[int, int, int, int]  # y0, y1, x0, x1
    dx: F32  # (bh, bw) displacement at t = 1
    dy: F32
    name: str = "sway"
    fields: ClassVar[set[str]] = {"albedo", "emit"}

    def apply(self, maps: BgMaps, t: float) -> None:
        y0, y1, x0, x1 = self.box
        gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        mx, my = gx + self.dx * t, gy + self.dy * t
        for arr in (maps.albedo, maps.emit):
            arr[y0:y1, x0:x1] = cv2.remap(arr, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@dataclass
class BgScene:
    """A background canvas (the frame plus ``margin`` px on each side) and its events."""

    base: BgMaps
    info: BgInfo
    margin: int
    events: list[Event] = field(default_factory=list)
    pan: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (dx, dy px, log-zoom) of the view at t = 1

    @property
    def dynamic(self) -> bool:
        return bool(self.events) or any(abs(p) > 1e-9 for p in self.pan)

    def at(self, t: float) -> BgMaps:
        """The maps at time t; the base maps themselves (do not modify) when nothing changes."""
        if not self.events:
            return self.base
        maps = self.base.copy(set().union(*(e.fields for e in self.events)))
        for e in self.events:
            e.apply(maps, t)
        return maps

    def view(self, t: float, size: tuple[int, int]) -> Affine:
        """Canvas -> frame affine at time t (the margin crop and the background pan/zoom)."""
        h, w = size
        crop = np.array([[1.0, 0.0, -self.margin], [0.0, 1.0, -self.margin]])
        if not any(abs(p) > 1e-9 for p in self.pan):
            return crop
        dx, dy, z = self.pan
        move = similarity(0.0, float(np.exp(z * t)), dx * t, dy * t, (w / 2, h / 2))
        return compose(move, crop)


def _object_sprite(rng: np.random.Generator, size: float) -> tuple[F32, F32, str]:
    """(alpha, linear albedo, kind) of a small object about ``size`` px across."""
    kind = str(rng.choice(["ball", "box", "chair", "pet"]))
    s = max(6, int(size))
    h, w = (int(s * 1.4), s) if kind == "chair" else (s, int(s * 1.5) if kind == "pet" else s)
    cov = np.zeros((h, w), np.uint8)
    col = jitter(rng, rng.uniform(0.1, 0.9, 3).astype(np.float32), 0.1)
    if kind == "ball":
        shapes.fill(cov, shapes.ellipse_points(w / 2, h / 2, w * 0.45, h * 0.45, 0, 32))
    elif kind == "box":
        shapes.fill(
            cov,
            np.array([[w * 0.05, h * 0.2], [w * 0.95, h * 0.2], [w * 0.95, h * 0.98], [w * 0.05, h * 0.98]]),
        )
    elif kind == "chair":
        shapes.fill(cov, np.array([[w * 0.2, 0], [w * 0.8, 0], [w * 0.8, h * 0.55], [w * 0.2, h * 0.55]]))
        shapes.fill(
            cov,
            np.array([[w * 0.05, h * 0.5], [w * 0.95, h * 0.5], [w * 0.95, h * 0.62], [w * 0.05, h * 0.62]]),
        )
        shapes.strokes(
            cov,
            [
                np.array([[w * 0.15, h * 0.6], [w * 0.1, h * 0.99]]),
                np.array([[w * 0.85, h * 0.6], [w * 0.9, h * 0.99]]),
            ],
            255,
            max(1, w // 12),
        )
    else:  # a cat-ish animal: body, head, ears, tail
        shapes.fill(cov, shapes.ellipse_points(w * 0.5, h * 0.65, w * 0.33, h * 0.25, 0, 32))
        shapes.fill(cov, shapes.ellipse_points(w * 0.82, h * 0.4, w * 0.14, h * 0.17, 0, 24))
        shapes.fill(cov, np.array([[w * 0.72, h * 0.3], [w * 0.76, h * 0.1], [w * 0.8, h * 0.28]]))
        shapes.fill(cov, np.array([[w * 0.84, h * 0.28], [w * 0.9, h * 0.08], [w * 0.93, h * 0.3]]))
        shapes.strokes(
            cov,
            [shapes.bezier((w * 0.2, h * 0.6), (w * 0.02, h * 0.5), (w * 0.08, h * 0.15))],
            255,
            max(1, w // 16),
        )
        col = np.array(
            rng.choice([[0.1, 0.1, 0.1], [0.8, 0.5, 0.2], [0.6, 0.6, 0.6], [0.9, 0.88, 0.85]]), np.float32
        )
    alpha = shapes.coverage(cov)
    shade = 0.75 + 0.35 * value_noise(rng, h, w, max(2.0, s / 4))
    albedo = to_linear(np.minimum(outer(shade, col), 1))
    return alpha, albedo, kind


def make_events(
    rng: np.random.Generator, maps: BgMaps, info: BgInfo, frame_w: int, person_depth: float
) -> tuple[list[Event], tuple[float, float, float], list[str]]:
    """1-3 changes between t = 0 and t = 1: (events, view pan, names). Every change is visible."""
    h, w = maps.depth.shape
    options = ["walker", "object", "room-light", "pan", "sway"]
    weights = [0.25 if info.wall_depth > max(2.4, person_depth + 1.2) else 0.0, 0.25, 0.12, 0.18, 0.08]
    if info.screens:
        options.append("screen")
        weights.append(0.2)
    if info.lamps:
        options.append("lamp")
        weights.append(0.15)
    p = np.array(weights) / np.sum(weights)
    chosen = list(dict.fromkeys(rng.choice(options, size=int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1])), p=p)))
    events: list[Event] = []
    pan = (0.0, 0.0, 0.0)
    for kind in chosen:
        if kind == "walker":
            z = float(rng.uniform(max(2.0, person_depth + 1.0), info.wall_depth - 0.2))
            made = person_sprite(rng, info, z)
            if made is None:
                continue
            alpha, albedo, top = made
            sw = alpha.shape[1]
            # Starts inside the frame (the canvas has ``(w - frame_w) / 2`` px of margin each side).
            lo = (w - frame_w) / 2
            x0 = rng.uniform(lo, max(lo, w - lo - sw))
            dist = rng.uniform(0.1, 0.5) * frame_w * rng.choice([-1, 1])
            events.append(MovingSprite("walker", alpha, albedo, z, (x0, top), (x0 + dist, top), person=True))
        elif kind == "object":
            z_lo, z_hi = person_depth + 0.4, info.wall_depth - 0.05
            if z_hi <= z_lo:  # no room between the subject and the wall
                continue
            z = float(rng.uniform(z_lo, z_hi))
            size = info.focal * rng.uniform(0.2, 0.6) / z
            alpha, albedo, name = _object_sprite(rng, size)
            sh, sw = alpha.shape
            y = (
                float(np.clip(info.floor_row(z) - sh, 0, h - sh))
                if name != "ball"
                else rng.uniform(0, h - sh)
            )
            lo = (w - frame_w) / 2
            x0 = rng.uniform(lo, max(lo, w - lo - sw))
            d = max(sw * 0.5, rng.uniform(0.05, 0.3) * frame_w) * rng.choice([-1, 1])
            dy = rng.uniform(-0.2, 0.1) * h if name == "ball" else 0.0
            events.append(MovingSprite(name, alpha, albedo, z, (x0, y), (x0 + d, y + dy), person=False))
        elif kind == "screen":
            s = info.screens[int(rng.integers(len(info.screens)))]
            shape = (s.y1 - s.y0, s.x1 - s.x0)
            contents = [
                to_linear(_content(rng, *shape)) * np.float32(rng.uniform(0.6, 1.5)) for _ in range(3)
            ]
            contents[0] = maps.emit[s.y0 : s.y1, s.x0 : s.x1].copy()
            events.append(ScreenChange(s, contents, sorted(rng.uniform(0.05, 0.95, 2).tolist())))
        elif kind == "lamp":
            events.append(
                LightSwitch(info.lamps[int(rng.integers(len(info.lamps)))], [float(rng.uniform(0.1, 0.9))])
            )
        elif kind == "room-light":
            scale = float(np.exp(rng.uniform(0.15, 0.5) * rng.choice([-1, 1])))
            events.append(RoomLight(scale, (1 + rng.normal(0, 0.06, 3)).astype(np.float32)))
        elif kind == "pan":
            amp = rng.uniform(0.25, 1.0) * MAX_PAN * frame_w
            ang = rng.uniform(0, 2 * np.pi)
            zoom = float(np.clip(rng.normal(0, MAX_ZOOM / 3), -MAX_ZOOM, MAX_ZOOM))
            pan = (float(amp * np.cos(ang)), float(amp * np.sin(ang)), zoom)
        elif kind == "sway":
            bh, bw = int(h * rng.uniform(0.3, 0.7)), int(w * rng.uniform(0.1, 0.3))
            y0, x0 = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
            amp = rng.uniform(2, 6)
            edge = np.minimum(1, np.minimum(np.arange(bw), np.arange(bw)[::-1]) / max(1, bw * 0.15))[None, :]
            dx = ((value_noise(rng, bh, bw, max(4.0, bh / 3)) - 0.5) * 2 * amp * edge).astype(np.float32)
            dy = ((value_noise(rng, bh, bw, max(4.0, bh / 3)) - 0.5) * amp * edge).astype(np.float32)
            events.append(Sway((y0, y0 + bh, x0, x0 + bw), dx, dy))
    names = [e.name for e in events] + (["pan"] if any(abs(v) > 0 for v in pan) else [])
    if not names:  # every candidate was too small to show: fall back to a light change, always visible
        events.append(RoomLight(float(np.exp(rng.uniform(0.2, 0.4))), np.ones(3, np.float32)))
        names = ["room-light"]
    return events, pan, names
