"""`cuematte export`: checkpoint (or a random-init config) -> model folder with split ONNX graphs."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export a checkpoint (or a random-init config) to ONNX graphs split at the flash-feature cache"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="a .safetensors checkpoint written by `cuematte train`")
    src.add_argument("--config", choices=["lite", "paper"], help="export this config (with --random-init)")
    p.add_argument("--random-init", action="store_true", help="random weights, for latency work before training")
    p.add_argument("--person-mask", action="store_true", help="with --config: per-frame segmenter-mask input")
    p.add_argument("--flash-prior", action="store_true", help="with --config: the cached flash input per frame too")
    p.add_argument("--align-flash", action="store_true",
                   help="with --config: the session aligns the flash on the person (as the shipped model)")
    p.add_argument("--guidance", action="store_true",
                   help="with --config --person-mask --flash-prior: the frame graph refines the guidance trimap")
    p.add_argument("--seed", type=int, default=0, help="seed of the random init")
    p.add_argument("--out-dir", type=Path, required=True, help="model folder to write")


def run(args: argparse.Namespace) -> int:
    from cuematte.engine.errors import CuematteError

    if args.config and not args.random_init:
        raise CuematteError("--config exports untrained weights; add --random-init to say so (or use --checkpoint)")
    import torch

    from cuematte.export.onnx_export import export_onnx
    from cuematte.training.checkpoint import load_checkpoint
    from cuematte.training.models.config import get_config
    from cuematte.training.models.fnfnet import build_model

    recipe = None
    if args.checkpoint:
        net, meta = load_checkpoint(args.checkpoint)
        trained, source = True, f"checkpoint {args.checkpoint.name} step {meta['step']}"
        recipe = meta["extra"].get("train", {}).get("extra", {}).get("recipe")
    else:
        torch.manual_seed(args.seed)
        net = build_model(get_config(args.config, person_mask=args.person_mask or None,
                                           flash_prior=args.flash_prior or None,
                                           align_flash=args.align_flash or None,
                                           guidance=args.guidance or None))
        trained, source = False, f"random-init seed {args.seed}"
    manifest = export_onnx(net, args.out_dir, trained=trained, source=source, recipe=recipe)
    for res in manifest["parity"]["results"]:
        h, w = res["size"]
        print(
            f"parity {w}x{h}: alpha {res['alpha_max_abs']:.2e}, foreground {res['foreground_max_abs']:.2e}, "
            f"flash_features {res['flash_features_max_abs']:.2e} (tolerance 1e-3)"
        )
    sizes = ", ".join(f"{f.name} {f.stat().st_size / 1e6:.1f} MB" for f in sorted(args.out_dir.glob("*.onnx")))
    state = "trained" if trained else "UNTRAINED (random init)"
    print(f"wrote {args.out_dir}: {manifest['name']} {state}; {sizes}")
    return 0
