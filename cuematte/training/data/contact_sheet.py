"""A contact sheet to look at the data: one row per sample, columns no-flash | flash | alpha | foreground
over a checkerboard (``--extra`` adds the person prior and what changed in the background).

    python -m cuematte.training.data.contact_sheet --out sheet.png --n 8 --seed 0 [--split eval] [--scale 0.5]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from cuematte.training.data.color import F32
from cuematte.training.data.config import DEFAULT_CONFIG, SynthConfig
from cuematte.training.data.io import write_rgb
from cuematte.training.data.render import render_sample
from cuematte.training.data.samples import FlashSample
from cuematte.training.data.seeds import eval_seed, train_seed

COLUMNS = 4
EXTRA_COLUMNS = 2


def checkerboard(h: int, w: int, cell: int = 12) -> F32:
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((yy // cell) + (xx // cell)) % 2 == 0, 0.8, 0.55).astype(np.float32)
    return np.repeat(board[..., None], 3, -1)


def sheet_size(n: int, size: tuple[int, int], scale: float, extra: bool = False) -> tuple[int, int]:
    """(height, width) in pixels of the sheet for ``n`` samples of ``size`` (H, W)."""
    th, tw = max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
    return n * th, (COLUMNS + (EXTRA_COLUMNS if extra else 0)) * tw


def _label(img: F32, text: str) -> None:
    """Small text with a dark outline, in place (top-left); OpenCV draws text on 8-bit images only."""
    u8 = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    for colour, thick in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(u8, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, colour, thick, cv2.LINE_AA)
    img[:] = u8.astype(np.float32) / 255


def row(s: FlashSample, seed: int, scale: float, extra: bool = False) -> F32:
    """(th, columns * tw, 3) the tiles of one sample."""
    h, w = s.alpha.shape
    a = s.alpha[..., None]
    tiles = [s.noflash, s.flash, np.repeat(a, 3, -1), a * s.foreground + (1 - a) * checkerboard(h, w)]
    if extra:
        change = np.clip(np.abs(s.background_at_flash - s.background).max(-1) * 4, 0, 1)
        tiles += [np.repeat(s.person_prior[..., None], 3, -1), np.repeat(change[..., None], 3, -1)]
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    out = [
        np.ascontiguousarray(
            cv2.resize(t.astype(np.float32), (tw, th), interpolation=cv2.INTER_AREA), np.float32
        )
        for t in tiles
    ]
    m = s.meta
    events = ",".join(m.get("events", [])) or "static"
    _label(out[0], f"{seed % 100000} {m.get('background', '')} {events}")
    flash_text = "pseudo" if m.get("pseudo_flash") else f"{m.get('flash', '')} x{m.get('flash_ratio', 0):.2f}"
    _label(out[1], f"{flash_text} d={m.get('person_depth_m', 0):.2f}/{m.get('wall_depth_m', 0):.1f}m")
    return np.concatenate(out, 1)


def make_sheet(
    seeds: Sequence[int], cfg: SynthConfig = DEFAULT_CONFIG, scale: float = 0.5, extra: bool = False
) -> F32:
    """(n * th, columns * tw, 3) float RGB."""
    return np.concatenate([row(render_sample(sd, cfg), sd, scale, extra) for sd in seeds], 0)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0, help="first sample index")
    ap.add_argument(
        "--split",
        choices=["train", "static", "dynamic", "mixed"],
        default="train",
        help="train seeds, or an evaluation split's seeds",
    )
    ap.add_argument("--scale", type=float, default=0.5, help="tile size relative to the sample size")
    ap.add_argument("--size", type=str, default=None, help="sample size HxW (default 288x512)")
    ap.add_argument("--extra", action="store_true", help="add the person prior and background-change columns")
    args = ap.parse_args(argv)
    cfg = SynthConfig()
    if args.size:
        h, w = (int(v) for v in args.size.lower().split("x"))
        cfg = replace(cfg, size=(h, w))
    if args.split == "train":
        seeds = [train_seed(args.seed + i) for i in range(args.n)]
    else:
        seeds = [eval_seed(args.seed + i, args.split) for i in range(args.n)]
    if args.split in ("static", "dynamic"):
        cfg = replace(cfg, p_dynamic=1.0 if args.split == "dynamic" else 0.0)
    sheet = make_sheet(seeds, cfg, args.scale, args.extra)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_rgb(args.out, sheet)
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]}, {args.n} samples)")


if __name__ == "__main__":
    main()
