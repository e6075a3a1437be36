"""`cuematte eval`: SAD, MSE, Grad, Conn, MSE(alpha*F) of our model beside the baselines, per split."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "evaluate a model folder on sample folders, beside classical, MediaPipe and no-flash baselines"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    p.add_argument("--data", type=Path, required=True, help="sample folder (or folder of split sub-folders)")
    p.add_argument("--noflash-model", type=Path, action="append", default=[],
                   help="a model trained with --no-flash-cue (ablation); repeat to compare several, e.g. with and "
                        "without the person-mask input")
    p.add_argument("--segmenter", choices=["mediapipe", "grabcut"], default="mediapipe")
    p.add_argument("--temporal", type=float, default=0.0,
                   help="also report ours with the session's alpha smoothing at this strength in (0, 1)")
    p.add_argument("--no-baselines", action="store_true", help="only our model")
    p.add_argument("--json", type=Path, help="write {split: {method: {metric: value}}} here")


def run(args: argparse.Namespace) -> int:
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
    methods |= noflash_methods(args.noflash_model)
    table = evaluate(methods, splits, clips)
    print(format_table(table))
    if args.json:
        write_json(args.json, table)
        print(f"wrote {args.json}")
    return 0
