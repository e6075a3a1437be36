"""`cuematte train`: train a model from a recipe file on procedurally rendered samples: FNFNet (flash/no-flash)
or PPMNet (parallax, recipes with ``kind = "parallax"``)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

HELP = "train a flash/no-flash or parallax matting model from a recipe on generated data (CPU or CUDA), resumable"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default=None, metavar="NAME|FILE",
                   help="what to train: cuematte/training/recipes/NAME.toml (flash-lite-half-sep and "
                        "parallax-ratio are the shipped models) or a .toml file of config fields; not needed with "
                        "--resume")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, log.jsonl, train.json)")
    p.add_argument("--steps", type=int, default=None,
                   help="total steps (default: the recipe's; with --resume the run's own, or more to extend it)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the recipe's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    p.add_argument("--init-from", type=Path, default=None, metavar="RUN_DIR",
                   help="start from the weights another run's network shares with this recipe's (same names and "
                        "shapes; the rest starts new), at step 0")


def run(args: argparse.Namespace) -> int:
    import torch

    from cuematte.engine.errors import CuematteError

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CuematteError("--device cuda asked for, but torch sees no CUDA device here")
    from cuematte.training.train import load_recipe, saved_config, train

    if _is_parallax(args):
        return _run_parallax(args)
    if args.resume and (args.out / "train.json").is_file():
        cfg = saved_config(args.out)  # the run's own recipe; train() keeps it and takes steps/threads/device
    elif args.recipe is None:
        raise CuematteError(f"--recipe is needed to start a run ({args.out} holds none to resume)")
    else:
        cfg = load_recipe(args.recipe)
    overrides = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    cfg = replace(cfg, **overrides, threads=args.threads, device=args.device)
    cfg.validate()
    last = train(cfg, args.out, resume=args.resume, init_from=None if args.resume else args.init_from)
    print(f"checkpoint: {last}")
    return 0


def _is_parallax(args: argparse.Namespace) -> bool:
    import json

    from cuematte.training.parallax_train import is_parallax_recipe
    from cuematte.training.train import read_recipe_values, recipe_path

    if args.resume and (args.out / "train.json").is_file():
        return bool(json.loads((args.out / "train.json").read_text()).get("kind") == "parallax")
    return args.recipe is not None and is_parallax_recipe(read_recipe_values(recipe_path(args.recipe)))


def _run_parallax(args: argparse.Namespace) -> int:
    from cuematte.training.parallax_train import (
        load_parallax_recipe,
        saved_parallax_config,
        train_parallax,
    )
    from cuematte.training.train import read_recipe_values, recipe_path

    if args.resume and (args.out / "train.json").is_file():
        cfg = saved_parallax_config(args.out)
    else:
        path = recipe_path(args.recipe)
        cfg = load_parallax_recipe(path, read_recipe_values(path))
    overrides = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    cfg = replace(cfg, **overrides, threads=args.threads, device=args.device)
    last = train_parallax(cfg, args.out, resume=args.resume)
    print(f"checkpoint: {last}")
    return 0
