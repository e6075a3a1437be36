"""`cuematte virtualcam`: camera (or a video file) -> flash matting -> virtual camera (or a video file)."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cuematte.clients.commands import add_backend_arguments, add_graph_argument, add_temporal_argument

if TYPE_CHECKING:
    import numpy as np

    from cuematte.engine.compositing import Background
    from cuematte.engine.pipelined import PipelinedSession
    from cuematte.engine.session import MattingSession

HELP = "matte a camera (or video) with a flash cue and send it to a virtual webcam (or a video file)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--camera", type=int, metavar="INDEX", help="OpenCV camera index (default 0)")
    src.add_argument("--input", type=Path, metavar="FILE", help="a video file instead of the camera")
    p.add_argument("--model", type=Path, metavar="DIR", help="model folder (default: the shipped model)")
    p.add_argument("--background", default="blur", help="blur | green | none | #RRGGBB | an image file")
    p.add_argument("--size", metavar="WxH", help="output size (default: 1280x720 for a camera, the file's size)")
    p.add_argument("--fps", type=float, help="output rate (default: 30 for a camera, the file's rate)")
    p.add_argument("--device", metavar="/dev/videoN", help="virtual camera device (default: the first one)")
    p.add_argument("--output", type=Path, metavar="FILE",
                   help="write the processed stream to this video file instead of a virtual camera; with --input "
                        "every frame is processed in order (headless, nothing dropped)")
    p.add_argument("--preview", action="store_true",
                   help="show a preview window: f takes the flash (the screen turns white), b cycles the "
                        "background, r resets, q quits")
    p.add_argument("--flash", type=Path, metavar="FILE", help="a flash photo of the scene instead of a screen flash")
    p.add_argument("--noflash", type=Path, metavar="FILE",
                   help="the no-flash photo taken with --flash (default: the first frame)")
    add_temporal_argument(p)
    add_graph_argument(p)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: up to 4)")
    add_backend_arguments(p)


def _size(spec: str) -> tuple[int, int]:
    from cuematte.engine.errors import InputError

    try:
        w, h = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise InputError(f"--size {spec!r} is not WIDTHxHEIGHT (e.g. 1280x720)") from None
    if w < 32 or h < 32 or w % 2 or h % 2:
        raise InputError(f"--size {spec!r}: width and height must be even and at least 32")
    return h, w


def run(args: argparse.Namespace) -> int:
    from cuematte.clients.commands.matte import parse_background
    from cuematte.engine.allocator import keep_freed_memory
    from cuematte.engine.compositing import Background
    from cuematte.engine.errors import InputError
    from cuematte.engine.io import read_image

    keep_freed_memory()  # frame-sized buffers reused from frame to frame (engine.allocator)

    background = parse_background(args.background)
    assert isinstance(background, Background)
    size = _size(args.size) if args.size else None
    if args.noflash and not args.flash:
        raise InputError("--noflash goes with --flash")
    if args.fps is not None and not 1 <= args.fps <= 240:
        raise InputError(f"--fps {args.fps} is out of range (1..240)")
    flash = read_image(args.flash, "flash photo") if args.flash else None
    noflash = read_image(args.noflash, "no-flash photo") if args.noflash else None
    if args.input and args.output:
        return _run_file(args, background, size, flash, noflash)
    return _run_live(args, background, size, flash, noflash)


def _session(args: argparse.Namespace) -> MattingSession:
    from cuematte.engine.model import FlashModel
    from cuematte.engine.session import MattingSession

    return MattingSession(FlashModel(args.model, backend=args.backend, threads=args.threads, plans=args.plans),
                          threads=args.threads, temporal=args.temporal)


def _live_session(args: argparse.Namespace) -> MattingSession | PipelinedSession:
    """Live on the CPU, the graph runs beside the frames (as the service's) unless --graph-in-path; a file's
    frames each run it, so the output is the same on any machine."""
    from cuematte.engine.pipelined import PipelinedSession

    session = _session(args)
    return session if args.graph_in_path or session.model.backend != "cpu" else PipelinedSession(session)


def _run_file(args: argparse.Namespace, background: Background, size: tuple[int, int] | None,
              flash: np.ndarray | None, noflash: np.ndarray | None) -> int:
    """Every frame, in order, so the output is a deterministic function of the input."""
    from cuematte.clients.virtualcam.pipeline import Processor, run_file
    from cuematte.clients.virtualcam.sinks import FileSink
    from cuematte.engine.errors import InputError
    from cuematte.engine.io import VideoReader

    if args.preview:
        raise InputError("--preview is for live runs; --input with --output processes the whole file headless")
    if flash is None:
        raise InputError("--input with --output needs the flash photo: --flash FILE (and optionally --noflash)")
    with VideoReader(args.input) as reader:
        info = reader.info
        h, w = size or (info.height, info.width)
        fps = args.fps or info.fps
        frames = iter(reader)
        first = next(frames)
        processor = Processor(_session(args), background, (h, w))
        processor.set_flash(flash, noflash if noflash is not None else first)
        sink = FileSink(args.output, w, h, fps)
        try:
            result = run_file(processor, itertools.chain([first], frames), sink, total=info.frames or None,
                              desc=args.input.name)
        finally:
            sink.close()
    print(f"wrote {result.frames} frames {w}x{h} at {fps:g} fps to {args.output} "
          f"({result.mean_ms:.1f} ms/frame, {result.frames / max(result.seconds, 1e-9):.1f} fps processing)")
    return 0


def _run_live(args: argparse.Namespace, background: Background, size: tuple[int, int] | None,
              flash: np.ndarray | None, noflash: np.ndarray | None) -> int:
    """A reader thread overwrites the newest frame; the loop mattes whatever is newest (latest-frame-wins)."""
    from cuematte.clients.virtualcam.pipeline import LiveLoop, Processor, StatusLine
    from cuematte.clients.virtualcam.sinks import FileSink, Sink, VirtualCameraSink
    from cuematte.clients.virtualcam.sources import CameraSource, FileSource
    from cuematte.engine.errors import InputError

    if flash is None and not args.preview:
        raise InputError("take the flash with --preview (press f: the screen flashes white) or give a flash photo "
                         "with --flash FILE")
    if args.preview:
        from cuematte.clients.virtualcam.preview import check_display

        check_display()
    file_source = FileSource(args.input, args.fps) if args.input else None
    if file_source is not None:
        h, w = size or file_source.size
        fps = args.fps or file_source.fps
    else:
        h, w = size or (720, 1280)
        fps = args.fps or 30.0
    # The sink first: a missing virtual-camera backend should fail before seconds of model loading.
    try:
        sink: Sink = FileSink(args.output, w, h, fps) if args.output else VirtualCameraSink(w, h, fps, args.device)
    except BaseException:
        if file_source is not None:
            file_source.close()
        raise
    try:
        processor = Processor(_live_session(args), background, (h, w))
        source = file_source or CameraSource(args.camera or 0, (h, w), fps)
        source.start()
        try:
            if flash is not None:
                reference = noflash if noflash is not None else source.slot.take(timeout=10.0)
                if reference is None:
                    raise InputError("the source delivered no frame to use as the no-flash reference")
                processor.set_flash(flash, reference)
            name = args.input or f"camera {args.camera or 0}"
            print(f"virtualcam: {name} -> {sink.name}, {w}x{h} at {fps:g} fps"
                  + ("" if args.preview else "; Ctrl-C stops"), file=sys.stderr)
            loop = LiveLoop(processor, source.slot, sink, status=None if args.preview else StatusLine())
            if args.preview:
                from cuematte.clients.virtualcam.preview import run_preview

                run_preview(loop, _cycle(background))
            else:
                with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a headless live run ends
                    loop.run()
        finally:
            source.stop()
            processor.close()
    finally:
        sink.close()
    return 0


def _cycle(chosen: Background) -> list[Background]:
    """The backgrounds ``b`` cycles through in the preview, starting with the one asked for."""
    from cuematte.engine.compositing import Background

    modes: tuple[Literal["blur", "green", "none"], ...] = ("blur", "green", "none")
    return [chosen] + [Background(mode=m) for m in modes if m != chosen.mode]
