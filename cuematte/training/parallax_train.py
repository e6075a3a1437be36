"""Training loop for the parallax network (PPMNet) on rendered two-view portraits, resumable.

The data are the paper's: two views with a camera move, the reference view's trimap from the binarised
truth eroded and dilated, the engine's own DIS flow filled per layer, and the four aligned views. Items are
rendered once into a cache beside the run (``build_parallax_cache``) and cropped around the unknown band.
Recipes live in ``cuematte/training/recipes/`` with ``kind = "parallax"``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from cuematte.engine.errors import InputError
from cuematte.training.checkpoint import CheckpointError, load_optimizer, save_optimizer
from cuematte.training.data.parallax import FlowKind, ParallaxCache, build_parallax_cache
from cuematte.training.loop import cosine_lr, optimise, trim_log
from cuematte.training.models.parallax import PPM_PRESETS, Branches, PPMConfig, PPMNet
from cuematte.training.parallax_losses import parallax_loss

log = logging.getLogger(__name__)

INPUTS = ("view", "view_bg", "view_fg", "view_fg_pair", "trimap", "trimap_fg")
# The long side the engine mattes at: the training renders' (SynthConfig.size 288x512), so that people appear at
# the scale the network learnt; written into the exported model.json.
WORK_SIDE = 512


@dataclass(frozen=True)
class ParallaxTrainConfig:
    kind: str = "parallax"
    config: str = "lite"  # PPM_PRESETS key
    branches: Branches = "dual"  # "single": the paper's single-image ablation
    use_bg_view: bool = True  # False: the paper's "w/o background-aligned frame" ablation
    motion_channels: bool = False  # PPMConfig.motion_channels: the views' differences as two more inputs
    ratio_channels: bool = False  # PPMConfig.ratio_channels: where each layer lines up, as two more inputs
    flow: FlowKind = "dis"  # "dis": the engine's estimator (training sees its errors); "exact": the oracle
    flow_noise_px: float = 0.0  # extra foreground-flow noise (the paper's +noise ablation)
    top_loss: bool = False  # the paper's symmetric design: the top branch predicts its own image and is supervised
    # The head's fusion widths at 1/8, 1/4, 1/2 and 1/1 (PPMConfig.fusion_channels); None: the preset's.
    fusion_channels: tuple[int, int, int, int] | None = None
    steps: int = 3000
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: int = 100
    size: tuple[int, int] = (288, 512)  # rendered frame (H, W)
    crop: int = 192  # training patches around the unknown band
    cache_samples: int = 6000
    eval_samples: int = 48
    eval_every: int = 250
    ckpt_every: int = 100
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def net_config(self) -> PPMConfig:
        preset = PPM_PRESETS[self.config]
        return replace(preset, branches=self.branches, use_bg_view=self.use_bg_view,
                       motion_channels=self.motion_channels, ratio_channels=self.ratio_channels,
                       fusion_channels=self.fusion_channels or preset.fusion_channels)

    def validate(self) -> None:
        if self.kind != "parallax":
            raise InputError(f"recipe kind {self.kind!r} is not 'parallax'")
        if self.config not in PPM_PRESETS:
            raise InputError(f"config {self.config!r} is not one of {', '.join(PPM_PRESETS)}")
        try:  # the network's own rules (branches, which inputs the single branch can take)
            self.net_config.validate()
        except ValueError as exc:
            raise InputError(f"recipe: {exc}") from None
        if self.flow not in ("dis", "exact"):
            raise InputError(f"flow {self.flow!r} is not 'dis' or 'exact'")
        if self.crop % 32 or self.crop > min(self.size):
            raise InputError(f"crop {self.crop} must be a multiple of 32 no larger than the frame {self.size}")
        if self.steps < 1 or self.batch_size < 1:
            raise InputError("steps and batch_size must be positive")
        if self.fusion_channels is not None and (len(self.fusion_channels) != 4 or min(self.fusion_channels) < 1):
            raise InputError(f"fusion_channels must be 4 positive widths (1/8, 1/4, 1/2, 1/1), got "
                             f"{list(self.fusion_channels)}")
        if self.top_loss and self.branches != "dual":
            raise InputError("top_loss supervises the top branch: it needs branches = 'dual'")

    @property
    def cache_stem(self) -> str:
        """Runs with the same data share one cache (beside the run folders)."""
        noise = f"-noise{self.flow_noise_px:g}" if self.flow_noise_px else ""
        top = "-top" if self.top_loss else ""  # the same items with the top branch's truth beside them
        return f"parallax-{self.size[0]}x{self.size[1]}-c{self.crop}-{self.flow}{noise}{top}-n{self.cache_samples}"


def load_parallax_recipe(path: Path, values: dict[str, Any]) -> ParallaxTrainConfig:
    unknown = sorted(set(values) - {f.name for f in fields(ParallaxTrainConfig)})
    if unknown:
        raise InputError(f"recipe {path} sets unknown fields: {', '.join(unknown)}")
    cfg = ParallaxTrainConfig(**_tuples(values), extra={"recipe": path.stem})
    cfg.validate()
    return cfg


def saved_parallax_config(out: Path) -> ParallaxTrainConfig:
    return ParallaxTrainConfig(**_tuples(json.loads((out / "train.json").read_text())))


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    """The config's tuple fields from TOML's or JSON's lists."""
    return values | {k: tuple(values[k]) for k in ("size", "fusion_channels") if values.get(k) is not None}


