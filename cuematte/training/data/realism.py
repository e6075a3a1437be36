"""Photographic realism for rendered subjects (issue 26, item 4): what the real-footage check shows the flat
renderer misses, where the network decides (the guidance's unknown band, mostly hair and edges).

* hair that looks photographed: the hair's albedo takes the strand texture of a real fur photo
  (scikit-image's ``chelsea``), and fine flyaway strands leave the outline, a fraction of a pixel wide, so the
  edge is a semi-transparent tangle, not a soft blob;
* a key light from one side (a window, a desk lamp): a smooth shading gradient across the subject;
* motion blur of the subject (a talking head moves while the shutter is open): alpha and colour blurred
  together, so the ground truth stays a consistent composite;
* a webcam's pipeline: softened by a down- and up-scale, then compressed again as a call's video is.

A sample takes the pack with ``SynthConfig.p_realism``, drawn from its own random stream, and then each effect
with its own probability, so the scene, silhouette and light of every sample are the ones it has without it.
Images are float32 RGB in [0, 1]; mattes float32 in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from cuematte.training.data import camera as camlib
from cuematte.training.data.color import F32
from cuematte.training.data.person import PersonLayer

SUPERSAMPLE = 4  # flyaway strands are drawn at this scale and area-averaged down: sub-pixel widths


@dataclass(frozen=True)
class Realism:
    """The effects one sample takes, with their strengths (None: not taken)."""

    hair_texture: float | None  # contrast of the fur texture in log albedo
    flyaways: int | None  # number of strands
    key_light: tuple[float, float] | None  # (direction in radians, gradient per subject half-width)
    motion_blur: tuple[float, float] | None  # (length in pixels, direction in radians)
    webcam: tuple[float, int] | None  # (down-scale factor, JPEG quality)

    def names(self) -> list[str]:
        return [k for k, v in vars(self).items() if v is not None]


def draw_realism(rng: np.random.Generator, width: int) -> Realism:
    """The effects of one sample, all drawn up front in a fixed order (``width``: the frame's W, pixels)."""
    u = rng.random(5)
    return Realism(
        hair_texture=float(rng.uniform(0.25, 0.6)) if u[0] < 0.7 else None,
        flyaways=int(rng.integers(20, 120)) if u[1] < 0.6 else None,
        key_light=(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.15, 0.6))) if u[2] < 0.6 else None,
        motion_blur=(float(rng.uniform(0.004, 0.02) * width), float(rng.uniform(0, np.pi))) if u[3] < 0.3 else None,
        webcam=(float(rng.uniform(0.5, 0.85)), int(rng.integers(30, 75))) if u[4] < 0.5 else None,
    )


@lru_cache(maxsize=1)
def _fur() -> F32 | None:
    """(h, w) zero-mean, unit-std luminance detail of a real fur photo, or None without scikit-image."""
    try:
        import skimage
    except ImportError:
        return None
    img = cv2.imread(str(Path(skimage.__file__).parent / "data" / "chelsea.png"), cv2.IMREAD_GRAYSCALE)
    if img is None:
        return None
    lum = np.log(img.astype(np.float32) / 255 + 0.05)
    detail = lum - cv2.GaussianBlur(lum, (0, 0), 6)
    return ((detail - detail.mean()) / (detail.std() + 1e-6)).astype(np.float32)


def _hair_pixels(person: PersonLayer) -> tuple[slice, slice] | None:
    ys, xs = np.nonzero(person.hair > 0.02)
    if len(ys) < 16:
        return None
    return slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1)


def hair_texture(rng: np.random.Generator, person: PersonLayer, contrast: float) -> None:
    """Give the hair's albedo a real fur photo's strand texture, in place (``contrast``: std in log albedo)."""
    fur, box = _fur(), _hair_pixels(person)
    if fur is None or box is None:
        return
    ys, xs = box
    bh, bw = ys.stop - ys.start, xs.stop - xs.start
    # A random patch, turned so its strands run mostly downwards, scaled to strands a few pixels apart.
    angle, zoom = float(rng.uniform(-30, 30)), float(rng.uniform(0.6, 1.4))
    fh, fw = fur.shape
    m = np.asarray(cv2.getRotationMatrix2D((fw / 2, fh / 2), angle, zoom), np.float64)
    m[:, 2] += (bw / 2 - fw / 2, bh / 2 - fh / 2)
    m[:, 2] += rng.uniform(-0.3, 0.3, 2) * (fw, fh)
    tex = np.asarray(cv2.warpAffine(fur, m, (bw, bh), borderMode=cv2.BORDER_REFLECT), np.float32)
    weight = np.clip(person.hair[ys, xs], 0, 1)
    gain = np.exp(np.float32(contrast) * tex * weight)
    person.albedo[ys, xs] = np.clip(person.albedo[ys, xs] * gain[..., None], 0, 1)


