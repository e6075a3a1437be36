"""`cuematte train`: train FNFNet on procedurally rendered flash/no-flash samples."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

HELP = "train a flash/no-flash matting model on generated data (CPU or CUDA), resumable"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default=None, metavar="NAME|FILE",
                   help="train from a recipe file (training/recipes/NAME.toml; flash-lite is the shipped model); "
                        "--steps, --seed, --threads and --device override it, other flags are ignored")
    p.add_argument("--config", choices=["lite", "paper"], default="lite")
    p.add_argument("--person-mask", action="store_true", help="lite: segmenter person mask as an extra input")
    p.add_argument("--flash-prior", action="store_true",
                   help="the per-frame encoder also takes the cached flash frame and trimap (early fusion)")
    p.add_argument("--flash-evidence", action="store_true",
                   help="with --flash-prior: the flash half also takes the engine's flash evidence map "
                        "(computed once beside the sample cache)")
    p.add_argument("--flash-skip", action="store_true",
                   help="with --flash-prior: the decoders' last shortcut also takes the cached flash prior, so "
                        "edges are decided from the flash at the CMN grid's full resolution (with --branch-from "
                        "a run without it, its layers grow and start from the same outputs)")
    p.add_argument("--engine-cues", type=float, default=0.0, metavar="P",
                   help="share of person masks and flash trimaps taken from the engine itself (MediaPipe, the "
                        "flash trimap) rather than imitations; computed once beside the sample cache")
    p.add_argument("--engine-trimaps", type=float, default=None, metavar="P",
                   help="the share of flash trimaps from the engine on its own (default: --engine-cues)")
    p.add_argument("--mask-failures", type=float, default=0.0, metavar="P",
                   help="share of imitation person masks given a gross segmenter failure (subject missed, a wall "
                        "or a person behind called the subject), so the network learns to check the mask")
    p.add_argument("--mask-failure-kinds", default=None,
                   help="comma-separated kinds of --mask-failures: missed (the subject all but gone), part (a "
                        "part cut away), false (a region outside the subject called a person); default: all")
    p.add_argument("--camouflage", type=float, default=0.0, metavar="P",
                   help="share of training subjects rendered in the background's colours or textures, so the "
                        "network cannot tell the person by looks alone and learns to use the flash (own cache)")
    p.add_argument("--drift", type=float, default=0.0, metavar="P",
                   help="share of training pairs whose flash caught the subject far from where it is now, as "
                        "after minutes of a session with one flash, so the network learns when the cached flash "
                        "no longer lines up (own cache)")
    p.add_argument("--align-flash", action="store_true",
                   help="warp the flash frame and its trimap onto the subject in the no-flash frame (the "
                        "subject's motion fitted per pair, as the engine then does for this model)")
    p.add_argument("--guidance", action="store_true",
                   help="with --person-mask: the network refines the engine's guidance trimap (segmenter + flash) "
                        "and decides alpha only where it is unknown")
    p.add_argument("--branch-from", type=Path, default=None, metavar="RUN_DIR",
                   help="start from another run's last checkpoint, optimizer state and step, under the recipe "
                        "given here (same network inputs; data and flash preparation may differ)")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, log.jsonl, train.json)")
    p.add_argument("--steps", type=int, default=None,
                   help="total steps (default 4000; with --resume the run's own, or more to extend it)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--size", default="512x288", help="training sample WIDTHxHEIGHT")
    p.add_argument("--cache-samples", type=int, default=2000, help="rendered samples to train from")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0, or the recipe's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    p.add_argument("--no-flash-cue", action="store_true", help="ablation: train without the flash frame")


def run(args: argparse.Namespace) -> int:
    from engine.errors import CuematteError

    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise CuematteError(f"--size {args.size!r} is not WIDTHxHEIGHT") from None
    from training.data.prior import FAILURE_WEIGHTS

    kinds = tuple(FAILURE_WEIGHTS)
    if args.mask_failure_kinds is not None:
        kinds = tuple(k.strip() for k in args.mask_failure_kinds.split(",") if k.strip())
        if not kinds or not set(kinds) <= set(FAILURE_WEIGHTS):
            raise CuematteError(f"--mask-failure-kinds {args.mask_failure_kinds!r}: choose from "
                                f"{', '.join(FAILURE_WEIGHTS)}")
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CuematteError("--device cuda asked for, but torch sees no CUDA device here")
    from training.train import TrainConfig, load_recipe, saved_config, train

    if args.recipe is not None:
        if args.branch_from is not None:
            raise CuematteError("--recipe starts a run from scratch; --branch-from cannot be combined with it")
        recipe = load_recipe(args.recipe)
        overrides = {k: v for k, v in (("steps", args.steps), ("threads", args.threads), ("seed", args.seed))
                     if v is not None}
        recipe = replace(recipe, **overrides, device=args.device)
        last = train(recipe, args.out, resume=args.resume)
        print(f"checkpoint: {last}")
        return 0
    steps = args.steps
    if steps is None:  # a resumed run finishes as it was set up, unless told otherwise
        steps = saved_config(args.out).steps if args.resume and (args.out / "train.json").is_file() else 4000
    cfg = TrainConfig(config=args.config, person_mask=args.person_mask, steps=steps, batch_size=args.batch_size,
                      lr=args.lr, size=(h, w), cache_samples=args.cache_samples, eval_every=args.eval_every,
                      seed=args.seed or 0, threads=args.threads, device=args.device, flash_cue=not args.no_flash_cue,
                      flash_prior=args.flash_prior, flash_evidence=args.flash_evidence, flash_skip=args.flash_skip,
                      engine_cue_p=args.engine_cues,
                      engine_trimap_p=args.engine_trimaps, mask_failure_p=args.mask_failures,
                      mask_failure_kinds=kinds, camouflage_p=args.camouflage,
                      drift_p=args.drift, align_flash=args.align_flash, guidance=args.guidance)
    if cfg.flash_evidence and not cfg.flash_prior:
        raise CuematteError("--flash-evidence reaches the per-frame graph through the flash prior: add --flash-prior")
    if cfg.flash_skip and not cfg.flash_prior:
        raise CuematteError("--flash-skip feeds the decoders the cached flash prior: add --flash-prior")
    if cfg.guidance and not cfg.person_mask:
        raise CuematteError("--guidance is built from the segmenter's person mask: add --person-mask")
    for flag, share in (("--engine-cues", cfg.engine_cue_p), ("--engine-trimaps", cfg.engine_trimap_p),
                        ("--mask-failures", cfg.mask_failure_p), ("--camouflage", cfg.camouflage_p),
                        ("--drift", cfg.drift_p)):
        if share is not None and not 0.0 <= share <= 1.0:
            raise CuematteError(f"{flag} {share} is not a share in [0, 1]")
    if args.branch_from is not None and args.resume:
        raise CuematteError("--branch-from starts a new run; --resume continues one: give one of them")
    last = train(cfg, args.out, resume=args.resume, branch_from=args.branch_from)
    print(f"checkpoint: {last}")
    return 0
