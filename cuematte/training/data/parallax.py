"""Training items, their cache and the evaluation layout for the two-view parallax matting model (torch-free).

An item is what the paper's network sees (Sec. 4.1-4.2, 4.5, 5.1): a rendered view pair, a trimap per view
made from the binarised ground-truth alpha (eroded / dilated by a random 60-120 px at a 1024-px short side),
the flow view 1 -> view 0 (OpenCV DIS as the engine measures it, or the exact one from the render's affines
for the oracle), filled per layer from view 1's trimap, and the four aligned views of
``cuematte.engine.parallax.flow.branch_inputs``; cropped around view 1's unknown band.

    item = parallax_training_item(seed, SynthConfig())          # dict of (C, h, w) float32
    cache = ParallaxCache(build_parallax_cache(Path("cache/par"), 4096, SynthConfig(), seed0=0))
    cache[17]["view_bg"]                                         # the same keys, back from uint8 / float16

Everything is a pure function of (seed, configs): the render of ``render_parallax_pair`` and, from its own seed
stream, the trimap radii, the crop and the flow noise.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from tqdm import tqdm

from cuematte.engine.cues.trimap import BG, FG, UNKNOWN, trimap_one_hot
from cuematte.engine.parallax.flow import affine_flow, branch_inputs, estimate_flow, layer_flows, warp
from cuematte.training.data.color import F32
from cuematte.training.data.config import DEFAULT_CONFIG, DEFAULT_PARALLAX, ParallaxConfig, SynthConfig
from cuematte.training.data.io import read_matte, read_rgb, write_matte, write_rgb
from cuematte.training.data.render import render_parallax_pair
from cuematte.training.data.samples import ParallaxSample
from cuematte.training.data.seeds import train_seed
from cuematte.training.pools import POOL_START

FlowKind = Literal["dis", "exact"]

# The paper's training trimaps: 60-120 erosion / dilation steps on its ~1024-px images; scaled to our short side.
TRIMAP_RADIUS_PX = (60.0, 120.0)
TRIMAP_REF_SIDE = 1024
# The item's own stream (trimap radii, crop, flow noise), a child of the seed the render's streams never reach.
_ITEM_STREAM = 0x70617261  # "para"

IMAGE_KEYS = ("view", "view_bg", "view_fg", "view_fg_pair", "fg", "bg")
TRIMAP_KEYS = ("trimap", "trimap_fg")
ITEM_KEYS = (*IMAGE_KEYS[:4], *TRIMAP_KEYS, "alpha", *IMAGE_KEYS[4:])
# The top branch's own truth (``top_truth``): view 0's layers aligned on the person as ``view_fg`` is, so that the
# top branch is supervised too, as the paper's symmetric design has each branch predict its own alpha and colour.
TOP_IMAGE_KEYS = ("fg_top", "bg_top")
TOP_KEYS = ("alpha_top", *TOP_IMAGE_KEYS)


def _item_rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """(trimaps, crop, flow noise) generators: one each, so e.g. adding flow noise keeps the crop."""
    trimaps, crop, noise = np.random.SeedSequence(seed, spawn_key=(_ITEM_STREAM,)).spawn(3)
    return np.random.default_rng(trimaps), np.random.default_rng(crop), np.random.default_rng(noise)


def training_trimap(alpha: F32, rng: np.random.Generator) -> np.ndarray:
    """(H, W) ground-truth alpha -> (H, W) uint8 trimap (0 / 128 / 255): the alpha binarised at 0.5, its certain
    foreground eroded and its certain background dilated by radii drawn independently from
    ``TRIMAP_RADIUS_PX`` (at a ``TRIMAP_REF_SIDE`` short side; scaled to this one). The frame's edges are not
    background: a torso leaving the frame stays certain."""
    r_fg, r_bg = (float(rng.uniform(*TRIMAP_RADIUS_PX)) for _ in range(2))
    return radius_trimap(alpha, r_fg, r_bg)


def radius_trimap(alpha: F32, r_fg: float, r_bg: float) -> np.ndarray:
    """(H, W) alpha binarised at 0.5 -> (H, W) uint8 trimap, its foreground eroded by ``r_fg`` and its background
    by ``r_bg`` pixels at a ``TRIMAP_REF_SIDE`` short side (scaled to this one)."""
    mask = (alpha > 0.5).astype(np.uint8)
    scale = min(alpha.shape) / TRIMAP_REF_SIDE
    # Distance transforms instead of erode/dilate: exact discs, linear time at any radius.
    inside = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outside = cv2.distanceTransform(1 - mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    trimap = np.full(alpha.shape, UNKNOWN, np.uint8)
    trimap[inside > r_fg * scale] = FG
    trimap[outside > r_bg * scale] = BG
    return trimap


def exact_flows(p: ParallaxSample) -> tuple[F32, F32]:
    """(foreground, background) (H, W, 2) view 1 -> view 0 flows of the render itself: its affines, and the
    foreground's non-rigid jitter (view 1's x shows view 0's ``fg_affine^-1 (x + jitter(x))``)."""
    shape = p.alpha1.shape
    flow_fg = affine_flow(p.fg_affine, shape)
    if p.fg_jitter is not None:
        inv = cv2.invertAffineTransform(np.asarray(p.fg_affine, np.float64))
        flow_fg = flow_fg + (p.fg_jitter @ inv[:, :2].T.astype(np.float32))
    return flow_fg.astype(np.float32), affine_flow(p.bg_affine, shape)


