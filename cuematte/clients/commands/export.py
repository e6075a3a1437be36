"""`cuematte export`: checkpoint (or a random-init config) -> model folder: a flash model's two ONNX graphs split
at the flash-feature cache, or a parallax model's one graph."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export a checkpoint (or a random-init config) to a model folder of ONNX graphs, parity checked"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="a .safetensors checkpoint written by `cuematte train`")
    from cuematte.training.models.config import CONFIGS  # dataclasses only: no torch to build the parser

    src.add_argument("--config", choices=[*CONFIGS, "parallax-lite", "parallax-paper"],
                     help="export this config (with --random-init)")
    p.add_argument("--random-init", action="store_true", help="random weights, for latency work before training")
    p.add_argument("--person-mask", action="store_true", help="with --config: per-frame segmenter-mask input")
    p.add_argument("--flash-prior", action="store_true", help="with --config: the cached flash input per frame too")
    p.add_argument("--align-flash", action="store_true",
                   help="with --config: the session aligns the flash on the person (as the shipped model)")
    p.add_argument("--guidance", action="store_true",
                   help="with --config --person-mask --flash-prior: the frame graph refines the guidance trimap")
    p.add_argument("--guidance-confirm-bg", action="store_true",
                   help="serve with the guidance rule that certain background needs the flash's agreement once it "
                        "located the subject (as the shipped model), whatever the run trained with: the rule is "
                        "applied by the engine, so the graphs are the same")
    p.add_argument("--guidance-fill-pockets", action="store_true",
                   help="serve with the guidance rule that unsure pockets the certain person encloses are person "
                        "(as the shipped model); applied by the engine, the graphs are the same")
    p.add_argument("--seed", type=int, default=0, help="seed of the random init")
    p.add_argument("--out-dir", type=Path, required=True, help="model folder to write")


def run(args: argparse.Namespace) -> int:
    from cuematte.engine.errors import CuematteError

    if args.config and not args.random_init:
        raise CuematteError("--config exports untrained weights; add --random-init to say so (or use --checkpoint)")
    from dataclasses import replace

    import torch

    if _is_parallax(args):
        return _run_parallax(args)
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
    if args.guidance_confirm_bg:
        if not net.cfg.guidance:
            raise CuematteError("--guidance-confirm-bg changes how the guidance is built: the model takes none")
        net.cfg = replace(net.cfg, guidance_confirm_bg=True)
    if args.guidance_fill_pockets:
        if not net.cfg.guidance:
            raise CuematteError("--guidance-fill-pockets changes how the guidance is built: the model takes none")
        net.cfg = replace(net.cfg, guidance_fill_pockets=True)
    manifest = export_onnx(net, args.out_dir, trained=trained, source=source, recipe=recipe)
    for res in manifest["parity"]["results"]:
        h, w = res["size"]
        coef = res.get("coefficients_max_abs")
        coef_s = "" if coef is None else f", guided coefficients {coef:.2e} (alpha and foreground through the engine)"
        print(
            f"parity {w}x{h}: alpha {res['alpha_max_abs']:.2e}, foreground {res['foreground_max_abs']:.2e}, "
            f"flash_features {res['flash_features_max_abs']:.2e}{coef_s} (tolerance 1e-3)"
        )
    sizes = ", ".join(f"{f.name} {f.stat().st_size / 1e6:.1f} MB" for f in sorted(args.out_dir.glob("*.onnx")))
    state = "trained" if trained else "UNTRAINED (random init)"
    print(f"wrote {args.out_dir}: {manifest['name']} {state}; {sizes}")
    return 0


def _is_parallax(args: argparse.Namespace) -> bool:
    from cuematte.training.parallax_train import is_parallax_checkpoint

    if args.checkpoint:
        return is_parallax_checkpoint(args.checkpoint)
    return str(args.config).startswith("parallax-")


def _run_parallax(args: argparse.Namespace) -> int:
    import torch

    from cuematte.engine.parallax.model import GRAPH_FILE, write_parallax_manifest
    from cuematte.export.onnx_export import git_commit
    from cuematte.export.parallax_onnx import check_parity, export_parallax
    from cuematte.training.models.parallax import PPMNet, get_ppm_config
    from cuematte.training.parallax_train import WORK_SIDE, load_ppm_checkpoint

    meta: dict[str, object] = {}
    if args.checkpoint:
        net, saved = load_ppm_checkpoint(args.checkpoint)
        train = saved["extra"].get("train", {})
        meta = {"trained": True, "source": f"checkpoint {args.checkpoint.name} step {saved['step']}",
                "recipe": train.get("extra", {}).get("recipe"), "steps": saved["step"]}
    else:
        torch.manual_seed(args.seed)
        net = PPMNet(get_ppm_config(args.config.removeprefix("parallax-")))
        meta = {"trained": False, "source": f"random-init seed {args.seed}"}
    graph = export_parallax(net, args.out_dir / GRAPH_FILE)
    # The graph's own sizes: the patch, and a frame at the training renders' size.
    parity = {f"{w}x{h}": check_parity(net, graph, (h, w)) for h, w in ((448, 448), (288, 512))}
    for size, err in parity.items():
        print(f"parity {size}: max abs {err:.2e} (tolerance 1e-4)")
    write_parallax_manifest(args.out_dir, graph, {"name": f"parallax-{net.cfg.name}", **meta,
                                                  "config": net.cfg.to_dict(), "parity": parity,
                                                  "commit": git_commit()}, work_side=WORK_SIDE)
    state = "trained" if meta["trained"] else "UNTRAINED (random init)"
    print(f"wrote {args.out_dir}: parallax-{net.cfg.name} {state}; {GRAPH_FILE} {graph.stat().st_size / 1e6:.1f} MB")
    return 0
