"""A torch Dataset over procedurally rendered flash/no-flash samples (the only module here importing torch).

Train items use training seeds ``seed_offset + epoch * len + index`` (``set_epoch`` gives every epoch fresh
samples); eval items use the fixed evaluation seeds of one split, which no training seed can equal.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from cuematte.training.data.config import DEFAULT_CONFIG, SynthConfig
from cuematte.training.data.render import render_sample
from cuematte.training.data.samples import FlashSample
from cuematte.training.data.seeds import EvalSplit, eval_seed, train_seed

Split = Literal["train", "eval"]


def _chw(x: np.ndarray) -> torch.Tensor:
    """(H, W, 3) -> (3, H, W); (H, W) -> (1, H, W); float32."""
    a = x[None] if x.ndim == 2 else np.transpose(x, (2, 0, 1))
    return torch.from_numpy(np.ascontiguousarray(a, np.float32))


def to_tensors(s: FlashSample, seed: int) -> dict[str, torch.Tensor]:
    """Tensors of one sample: images (3, H, W), mattes (1, H, W), ``dynamic`` bool (), ``seed`` int64 ()."""
    return {
        "noflash": _chw(s.noflash),
        "flash": _chw(s.flash),
        "alpha": _chw(s.alpha),
        "fg": _chw(s.foreground),
        "bg": _chw(s.background),
        "flash_alpha": _chw(s.flash_alpha),
        "prior": _chw(s.person_prior),
        "dynamic": torch.tensor(s.dynamic),
        "seed": torch.tensor(seed, dtype=torch.int64),
    }


class FlashDataset(Dataset[dict[str, torch.Tensor]]):
    """``length`` rendered samples of ``split``; ``eval_split`` picks the evaluation seeds (static forces
    static backgrounds, dynamic forces changing ones, mixed keeps ``cfg.p_dynamic``)."""

    def __init__(
        self,
        length: int,
        split: Split = "train",
        cfg: SynthConfig = DEFAULT_CONFIG,
        *,
        eval_split: EvalSplit = "mixed",
        seed_offset: int = 0,
    ) -> None:
        if length <= 0:
            raise ValueError("length must be positive")
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
        if eval_split not in ("static", "dynamic", "mixed"):
            raise ValueError(
                f"pairs come from the static, dynamic or mixed evaluation seeds, not {eval_split!r}"
            )
        self.length, self.split, self.eval_split, self.seed_offset = length, split, eval_split, seed_offset
        self.cfg = cfg
        if split == "eval" and eval_split in ("static", "dynamic"):
            self.cfg = replace(cfg, p_dynamic=1.0 if eval_split == "dynamic" else 0.0)
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Training: a new set of samples per epoch. Evaluation ignores it (fixed samples)."""
        self.epoch = epoch

    def seed(self, index: int) -> int:
        if not 0 <= index < self.length:
            raise IndexError(index)
        if self.split == "eval":
            return eval_seed(index, self.eval_split)
        return train_seed(self.seed_offset + self.epoch * self.length + index)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        seed = self.seed(index)
        return to_tensors(render_sample(seed, self.cfg), seed)


def worker_init(_: int) -> None:
    """DataLoader ``worker_init_fn``: one OpenCV thread per worker, so workers don't oversubscribe the CPU."""
    cv2.setNumThreads(1)
