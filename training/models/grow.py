"""Grow a trained network into a config with wider shortcuts, computing the same function at first.

A branch that adds inputs to a layer (``FNFConfig.flash_skip``) keeps every trained weight: a grown conv's
old input channels keep their weights, and the new ones start at zero, so the grown network's outputs equal
the source's until training moves them. Only extra *input* channels (dim 1 of a conv weight) can grow, and
they must come after the old ones in the layer's input (``flash_skip`` appends the prior after the frame);
the same-outputs check in the tests holds a layer to that.
"""

from __future__ import annotations

import torch
from torch import Tensor

from training.models.config import FNFConfig
from training.models.fnfnet import FNFNet, build_model


def grown_tensor(old: Tensor, shape: torch.Size) -> Tensor:
    """``old`` (O, I, ...) zero-padded on dim 1 to ``shape`` (O, I', ...) with I' >= I; any other change of
    shape is an error (a layer may gain inputs, never change what it computes from its old ones)."""
    if old.shape == shape:
        return old
    if old.dim() < 2 or old.shape[0] != shape[0] or old.shape[2:] != shape[2:] or old.shape[1] > shape[1]:
        raise ValueError(f"cannot grow a tensor of shape {tuple(old.shape)} into {tuple(shape)}")
    new = old.new_zeros(shape)
    new[:, : old.shape[1]] = old
    return new


def grow(net: FNFNet, cfg: FNFConfig) -> FNFNet:
    """A new network of ``cfg`` holding ``net``'s weights, grown where ``cfg`` gives a layer more inputs."""
    new = build_model(cfg)
    old = net.state_dict()
    state = new.state_dict()
    missing = sorted(set(state) ^ set(old))
    if missing:
        raise ValueError(f"configs differ in more than layer inputs: {missing[:5]}")
    new.load_state_dict({k: grown_tensor(old[k], v.shape) for k, v in state.items()}, strict=True)
    return new


@torch.no_grad()
def grow_optimizer_state(opt: torch.optim.Optimizer) -> None:
    """Zero-pad per-parameter optimizer moments (Adam's ``exp_avg``, ``exp_avg_sq``) saved for a smaller
    network to the shapes of the grown parameters they now belong to."""
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            for k, v in st.items():
                if isinstance(v, Tensor) and v.dim() > 0 and v.shape != p.shape:
                    st[k] = grown_tensor(v, p.shape)
