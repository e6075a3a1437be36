"""Write the fixed-seed evaluation split as files: ``python -m training.eval_data --out DIR --n 40``.

DIR/static and DIR/dynamic each get ``<id>_noflash.png``, ``<id>_flash.png``, ``<id>_alpha.png`` (16-bit),
``<id>_fg.png`` and ``<id>_bg.png``; seeds come from the evaluation namespace, never used in training.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from training.synth import SynthConfig, eval_seed, render_sample


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


def write_split(out: Path, n: int, *, dynamic: bool, size: tuple[int, int], offset: int = 0) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cfg = replace(SynthConfig(size=size), p_dynamic=1.0 if dynamic else 0.0, p_pseudo_flash=0.0)
    for i in tqdm(range(n), desc=out.name):
        s = render_sample(eval_seed(offset + i), cfg)
        sid = f"{offset + i:04d}"
        for name, img in (("noflash", s.noflash), ("flash", s.flash), ("fg", s.foreground), ("bg", s.background)):
            cv2.imwrite(str(out / f"{sid}_{name}.png"), cv2.cvtColor(_u8(img), cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out / f"{sid}_alpha.png"), np.clip(s.alpha * 65535 + 0.5, 0, 65535).astype(np.uint16))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int, default=40, help="samples per split")
    p.add_argument("--size", default="640x360", help="WIDTHxHEIGHT")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    write_split(args.out / "static", args.n, dynamic=False, size=(h, w))
    write_split(args.out / "dynamic", args.n, dynamic=True, size=(h, w), offset=100_000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
