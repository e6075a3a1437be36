"""`cuematte bench`: per-stage latency (p50/p90 ms) at several frame sizes; optionally the WebRTC service end to
end (``--webrtc``), other ONNX models as ratios to ours (``--compare``) and a report with plots (``--report``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cuematte.clients.commands import add_backend_arguments, add_graph_argument, add_vp8_argument

HELP = "time the trimap, flash graph, cached per-frame path and first frame at several sizes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    p.add_argument("--sizes", default="640x360,1280x720", help="comma-separated WIDTHxHEIGHT list")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    add_backend_arguments(p)
    p.add_argument("--max-side", type=int, default=1280,
                   help="matte frames at most this long on their long side (as the service; 1920 for 1080p)")
    p.add_argument("--flash", type=Path, help="flash photo to time on (default: a generated scene)")
    p.add_argument("--noflash", type=Path, help="no-flash photo to time on (with --flash)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--json", type=Path, help="write {machine, records} here")
    e2e = p.add_argument_group("end to end (WebRTC)")
    e2e.add_argument("--webrtc", action="store_true",
                     help="also measure the latency the WebRTC service adds over a pass-through session, per frame, "
                          "with an aiortc client on loopback (the service runs in-process unless --url)")
    e2e.add_argument("--url", help="measure the service at this URL (e.g. http://127.0.0.1:8080) instead")
    e2e.add_argument("--seconds", type=float, default=5.0, help="measurement window per session")
    e2e.add_argument("--fps", type=float, default=30.0, help="rate the client offers frames at")
    add_graph_argument(e2e)
    add_vp8_argument(e2e)
    e2e.add_argument("--codec", choices=["vp8", "h264"], help="preferred video codec (default: aiortc's order)")
    p.add_argument("--compare", type=Path, nargs="+", metavar="MODEL.onnx",
                   help="time these ONNX matting models against our per-frame graph, as ratios")
    p.add_argument("--report", type=Path, metavar="DIR", help="write report.md, PNG plots and bench.json here")
    p.add_argument("--parallax", nargs="?", const="default", metavar="MODEL_DIR",
                   help="instead: the parallax graph's latency per 448x448 patch (default: the shipped parallax-lite)")


def run(args: argparse.Namespace) -> int:
    from cuematte.clients.bench.stages import bench_stages, format_table, machine_info, parse_sizes
    from cuematte.clients.scenes import make_pair
    from cuematte.engine.allocator import keep_freed_memory, unfreeze_heap
    from cuematte.engine.errors import InputError
    from cuematte.engine.io import read_image
    from cuematte.engine.model import FlashModel
    from cuematte.engine.session import MattingSession

    keep_freed_memory()  # as `cuematte serve` and `virtualcam` do (engine.allocator)
    if args.parallax:
        return _run_parallax(args)
    sizes = parse_sizes(args.sizes)
    if bool(args.flash) != bool(args.noflash):
        raise InputError("--flash and --noflash go together")
    if args.url:
        args.webrtc = True
    if args.webrtc and not (0.5 <= args.seconds <= 600 and 1 <= args.fps <= 120):
        raise InputError("--seconds must be in 0.5..600 and --fps in 1..120")
    if args.flash:
        flash, noflash = read_image(args.flash, "flash frame"), read_image(args.noflash, "no-flash frame")
    else:
        flash, noflash, _ = make_pair(720, 1280)
    model = FlashModel(args.model, backend=args.backend, threads=args.threads, plans=args.plans)
    session = MattingSession(model, threads=args.threads, max_side=args.max_side)
    records = []
    for size in sizes:
        records += bench_stages(session, flash, noflash, noflash, size, warmup=args.warmup, repeat=args.repeat)
    info = session.model.info
    print(f"model {info.path} ({info.name}, {'trained' if info.trained else 'untrained'}), backend "
          f"{model.backend} ({model.backend_reason}), threads {args.threads or 'default'}")
    print(format_table(records))
    machine = machine_info(args.threads, model.backend) | {"model": info.name}
    extra: dict[str, Any] = {}

    comparisons = []
    if args.compare:
        from cuematte.clients.bench.compare import compare_models, format_compare

        for size in sizes:
            cmp = compare_models(args.compare, session, flash, noflash, size, threads=args.threads,
                                 warmup=args.warmup, repeat=args.repeat)
            print(format_compare(cmp))
            comparisons.append(cmp)
        extra["compare"] = [c.as_dict() for c in comparisons]

    results = []
    settings: dict[str, Any] = {}
    if args.webrtc:
        from cuematte.clients.bench.webrtc import BenchError, run_webrtc

        service = args.url or ("in-process on 127.0.0.1, VP8 sent with "
                               + ("aiortc's encoder settings" if args.aiortc_vp8 else "the service's fast encoder"))
        settings = {"service": service, "seconds": args.seconds, "fps": args.fps, "codec": args.codec}
        print(f"webrtc: {settings['service']}, {args.seconds:g} s per session at {args.fps:g} fps", file=sys.stderr)
        factory = None if args.url else _inprocess_app(args)
        try:
            results = run_webrtc(args.url, sizes, app_factory=factory, fps=args.fps, seconds=args.seconds,
                                 codec=args.codec, progress=lambda line: print(line, file=sys.stderr))
        except BenchError as exc:
            raise InputError(f"webrtc benchmark: {exc}") from None
        finally:
            if factory is not None:
                unfreeze_heap()  # the in-process service froze it as `cuematte serve` does
        print(f"{'size':>10} {'added p50':>10} {'p95':>8} {'p99':>8} {'fps':>6} {'dropped':>8} {'graph fps':>10} "
              f"{'age':>4} {'waited':>7}")
        for r in results:
            d = r.as_dict()
            a, g = d["added_latency_ms"], d["service_graph"]
            graph = (f"{g['fps']:>10.1f} {g['age_p50']:>4g} {100 * g['waited']:>6.0f}%" if g
                     else f"{'-':>10} {'-':>4} {'-':>7}")
            print(f"{d['size']:>10} {a['p50']:>10.1f} {a['p95']:>8.1f} {a['p99']:>8.1f} {d['fps']:>6.1f} "
                  f"{d['dropped']:>8} {graph}")
        extra["webrtc"] = [r.as_dict() for r in results]

    if args.json:
        payload = {"machine": machine, "records": [r.as_dict() for r in records]} | extra
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.report:
        from cuematte.clients.bench.report import breakdown, composite_ms, refinement_share, write_report

        by_size = {r.label: r for r in results}
        frame_onnx = info.path / info.manifest["graphs"]["frame"]
        stages, blur = [], {}
        for h, w in sizes:
            label = f"{w}x{h}"
            stages.append(breakdown(records, label, refine_share=refinement_share(frame_onnx, (h, w), args.threads),
                                    webrtc=by_size.get(label)))
            blur[label] = composite_ms((h, w))
        md = write_report(args.report, machine=machine,
                          model={"name": info.name, "path": str(info.path), "trained": info.trained},
                          results=results, stages=stages, records=records, comparisons=comparisons,
                          blur_composite_ms=blur, settings=settings)
        print(f"wrote {md}")
    return 0


def _inprocess_app(args: argparse.Namespace) -> Any:
    """A factory for the WebRTC service's aiohttp app with this run's model settings."""
    from cuematte.engine.allocator import freeze_startup_heap
    from cuematte.engine.errors import CuematteError

    try:
        from cuematte.server.app import create_app
        from cuematte.server.config import WEB_DIR, ServerConfig
    except ModuleNotFoundError as exc:
        raise CuematteError(f"the WebRTC service cannot be started in-process here ({exc}); measure a running one "
                            "with --url http://127.0.0.1:8080") from None
    web_dir = WEB_DIR
    if not (web_dir / "index.html").is_file():
        # The service refuses to start without its demo page; the benchmark never loads it.
        import tempfile

        web_dir = Path(tempfile.mkdtemp(prefix="cuematte-bench-web-"))
        (web_dir / "index.html").write_text("<!doctype html><title>cuematte bench</title>\n")
    config = ServerConfig(host="127.0.0.1", port=0, model=args.model, backend=args.backend, plans=args.plans,
                          threads=args.threads, max_side=args.max_side, web_dir=web_dir,
                          background_graph=not args.graph_in_path, fast_vp8=not args.aiortc_vp8)

    def factory() -> Any:
        app = create_app(config)
        freeze_startup_heap()  # as `cuematte serve` does once its model is loaded (engine.allocator)
        return app

    return factory


def _run_parallax(args: argparse.Namespace) -> int:
    from cuematte.clients.bench.parallax import bench_patch, format_patch

    model = None if args.parallax == "default" else Path(args.parallax)
    result = bench_patch(model, threads=args.threads, warmup=args.warmup, repeat=args.repeat)
    print(format_patch(result))
    if args.json:
        args.json.write_text(json.dumps({"parallax_patch": result}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
