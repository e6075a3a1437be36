"""A rendered-sample cache: procedural samples are rendered once into uint8 memory maps, so a 2-core CPU
spends its time on the network, not on drawing portraits."""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cuematte.engine.cues.trimap import PersonSegmenter
from cuematte.training.data import SynthConfig, eval_seed, render_sample, train_seed
from cuematte.training.pools import POOL_START

# Channel layout of one cached sample (H, W, 16) uint8.
FIELDS: dict[str, slice] = {
    "noflash": slice(0, 3),
    "flash": slice(3, 6),
    "alpha": slice(6, 7),
    "fg": slice(7, 10),
    "bg": slice(10, 13),
    "flash_alpha": slice(13, 14),
    "prior": slice(14, 15),
    "dynamic": slice(15, 16),
}
CHANNELS = 16
# Drifted caches (CacheSpec.drift > 0) carry three more: the no-flash reference taken with the flash (the
# no-flash frame itself where the sample did not drift), from which the engine builds its flash trimap.
REFERENCE = slice(16, 19)


def _channels(drift: float) -> int:
    return REFERENCE.stop if drift > 0 else CHANNELS


@dataclass(frozen=True)
class CacheSpec:
    n: int
    size: tuple[int, int]
    split: str  # "train" (training seeds) or "eval" (the fixed evaluation namespace, never trained on)
    generator: str = "training.data"
    camouflage: float = 0.0  # SynthConfig.p_camouflage of the rendered samples
    drift: float = 0.0  # SynthConfig.p_drift of the rendered samples
    realism: float = 0.0  # SynthConfig.p_realism of the rendered samples

    @property
    def synth(self) -> SynthConfig:
        return SynthConfig(size=self.size, p_camouflage=self.camouflage, p_drift=self.drift,
                           p_realism=self.realism)

    @property
    def channels(self) -> int:
        return _channels(self.drift)

    @property
    def stem(self) -> str:
        """File stem of this cache (and of its cue cache, ``<stem>-cues``): what was rendered, by name."""
        camo = f"-camo{self.camouflage:g}" if self.camouflage > 0 else ""
        drift = f"-drift{self.drift:g}" if self.drift > 0 else ""
        real = f"-real{self.realism:g}" if self.realism > 0 else ""
        return f"{self.split}-{self.size[0]}x{self.size[1]}-{self.n}{camo}{drift}{real}"

    def meta(self) -> dict[str, object]:
        """What the cache's .json records; drift and realism only when set, so caches made before them are still
        found."""
        out = json.loads(json.dumps(asdict(self)))  # tuples compare as JSON lists
        for name in ("drift", "realism"):
            if not out[name]:
                del out[name]
        return out | {"done": True}

    def seed(self, i: int) -> int:
        return train_seed(i) if self.split == "train" else eval_seed(i)


def _render(args: tuple[int, SynthConfig]) -> np.ndarray:
    seed, cfg = args
    s = render_sample(seed, cfg)
    h, w = s.alpha.shape
    out = np.empty((h, w, _channels(cfg.p_drift)), np.uint8)
    fields = [(FIELDS["noflash"], s.noflash), (FIELDS["flash"], s.flash), (FIELDS["alpha"], s.alpha),
              (FIELDS["fg"], s.foreground), (FIELDS["bg"], s.background), (FIELDS["flash_alpha"], s.flash_alpha),
              (FIELDS["prior"], s.person_prior)]
    if cfg.p_drift > 0:
        fields.append((REFERENCE, s.noflash if s.reference is None else s.reference))
    for sl, arr in fields:
        a = arr if arr.ndim == 3 else arr[..., None]
        out[..., sl] = np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)
    out[..., 15] = 255 if s.dynamic else 0
    return out


def build_cache(path: Path, spec: CacheSpec, *, workers: int = 2) -> np.memmap:
    """Render ``spec.n`` samples into ``path`` (.npy memmap) unless a matching cache already exists."""
    meta_path = path.with_suffix(".json")
    h, w = spec.size
    wanted = spec.meta()
    if path.is_file() and meta_path.is_file() and json.loads(meta_path.read_text()) == wanted:
        return np.load(path, mmap_mode="r")
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(spec.n, h, w, spec.channels))
    cfg = spec.synth
    jobs = [(spec.seed(i), cfg) for i in range(spec.n)]
    with mp.get_context(POOL_START).Pool(workers) as pool:
        for i, sample in enumerate(tqdm(pool.imap(_render, jobs, chunksize=8), total=spec.n, desc="render cache")):
            arr[i] = sample
    arr.flush()
    meta_path.write_text(json.dumps(wanted))
    return np.load(path, mmap_mode="r")


# What the engine itself derives from a cached sample, side by side with it (H, W, 2) uint8: MediaPipe's person
# mask of the no-flash frame (as the per-frame path computes it, at the CMN grid) and the engine's flash trimap
# (flash-ratio map + MediaPipe, 0/128/255; all 128 where the engine finds no subject). Training on these, and not
# only on imitations, teaches the network how the real segmenter fails on rendered people and when to overrule
# it with the flash.
CUE_FIELDS: dict[str, slice] = {"mp_mask": slice(0, 1), "engine_trimap": slice(1, 2)}
# Bumped when the engine's flash trimap changes, so a cue cache of the old trimaps is rebuilt, not reused.
# 2: component lighting judged relative to the background's gain; flash/segmenter disagreement is unknown.
# 3: a flash too weak to confirm the segmenter's person gives an all-unknown trimap (as the engine does for
#    flash-prior models, the ones that train on these trimaps).
# 4: a third channel, the flash evidence map; 5: removed again with the flash-evidence models.
TRIMAP_VERSION = 5


