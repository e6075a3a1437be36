"""`cuematte build-engines`: TensorRT plans for a model on this machine's GPU (cuematte/export/tensorrt.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "build TensorRT plans of a model for this GPU (FP16 by default); the service's tensorrt backend runs them"


def _size(text: str) -> tuple[int, int]:
    from cuematte.engine.errors import InputError

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--max-size takes WIDTHxHEIGHT, e.g. 1920x1080; got {text!r}") from None
    if min(w, h) < 256:
        raise InputError(f"--max-size {text} is too small (at least 256 on each side)")
    return w, h


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    p.add_argument("--out", type=Path, help="plans folder (default: ~/.cache/cuematte/plans/MODEL, where "
                                            "`--backend auto` looks)")
    p.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True, help="half precision (default)")
    p.add_argument("--max-size", default="1920x1080",
                   help="largest frame, WIDTHxHEIGHT; its long side bounds both sides so portrait frames fit too")
    p.add_argument("--check", action="store_true",
                   help="build nothing: exit 0 if the plans in --out fit this model, GPU and TensorRT, else 1")


def run(args: argparse.Namespace) -> int:
    from cuematte.engine.model import default_plans_dir, read_model_info, resolve_model_dir
    from cuematte.export.tensorrt import build_plans, plans_fit

    model_dir = resolve_model_dir(args.model)
    out = args.out or default_plans_dir(read_model_info(model_dir).name)
    if args.check:
        why = plans_fit(model_dir, out)
        print(f"plans in {out} fit this machine" if why is None else f"plans in {out} do not fit: {why}")
        return 0 if why is None else 1
    w, h = _size(args.max_size)
    manifest = build_plans(model_dir, out, fp16=args.fp16, max_size=(w, h))
    lo, hi = manifest.profile["min"], manifest.profile["max"]
    print(f"built {', '.join(manifest.plans.values())} in {out}: TensorRT {manifest.tensorrt}, {manifest.gpu} "
          f"(compute {manifest.compute_capability}), {manifest.precision}, frames {lo[0]}x{lo[1]} to {hi[0]}x{hi[1]}")
    return 0
