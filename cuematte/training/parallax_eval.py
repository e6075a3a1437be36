"""Evaluation of parallax models on the fixed parallax split (``make_eval --split parallax``).

Two protocols, fixed before any model was trained:

* ``trimap`` (the paper's, Table 2): each view's trimap is its binarised true alpha eroded and dilated by the
  middle of the training radii (90 px at a 1024-px short side); the engine's DIS flow, filled per layer, and
  its patch inference. This isolates what the network makes of the second view; the ablation target
  (SAD <= 0.5x the single-branch network) is read here.
* ``engine``: the product end to end, :class:`ParallaxSession` (MediaPipe's guidance on both views), beside
  MediaPipe's mask alone.

Variants of the inputs for the paper's inference-time ablations: ``same_frame`` (the reference view twice) and
``flow_noise_px`` (a smooth random error added to the foreground flow); ``exact_flow`` is the oracle (the
render's own layer motion instead of DIS filled per layer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cuematte.engine.errors import InputError
from cuematte.engine.parallax.flow import affine_flow, branch_inputs, estimate_flow, layer_flows
from cuematte.engine.parallax.session import ParallaxSession
from cuematte.training.data.parallax import radius_trimap, read_parallax_sample, smooth_flow_noise
from cuematte.training.metrics import matting_metrics

EVAL_TRIMAP_RADIUS_PX = 90.0  # at TRIMAP_REF_SIDE: the middle of training's 60-120
METRICS = ("sad", "mse", "grad", "conn", "mse_fg")


@dataclass(frozen=True)
class EvalVariant:
    protocol: str = "trimap"  # "trimap" | "engine" | "mediapipe" (the segmenter's mask alone)
    same_frame: bool = False
    flow_noise_px: float = 0.0
    exact_flow: bool = False  # the oracle: each layer's flow from the render's own affines, not DIS
    seed: int = 0


def eval_trimap(alpha: np.ndarray) -> np.ndarray:
    """(H, W) true alpha -> the protocol's (H, W) uint8 trimap (fixed radius on both sides)."""
    return radius_trimap(alpha, EVAL_TRIMAP_RADIUS_PX, EVAL_TRIMAP_RADIUS_PX)


def is_parallax_split(data: Path) -> bool:
    """Whether ``data`` is a folder ``make_eval --split parallax`` wrote."""
    index = data / "index.json"
    return index.is_file() and json.loads(index.read_text()).get("split") == "parallax"


def split_ids(split: Path) -> list[str]:
    index = json.loads((split / "index.json").read_text())
    if index.get("split") not in (None, "parallax"):
        raise InputError(f"{split} is a {index.get('split')!r} split, not a parallax one")
    return [str(s["id"]) for s in index["samples"]]


def predict_sample(session: ParallaxSession | None, s: dict[str, np.ndarray], v: EvalVariant,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One sample -> (alpha (H, W), premultiplied foreground (H, W, 3)) in [0, 1]."""
    view1 = s["view1"]
    view0 = view1 if v.same_frame else s["view0"]
    if v.protocol == "mediapipe":
        from cuematte.engine.cues.segmenter import MediaPipeSegmenter

        prob = MediaPipeSegmenter().segment(_u8(view1)).astype(np.float32)
        return prob, prob[..., None] * view1
    assert session is not None
    if v.protocol == "engine":
        m = session.matte(_u8(view1), _u8(view0))
        return m.alpha, m.alpha[..., None] * (m.foreground.astype(np.float32) / 255.0)
    tri1 = eval_trimap(s["alpha1"])
    tri0 = tri1 if v.same_frame else eval_trimap(s["alpha0"])
    if v.exact_flow:  # the split keeps each layer's affine, not the foreground's small non-rigid jitter
        flow_fg, flow_bg = (affine_flow(s[k], tri1.shape) for k in ("fg_affine", "bg_affine"))
    else:
        flow_fg, flow_bg = layer_flows(estimate_flow(view1, view0), tri1)
    if v.flow_noise_px:
        flow_fg = flow_fg + smooth_flow_noise(rng, flow_fg.shape[:2], v.flow_noise_px)
    inputs = branch_inputs(view1, view0, tri1, tri0, flow_fg, flow_bg)
    alpha, premul, _ = session.run_inputs(inputs)
    return alpha, premul


def _u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def evaluate_parallax(split: Path, model: Path | None, variant: EvalVariant = EvalVariant(), *,
                      limit: int | None = None) -> dict[str, Any]:
    """Per-sample and mean SAD (sum / 1000), MSE, Grad, Conn and MSE(alpha F) (raw: x1e3 in tables)."""
    ids = split_ids(split)[:limit]
    session = None if variant.protocol == "mediapipe" else ParallaxSession(model)
    rng = np.random.default_rng(variant.seed)
    rows: list[dict[str, Any]] = []
    for sid in tqdm(ids, desc=f"parallax eval {variant.protocol}"):
        s = read_parallax_sample(split, sid)
        try:
            alpha, premul = predict_sample(session, s, variant, rng)
        except InputError as exc:  # the engine refuses a pair (no one found, no parallax): counted, not scored
            rows.append({"id": sid, "refused": str(exc)})
            continue
        m = matting_metrics(alpha, s["alpha1"])
        # MSE of the premultiplied foreground, computed on alpha*F directly (the engine returns it so).
        m["mse_fg"] = float(((premul - s["alpha1"][..., None] * s["fg1"]) ** 2).mean())
        rows.append({"id": sid, **m})
    scored = [r for r in rows if "refused" not in r]
    mean = {k: float(np.mean([r[k] for r in scored])) if scored else float("nan") for k in METRICS}
    return {"variant": variant.__dict__, "model": str(model) if model else None, "n": len(scored),
            "refused": len(rows) - len(scored), "mean": mean, "samples": rows}


def format_parallax_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table: SAD, MSE x1e3, Grad, Conn, MSE(alpha F) x1e3 per run, and SAD against ``ours``."""
    ref = results.get("ours", {}).get("mean", {}).get("sad")
    lines = ["| run | protocol | scored | SAD | MSE x1e3 | Grad | Conn | MSE(aF) x1e3 | SAD / ours |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        m = r["mean"]
        ratio = f"{m['sad'] / ref:.2f}" if ref else "-"
        scored = f"{r['n']}/{r['n'] + r['refused']}"
        lines.append(f"| {name} | {r['variant']['protocol']} | {scored} | {m['sad']:.2f} | {m['mse'] * 1e3:.2f} | "
                     f"{m['grad']:.2f} | {m['conn']:.2f} | {m['mse_fg'] * 1e3:.2f} | {ratio} |")
    return "\n".join(lines)