def is_parallax_recipe(values: dict[str, Any]) -> bool:
    return values.get("kind") == "parallax"


# -- checkpoints ---------------------------------------------------------------------------------------------------

def save_ppm_checkpoint(path: Path, net: PPMNet, *, step: int, extra: dict[str, Any] | None = None) -> Path:
    """Weights as safetensors with the network config, step and ``extra`` (the training recipe) as metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    meta = {"kind": "parallax", "config": net.cfg.to_json(), "step": str(step),
            "extra": json.dumps(extra or {})}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def is_parallax_checkpoint(path: Path) -> bool:
    """Whether a .safetensors checkpoint is a parallax network's (False for a flash one); named error if unreadable."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("kind") == "parallax"
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc


def load_ppm_checkpoint(path: Path) -> tuple[PPMNet, dict[str, Any]]:
    """A parallax checkpoint -> (network with its weights, {"step", "extra"})."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a mapping
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if meta.get("kind") != "parallax":
        raise CheckpointError(f"{path} is not a parallax checkpoint")
    net = PPMNet(PPMConfig.from_dict(json.loads(meta["config"])))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match its config: {exc}") from exc
    return net, {"step": int(meta.get("step", "0")), "extra": json.loads(meta.get("extra", "{}"))}


# -- batches -------------------------------------------------------------------------------------------------------

class ParallaxBatches:
    """Seeded batches from the cache: a fresh permutation per epoch, random horizontal flips (all inputs at once,
    which keeps the warps consistent)."""

    def __init__(self, cache: ParallaxCache, batch_size: int, seed: int, *, flip: bool = True) -> None:
        self.cache, self.batch_size, self.seed, self.flip = cache, batch_size, seed, flip

    def get(self, step: int, device: torch.device) -> dict[str, torch.Tensor]:
        n = len(self.cache)
        per_epoch = max(1, n // self.batch_size)
        epoch, k = divmod(step, per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(n)
        idx = order[k * self.batch_size:(k + 1) * self.batch_size]
        flips = np.random.default_rng([self.seed, epoch, k, 1]).random(len(idx)) < 0.5
        items = [self.cache[int(i)] for i in idx]
        out: dict[str, torch.Tensor] = {}
        for key in items[0]:
            arr = np.stack([np.asarray(it[key], np.float32) for it in items])
            if self.flip:
                arr[flips] = arr[flips][..., ::-1]
            out[key] = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
        return out


def forward(net: PPMNet, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha (B, 1, H, W), premultiplied foreground (B, 3, H, W)), composed with the batch's trimap."""
    alpha, fg = net(*(batch[k] for k in INPUTS))
    return alpha, fg