def flyaways(rng: np.random.Generator, person: PersonLayer, n: int) -> None:
    """Add ``n`` thin strands leaving the hair's outline (alpha, albedo and hair coverage), in place."""
    hair = person.hair > 0.5
    contours, _ = cv2.findContours(hair.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return
    outline = np.concatenate([c[:, 0] for c in contours]).astype(np.float32)  # (K, 2) x, y
    h, w = person.alpha.shape
    cy, cx = np.mean(np.nonzero(hair), 1)
    colour = np.median(person.albedo[person.hair > 0.9], 0) if (person.hair > 0.9).any() else None
    if colour is None:
        return
    ss = SUPERSAMPLE
    canvas = np.zeros((h * ss, w * ss), np.uint8)
    size = float(np.sqrt(hair.sum()))
    for i in rng.integers(0, len(outline), n):
        x, y = outline[i]
        heading = np.arctan2(y - cy, x - cx) + rng.normal(0, 0.5)
        heading += 0.5 * (np.pi / 2 - heading) * rng.random() * (y > cy)  # below the crown, strands fall
        steps = int(rng.integers(6, 14))
        turns = heading + np.cumsum(rng.normal(0, 0.25, steps))
        step = size * rng.uniform(0.01, 0.03)
        pts = np.stack([x + np.cumsum(step * np.cos(turns)), y + np.cumsum(step * np.sin(turns))], 1)
        pts = np.concatenate([[[x, y]], pts]) * ss
        opacity = int(rng.uniform(0.5, 1.0) * 255)
        cv2.polylines(canvas, [np.round(pts).astype(np.int32)], False, opacity, int(rng.integers(1, 4)), cv2.LINE_AA)
    strands = np.asarray(cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA), np.float32) / 255
    new_alpha = 1 - (1 - person.alpha) * (1 - strands)
    # Where a strand is most of what is there, the colour is the hair's.
    share = np.clip(strands / np.maximum(new_alpha, 1e-3), 0, 1)[..., None]
    person.albedo[:] = person.albedo * (1 - share) + colour * share
    person.alpha[:] = new_alpha
    person.hair[:] = np.maximum(person.hair, strands)


def key_light(radiance: F32, alpha: F32, direction: float, gradient: float) -> F32:
    """(H, W, 3) radiance shaded by a light from one side: brighter towards ``direction`` across the subject."""
    ys, xs = np.nonzero(alpha > 0.5)
    if len(xs) == 0:
        return radiance
    cx, cy, half = xs.mean(), ys.mean(), max(1.0, (xs.max() - xs.min()) / 2)
    h, w = alpha.shape
    gx = (np.arange(w, dtype=np.float32) - cx) * np.cos(direction)
    gy = (np.arange(h, dtype=np.float32) - cy) * np.sin(direction) * 0.5  # light comes from the side more
    ramp = np.clip(1 + gradient * (gy[:, None] + gx[None, :]) / half, 0.25, 2.0).astype(np.float32)
    return (radiance * ramp[..., None]).astype(np.float32)


def motion_blur(alpha: F32, fg: F32, length: float, direction: float) -> tuple[F32, F32]:
    """A moving subject: ((H, W) alpha, (H, W, 3) colour) blurred along ``direction`` by ``length`` px as one
    premultiplied layer, so ``alpha * fg`` is the blurred composite's foreground part."""
    k = int(np.ceil(length)) | 1
    kernel = np.zeros((k, k), np.float32)
    c, r = k // 2, length / 2
    dx, dy = r * np.cos(direction), r * np.sin(direction)
    cv2.line(kernel, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1, cv2.LINE_AA)
    kernel /= kernel.sum()
    a = np.asarray(cv2.filter2D(alpha, -1, kernel, borderType=cv2.BORDER_REPLICATE), np.float32)
    premult = np.asarray(cv2.filter2D(fg * alpha[..., None], -1, kernel, borderType=cv2.BORDER_REPLICATE), np.float32)
    out = np.where(a[..., None] > 1e-3, premult / np.maximum(a, 1e-3)[..., None], fg)
    return np.clip(a, 0, 1), out.astype(np.float32)


def webcam(image: F32, scale: float, quality: int) -> F32:
    """A webcam's soft image and a call's compression: (H, W, 3) down by ``scale``, back up, re-encoded."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    up = np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)
    return camlib.jpeg(np.clip(up, 0, 1), quality)
