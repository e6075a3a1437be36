"""`cuematte matte`: flash once, then matte an image, a folder of images or a video; or, with the parallax cue
(``--second-view``, ``--cue parallax``), matte one view from two with a small camera move (matte_parallax.py)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from cuematte.clients.commands import add_backend_arguments, add_temporal_argument

CUES = ("flash", "parallax")

HELP = ("matte an image, a folder of images or a video with a flash frame's cached features, or one view from two "
        "with a small camera move (--second-view)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cue", choices=CUES, default=None,
                   help="flash (default) or parallax; --second-view implies parallax")
    p.add_argument("--flash", type=Path, help="the flash photo (torch or screen flash on); needed by the flash cue")
    p.add_argument("--noflash", type=Path, help="no-flash reference taken with the flash (default: first input frame)")
    p.add_argument("--input", type=Path, required=True, help="an image, a folder of images or a video")
    p.add_argument("--second-view", type=Path,
                   help="parallax cue: a second photo of the scene, the camera moved a few cm (--input is matted)")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--model", type=Path, help="model folder (default: the cue's shipped model)")
    p.add_argument("--background", default="blur", help="blur | green | none | #RRGGBB | an image file")
    p.add_argument("--trimap-out", action="store_true",
                   help="also write the trimap (and the flash cue's flash-ratio map)")
    add_temporal_argument(p, "videos: ")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: up to 4)")
    add_backend_arguments(p)


def parse_background(spec: str) -> object:
    from cuematte.engine.compositing import Background
    from cuematte.engine.errors import InputError
    from cuematte.engine.io import read_image

    if spec in ("blur", "green", "none"):
        return Background(mode=spec)  # type: ignore[arg-type]
    if spec.startswith("#"):
        try:
            rgb = tuple(int(spec[i : i + 2], 16) for i in (1, 3, 5))
        except ValueError:
            raise InputError(f"background colour {spec!r} is not #RRGGBB") from None
        if len(spec) != 7:
            raise InputError(f"background colour {spec!r} is not #RRGGBB")
        return Background(mode="color", color=rgb)  # type: ignore[arg-type]
    path = Path(spec)
    if not path.exists():
        raise InputError(f"--background {spec!r} is neither blur|green|none|#RRGGBB nor an existing image file")
    return Background(mode="image", image=read_image(path, "background image"))


@contextmanager
def progress(**kwargs: Any) -> Iterator[Any]:
    """A tqdm bar that a failure wipes, so that the ``error:`` line is all a failed run leaves on the terminal.
    Call ``bar.update()`` per item: a bar being iterated is closed, and left drawn, as the error unwinds."""
    from tqdm import tqdm

    bar = tqdm(**kwargs)
    try:
        yield bar
    except BaseException:
        bar.leave = False
        raise
    finally:
        bar.close()


def run(args: argparse.Namespace) -> int:
    from cuematte.clients.commands.matte_parallax import check_flash_args, is_parallax, run_parallax
    from cuematte.engine.compositing import Background, composite
    from cuematte.engine.io import VideoReader, VideoWriter, list_inputs, read_image, write_image
    from cuematte.engine.model import FlashModel
    from cuematte.engine.session import MattingSession

    if is_parallax(args):
        return run_parallax(args)
    check_flash_args(args)
    background = parse_background(args.background)
    assert isinstance(background, Background)
    kind, files = list_inputs(args.input)
    flash = read_image(args.flash, "flash frame")
    if args.noflash:
        noflash = read_image(args.noflash, "no-flash frame")
    elif kind == "video":
        with VideoReader(files[0]) as reader:
            noflash = next(iter(reader))
    else:
        noflash = read_image(files[0], "input image")
    session = MattingSession(FlashModel(args.model, backend=args.backend, threads=args.threads, plans=args.plans),
                             threads=args.threads,
                             temporal=args.temporal if kind == "video" else 0.0)
    cue = session.set_flash(flash, noflash)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.trimap_out:
        write_image(args.out_dir / f"{args.flash.stem}_trimap.png", cue.trimap)
        write_image(args.out_dir / f"{args.flash.stem}_flash_ratio.png", cue.ratio.ratio)
    written = 0
    if kind == "video":
        with VideoReader(files[0]) as reader:
            info = reader.info
            size = (info.width, info.height)
            stem = files[0].stem
            with VideoWriter(args.out_dir / f"{stem}_alpha.mp4", size, info.fps) as w_alpha, \
                    VideoWriter(args.out_dir / f"{stem}_composite.mp4", size, info.fps) as w_comp, \
                    progress(total=info.frames or None, unit="frame", desc=stem) as bar:
                for frame in reader:
                    m = session.matte(frame)
                    w_alpha.write(m.alpha)
                    w_comp.write(composite(frame, m.alpha, m.foreground, background))
                    written += 1
                    bar.update()
        print(f"matted {written} frames of {files[0].name} -> {args.out_dir}")
        return 0
    with progress(total=len(files), unit="image", disable=len(files) < 2) as bar:
        for path in files:
            frame = read_image(path, "input image")
            m = session.matte(frame)
            write_image(args.out_dir / f"{path.stem}_alpha.png", m.alpha)
            rgba = np.dstack([m.foreground, (m.alpha * 255 + 0.5).astype(np.uint8)])
            write_image(args.out_dir / f"{path.stem}_fg.png", rgba)
            write_image(args.out_dir / f"{path.stem}_composite.png",
                        composite(frame, m.alpha, m.foreground, background))
            written += 1
            bar.update()
    print(f"matted {written} image(s) -> {args.out_dir} (trimap by {cue.method})")
    return 0
