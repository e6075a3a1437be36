"""What every training loop here shares: the learning-rate schedule, the log a resumed run keeps, one optimiser
step and its log record."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch


def cosine_lr(step: int, peak: float, steps: int, warmup: int = 100) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 5 % of ``peak`` at ``steps``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def trim_log(log_path: Path, start: int) -> None:
    """A run resumed at ``start``: steps logged after its last checkpoint run again, so their old lines go."""
    if start and log_path.is_file():
        kept = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] <= start]
        log_path.write_text("".join(line + "\n" for line in kept))


def optimise(net: torch.nn.Module, opt: torch.optim.Optimizer, losses: dict[str, torch.Tensor], *, step: int,
             lr: float, t0: float) -> dict[str, Any]:
    """Back-propagate ``losses["total"]`` with the gradient norm clipped at 1 and step at ``lr``; returns the
    step's log record: step (1-based), lr, seconds since ``t0`` and every loss term."""
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    losses["total"].backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    record: dict[str, Any] = {"step": step + 1, "lr": lr, "time_s": round(time.perf_counter() - t0, 1)}
    return record | {k: round(v.detach().item(), 5) for k, v in losses.items()}
