"""Training loop for FNFNet on procedurally rendered flash/no-flash samples.

Two stages as in the paper (Sec. 4.5.4): the CMN first (eq. 12 at the CMN resolution), then everything
jointly (eq. 13). Checkpoints are safetensors (weights + config, and the optimizer state in a second file);
``resume`` continues from ``last.safetensors`` at the same step with the same data order, to ``cfg.steps``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from cuematte.engine.cues.align import SubjectWarp
from cuematte.engine.cues.guidance import GuidanceParams, build_guidance, guidance_input, trimap_from_one_hot
from cuematte.engine.cues.trimap import trimap_one_hot
from cuematte.engine.errors import InputError
from cuematte.engine.model import REMOVED_SWITCHES, removed_switches_message
from cuematte.training.cache import (
    CUE_FIELDS,
    FIELDS,
    CacheSpec,
    build_align_cache,
    build_cache,
    build_cue_cache,
)
from cuematte.training.checkpoint import load_checkpoint, load_optimizer, read_metadata, save_checkpoint, save_optimizer
from cuematte.training.data.prior import FAILURE_WEIGHTS, segmenter_failure
from cuematte.training.loop import cosine_lr, optimise, trim_log
from cuematte.training.losses import fnf_loss
from cuematte.training.models.config import FNFConfig, get_config
from cuematte.training.models.fnfnet import FNFNet, build_model

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that decides a run; written to RUN_DIR/train.json."""

    config: str = "lite"
    person_mask: bool = False
    steps: int = 4000
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    cmn_fraction: float = 0.25  # share of steps in the CMN-only stage
    size: tuple[int, int] = (288, 512)  # (H, W) of training samples
    cache_samples: int = 2000
    eval_samples: int = 48
    eval_every: int = 250
    ckpt_every: int = 100
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"
    prior_trimap_p: float = 0.5  # share of flash trimaps built from the imitation-segmenter prior, as at inference
    flash_cue: bool = True  # False: the paper's ablation, the flash branch sees the no-flash frame, trimap unknown
    flash_prior: bool = False  # the per-frame encoder also takes the cached flash input (FNFConfig.flash_prior)
    # Share of person masks, and independently of flash trimaps, that are the engine's own (MediaPipe on the
    # rendered frame, the engine's flash trimap) instead of imitations; the rest are built as before.
    engine_cue_p: float = 0.0
    engine_trimap_p: float | None = None  # the flash-trimap share on its own (None: engine_cue_p)
    # Share of imitation person masks given one gross segmenter failure (cuematte/training/data/prior.py), drawn from
    # its own generator so the rest of a batch is the same as without it.
    mask_failure_p: float = 0.0
    mask_failure_kinds: tuple[str, ...] = tuple(FAILURE_WEIGHTS)
    # Share of training subjects rendered camouflaged (SynthConfig.p_camouflage); its own cache, never the
    # evaluation samples.
    camouflage_p: float = 0.0
    # Share of training pairs whose flash (and its no-flash reference) caught the subject far from where it is
    # now (SynthConfig.p_drift), as in a session that moves after its one flash; its own cache.
    drift_p: float = 0.0
    # Share of training samples rendered with photographic effects (SynthConfig.p_realism: real fur texture and
    # flyaways in the hair, a key light, motion blur, webcam softness and compression); its own cache.
    realism_p: float = 0.0
    # Flash inputs (flash, trimap) warped into the no-flash frame's geometry by the subject's fitted
    # motion, as the engine does for models trained so (FNFConfig.align_flash); warps from their own cache.
    align_flash: bool = False
    # The per-frame graph refines the engine's guidance trimap (FNFConfig.guidance), built here from each
    # sample's person mask and flash trimap by the engine's own function; the loss sees the composed alpha.
    guidance: bool = False
    # Once the flash located the subject, certain background needs the flash's agreement
    # (FNFConfig.guidance_confirm_bg).
    guidance_confirm_bg: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def net_config(self) -> FNFConfig:
        """The network this recipe trains (its named config with the recipe's input switches)."""
        return get_config(self.config, person_mask=self.person_mask, flash_prior=self.flash_prior,
                          align_flash=self.align_flash, guidance=self.guidance,
                          guidance_confirm_bg=self.guidance_confirm_bg)

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first field that cannot make a run."""
        for name in ("engine_cue_p", "engine_trimap_p", "mask_failure_p", "camouflage_p", "drift_p", "realism_p",
                     "prior_trimap_p"):
            share = getattr(self, name)
            if share is not None and not 0.0 <= share <= 1.0:
                raise InputError(f"{name} = {share} is not a share in [0, 1]")
        if not self.mask_failure_kinds or not set(self.mask_failure_kinds) <= set(FAILURE_WEIGHTS):
            raise InputError(f"mask_failure_kinds {list(self.mask_failure_kinds)}: choose from "
                             f"{', '.join(FAILURE_WEIGHTS)}")
        for name in ("steps", "batch_size", "cache_samples"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} = {getattr(self, name)} must be at least 1")
        try:
            self.net_config.validate()
        except ValueError as exc:
            raise InputError(f"recipe network: {exc}") from exc

    @property
    def uses_engine_cues(self) -> bool:
        return self.engine_cue_p > 0 or bool(self.engine_trimap_p)


def _to_tensor(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, C, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(x)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def _trimap_onehot(mask: np.ndarray, kernel: int) -> np.ndarray:
    """(H, W) bool -> (3, H, W) float32 one-hot [bg, unknown, fg] by erode/dilate (paper Sec. 4.2.2)."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    m = mask.astype(np.uint8)
    fg = cv2.erode(m, k).astype(bool)
    maybe = cv2.dilate(m, k).astype(bool)
    return np.stack([~maybe, maybe & ~fg, fg]).astype(np.float32)