def training_loss(net: PPMNet, batch: dict[str, torch.Tensor], *, top: bool) -> dict[str, torch.Tensor]:
    """The paper's loss of the bottom branch's prediction; with ``top`` also of the top branch's own (its image
    ``view_fg``, the batch's ``alpha_top`` / ``bg_top``), its terms named ``top_*``, both in ``total``."""
    if not top:
        return parallax_loss(*forward(net, batch), batch)
    out = net.forward_raw(*(batch[k] for k in INPUTS), both=True)
    bottom = parallax_loss(out["alpha"], out["fg"], batch)
    upper = parallax_loss(out["alpha_top"], out["fg_top"],
                          {"alpha": batch["alpha_top"], "bg": batch["bg_top"], "view": batch["view_fg"]})
    terms = {k: v for k, v in bottom.items() if k != "total"}
    terms |= {f"top_{k}": v for k, v in upper.items() if k != "total"}
    return terms | {"total": bottom["total"] + upper["total"]}


@torch.no_grad()
def evaluate_batches(net: PPMNet, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Mean alpha MSE and SAD (x1e3 per pixel) on fixed crops, as a training curve (not the eval split)."""
    net.eval()
    se, ad, n = 0.0, 0.0, 0
    for b in batches:
        a, _ = forward(net, b)
        se += float(((a - b["alpha"]) ** 2).sum())
        ad += float((a - b["alpha"]).abs().sum())
        n += a.numel()
    net.train()
    return {"mse": se / n, "mad": ad / n}


def train_parallax(cfg: ParallaxTrainConfig, out: Path, *, resume: bool = False) -> Path:
    """Run (or resume) training into ``out``; returns the last checkpoint's path."""
    cfg.validate()
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    last, optim_path, log_path = out / "last.safetensors", out / "last_optim.safetensors", out / "log.jsonl"
    start = 0
    if resume and last.is_file():
        cfg = replace(saved_parallax_config(out), steps=cfg.steps, threads=cfg.threads, device=cfg.device)
        net, meta = load_ppm_checkpoint(last)
        start = int(meta["step"])
        if cfg.steps < start:
            raise InputError(f"{out} is at step {start} already; it cannot be resumed to {cfg.steps} steps")
        log.info("resuming %s at step %d", out, start)
    else:
        net = PPMNet(cfg.net_config)
        log_path.unlink(missing_ok=True)
    trim_log(log_path, start)
    (out / "train.json").write_text(json.dumps(asdict(cfg), indent=2))
    net.to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if start and optim_path.is_file():
        load_optimizer(optim_path, opt)

    # Training and curve items come from disjoint seed ranges of the same renderer.
    cache = ParallaxCache(build_parallax_cache(out.parent / f"{cfg.cache_stem}", cfg.cache_samples,
                                               _synth(cfg), seed0=0, flow=cfg.flow,
                                               flow_noise_px=cfg.flow_noise_px, crop=cfg.crop,
                                               top_truth=cfg.top_loss))
    eval_cache = ParallaxCache(build_parallax_cache(out.parent / f"{cfg.cache_stem}-curve{cfg.eval_samples}",
                                                    cfg.eval_samples,
                                                    _synth(cfg), seed0=900_000, flow=cfg.flow,
                                                    flow_noise_px=cfg.flow_noise_px, crop=cfg.crop))
    batches = ParallaxBatches(cache, cfg.batch_size, cfg.seed)
    eval_src = ParallaxBatches(eval_cache, 8, 12345, flip=False)
    eval_batches = [eval_src.get(i, device) for i in range(max(1, cfg.eval_samples // 8))]

    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"train parallax {cfg.config}")
    t0 = time.perf_counter()
    with log_path.open("a") as logf:
        for step in bar:
            batch = batches.get(step, device)
            record = optimise(net, opt, training_loss(net, batch, top=cfg.top_loss), step=step,
                              lr=cosine_lr(step, cfg.lr, cfg.steps, cfg.warmup), t0=t0)
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                record |= {f"eval_{k}": v for k, v in evaluate_batches(net, eval_batches).items()}
            logf.write(json.dumps(record) + "\n")
            logf.flush()
            bar.set_postfix(loss=f"{record['total']:.3f}")
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
                save_ppm_checkpoint(last, net, step=step + 1, extra={"train": asdict(cfg)})
                save_optimizer(optim_path, opt)
    return last


def _synth(cfg: ParallaxTrainConfig) -> Any:
    from cuematte.training.data.config import SynthConfig

    return replace(SynthConfig(), size=cfg.size)
