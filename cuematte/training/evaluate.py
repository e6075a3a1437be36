"""Evaluation over folders of samples: our model beside the baselines, per split.

A data folder holds samples as files (``<id>_noflash.png``, ``<id>_flash.png``, ``<id>_alpha.png`` and,
optionally, ``<id>_fg.png``); a folder whose sub-folders are named ``static``, ``dynamic``... is read as one
split per sub-folder. Methods on the same samples:

* ``ours`` — the exported model through the engine session (trimap from the flash pair, cached T^f);
* ``classical`` — flash-difference matting (exposure-compensated difference, Otsu, guided filter);
* ``mediapipe`` — MediaPipe's selfie-segmentation mask alone (what Meet-style blur uses);
* ``noflash`` — optional: a same-size model trained without the flash cue. Named by what it still sees:
  ``noflash`` keeps the per-frame person mask (the shipped model minus only the flash), ``noflash-nomask``
  sees the no-flash frame alone (the paper's ablation, Table 3a ``+T^nf``). Several may be compared at once.

No torch here: this runs from a serving install too.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cuematte.engine.errors import CuematteError, InputError
from cuematte.engine.io import read_image
from cuematte.training import metrics
from cuematte.training.baselines import classical_flash_matte
from cuematte.training.data.io import read_matte

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSample:
    id: str
    noflash: np.ndarray  # (H, W, 3) uint8 RGB
    flash: np.ndarray  # (H, W, 3) uint8 RGB
    alpha: np.ndarray  # (H, W) float64 in [0, 1]
    fg: np.ndarray | None  # (H, W, 3) float64 in [0, 1]
    reference: np.ndarray | None = None  # no-flash reference taken with the flash (clips: their first frame)

    @property
    def noflash_reference(self) -> np.ndarray:
        return self.noflash if self.reference is None else self.reference


def load_split(folder: Path, flash: np.ndarray | None = None) -> list[EvalSample]:
    """Every ``<id>_noflash.png`` with its flash frame (or the shared ``flash``) and alpha in ``folder``."""
    samples = []
    for nf in sorted(folder.glob("*_noflash.png")):
        sid = nf.name[: -len("_noflash.png")]
        fl, al, fg = (folder / f"{sid}_{k}.png" for k in ("flash", "alpha", "fg"))
        if not ((flash is not None or fl.is_file()) and al.is_file()):
            raise InputError(f"sample {sid} in {folder} lacks its flash frame or alpha")
        samples.append(EvalSample(
            id=sid,
            noflash=read_image(nf, "no-flash frame"),
            flash=flash if flash is not None else read_image(fl, "flash frame"),
            alpha=read_matte(al).astype(np.float64),
            fg=read_image(fg).astype(np.float64) / 255.0 if fg.is_file() else None,
        ))
    return samples


def load_clip(folder: Path) -> list[EvalSample]:
    """A clip folder (``flash.png``, then ``<t>_noflash.png`` / ``<t>_alpha.png`` / ``<t>_fg.png``) -> frames
    sharing one flash frame and the first frame as the no-flash reference."""
    flash = read_image(folder / "flash.png", "flash frame")
    frames = load_split(folder, flash=flash)
    if not frames:
        raise InputError(f"clip {folder} has no frames")
    ref = frames[0].noflash
    return [EvalSample(f.id, f.noflash, flash, f.alpha, f.fg, reference=ref) for f in frames]


Splits = dict[str, list[EvalSample]]
Clips = dict[str, list[list[EvalSample]]]


def load_splits(data: Path) -> tuple[Splits, Clips]:
    """({split: samples}, {split: clips}); the folder itself is one split unless it has split sub-folders.
    A split whose sub-folders hold ``flash.png`` is a video split (one clip per sub-folder)."""
    if not data.is_dir():
        raise InputError(f"evaluation data folder not found: {data}")
    images: Splits = {}
    clips: Clips = {}
    folders = [d for d in sorted(data.iterdir()) if d.is_dir()] or [data]
    if any(data.glob("*_noflash.png")):
        folders = [data]
    for d in folders:
        if any(d.glob("*_noflash.png")):
            images[d.name] = load_split(d)
        clip_dirs = [c for c in sorted(d.iterdir()) if c.is_dir() and (c / "flash.png").is_file()]
        if clip_dirs:
            clips[d.name] = [load_clip(c) for c in clip_dirs]
    if not images and not clips:
        raise InputError(f"{data} holds no samples (<id>_noflash.png, <id>_flash.png, <id>_alpha.png) or clips")
    return images, clips


Method = Callable[[EvalSample], tuple[np.ndarray, np.ndarray | None]]  # -> alpha (H,W), fg (H,W,3) or None


def session_method(model_dir: Path | None, segmenter: str = "mediapipe", temporal: float = 0.0,
                   graph_lag: int | None = None) -> Method:
    """Our exported model through the engine session: trimap from the flash pair, T^f, per-frame graph
    (``temporal``: the session's motion-aware alpha smoothing, which carries across a clip's frames;
    ``graph_lag``: the graph's output first used that many frames later, as the live service's background graph
    does: :class:`cuematte.engine.pipelined.PipelinedSession`)."""
    from cuematte.engine.model import UntrainedModelWarning
    from cuematte.engine.pipelined import PipelinedSession
    from cuematte.engine.session import MattingSession

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        plain = MattingSession(model_dir, segmenter=segmenter, temporal=temporal)
    session = PipelinedSession(plain, lag=graph_lag) if graph_lag is not None else plain

    last_flash: list[np.ndarray] = []

    def run(s: EvalSample) -> tuple[np.ndarray, np.ndarray | None]:
        if not last_flash or last_flash[0] is not s.flash:  # a clip's frames share one cached flash
            last_flash[:] = [s.flash]
            session.set_flash(s.flash, s.noflash_reference)
        m = session.matte(s.noflash)
        return m.alpha, m.foreground.astype(np.float64) / 255.0

    return run


def noflash_method(model_dir: Path) -> Method:
    """A model trained without the flash cue (``cuematte train --no-flash-cue``): its 'flash' branch sees the
    no-flash frame and an all-unknown trimap, exactly as in its training."""
    from cuematte.engine.cues.guidance import build_guidance, guidance_input
    from cuematte.engine.frames import resize
    from cuematte.engine.model import FlashModel, UntrainedModelWarning
    from cuematte.engine.refine import frame_result
    from cuematte.engine.session import to_nchw

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        model = FlashModel(model_dir)

    segmenter = None
    if model.info.person_mask:  # trained with the segmenter prior: it gets MediaPipe's mask, as ours does
        from cuematte.engine.cues.segmenter import MediaPipeSegmenter

        segmenter = MediaPipeSegmenter()

    def run(s: EvalSample) -> tuple[np.ndarray, np.ndarray | None]:
        small = resize(s.noflash, model.info.cmn_size)
        x_c = to_nchw(small)
        unknown = np.zeros_like(x_c)
        unknown[:, 1] = 1.0
        cached = model.flash.run({"flash": x_c, "flash_trimap": unknown})
        feeds = {"frame_cmn": x_c, **{k: cached[k] for k in model.cached_names}}
        if model.info.spec.frame_input("frame"):
            feeds["frame"] = to_nchw(s.noflash)
        guidance = None
        if segmenter is not None:
            person = segmenter.segment(small)
            feeds["person_mask"] = person[None, None].astype(np.float32)
            if model.info.guidance:  # no flash: the guidance rests on the segmenter alone
                guidance = build_guidance(person)
                feeds["guidance"] = guidance_input(guidance)
        alpha, fg = frame_result(model.frame.run(feeds), s.noflash, guidance)
        return alpha, fg.astype(np.float64) / 255.0

    return run


def noflash_methods(model_dirs: list[Path]) -> dict[str, Method]:
    """``{name: method}`` for each no-flash ablation, named by its inputs (``noflash``: with the person
    mask; ``noflash-nomask``: the frame alone); a second ablation of the same kind gets ``-2``, ``-3``..."""
    from cuematte.engine.model import read_model_info

    out: dict[str, Method] = {}
    for d in model_dirs:
        base = "noflash" if read_model_info(d).person_mask else "noflash-nomask"
        name, k = base, 1
        while name in out:
            k += 1
            name = f"{base}-{k}"
        out[name] = noflash_method(d)
    return out


def classical_method(s: EvalSample) -> tuple[np.ndarray, np.ndarray | None]:
    return classical_flash_matte((s.flash / 255).astype(np.float32), (s.noflash / 255).astype(np.float32)), None


def mediapipe_method() -> Method:
    from cuematte.engine.cues.segmenter import MediaPipeSegmenter

    seg = MediaPipeSegmenter()

    def run(s: EvalSample) -> tuple[np.ndarray, np.ndarray | None]:
        return seg.segment(s.noflash), None

    return run


def score(alpha: np.ndarray, fg: np.ndarray | None, s: EvalSample) -> dict[str, float]:
    out = metrics.matting_metrics(alpha, s.alpha)
    out["mse"] *= 1e3  # papers print MSE x 1e3
    if fg is not None and s.fg is not None:
        out["mse_alpha_fg"] = metrics.mse_alpha_fg(alpha, fg, s.alpha, s.fg) * 1e3
    return out


def _run(name: str, method: Method, s: EvalSample) -> tuple[np.ndarray, np.ndarray | None, bool]:
    try:
        alpha, fg = method(s)
        return alpha, fg, True
    except CuematteError as exc:
        log.info("%s failed on %s: %s", name, s.id, exc)
        return np.zeros_like(s.alpha), None, False


Table = dict[str, dict[str, dict[str, float]]]


def evaluate(methods: dict[str, Method], splits: Splits, clips: Clips | None = None,
             variants: dict[str, str] | None = None) -> Table:
    """{split: {method: {metric: mean}}}. A method failing on a sample (e.g. no flash cue found) scores it
    as an all-background matte, so failures count rather than vanish. Video splits add dtSSD per clip.
    ``variants``: {method: the method it is a variant of}; such a row also gets ``ref_ratio`` (its MSE / the
    reference's) and that ratio's paired interval ``ref_ratio_lo`` / ``ref_ratio_hi``."""
    from tqdm import tqdm

    table: Table = {}
    units: dict[str, dict[str, list[float]]] = {}  # per split and method: MSE per sample (clips: per clip)
    for split, samples in splits.items():
        table[split], units[split] = {}, {}
        for name, method in methods.items():
            rows, failures = [], 0
            for s in tqdm(samples, desc=f"{split}/{name}", leave=False):
                alpha, fg, ok = _run(name, method, s)
                failures += not ok
                rows.append(score(alpha, fg, s))
            table[split][name] = _mean(rows) | {"failures": float(failures), "n": float(len(samples))}
            units[split][name] = [r["mse"] for r in rows]
    for split, clip_list in (clips or {}).items():
        table[split], units[split] = {}, {}
        for name, method in methods.items():
            rows, dts, failures, per_clip = [], [], 0, []
            for clip in tqdm(clip_list, desc=f"{split}/{name}", leave=False):
                preds, clip_rows = [], []
                for s in clip:
                    alpha, fg, ok = _run(name, method, s)
                    failures += not ok
                    clip_rows.append(score(alpha, fg, s))
                    preds.append(alpha)
                rows += clip_rows
                # A clip's frames share their flash and scene, so they are not independent samples: the
                # interval resamples whole clips.
                per_clip.append(float(np.mean([r["mse"] for r in clip_rows])))
                dts.append(metrics.dtssd(np.stack(preds), np.stack([s.alpha for s in clip])))
            table[split][name] = _mean(rows) | {"dtssd": float(np.mean(dts)), "failures": float(failures),
                                                "n": float(len(clip_list))}
            units[split][name] = per_clip
    _add_ratio_intervals(table, units)
    for split, by_method in table.items():
        for name, ref in (variants or {}).items():
            if name in by_method and ref in by_method:
                mine, theirs = np.asarray(units[split][name]), np.asarray(units[split][ref])
                lo, hi = metrics.ratio_interval(mine, theirs)
                by_method[name] |= {"ref_ratio": float(mine.mean() / max(theirs.mean(), 1e-12)), "ref_ratio_lo": lo,
                                    "ref_ratio_hi": hi}
    return table


def _add_ratio_intervals(table: Table, units: dict[str, dict[str, list[float]]], ours: str = "ours") -> None:
    """Give each baseline row ``ours_ratio_lo`` / ``ours_ratio_hi``: the 95 % paired-bootstrap interval of
    MSE(ours) / MSE(baseline) over the split's samples (clips for video), beside the ratio of means."""
    for split, ratios in mse_ratios(table, ours).items():  # the same baselines the printed ratios cover
        mine = np.asarray(units[split][ours])
        for name in ratios:
            lo, hi = metrics.ratio_interval(mine, np.asarray(units[split][name]))
            table[split][name] |= {"ours_ratio_lo": lo, "ours_ratio_hi": hi}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for r in rows for k in r})
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}


