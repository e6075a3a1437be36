"""`cuematte bench`: per-stage latency (p50/p90 ms) at several frame sizes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "time the trimap, flash graph, cached per-frame path and first frame at several sizes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    p.add_argument("--sizes", default="640x360,1280x720", help="comma-separated WIDTHxHEIGHT list")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--providers", default="cpu", help="execution providers in order, e.g. tensorrt,cuda,cpu")
    p.add_argument("--segmenter", choices=["mediapipe", "grabcut"], default="mediapipe")
    p.add_argument("--flash", type=Path, help="flash photo to time on (default: a generated scene)")
    p.add_argument("--noflash", type=Path, help="no-flash photo to time on (with --flash)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--json", type=Path, help="write {machine, records} here")


def run(args: argparse.Namespace) -> int:
    from clients.bench.stages import bench_stages, format_table, machine_info, parse_sizes
    from clients.scenes import make_pair
    from engine.errors import InputError
    from engine.io import read_image
    from engine.session import MattingSession

    sizes = parse_sizes(args.sizes)
    if bool(args.flash) != bool(args.noflash):
        raise InputError("--flash and --noflash go together")
    if args.flash:
        flash, noflash = read_image(args.flash, "flash frame"), read_image(args.noflash, "no-flash frame")
    else:
        flash, noflash, _ = make_pair(720, 1280)
    providers = args.providers.split(",")
    session = MattingSession(args.model, providers=providers, threads=args.threads, segmenter=args.segmenter)
    records = []
    for size in sizes:
        records += bench_stages(session, flash, noflash, noflash, size, warmup=args.warmup, repeat=args.repeat)
    print(f"model {session.model.info.path} ({session.model.info.name}, "
          f"{'trained' if session.model.info.trained else 'untrained'}), providers {providers}, "
          f"threads {args.threads or 'default'}")
    print(format_table(records))
    if args.json:
        payload = {"machine": machine_info(args.threads, providers) | {"model": session.model.info.name},
                   "records": [r.as_dict() for r in records]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
