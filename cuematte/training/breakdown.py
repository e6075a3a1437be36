"""Per-sample breakdown of an evaluation: where a model's error sits, and how it stands against the ablation
sample by sample.

Means over 40 samples move on a few hard ones. The model card's medians, wins and ≤ 0.5× counts against the
no-flash ablation, its split by whether the flash located the subject (the engine's trimap method), and its
split of the error into an edge band and whole regions come from here, not from ad hoc scripts:

    python -m cuematte.training.breakdown --data runs/eval --model cuematte/engine/models/flash-lite \\
        --model runs/models/new \\
        --noflash-model runs/models/new-noflash --temporal 0.5 --json runs/breakdown.json

Image splits (static, dynamic) and the parallax split; clips are scored by ``cuematte eval``. On a parallax
split (``make_eval --split parallax``) it reports SAD, the paper's metric, under the evaluation's trimap
protocol, split the same way, with the mean signed error beside the edge (an edge blurred across the contour
reads negative on its opaque pixels and positive on its clear ones), against ``--reference`` (the
single-branch ablation):

    python -m cuematte.training.breakdown --data runs/px-eval --model cuematte/engine/models/parallax-lite \\
        --reference runs/models/parallax-single

No torch here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from cuematte.engine.parallax.session import ParallaxSession
from cuematte.training.data.parallax import read_parallax_sample
from cuematte.training.evaluate import EvalSample, Method, load_splits, noflash_method, session_method
from cuematte.training.metrics import ratio_interval
from cuematte.training.parallax_eval import EvalVariant, is_parallax_split, predict_sample, split_ids

EDGE_WIDTH = 6  # px either side of the true edge
LOCATED, SEGMENTER_ONLY = "located", "segmenter-only"


def edge_band(alpha: np.ndarray, width: int = EDGE_WIDTH) -> np.ndarray:
    """True matte (H, W) in [0, 1] -> (H, W) bool: within ``width`` px (chessboard distance) of its 0.5
    contour, or partly transparent (0.02 < α < 0.98), where hair and soft edges are."""
    inside = (alpha > 0.5).astype(np.uint8)
    edge = cv2.morphologyEx(inside, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    near = cv2.dilate(edge, np.ones((2 * width + 1, 2 * width + 1), np.uint8)) > 0
    return near | soft_pixels(alpha)


def soft_pixels(alpha: np.ndarray) -> np.ndarray:
    """True matte (H, W) -> (H, W) bool: partly transparent pixels (hair strands, soft edges)."""
    return (alpha > 0.02) & (alpha < 0.98)


def error_split(pred: np.ndarray, alpha: np.ndarray, band: np.ndarray) -> dict[str, float]:
    """MSE ×1e3 of ``pred`` against ``alpha`` (both (H, W)) as the sum of two parts over all pixels: inside
    the edge ``band`` and outside it (whole regions labelled wrong). ``soft`` is the share of ``edge`` on the
    partly transparent pixels; the rest of ``edge`` sits on opaque or clear pixels beside the contour, i.e. an
    edge drawn in the wrong place or too blurred, which more resolution alone does not fix."""
    se = (pred.astype(np.float64) - alpha) ** 2
    n = se.size
    return {"edge": 1e3 * float(se[band].sum()) / n, "regions": 1e3 * float(se[~band].sum()) / n,
            "soft": 1e3 * float(se[band & soft_pixels(alpha)].sum()) / n}


def sad_split(pred: np.ndarray, alpha: np.ndarray, band: np.ndarray) -> dict[str, float]:
    """SAD (sum / 1000) of ``pred`` against ``alpha`` (both (H, W)) inside the edge ``band`` and outside it, the
    band's part on partly transparent pixels (``soft``), and the band's mean signed error on its opaque (α ≥ 0.98)
    and clear (α ≤ 0.02) pixels: an edge blurred across the contour reads negative on the first and positive on
    the second, one drawn too far out positive on both."""
    err = pred.astype(np.float64) - alpha
    ad = np.abs(err)
    opaque, clear = band & (alpha >= 0.98), band & (alpha <= 0.02)
    return {"edge": float(ad[band].sum()) / 1e3, "regions": float(ad[~band].sum()) / 1e3,
            "soft": float(ad[band & soft_pixels(alpha)].sum()) / 1e3,
            "bias_opaque": float(err[opaque].mean()) if opaque.any() else 0.0,
            "bias_clear": float(err[clear].mean()) if clear.any() else 0.0}


def against(ours: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """Per-sample errors of ours and a reference on the same samples -> ratio of means, its 95 % interval
    (:func:`ratio_interval`), wins, ≤ 0.5× count."""
    return {"ratio": float(ours.mean() / ref.mean()), "ci": ratio_interval(ours, ref),
            "wins": int((ours < ref).sum()), "half": int((ours <= 0.5 * ref).sum()), "n": int(ours.size)}


def trimap_groups(samples: list[EvalSample]) -> list[str]:
    """Per sample: did the engine's flash trimap locate the subject, or fall back to ``segmenter-only``
    (a flash too weak to confirm MediaPipe's person)? Built exactly as the session builds it."""
    from cuematte.engine.cues.segmenter import MediaPipeSegmenter
    from cuematte.engine.cues.trimap import build_flash_trimap

    seg = MediaPipeSegmenter()
    return [SEGMENTER_ONLY if build_flash_trimap(s.flash, s.noflash_reference, seg).method
            == "segmenter-only" else LOCATED for s in samples]


def breakdown(models: dict[str, Method], samples: list[EvalSample], groups: list[str],
              noflash: Method | None = None) -> dict[str, Any]:
    """{model: {mse: [per sample], mean, median, edge, regions[, vs_noflash, by_trimap]}} for one split;
    the ablation, when given, appears as ``noflash`` and every other model is compared with it."""
    runs = dict(models) | ({"noflash": noflash} if noflash is not None else {})
    bands = [edge_band(s.alpha) for s in samples]
    out: dict[str, Any] = {}
    for name, method in runs.items():
        parts = [error_split(method(s)[0], s.alpha, b) for s, b in zip(samples, bands, strict=True)]
        mse = np.array([p["edge"] + p["regions"] for p in parts])
        out[name] = {"mse": mse.tolist(), "mean": float(mse.mean()), "median": float(np.median(mse)),
                     "edge": float(np.mean([p["edge"] for p in parts])),
                     "soft": float(np.mean([p["soft"] for p in parts])),
                     "regions": float(np.mean([p["regions"] for p in parts]))}
    if noflash is not None:
        ref = np.array(out["noflash"]["mse"])
        g = np.array(groups)
        for name in models:
            ours = np.array(out[name]["mse"])
            out[name]["vs_noflash"] = against(ours, ref)
            out[name]["by_trimap"] = {k: against(ours[g == k], ref[g == k]) | {"mean": float(ours[g == k].mean())}
                                      for k in (LOCATED, SEGMENTER_ONLY) if (g == k).any()}
    return out


def parallax_breakdown(split: Path, models: dict[str, Path | None], reference: Path | None = None,
                       limit: int | None = None) -> dict[str, Any]:
    """{model: {sad: [per sample], mean, median, edge, soft, regions, bias_opaque, bias_clear[, vs_reference]}}
    on a parallax split under its trimap protocol (``cuematte eval``'s ``ours`` row, sample for sample); the
    reference, when given, appears as ``reference`` and every other model is compared with it."""
    runs = dict(models) | ({"reference": reference} if reference is not None else {})
    sessions = {name: ParallaxSession(model) for name, model in runs.items()}
    variant = EvalVariant()
    rngs = {name: np.random.default_rng(variant.seed) for name in runs}  # one per run over the split, as eval's
    parts: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for sid in tqdm(split_ids(split)[:limit], desc="parallax breakdown"):
        s = read_parallax_sample(split, sid)
        band = edge_band(s["alpha1"])
        for name, session in sessions.items():
            alpha, _ = predict_sample(session, s, variant, rngs[name])
            parts[name].append(sad_split(alpha, s["alpha1"], band))
    out: dict[str, Any] = {}
    for name, ps in parts.items():
        total = np.array([p["edge"] + p["regions"] for p in ps])
        out[name] = {"sad": total.tolist(), "mean": float(total.mean()), "median": float(np.median(total))}
        out[name] |= {k: float(np.mean([p[k] for p in ps]))
                      for k in ("edge", "soft", "regions", "bias_opaque", "bias_clear")}
    if reference is not None:
        ref = np.array(out["reference"]["sad"])
        for name in models:
            out[name]["vs_reference"] = against(np.array(out[name]["sad"]), ref)
    return out


def format_parallax_breakdown(rows: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, r in rows.items():
        line = (f"{name:<40} SAD {r['mean']:5.2f}  median {r['median']:5.2f}  edge {r['edge']:5.2f} "
                f"(soft {r['soft']:4.2f}) + regions {r['regions']:5.2f}  edge bias opaque {r['bias_opaque']:+.3f} "
                f"clear {r['bias_clear']:+.3f}")
        if "vs_reference" in r:
            v = r["vs_reference"]
            line += (f"  vs reference {v['ratio']:.2f}x (95% {v['ci'][0]:.2f}-{v['ci'][1]:.2f}), "
                     f"wins {v['wins']}/{v['n']}, <=0.5x on {v['half']}")
        lines.append(line)
    lines.append(f"SAD (sum / 1000) per sample, trimap protocol; edge: within {EDGE_WIDTH} px of the true edge or "
                 "0.02 < alpha < 0.98 (soft: the latter); bias: the edge band's mean signed error on opaque and "
                 "clear pixels; 95%: paired bootstrap over samples")
    return "\n".join(lines)


def format_breakdown(table: dict[str, dict[str, Any]]) -> str:
    lines = []
    for split, rows in table.items():
        for name, r in rows.items():
            line = (f"{split:<8} {name:<24} mean {r['mean']:6.2f}  median {r['median']:5.2f}  "
                    f"edge {r['edge']:5.2f} (soft {r['soft']:4.2f}) + regions {r['regions']:5.2f}")
            if "vs_noflash" in r:
                v = r["vs_noflash"]
                line += (f"  vs noflash {v['ratio']:.2f}x (95% {v['ci'][0]:.2f}-{v['ci'][1]:.2f}), "
                         f"wins {v['wins']}/{v['n']}, <=0.5x on {v['half']}")
                for k, b in r["by_trimap"].items():
                    line += f"  | {k} (n={b['n']}) {b['mean']:.2f}, {b['ratio']:.2f}x"
            lines.append(line)
    lines.append(f"MSE x1e3 per sample; edge: within {EDGE_WIDTH} px of the true edge or 0.02 < alpha < 0.98 "
                 "(soft: the latter); located: the flash trimap found the subject; 95%: paired bootstrap over samples")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="folder of split sub-folders (cuematte eval's)")
    p.add_argument("--model", type=Path, action="append", required=True, help="model folder; repeat for more")
    p.add_argument("--noflash-model", type=Path, help="a model trained with --no-flash-cue (paper ablation)")
    p.add_argument("--reference", type=Path,
                   help="parallax split: a model every --model is compared with (the single-branch ablation)")
    p.add_argument("--limit", type=int, help="parallax split: only the first N samples")
    p.add_argument("--temporal", type=float, default=0.0, help="the session's alpha smoothing, as in eval")
    p.add_argument("--json", type=Path, help="write {split: {model: {...}}} here")
    args = p.parse_args(argv)

    if is_parallax_split(args.data):
        if args.noflash_model is not None or args.temporal:
            p.error("--noflash-model and --temporal are for flash splits; a parallax split takes --reference")
        rows = parallax_breakdown(args.data, {str(m): m for m in args.model}, args.reference, args.limit)
        print(format_parallax_breakdown(rows))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
            print(f"wrote {args.json}")
        return
    if args.reference is not None or args.limit is not None:
        p.error("--reference and --limit are for a parallax split")
    splits, _ = load_splits(args.data)
    models = {str(m): session_method(m, temporal=args.temporal) for m in args.model}
    ablation = noflash_method(args.noflash_model) if args.noflash_model else None
    table = {split: breakdown(models, samples, trimap_groups(samples) if ablation else [], ablation)
             for split, samples in splits.items()}
    print(format_breakdown(table))
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