def format_table(table: Table, variants: dict[str, str] | None = None) -> str:
    """The table as text, with ours' MSE ratios to each baseline and each variant's (``evaluate``'s) to its
    reference."""
    cols = ["mse", "sad", "grad", "conn", "mse_alpha_fg", "dtssd", "failures"]
    lines = [f"{'split':<10} {'method':<12} " + " ".join(f"{c:>12}" for c in cols)]
    for split, methods in table.items():
        for name, m in methods.items():
            lines.append(f"{split:<10} {name:<12} " + " ".join(
                f"{m[c]:>12.3f}" if c in m else f"{'-':>12}" for c in cols))
    lines.append("MSE and MSE(alpha*F) x1e3; SAD, Grad, Conn /1000 (Rhemann et al.); dtSSD x1e2; means over samples")
    variant_lines = [f"{split:<10} {name} / {ref} {row['ref_ratio']:.2f}x "
                     f"({row['ref_ratio_lo']:.2f}-{row['ref_ratio_hi']:.2f})"
                     for split, methods in table.items() for name, ref in (variants or {}).items()
                     if "ref_ratio" in (row := methods.get(name, {}))]
    if variant_lines:
        lines += ["", "MSE of each variant / the method it varies; in brackets its 95% interval (paired bootstrap)",
                  *variant_lines]
    ratios = mse_ratios(table)
    if ratios:
        lines.append("")
        lines.append("MSE of ours / each baseline (the targets: <= 0.5 for MediaPipe and the no-flash ablation, < 1 "
                     "for classical); in brackets its 95% interval, a paired bootstrap over samples (video: clips)")
        for split, r in ratios.items():
            lines.append(f"{split:<10} " + "  ".join(f"{name} {v:.2f}x" + _interval(table[split][name])
                                                     for name, v in r.items()))
    return "\n".join(lines)


def _interval(row: dict[str, float]) -> str:
    return f" ({row['ours_ratio_lo']:.2f}-{row['ours_ratio_hi']:.2f})" if "ours_ratio_lo" in row else ""


def mse_ratios(table: Table, ours: str = "ours") -> dict[str, dict[str, float]]:
    """``{split: {baseline: MSE(ours) / MSE(baseline)}}`` for every other method on each split where ``ours``
    ran; smoothed variants of ours are not baselines."""
    out: dict[str, dict[str, float]] = {}
    for split, methods in table.items():
        if ours not in methods:
            continue
        r = {name: methods[ours]["mse"] / m["mse"] for name, m in methods.items()
             if not name.startswith(ours) and m["mse"] > 0}
        if r:
            out[split] = r
    return out


def write_json(path: Path, table: Table) -> None:
    path.write_text(json.dumps(table, indent=2) + "\n")