def _engine_cues(sample: np.ndarray, segmenter: PersonSegmenter, cmn_size: tuple[int, int]) -> np.ndarray:
    from cuematte.engine.cues.trimap import UNKNOWN, build_flash_trimap, trimap_for_model
    from cuematte.engine.errors import FlashCueError
    from cuematte.engine.frames import resize

    noflash = np.ascontiguousarray(sample[..., FIELDS["noflash"]])
    flash = np.ascontiguousarray(sample[..., FIELDS["flash"]])
    # The session builds its trimap once, from the flash and the no-flash frame taken with it; the person mask
    # comes from each frame it mattes.
    reference = np.ascontiguousarray(sample[..., REFERENCE]) if sample.shape[-1] > CHANNELS else noflash
    h, w = noflash.shape[:2]
    out = np.empty((h, w, len(CUE_FIELDS)), np.uint8)
    mask = segmenter.segment(resize(noflash, cmn_size))
    out[..., 0] = np.clip(resize(mask, (h, w)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    try:
        out[..., 1] = trimap_for_model(build_flash_trimap(flash, reference, segmenter), reads_flash=True).trimap
    except FlashCueError:  # no brighter at all: the session refuses such a flash; train on it as unknown
        out[..., 1] = UNKNOWN
    return out


def _per_sample_cache(path: Path, samples: np.ndarray, wanted: dict[str, object], shape: tuple[int, ...],
                      dtype: type, desc: str, compute: Callable[[np.ndarray], np.ndarray]) -> np.memmap:
    """``compute`` of every sample of a rendered cache into ``path`` (.npy memmap of ``(N, *shape)``), unless a
    cache made the same way (``wanted``, kept in the .json beside it) is there already."""
    meta_path = path.with_suffix(".json")
    wanted = {"n": len(samples), "size": list(samples.shape[1:3]), **wanted, "done": True}
    if path.is_file() and meta_path.is_file() and json.loads(meta_path.read_text()) == wanted:
        return np.load(path, mmap_mode="r")
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(len(samples), *shape))
    for i in tqdm(range(len(samples)), desc=desc):
        arr[i] = compute(np.asarray(samples[i]))
    arr.flush()
    meta_path.write_text(json.dumps(wanted))
    return np.load(path, mmap_mode="r")


def build_cue_cache(path: Path, samples: np.ndarray, cmn_size: tuple[int, int] = (144, 256)) -> np.memmap:
    """Engine cues (:data:`CUE_FIELDS`) for every sample of a rendered cache, into ``path`` unless present."""
    from cuematte.engine.cues.segmenter import MediaPipeSegmenter

    segmenter = MediaPipeSegmenter(threads=1)
    return _per_sample_cache(path, samples, {"cmn_size": list(cmn_size), "trimap": TRIMAP_VERSION},
                             (*samples.shape[1:3], len(CUE_FIELDS)), np.uint8, "engine cues",
                             lambda sample: _engine_cues(sample, segmenter, cmn_size))


# The subject's flash -> no-flash warp of every sample (cuematte.engine.cues.align.estimate_subject_warp, as a session
# with an ``align_flash`` model fits it in set_flash), (N, 2, 3) float32; bumped when the fit changes.
ALIGN_VERSION = 1


def subject_warp_of(sample: np.ndarray, segmenter: PersonSegmenter, cmn_size: tuple[int, int]) -> np.ndarray:
    """(2, 3) float32 no-flash -> flash warp of one cached sample, fitted as the engine's session fits it."""
    from cuematte.engine.cues.align import estimate_alignment
    from cuematte.engine.session import fit_subject

    flash = np.ascontiguousarray(sample[..., FIELDS["flash"]])
    reference = (np.ascontiguousarray(sample[..., REFERENCE]) if sample.shape[-1] > CHANNELS
                 else np.ascontiguousarray(sample[..., FIELDS["noflash"]]))
    return fit_subject(flash, reference, segmenter, cmn_size, estimate_alignment(flash, reference).warp)[0].warp


def build_align_cache(path: Path, samples: np.ndarray, cmn_size: tuple[int, int] = (144, 256)) -> np.ndarray:
    """Subject warps (N, 2, 3) of every sample of a rendered cache, into ``path`` unless present."""
    from cuematte.engine.cues.segmenter import MediaPipeSegmenter

    meta_path = path.with_suffix(".json")
    wanted = {"n": len(samples), "size": list(samples.shape[1:3]), "cmn_size": list(cmn_size),
              "align": ALIGN_VERSION, "done": True}
    if path.is_file() and meta_path.is_file() and json.loads(meta_path.read_text()) == wanted:
        return np.load(path)
    segmenter = MediaPipeSegmenter(threads=1)
    warps = np.stack([subject_warp_of(np.asarray(samples[i]), segmenter, cmn_size)
                      for i in tqdm(range(len(samples)), desc="subject warps")]).astype(np.float32)
    np.save(path, warps)
    meta_path.write_text(json.dumps(wanted))
    return warps
