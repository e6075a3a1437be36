"""Checkpoints as safetensors (never pickle): weights plus the model config and training state as metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cuematte.engine.errors import CuematteError
from cuematte.training.models.config import FNFConfig
from cuematte.training.models.fnfnet import FNFNet, build_model


class CheckpointError(CuematteError):
    """A checkpoint file is missing, unreadable or not an FNFNet checkpoint."""


def save_checkpoint(path: Path, net: FNFNet, *, step: int, extra: dict[str, Any] | None = None) -> Path:
    """Write ``net``'s weights to ``path`` (.safetensors) with its config, step and ``extra`` as metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    meta = {"config": net.cfg.to_json(), "step": str(step), "extra": json.dumps(extra or {})}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)  # atomic: a crash mid-write never leaves a truncated checkpoint behind
    return path


def read_metadata(path: Path) -> dict[str, Any]:
    """Config (as FNFConfig), step and extra of a checkpoint without loading its weights."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if "config" not in meta:
        raise CheckpointError(f"{path} has no model config in its metadata; not a cuematte checkpoint")
    return {
        "config": FNFConfig.from_dict(json.loads(meta["config"])),
        "step": int(meta.get("step", "0")),
        "extra": json.loads(meta.get("extra", "{}")),
    }


def load_checkpoint(path: Path, map_location: str = "cpu") -> tuple[FNFNet, dict[str, Any]]:
    """Rebuild the model from a checkpoint's config and load its weights (strict)."""
    meta = read_metadata(path)
    net = build_model(meta["config"])
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt", device=map_location) as f:
        for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            state[key] = f.get_tensor(key)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match its config: {exc}") from exc
    return net, meta


def save_optimizer(path: Path, opt: torch.optim.Optimizer) -> None:
    """The optimizer's state as safetensors: tensors by 'param.key', the rest as JSON metadata."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{k}"] = v
    meta = {"param_groups": json.dumps(sd["param_groups"]), "scalars": json.dumps(scalars)}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def load_optimizer(path: Path, opt: torch.optim.Optimizer) -> None:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state: dict[int, dict[str, Any]] = {}
        for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = f.get_tensor(key)
    for key, v in json.loads(meta["scalars"]).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
