"""Real photographs through the whole pipeline: render a flash for a real portrait, matte it, save a sheet.

Our models learn from synthetic people only; this is how we look at what they do on real faces, hair and
clothes. scikit-image's wheel ships one real colour portrait, ``astronaut.png`` (``camera.png`` is greyscale,
where the paper's colour-histogram flash ratio has nothing to go on). Its flash is rendered from a depth proxy,
the person near and the rest at ``--bg-distance`` (``cuematte.engine.cues.simulated_flash``).

No ground truth exists for these photos, so the output is a contact sheet for people to judge, not a metric.
Beside it, each model's mean alpha over hand-marked regions that lie wholly inside what they name (face and
hair, the dark turtleneck, the suit, the held helmet, the room behind) makes "the helmet got worse" a number
anyone can reproduce (``regions.json``):

    python -m cuematte.training.photo_flash --model cuematte/engine/models/flash-lite --out runs/photos
    python -m cuematte.training.photo_flash --model cuematte/engine/models/flash-lite --model runs/models/new \\
        --out runs/photos
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from cuematte.engine.cues.simulated_flash import render_flash

PHOTOS = ("astronaut.png",)

Region = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (row, column) grids -> (H, W) bool
# Hand-marked on the 512×512 astronaut, each inside what it names; "room" should read 0, the others 1.
REGIONS: dict[str, dict[str, Region]] = {
    "astronaut.png": {
        "face": lambda y, x: (y - 110) ** 2 / 70**2 + (x - 225) ** 2 / 60**2 < 1,
        "turtleneck": lambda y, x: (y > 170) & (y < 240) & (x > 170) & (x < 270),
        "suit": lambda y, x: (y > 300) & (y < 480) & (x > 40) & (x < 260),
        "helmet": lambda y, x: ((y - 450) ** 2 + (x - 400) ** 2 < 95**2) & (y > 360),
        "room": lambda y, x: (y < 220) & (x > 330),
    },
}


def region_means(name: str, alpha: np.ndarray) -> dict[str, float]:
    """Mean alpha (H, W) over each hand-marked region of photo ``name`` (none for unmarked photos)."""
    y, x = np.mgrid[: alpha.shape[0], : alpha.shape[1]]
    return {k: round(float(alpha[r(y, x)].mean()), 3) for k, r in REGIONS.get(name, {}).items()}


def skimage_photo(name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a photo in scikit-image's ``data`` folder (greyscale is repeated to 3 channels)."""
    import skimage

    img = cv2.imread(str(Path(skimage.__file__).parent / "data" / name), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{name} is not in scikit-image's data folder")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def main(argv: list[str] | None = None) -> int:
    from cuematte.engine.compositing import Background, composite
    from cuematte.engine.cues.segmenter import MediaPipeSegmenter
    from cuematte.engine.session import MattingSession

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, action="append", default=None,
                   help="model folder (default: the shipped model); repeat it for one labelled row per model")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--bg-distance", type=float, default=2.5)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    models: list[Path | None] = list(args.model) if args.model else [None]
    seg = MediaPipeSegmenter()
    rows = []
    readings: dict[str, dict[str, dict[str, float]]] = {}
    for name in PHOTOS:
        noflash = skimage_photo(name)
        flash = render_flash(noflash, seg.segment(noflash), bg_distance=args.bg_distance)
        stem = Path(name).stem
        for tag, img in (("noflash", noflash), ("flash", flash)):  # inputs kept for `cuematte matte`
            cv2.imwrite(str(args.out / f"{stem}_{tag}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        for model in models:
            session = MattingSession(model, segmenter=seg)
            cue = session.set_flash(flash, noflash)
            m = session.matte(noflash)
            trimap = cue.trimap  # 0 / 128 / 255
            green = composite(noflash, m.alpha, m.foreground, Background(mode="green"))
            alpha = (m.alpha * 255.0 + 0.5).astype(np.uint8)
            tiles = [noflash, flash, np.repeat(cv2.resize(trimap, noflash.shape[1::-1],
                                                          interpolation=cv2.INTER_NEAREST)[..., None], 3, 2),
                     np.repeat(alpha[..., None], 3, 2), green]
            h = 256
            row = np.concatenate([cv2.resize(t, (int(t.shape[1] * h / t.shape[0]), h)) for t in tiles], 1)
            label = model.name if model else "shipped"
            readings.setdefault(name, {})[label] = region_means(name, m.alpha)
            suffix = "" if len(models) == 1 else f"_{label}"
            if len(models) > 1:  # say which model the row is
                cv2.putText(row, label, (6, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 40, 40), 2, cv2.LINE_AA)
            rows.append(row)
            cv2.imwrite(str(args.out / f"{stem}{suffix}_green.png"), cv2.cvtColor(green, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(args.out / f"{stem}{suffix}_alpha.png"), alpha)
    sheet = np.concatenate(rows, 0)
    cv2.imwrite(str(args.out / "photos.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out / 'photos.png'} (columns: no-flash, rendered flash, trimap, alpha, on green)")
    (args.out / "regions.json").write_text(json.dumps(readings, indent=2))
    for name, by_model in readings.items():
        print(f"{name}: mean alpha per region (room should read 0, the rest 1)")
        for label, means in by_model.items():
            print(f"  {label:24s} " + "  ".join(f"{k} {v:.3f}" for k, v in means.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