class Batches:
    """Deterministic batches from the cache: batch ``step`` is a function of (seed, step) only.

    ``cues``: the engine cues of the same samples (:func:`cuematte.training.cache.build_cue_cache`), used for a share
    ``engine_cue_p`` of person masks and ``engine_trimap_p`` (default: the same) of flash trimaps.
    ``warps``: the subject warps of the same samples (:func:`cuematte.training.cache.build_align_cache`), for
    ``align_flash``.
    """

    def __init__(self, cache: np.ndarray, cfg: TrainConfig, cues: np.ndarray | None = None,
                 warps: np.ndarray | None = None) -> None:
        if cfg.uses_engine_cues and cues is None:
            raise ValueError("engine cues (engine_cue_p or engine_trimap_p > 0) need the "
                             "engine-cue cache")
        if cfg.align_flash and warps is None:
            raise ValueError("align_flash needs the subject warps of the cache (build_align_cache)")
        self.cache, self.cfg, self.cues, self.warps = cache, cfg, cues, warps
        self._trimap_p = cfg.engine_cue_p if cfg.engine_trimap_p is None else cfg.engine_trimap_p

    def get(self, step: int, device: torch.device) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.cfg.seed, step])
        idx = np.sort(rng.choice(len(self.cache), self.cfg.batch_size, replace=False))
        raw = np.asarray(self.cache[idx])  # (B, H, W, 16)
        cues = np.asarray(self.cues[idx]) if self.cues is not None else None  # (B, H, W, 3)
        if self.cfg.align_flash and self.cfg.flash_cue:
            assert self.warps is not None
            self._align(raw, cues, self.warps[idx])
        if rng.random() < 0.5:
            raw = raw[:, :, ::-1]
            cues = cues[:, :, ::-1] if cues is not None else None
        h = raw.shape[1]
        tri = []
        for b in range(len(raw)):
            use_prior = rng.random() < self.cfg.prior_trimap_p
            src = raw[b, ..., FIELDS["prior"]] if use_prior else raw[b, ..., FIELDS["flash_alpha"]]
            kernel = int(rng.integers(max(3, h // 40), max(5, h // 12))) | 1
            if cues is not None and rng.random() < self._trimap_p:
                tri.append(trimap_one_hot(cues[b, ..., CUE_FIELDS["engine_trimap"].start]))
            else:
                tri.append(_trimap_onehot(src[..., 0] > 127, kernel))
        if self.cfg.mask_failure_p > 0:
            raw = self._fail_masks(raw, step)
        batch = {name: _to_tensor(raw[..., sl], device) for name, sl in FIELDS.items() if name != "dynamic"}
        if cues is not None:
            use_mp = torch.from_numpy(rng.random(len(raw)) < self.cfg.engine_cue_p).to(device).view(-1, 1, 1, 1)
            batch["prior"] = torch.where(use_mp, _to_tensor(cues[..., CUE_FIELDS["mp_mask"]], device), batch["prior"])
        batch["flash_trimap"] = torch.from_numpy(np.stack(tri)).to(device)
        if not self.cfg.flash_cue:
            batch["flash"] = batch["noflash"]
            batch["flash_trimap"] = torch.zeros_like(batch["flash_trimap"])
            batch["flash_trimap"][:, 1] = 1.0
        if self.cfg.guidance:
            batch["guidance"] = self._guidance(batch["prior"], batch["flash_trimap"])
        return batch

    def _guidance(self, person: torch.Tensor, flash_trimap: torch.Tensor) -> torch.Tensor:
        """Person masks (B, 1, H, W) and one-hot flash trimaps (B, 3, H, W) -> the engine's guidance one-hot
        (B, 3, h, w) at the CMN grid, built as the session builds it each frame."""
        net = self.cfg.net_config
        h, w = net.cmn_size
        params = GuidanceParams(inner=net.guidance_bands[0], outer=net.guidance_bands[1],
                                confirm_background=net.guidance_confirm_bg,
                                fill_pockets=net.guidance_fill_pockets)
        out = []
        for m, t in zip(person[:, 0].cpu().numpy(), flash_trimap.cpu().numpy(), strict=True):
            mask = cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA)
            tri = cv2.resize(t.transpose(1, 2, 0), (w, h), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
            out.append(guidance_input(build_guidance(mask, trimap_from_one_hot(tri), params))[0])
        return torch.from_numpy(np.stack(out)).to(person.device)

    @staticmethod
    def _align(raw: np.ndarray, cues: np.ndarray | None, warps: np.ndarray) -> None:
        """Warp each sample's flash-geometry fields (flash, its matte, the engine trimap) into its
        no-flash frame, in place, as the engine warps a session's flash inputs."""
        for b, warp in enumerate(warps):
            sw = SubjectWarp(warp=warp, kind="cached")
            for sl in (FIELDS["flash"], FIELDS["flash_alpha"]):
                raw[b, ..., sl] = sw.to_noflash(np.ascontiguousarray(raw[b, ..., sl])).reshape((*raw.shape[1:3], -1))
            if cues is not None:
                ch = CUE_FIELDS["engine_trimap"].start
                cues[b, ..., ch] = sw.to_noflash(np.ascontiguousarray(cues[b, ..., ch]), nearest=True)

    def _fail_masks(self, raw: np.ndarray, step: int) -> np.ndarray:
        """(B, H, W, C) uint8 -> a copy with a share ``mask_failure_p`` of imitation person masks grossly wrong."""
        rng = np.random.default_rng([self.cfg.seed, step, 1])
        raw = raw.copy()
        ch = FIELDS["prior"].start
        for b in range(len(raw)):
            if rng.random() < self.cfg.mask_failure_p:
                mask = (raw[b, ..., ch] / 255.0).astype(np.float32)
                failed = segmenter_failure(rng, mask, self.cfg.mask_failure_kinds)
                raw[b, ..., ch] = np.round(failed * 255).astype(np.uint8)
        return raw


def forward(net: FNFNet, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prior = batch["prior"] if net.cfg.person_mask else None
    return net(batch["noflash"], batch["flash"], batch["flash_trimap"], prior, guidance=batch.get("guidance"))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over 100 steps, then cosine decay to 5% of the peak."""
    return cosine_lr(step, cfg.lr, cfg.steps)


@torch.no_grad()
def evaluate_batches(net: FNFNet, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Mean alpha MSE / SAD-per-pixel on fixed evaluation batches (full-resolution outputs)."""
    net.eval()
    se, ad, n = 0.0, 0.0, 0
    for b in batches:
        a = forward(net, b)["alpha"]
        se += float(((a - b["alpha"]) ** 2).sum())
        ad += float((a - b["alpha"]).abs().sum())
        n += a.numel()
    net.train()
    return {"mse": se / n, "mad": ad / n}


RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def recipe_path(recipe: str | Path) -> Path:
    """A recipe by name (``cuematte/training/recipes/NAME.toml``) or path -> its file, a named error if none."""
    path = Path(recipe)
    if not path.suffix:
        path = RECIPES_DIR / f"{recipe}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.toml")))
        raise InputError(f"no recipe {recipe!r}: give a .toml path or one of {known}")
    return path


def read_recipe_values(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"recipe {path} is not valid TOML: {exc}") from exc


def load_recipe(recipe: str | Path) -> TrainConfig:
    """A recipe by name (``cuematte/training/recipes/NAME.toml``) or path -> its :class:`TrainConfig`."""
    path = recipe_path(recipe)
    values = read_recipe_values(path)
    if values.get("kind", "flash") != "flash":
        raise InputError(f"recipe {path} is a {values['kind']} recipe, not a flash one (`cuematte train` runs both)")
    unknown = sorted(set(values) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise InputError(f"recipe {path} sets unknown fields: {', '.join(unknown)}")
    for key in ("size", "mask_failure_kinds"):
        if key in values:
            values[key] = tuple(values[key])
    cfg = TrainConfig(**values, extra={"recipe": path.stem})
    cfg.validate()
    return cfg


def saved_config(out: Path) -> TrainConfig:
    """The :class:`TrainConfig` a run in ``out`` was started (or last resumed) with."""
    saved = json.loads((out / "train.json").read_text())
    on = [k for k in REMOVED_SWITCHES if saved.pop(k, False)]
    if on:
        raise InputError(f"{out} was trained with {removed_switches_message(on)}")
    saved["size"] = tuple(saved["size"])
    saved.setdefault("guidance", False)
    saved.setdefault("guidance_confirm_bg", False)
    saved["mask_failure_kinds"] = tuple(saved.get("mask_failure_kinds", TrainConfig.mask_failure_kinds))
    return TrainConfig(**saved)


# What a branched run must share with the run it starts from: the network's inputs.
_BRANCH_FIXED = ("name", "person_mask", "flash_prior", "guidance")


def _branch(cfg: TrainConfig, out: Path, source: Path) -> tuple[FNFNet, int]:
    """Start run ``out`` from run ``source``'s last checkpoint, optimizer state and log, under ``cfg``'s recipe
    (its data, and how the flash inputs are prepared, may differ; the network may not)."""
    if (out / "last.safetensors").exists():
        raise InputError(f"{out} holds a run already; branch into a new folder")
    if not (source / "last.safetensors").is_file():
        raise InputError(f"{source} has no last.safetensors to branch from")
    net, meta = load_checkpoint(source / "last.safetensors")
    want = cfg.net_config
    differ = [f for f in _BRANCH_FIXED if getattr(net.cfg, f) != getattr(want, f)]
    if differ:
        raise InputError(f"{source} was trained with other {', '.join(differ)} than asked for: "
                         + ", ".join(f"{f}={getattr(net.cfg, f)}" for f in differ))
    start = int(meta["step"])
    if cfg.steps < start:
        raise InputError(f"{source} is at step {start} already; a branch of it cannot run to {cfg.steps} steps")
    for name in ("last_optim.safetensors", "log.jsonl"):
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    net.cfg = replace(net.cfg, align_flash=cfg.align_flash)  # how flash inputs are prepared is the recipe's
    log.info("branching %s from %s at step %d", out, source, start)
    return net, start


def _init_from(cfg: TrainConfig, source: Path) -> tuple[FNFNet, dict[str, Any]]:
    """A new ``cfg`` network whose tensors that another run's last checkpoint also has, under the same name and
    shape, start from that run's trained values (a network of another config: e.g. the shared decoder trunk
    starting from the split-decoder model's encoders, flash correlation and trimap decoder); the rest is new."""
    if not (source / "last.safetensors").is_file():
        raise InputError(f"{source} has no last.safetensors to initialise from")
    donor, meta = load_checkpoint(source / "last.safetensors")
    differ = [f for f in _BRANCH_FIXED[1:] if getattr(donor.cfg, f) != getattr(cfg.net_config, f)]
    if differ:
        raise InputError(f"{source} takes other inputs ({', '.join(differ)}) than this recipe's network")
    net = build_model(cfg.net_config)
    own, theirs = net.state_dict(), donor.state_dict()
    taken = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    net.load_state_dict(taken, strict=False)
    new = sorted({k.split(".")[0] for k in own if k not in taken})
    log.info("initialised %d of %d tensors from %s (step %s); new: %s", len(taken), len(own), source,
             meta.get("step"), ", ".join(new))
    return net, {"run": str(source), "step": meta.get("step"), "tensors": len(taken), "of": len(own), "new": new}


def train(cfg: TrainConfig, out: Path, *, resume: bool = False, branch_from: Path | None = None,
          init_from: Path | None = None) -> Path:
    """Run (or resume) training into ``out``; returns the path of the last checkpoint. ``branch_from``: start
    from another run's last checkpoint at its step, under ``cfg``'s recipe (:func:`_branch`). ``init_from``:
    start at step 0 with the tensors another run's network shares with this one (:func:`_init_from`)."""
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    last, optim_path, log_path = out / "last.safetensors", out / "last_optim.safetensors", out / "log.jsonl"
    start = 0
    if branch_from is not None:
        net, start = _branch(cfg, out, branch_from)
        cfg = replace(cfg, extra={**cfg.extra, "branched_from": {"run": str(branch_from), "step": start}})
    elif resume and last.is_file():
        # The recipe is the run's own; how long it runs, and on what, are the caller's (a run started on this
        # CPU may be finished on CUDA, or extended: the cosine schedule then stretches to the new length).
        cfg = replace(saved_config(out), steps=cfg.steps, threads=cfg.threads, device=cfg.device)
        net, meta = load_checkpoint(last)
        start = int(meta["step"])
        if cfg.steps < start:
            raise InputError(f"{out} is at step {start} already; it cannot be resumed to {cfg.steps} steps")
        log.info("resuming %s at step %d", out, start)
    elif init_from is not None:
        if last.exists():
            raise InputError(f"{out} holds a run already; initialise into a new folder (or --resume it)")
        net, origin = _init_from(cfg, init_from)
        cfg = replace(cfg, extra={**cfg.extra, "initialised_from": origin})
        log_path.unlink(missing_ok=True)
    else:
        net = build_model(cfg.net_config)
        log_path.unlink(missing_ok=True)
    trim_log(log_path, start)
    (out / "train.json").write_text(json.dumps(asdict(cfg), indent=2))
    if branch_from is not None:  # the branch's own checkpoint from the start, so --resume continues it
        save_checkpoint(last, net, step=start, extra={"train": asdict(cfg)})
    # NHWC: the CPU's depthwise convolutions run ~20 % faster; batches come NHWC already (a permuted view).
    net.to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if start and optim_path.is_file():
        load_optimizer(optim_path, opt)

    spec = CacheSpec(n=cfg.cache_samples, size=cfg.size, split="train", camouflage=cfg.camouflage_p,
                     drift=cfg.drift_p, realism=cfg.realism_p)
    eval_spec = CacheSpec(n=cfg.eval_samples, size=cfg.size, split="eval")
    cache = build_cache(out.parent / f"{spec.stem}.npy", spec)
    eval_cache = build_cache(out.parent / f"{eval_spec.stem}.npy", eval_spec)
    cues = eval_cues = None
    if cfg.uses_engine_cues:
        cues = build_cue_cache(out.parent / f"{spec.stem}-cues.npy", cache)
        eval_cues = build_cue_cache(out.parent / f"{eval_spec.stem}-cues.npy", eval_cache)
    warps = eval_warps = None
    if cfg.align_flash:
        warps = build_align_cache(out.parent / f"{spec.stem}-align.npy", cache)
        eval_warps = build_align_cache(out.parent / f"{eval_spec.stem}-align.npy", eval_cache)
    batches = Batches(cache, cfg, cues, warps)
    # Evaluated as at inference: the engine's own cues when the run trains on them, else the imitations.
    eval_cfg = TrainConfig(**{**asdict(cfg), "batch_size": 8, "prior_trimap_p": 1.0, "seed": 12345,
                              "engine_cue_p": 1.0 if cues is not None else 0.0, "engine_trimap_p": None,
                              "mask_failure_p": 0.0})
    eval_src = Batches(eval_cache, eval_cfg, eval_cues, eval_warps)
    eval_batches = [eval_src.get(i, device) for i in range(max(1, cfg.eval_samples // 8))]

    cmn_steps = int(cfg.steps * cfg.cmn_fraction)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"train {cfg.config}")
    t0 = time.perf_counter()
    with log_path.open("a") as logf:
        for step in bar:
            batch = batches.get(step, device)
            losses = fnf_loss(forward(net, batch), batch, "cmn" if step < cmn_steps else "full")
            record = optimise(net, opt, losses, step=step, lr=lr_at(step, cfg), t0=t0)
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                record |= {f"eval_{k}": v for k, v in evaluate_batches(net, eval_batches).items()}
            logf.write(json.dumps(record) + "\n")
            logf.flush()
            bar.set_postfix(loss=f"{record['total']:.3f}", **({"eval_mse": f"{record['eval_mse']:.4f}"}
                                                                if "eval_mse" in record else {}))
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
                save_checkpoint(last, net, step=step + 1, extra={"train": asdict(cfg)})
                save_optimizer(optim_path, opt)
    return last


def checkpoint_step(path: Path) -> int:
    return int(read_metadata(path)["step"])
