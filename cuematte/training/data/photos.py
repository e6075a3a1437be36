"""Real photographs shipped inside installed packages (scikit-image's ``skimage/data``), used as backgrounds,
wall pictures and monitor content. Optional: with no scikit-image, ``available()`` is empty and callers fall
back to procedural content. Nothing is downloaded."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from cuematte.training.data import fastops
from cuematte.training.data.color import F32

# Colour photos, then greyscale textures that get a tint. Portraits (astronaut, camera) are left out: a big
# face in the background would teach the network that people can be background in a way webcams rarely show.
_COLOUR = (
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "color.png",
    "ihc.png",
)
_GREY = ("brick.png", "grass.png", "gravel.png", "clock_motion.png", "coins.png")


@lru_cache(maxsize=1)
def available() -> tuple[tuple[F32, bool], ...]:
    """((image (h, w, 3) display-space float32 RGB, is_grey), ...) of the photos found on this machine."""
    try:
        import skimage
    except ImportError:
        return ()
    root = Path(skimage.__file__).parent / "data"
    out: list[tuple[F32, bool]] = []
    for names, grey in ((_COLOUR, False), (_GREY, True)):
        for name in names:
            img = cv2.imread(str(root / name), cv2.IMREAD_COLOR)
            if img is not None:
                out.append((cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0, grey))
    return tuple(out)


def random_crop(
    rng: np.random.Generator, h: int, w: int, *, zoom: tuple[float, float] = (1.0, 1.8)
) -> F32 | None:
    """(h, w, 3) a random scaled, flipped, colour-jittered crop of a random photo; None without photos."""
    photos = available()
    if not photos:
        return None
    img, grey = photos[int(rng.integers(len(photos)))]
    ih, iw = img.shape[:2]
    scale = max(h / ih, w / iw) * rng.uniform(*zoom)
    sh, sw = max(h, int(np.ceil(ih * scale))), max(w, int(np.ceil(iw * scale)))
    y0, x0 = int(rng.integers(0, sh - h + 1)), int(rng.integers(0, sw - w + 1))
    # Resize only the region the crop needs, in source coordinates: cheaper than resizing the whole photo.
    sy0, sx0 = y0 / scale, x0 / scale
    m = np.array([[scale, 0, -sx0 * scale], [0, scale, -sy0 * scale]], np.float32)
    crop = np.asarray(
        cv2.warpAffine(
            img,
            m,
            (w, h),
            flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT,
        ),
        np.float32,
    )
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if grey:
        crop = fastops.scale(crop, rng.uniform(0.4, 1.0, 3))
    gain = rng.uniform(0.75, 1.15) * (1 + rng.normal(0, 0.06, 3))
    sat = float(rng.uniform(0.6, 1.2))
    grey_img = fastops.expand(fastops.luminance(crop))
    crop = grey_img + (crop - grey_img) * np.float32(sat)
    return np.clip(fastops.scale(crop, gain), 0, 1)
