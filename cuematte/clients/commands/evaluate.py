"""`cuematte eval`: SAD, MSE, Grad, Conn, MSE(alpha*F) of our model beside the baselines, per split."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("evaluate a model folder on sample folders, beside classical, MediaPipe and no-flash baselines; "
        "a parallax split (make_eval --split parallax) evaluates parallax models and their ablations")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    p.add_argument("--data", type=Path, required=True, help="sample folder (or folder of split sub-folders)")
    p.add_argument("--noflash-model", type=Path, action="append", default=[],
                   help="a model trained with --no-flash-cue (ablation); repeat to compare several, e.g. with and "
                        "without the person-mask input")
    p.add_argument("--segmenter", choices=["mediapipe", "grabcut"], default="mediapipe")
    p.add_argument("--temporal", type=float, default=0.0,
                   help="also report ours with the session's alpha smoothing at this strength in (0, 1)")
    p.add_argument("--graph-lag", type=int, action="append", default=[], metavar="N",
                   help="also ours with the live service's background graph, its output first used N frames after "
                        "the frame it was made for and until the next one (N to 2N-1 frames old; ours-lagN, with "
                        "--temporal's smoothing, against the row without lag; each frame's certain regions stay its "
                        "own); repeatable")
    p.add_argument("--no-baselines", action="store_true", help="only our model")
    p.add_argument("--json", type=Path, help="write {split: {method: {metric: value}}} here")
    p.add_argument("--ablation", action="append", default=[], metavar="NAME=DIR",
                   help="another model folder scored the same way, with the paired interval of ours against it: "
                        "an ablation, or the model a change is measured against (e.g. "
                        "shipped=cuematte/engine/models/flash-lite); repeatable")
    par = p.add_argument_group("parallax splits")
    par.add_argument("--inference-ablations", action="store_true",
                     help="also the paper's inference-time ablations (the same frame twice, +4 px flow noise) and the "
                          "oracle flow (the render's own layer motion)")
    par.add_argument("--limit", type=int, default=None, help="only the first N samples")


def run(args: argparse.Namespace) -> int:
    from cuematte.training.parallax_eval import is_parallax_split

    if is_parallax_split(args.data):
        return _run_parallax(args)
    from cuematte.training.evaluate import (
        Method,
        classical_method,
        evaluate,
        format_table,
        load_splits,
        mediapipe_method,
        noflash_methods,
        session_method,
        write_json,
    )

    splits, clips = load_splits(args.data)
    methods: dict[str, Method] = {"ours": session_method(args.model, args.segmenter)}
    if args.temporal:
        methods["ours-smoothed"] = session_method(args.model, args.segmenter, args.temporal)
    if not args.no_baselines:
        methods["classical"] = classical_method
        methods["mediapipe"] = mediapipe_method()
    # The live service's background graph, compared with the same smoothing as the row it varies.
    reference = "ours-smoothed" if args.temporal else "ours"
    lagged = {f"ours-lag{n}": session_method(args.model, args.segmenter, args.temporal, graph_lag=n)
              for n in args.graph_lag}
    methods |= lagged
    methods |= noflash_methods(args.noflash_model)
    methods |= {name: session_method(folder, args.segmenter) for name, folder in _ablations(args.ablation).items()}
    variants = {name: reference for name in lagged}
    table = evaluate(methods, splits, clips, variants=variants)
    print(format_table(table, variants))
    if args.json:
        write_json(args.json, table)
        print(f"wrote {args.json}")
    return 0


def _ablations(specs: list[str]) -> dict[str, Path]:
    """``--ablation NAME=DIR`` values -> {NAME: DIR}; a malformed one or a name given twice is an InputError."""
    from cuematte.engine.errors import InputError

    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise InputError(f"--ablation {spec!r} is not NAME=DIR")
        if name in out or name in {"ours", "ours-smoothed", "classical", "mediapipe"}:
            raise InputError(f"--ablation name {name!r} is taken; choose another")
        out[name] = Path(folder)
    return out


def _run_parallax(args: argparse.Namespace) -> int:
    import json

    from cuematte.training.parallax_eval import EvalVariant, evaluate_parallax, format_parallax_table

    runs: dict[str, tuple[Path | None, EvalVariant]] = {
        "ours": (args.model, EvalVariant("trimap")),
        "ours-engine": (args.model, EvalVariant("engine")),
    }
    for name, folder in _ablations(args.ablation).items():
        runs[name] = (folder, EvalVariant("trimap"))
    if args.inference_ablations:
        runs["same-frame"] = (args.model, EvalVariant("trimap", same_frame=True))
        runs["flow-noise-4px"] = (args.model, EvalVariant("trimap", flow_noise_px=4.0))
        runs["exact-flow"] = (args.model, EvalVariant("trimap", exact_flow=True))
    if not args.no_baselines:
        runs["mediapipe"] = (None, EvalVariant("mediapipe"))
    results = {name: evaluate_parallax(args.data, model, variant, limit=args.limit)
               for name, (model, variant) in runs.items()}
    print(format_parallax_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")
    return 0
