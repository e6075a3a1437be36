"""How good are the engine's flash cues on a rendered split? The flash trimap and its fused person map against
the flash frame's true alpha, beside MediaPipe's mask of the flash frame alone.

    python -m cuematte.training.cue_quality --data runs/eval [--json cues.json] [--per-sample]

Per split: person-map MSE (x1e3) of the engine and of MediaPipe alone; the trimap's wrong-confident shares
(pixels called foreground whose alpha < 0.5, called background whose alpha >= 0.5, as % of the frame) and
its unknown share; the trimap methods used; failures (the flash pre-processing raised). No torch here.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cuematte.engine.cues.segmenter import MediaPipeSegmenter
from cuematte.engine.cues.trimap import BG, FG, UNKNOWN, PersonSegmenter, build_flash_trimap, trimap_for_model
from cuematte.engine.errors import FlashCueError
from cuematte.engine.io import read_image
from cuematte.training.data.io import read_matte


@dataclass(frozen=True)
class CueScore:
    id: str
    method: str  # the trimap method, or "failed"
    person_mse: float  # engine person map vs the flash frame's alpha (failed: an all-background map)
    mediapipe_mse: float  # MediaPipe on the flash frame alone
    false_fg: float  # share of pixels the trimap calls foreground with alpha < 0.5
    false_bg: float  # share called background with alpha >= 0.5
    unknown: float  # share called unknown


def score_pair(sid: str, flash: np.ndarray, noflash: np.ndarray, alpha: np.ndarray,
               segmenter: PersonSegmenter, *, allow_unknown: bool = True) -> CueScore:
    """Flash and no-flash (H, W, 3) uint8 RGB, the flash frame's alpha (H, W) in [0, 1] -> :class:`CueScore`."""
    mp = segmenter.segment(flash).astype(np.float64)
    mp_mse = float(((mp - alpha) ** 2).mean())
    try:
        cue = trimap_for_model(build_flash_trimap(flash, noflash, segmenter), reads_flash=allow_unknown)
    except FlashCueError:
        return CueScore(sid, "failed", float((alpha**2).mean()), mp_mse, 0.0, float((alpha >= 0.5).mean()), 0.0)
    tri = cue.trimap
    return CueScore(
        id=sid,
        method=cue.method,
        person_mse=float(((cue.person.astype(np.float64) - alpha) ** 2).mean()),
        mediapipe_mse=mp_mse,
        false_fg=float(((tri == FG) & (alpha < 0.5)).mean()),
        false_bg=float(((tri == BG) & (alpha >= 0.5)).mean()),
        unknown=float((tri == UNKNOWN).mean()),
    )


def score_split(folder: Path, segmenter: PersonSegmenter) -> list[CueScore]:
    """Every image pair of a split folder (``<id>_flash.png``, ``<id>_noflash.png``, ``<id>_flash_alpha.png``)."""
    out = []
    for fl in sorted(folder.glob("*_flash.png")):
        sid = fl.name[: -len("_flash.png")]
        alpha = read_matte(folder / f"{sid}_flash_alpha.png").astype(np.float64)
        noflash = read_image(folder / f"{sid}_noflash.png", "no-flash frame")
        out.append(score_pair(sid, read_image(fl, "flash frame"), noflash, alpha, segmenter))
    return out


def summarise(scores: list[CueScore]) -> dict[str, Any]:
    n = max(1, len(scores))
    return {
        "n": len(scores),
        "person_mse_x1e3": 1e3 * sum(s.person_mse for s in scores) / n,
        "mediapipe_mse_x1e3": 1e3 * sum(s.mediapipe_mse for s in scores) / n,
        "false_fg_pct": 100 * sum(s.false_fg for s in scores) / n,
        "false_bg_pct": 100 * sum(s.false_bg for s in scores) / n,
        "unknown_pct": 100 * sum(s.unknown for s in scores) / n,
        "methods": dict(Counter(s.method for s in scores)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder of split sub-folders (static, dynamic)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--per-sample", action="store_true", help="print one line per sample")
    args = p.parse_args(argv)
    segmenter = MediaPipeSegmenter(threads=1)
    report: dict[str, Any] = {}
    for folder in sorted(d for d in args.data.iterdir() if d.is_dir() and any(d.glob("*_flash_alpha.png"))):
        scores = score_split(folder, segmenter)
        report[folder.name] = summarise(scores)
        if args.per_sample:
            for s in scores:
                print(f"{s.id:16s} {s.method:15s} engine {1e3 * s.person_mse:7.2f}  mediapipe "
                      f"{1e3 * s.mediapipe_mse:7.2f}  false fg {100 * s.false_fg:5.2f}%  false bg "
                      f"{100 * s.false_bg:5.2f}%  unknown {100 * s.unknown:5.1f}%")
        r = report[folder.name]
        print(f"{folder.name}: person map MSE x1e3 engine {r['person_mse_x1e3']:.2f} vs mediapipe "
              f"{r['mediapipe_mse_x1e3']:.2f}; trimap false fg {r['false_fg_pct']:.2f}% false bg "
              f"{r['false_bg_pct']:.2f}% unknown {r['unknown_pct']:.1f}%; methods {r['methods']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