def smooth_flow_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> F32:
    """(H, W, 2) a smooth Gaussian random field with ``sigma_px`` RMS per component (cells of 1/8 of the short
    side): a flow estimate's error is wrong by a region at a time, not by independent pixels."""
    h, w = shape
    cell = max(8, min(h, w) // 8)
    coarse = rng.normal(0.0, 1.0, (h // cell + 2, w // cell + 2, 2)).astype(np.float32)
    field = np.asarray(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC), np.float32)
    rms = float(np.sqrt(np.mean(field**2)))
    return field * np.float32(sigma_px / max(rms, 1e-6))


def band_crop(trimap: np.ndarray, size: int, rng: np.random.Generator) -> tuple[int, int]:
    """(y0, x0) of a ``size`` x ``size`` window containing an unknown pixel of ``trimap`` (one drawn uniformly,
    placed uniformly in the window); anywhere when the trimap has no unknown band."""
    h, w = trimap.shape
    if size > min(h, w):
        raise ValueError(f"crop {size} does not fit the {h}x{w} frame")
    ys, xs = np.nonzero(trimap == UNKNOWN)
    if len(ys) == 0:
        return int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    k = int(rng.integers(len(ys)))
    y0 = int(rng.integers(max(0, ys[k] - size + 1), min(ys[k], h - size) + 1))
    x0 = int(rng.integers(max(0, xs[k] - size + 1), min(xs[k], w - size) + 1))
    return y0, x0


def _chw(x: np.ndarray) -> F32:
    """(H, W, C) -> (C, H, W); (H, W) -> (1, H, W); float32, contiguous."""
    a = x[None] if x.ndim == 2 else np.transpose(x, (2, 0, 1))
    return np.ascontiguousarray(a, np.float32)


def parallax_training_item(
    seed: int,
    cfg: SynthConfig = DEFAULT_CONFIG,
    *,
    par: ParallaxConfig = DEFAULT_PARALLAX,
    flow: FlowKind = "dis",
    flow_noise_px: float = 0.0,
    crop: int | None = 256,
    top_truth: bool = False,
) -> dict[str, F32]:
    """One training item of the parallax model, a pure function of its arguments.

    ``flow``: "dis" (the engine's estimate, filled per layer from view 1's trimap) or "exact" (the render's
    own per-layer flows, defined everywhere: the oracle). ``flow_noise_px``: RMS of a smooth random field
    added to the foreground flow (the paper's +motion-noise ablation). ``crop``: a square window around
    view 1's unknown band, or None for the whole frame.

    Returns float32 arrays, (h, w) the crop: ``view``, ``view_bg``, ``view_fg``, ``view_fg_pair`` (3, h, w) in
    [0, 1] (``branch_inputs``: view 1, view 0 aligned on view 1's background, on its person, and view 1
    aligned on ``view_fg``'s background); ``trimap``, ``trimap_fg`` (3, h, w) one-hot [bg, unknown, fg]
    (view 1's, view 0's aligned on the person); ``alpha`` (1, h, w) view 1's ground truth; ``fg``, ``bg``
    (3, h, w) view 1's noise-free foreground colour and background. With ``top_truth`` also ``alpha_top`` (1, h,
    w), ``fg_top``, ``bg_top`` (3, h, w): view 0's truth moved by the foreground flow, as ``view_fg`` is (the top
    branch's image), so the same losses can supervise the top branch.
    """
    p = render_parallax_pair(seed, cfg, par)
    rng_trimap, rng_crop, rng_noise = _item_rngs(seed)
    trimap1 = training_trimap(p.alpha1, rng_trimap)
    trimap0 = training_trimap(p.alpha0, rng_trimap)
    if flow == "dis":
        flow_fg, flow_bg = layer_flows(estimate_flow(p.image1, p.image0), trimap1)
    elif flow == "exact":
        flow_fg, flow_bg = exact_flows(p)
    else:
        raise ValueError(f"flow must be 'dis' or 'exact', not {flow!r}")
    if flow_noise_px > 0:
        flow_fg = flow_fg + smooth_flow_noise(rng_noise, trimap1.shape, flow_noise_px)
    inputs = branch_inputs(p.image1, p.image0, trimap1, trimap0, flow_fg, flow_bg)
    h, w = trimap1.shape
    y0, x0, ch, cw = 0, 0, h, w
    if crop is not None:
        (y0, x0), ch, cw = band_crop(trimap1, crop, rng_crop), crop, crop
    win = (slice(y0, y0 + ch), slice(x0, x0 + cw))
    out = {k: _chw(inputs[k][win]) for k in ("view", "view_bg", "view_fg", "view_fg_pair")}
    out |= {k: trimap_one_hot(np.ascontiguousarray(inputs[k][win])) for k in TRIMAP_KEYS}
    out |= {"alpha": _chw(p.alpha1[win]), "fg": _chw(p.foreground1[win]), "bg": _chw(p.background1[win])}
    if top_truth:
        top = {k: warp(x, flow_fg) for k, x in
               (("alpha_top", p.alpha0), ("fg_top", p.foreground0), ("bg_top", p.background0))}
        out |= {k: _chw(np.clip(top[k][win], 0.0, 1.0)) for k in TOP_KEYS}
    return out


# --- the item cache: shards of items, one .npy per key (in the style of cuematte.training.cache) ---------------

CACHE_VERSION = 1
_META = "meta.json"


def _stored(item: dict[str, F32]) -> dict[str, np.ndarray]:
    """An item as the cache keeps it: images uint8 (as the flash cache; views are 8-bit already), alpha float16,
    trimaps one (h, w) uint8 channel of 0 / 128 / 255."""
    out: dict[str, np.ndarray] = {
        k: np.clip(item[k] * 255.0 + 0.5, 0, 255).astype(np.uint8) for k in (*IMAGE_KEYS, *TOP_IMAGE_KEYS)
        if k in item
    }
    for k in ("alpha", "alpha_top"):
        if k in item:
            out[k] = item[k].astype(np.float16)
    for k in TRIMAP_KEYS:  # one-hot [bg, unknown, fg] -> 0 / 128 / 255
        out[k] = np.array([BG, UNKNOWN, FG], np.uint8)[np.argmax(item[k], axis=0)]
    return out


def _loaded(stored: dict[str, np.ndarray]) -> dict[str, F32]:
    out = {k: stored[k].astype(np.float32) / np.float32(255.0) for k in (*IMAGE_KEYS, *TOP_IMAGE_KEYS)
           if k in stored}
    out |= {k: stored[k].astype(np.float32) for k in ("alpha", "alpha_top") if k in stored}
    out |= {k: trimap_one_hot(np.asarray(stored[k])) for k in TRIMAP_KEYS}
    return {k: out[k] for k in (*ITEM_KEYS, *TOP_KEYS) if k in out}


def _cache_job(args: tuple[int, SynthConfig, ParallaxConfig, FlowKind, float, int | None, bool]
               ) -> dict[str, np.ndarray]:
    seed, cfg, par, flow, noise, crop, top = args
    return _stored(parallax_training_item(seed, cfg, par=par, flow=flow, flow_noise_px=noise, crop=crop,
                                          top_truth=top))


def _shard_dir(root: Path, k: int) -> Path:
    return root / f"shard_{k:05d}"


def _write_shard(root: Path, k: int, items: list[dict[str, np.ndarray]], seeds: list[int]) -> None:
    """Write to a temporary folder, then rename: a shard folder exists only when complete."""
    tmp = root / f"shard_{k:05d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for key in items[0]:
        np.save(tmp / f"{key}.npy", np.stack([it[key] for it in items]))
    np.save(tmp / "seed.npy", np.asarray(seeds, np.int64))
    os.replace(tmp, _shard_dir(root, k))


def build_parallax_cache(
    out_dir: Path,
    n: int,
    cfg: SynthConfig = DEFAULT_CONFIG,
    seed0: int = 0,
    workers: int = 2,
    *,
    par: ParallaxConfig = DEFAULT_PARALLAX,
    flow: FlowKind = "dis",
    flow_noise_px: float = 0.0,
    crop: int | None = 256,
    shard_size: int = 64,
    top_truth: bool = False,
) -> Path:
    """Render items of training seeds ``seed0 .. seed0 + n - 1`` into ``out_dir`` and return it (open it with
    :class:`ParallaxCache`): ``meta.json`` and ``shard_XXXXX/<key>.npy`` of ``shard_size`` items each (item i
    in shard i // shard_size; ``seed.npy`` beside them).

    Resumable: shards already there are kept, the rest rendered. A folder made with other settings is refused
    rather than mixed."""
    if n <= 0 or shard_size <= 0:
        raise ValueError("n and shard_size must be positive")
    train_seed(seed0)
    train_seed(seed0 + n - 1)  # the whole range is training seeds
    wanted: dict[str, Any] = json.loads(json.dumps({
        "version": CACHE_VERSION, "n": n, "seed0": seed0, "shard_size": shard_size, "flow": flow,
        "flow_noise_px": flow_noise_px, "crop": crop, "synth": asdict(cfg), "parallax": asdict(par),
    } | ({"top_truth": True} if top_truth else {})))  # only when set: caches made before it stay valid
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path = out_dir / _META
    if meta_path.is_file():
        found = json.loads(meta_path.read_text())
        if found != wanted:
            raise ValueError(f"{out_dir} holds a parallax cache made with other settings; use another folder")
    else:
        meta_path.write_text(json.dumps(wanted, indent=1))
    n_shards = -(-n // shard_size)
    todo = [k for k in range(n_shards) if not _shard_dir(out_dir, k).is_dir()]
    seeds = [seed0 + i for k in todo for i in range(k * shard_size, min(n, (k + 1) * shard_size))]
    jobs = [(s, cfg, par, flow, flow_noise_px, crop, top_truth) for s in seeds]
    bar = tqdm(total=n, initial=n - len(jobs), desc="parallax cache")
    pool = mp.get_context(POOL_START).Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(_cache_job, jobs, chunksize=2) if pool is not None else map(_cache_job, jobs)
        it = iter(results)
        for k in todo:
            lo, hi = k * shard_size, min(n, (k + 1) * shard_size)
            items = []
            for _ in range(hi - lo):
                items.append(next(it))
                bar.update()
            _write_shard(out_dir, k, items, list(range(seed0 + lo, seed0 + hi)))
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    return out_dir


class ParallaxCache:
    """The items of a built cache by index (the keys and shapes of ``parallax_training_item``, float32); shards
    are memory-mapped when first touched."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.meta: dict[str, Any] = json.loads((self.root / _META).read_text())
        self.n = int(self.meta["n"])
        self.shard_size = int(self.meta["shard_size"])
        missing = [k for k in range(-(-self.n // self.shard_size)) if not _shard_dir(self.root, k).is_dir()]
        if missing:
            raise FileNotFoundError(f"{self.root}: {len(missing)} shard(s) missing; run build_parallax_cache again")
        self._shards: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.n

    def _shard(self, k: int) -> dict[str, np.ndarray]:
        if k not in self._shards:
            folder = _shard_dir(self.root, k)
            self._shards[k] = {f.stem: np.load(f, mmap_mode="r") for f in folder.glob("*.npy")}
        return self._shards[k]

    def seed(self, index: int) -> int:
        return int(self.meta["seed0"]) + self._check(index)

    def _check(self, index: int) -> int:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return index

    def __getitem__(self, index: int) -> dict[str, F32]:
        k, j = divmod(self._check(index), self.shard_size)
        shard = self._shard(k)
        return _loaded({key: np.asarray(arr[j]) for key, arr in shard.items() if key != "seed"})


# --- the evaluation layout --------------------------------------------------------------------------------------
# Pair ``<id>``: ``<id>_view0.png``, ``<id>_view1.png`` (8-bit RGB, the two views as the camera gave them),
# ``<id>_alpha1.png`` (16-bit), ``<id>_fg1.png``, ``<id>_bg1.png`` (8-bit, view 1's noise-free layers) and
# ``<id>_motion.json`` (both view-0 -> view-1 affines, 2x3). The engine gets the two views only.


def write_parallax_sample(folder: Path, sid: str, p: ParallaxSample) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_rgb(folder / f"{sid}_view0.png", p.image0)
    write_rgb(folder / f"{sid}_view1.png", p.image1)
    write_matte(folder / f"{sid}_alpha0.png", p.alpha0)  # the paper-protocol evaluation's second trimap
    write_matte(folder / f"{sid}_alpha1.png", p.alpha1)
    write_rgb(folder / f"{sid}_fg1.png", p.foreground1)
    write_rgb(folder / f"{sid}_bg1.png", p.background1)
    motion = {"fg_affine": p.fg_affine.tolist(), "bg_affine": p.bg_affine.tolist()}
    (folder / f"{sid}_motion.json").write_text(json.dumps(motion))


def read_parallax_sample(folder: Path, sid: str) -> dict[str, np.ndarray]:
    """``view0``, ``view1``, ``fg1``, ``bg1`` (H, W, 3) float32, ``alpha0``, ``alpha1`` (H, W) float32, ``fg_affine``,
    ``bg_affine`` (2, 3) float64."""
    out: dict[str, np.ndarray] = {k: read_rgb(folder / f"{sid}_{k}.png") for k in ("view0", "view1", "fg1", "bg1")}
    out["alpha0"] = read_matte(folder / f"{sid}_alpha0.png")
    out["alpha1"] = read_matte(folder / f"{sid}_alpha1.png")
    motion = json.loads((folder / f"{sid}_motion.json").read_text())
    out |= {k: np.asarray(motion[k], np.float64) for k in ("fg_affine", "bg_affine")}
    return out
