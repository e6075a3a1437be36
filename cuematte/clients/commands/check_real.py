"""`cuematte check-real`: how the matte treats real people, measured against MediaPipe's confident regions."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "check a model on real photos or videos of people (no ground truth): person dropped, background kept"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path,
                   help="a photo, a video or a folder of them; NAME_flash.jpg beside NAME.jpg is its flash photo")
    p.add_argument("--out", type=Path, required=True, help="folder for report.md, report.json and contact sheets")
    p.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    p.add_argument("--max-frames", type=int, default=150, help="frames checked per video (from the start)")
    p.add_argument("--temporal", type=float, default=0.0, help="alpha smoothing strength for videos (0 = off)")
    p.add_argument("--graph-lag", type=int, default=None, metavar="N",
                   help="videos as the live service mattes them with its background graph: each frame with the "
                        "graph's output made N to 2N-1 frames before, moved onto it (default: the graph on every "
                        "frame)")
    p.add_argument("--rendered-flash", action="store_true",
                   help="items without a flash photo get a near flash rendered onto their (first) frame, which "
                        "locates the person, instead of a uniform one: the flash path and, on videos, the "
                        "tracking it relies on")
    p.add_argument("--max-dropped", type=float, default=1.0, help="target: person dropped %% at most")
    p.add_argument("--max-kept", type=float, default=2.0, help="target: background kept %% at most")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cuematte.clients.realcheck import CheckParams, check_item, find_items, write_report
    from cuematte.engine.cues.segmenter import MediaPipeSegmenter
    from cuematte.engine.errors import InputError
    from cuematte.engine.pipelined import PipelinedSession
    from cuematte.engine.session import MattingSession

    if args.max_frames < 1:
        raise InputError(f"--max-frames {args.max_frames} must be at least 1")
    params = CheckParams(max_dropped=args.max_dropped, max_kept=args.max_kept)
    items = find_items(args.input)
    args.out.mkdir(parents=True, exist_ok=True)
    segmenter = MediaPipeSegmenter(threads=args.threads)
    results = []
    for path, flash in tqdm(items, desc="check-real", disable=len(items) < 2):
        plain = MattingSession(args.model, threads=args.threads, segmenter=segmenter, temporal=args.temporal)
        session = plain if args.graph_lag is None else PipelinedSession(plain, lag=args.graph_lag)
        results.append(check_item(session, segmenter, path, flash, args.out, params, args.max_frames,
                                  rendered_flash=args.rendered_flash))
    print(write_report(results, args.out, params), end="")
    missed = [r.name for r in results if not r.passes(params)]
    if missed:
        print(f"targets missed (person dropped <= {params.max_dropped}%, background kept <= {params.max_kept}%): "
              + ", ".join(missed))
        return 1
    return 0
