"""`cuematte matte`'s parallax cue: the matte of one view from two with a small camera move.

    cuematte matte --input VIEW1 --second-view VIEW2 --out-dir DIR [--model DIR] [--background ...]
    cuematte matte --cue parallax --input CLIP.mp4 --out-dir DIR    # two frames of the clip's first seconds

writes ``VIEW1_alpha.png``, ``VIEW1_fg.png`` (RGBA cut-out) and ``VIEW1_composite.png`` like the flash cue does
for an image (``CLIP_...`` for the picked reference frame of a video).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cuematte.engine.errors import InputError

if TYPE_CHECKING:
    from cuematte.engine.parallax.session import ParallaxSession


def is_parallax(args: argparse.Namespace) -> bool:
    """Which cue the arguments ask for: ``--cue`` when given, else parallax exactly when ``--second-view`` is."""
    if args.cue == "flash" and args.second_view is not None:
        raise InputError("--second-view belongs to the parallax cue; drop it or --cue flash")
    return args.cue == "parallax" or (args.cue is None and args.second_view is not None)


def check_flash_args(args: argparse.Namespace) -> None:
    """The flash cue needs its flash photo (no longer an argparse requirement: the parallax cue has none)."""
    if args.flash is None:
        raise InputError("the flash cue needs --flash FLASH_PHOTO; for the parallax cue pass --second-view VIEW2 "
                         "(or --cue parallax with a video)")


def _pick_from_video(session: ParallaxSession, path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(reference frame, second frame, reference index) picked from the first seconds of the video at ``path``.
    Picking keeps small copies only; the two frames are decoded again at full size."""
    from cuematte.engine.io import VideoReader
    from cuematte.engine.parallax.session import PICK_SECONDS

    with VideoReader(path) as reader:
        fps = reader.info.fps
        pick = session.pick_pair(itertools.islice(reader, max(2, round(fps * PICK_SECONDS))))
    frames: dict[int, np.ndarray] = {}
    with VideoReader(path) as reader:
        for i, frame in enumerate(itertools.islice(reader, max(pick.reference, pick.other) + 1)):
            if i in (pick.reference, pick.other):
                frames[i] = frame
    if len(frames) < 2:  # the container decoded fewer frames the second time: nothing to recover
        raise InputError(f"{path} did not decode the same frames twice; convert it (e.g. to H.264 mp4) and retry")
    print(f"picked frame {pick.reference} ({pick.reference / fps:.2f} s) as the reference and frame {pick.other} "
          f"({pick.other / fps:.2f} s) as the second view: parallax {pick.parallax_px:.1f} px")
    return frames[pick.reference], frames[pick.other], pick.reference


def run_parallax(args: argparse.Namespace) -> int:
    from cuematte.clients.commands.matte import parse_background
    from cuematte.engine.compositing import Background, composite
    from cuematte.engine.io import list_inputs, read_image, write_image
    from cuematte.engine.parallax.model import ParallaxModel
    from cuematte.engine.parallax.session import ParallaxSession

    if args.flash is not None or args.noflash is not None:
        raise InputError("--flash and --noflash belong to the flash cue; the parallax cue takes --second-view")
    background = parse_background(args.background)
    assert isinstance(background, Background)
    kind, files = list_inputs(args.input)
    if kind == "folder":
        raise InputError("the parallax cue mattes one image (with --second-view) or a video, not a folder")
    if kind == "video" and args.second_view is not None:
        raise InputError("a video input picks its own second view from its frames; drop --second-view, or pass "
                         "one image as --input")
    if kind == "image" and args.second_view is None:
        raise InputError("the parallax cue needs a second view of the scene: --second-view VIEW2 (the camera moved a "
                         "few centimetres sideways), or a video as --input")
    view1 = view0 = None
    index = 0
    if kind == "image":  # read before loading the model: a bad file is named first
        view1, view0 = read_image(files[0], "reference view"), read_image(args.second_view, "second view")
    session = ParallaxSession(ParallaxModel(args.model, args.threads), threads=args.threads)
    stem = files[0].stem
    if view1 is None or view0 is None:
        view1, view0, index = _pick_from_video(session, files[0])
    m = session.matte(view1, view0)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_image(args.out_dir / f"{stem}_alpha.png", m.alpha)
    write_image(args.out_dir / f"{stem}_fg.png", np.dstack([m.foreground, (m.alpha * 255 + 0.5).astype(np.uint8)]))
    write_image(args.out_dir / f"{stem}_composite.png", composite(view1, m.alpha, m.foreground, background))
    if args.trimap_out:
        write_image(args.out_dir / f"{stem}_trimap.png", m.trimap)
    what = files[0].name if kind == "image" else f"frame {index} of {files[0].name}"
    print(f"matted {what} (parallax {m.parallax_px:.1f} px at {m.work_size[1]}x{m.work_size[0]}, "
          f"{m.patches} patch(es)) -> {args.out_dir}")
    return 0
