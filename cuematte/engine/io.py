"""Reading and writing images and videos with named errors (RGB at the API). Images are decoded by Pillow,
which reports a corrupt file as an exception; OpenCV's libpng and libjpeg print their complaints to the process's
stderr (a service log of "libpng error" lines). Videos and encoding go through OpenCV."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from struct import error as struct_error
from types import TracebackType

import cv2
import numpy as np
from PIL import Image, ImageOps

from cuematte.engine.errors import FrameFormatError, ImageReadError, InputError, OutputWriteError, VideoReadError

# OpenCV's FFmpeg backend reads its log level once, when a video is first opened or written in this process, and
# FFmpeg then prints straight to stderr ("[h264 @ 0x...] Invalid NAL unit size"); -8 is AV_LOG_QUIET. A damaged
# video gets cuematte's named error instead. Whoever wants FFmpeg's lines sets the variable (e.g. 24, warnings).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".y4m"}
# Pillow modes without colour, and with transparency (a palette image may carry it in its info).
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_ALPHA_MODES = {"RGBA", "RGBa", "PA", "LA", "La"}


@contextmanager
def opencv_quiet() -> Iterator[None]:
    """OpenCV logs its own ``[ WARN]``/``[ERROR]`` lines for a video it cannot open; the caller raises a named
    error instead, which is all the user should see (FFmpeg's own lines: ``OPENCV_FFMPEG_LOGLEVEL`` above)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def decode_image_bytes(raw: bytes, *, colour_only: bool = False,
                       formats: tuple[str, ...] | None = None) -> np.ndarray:
    """An encoded image -> (H, W, 3) uint8 RGB, turned upright as its EXIF orientation says (as browsers and
    photo viewers show it). Check the header's size (:func:`image_size` in the server) before calling this with
    untrusted bytes: decoding allocates the full image.

    Raises :class:`ImageReadError` for bytes that do not decode (``formats``, Pillow's names such as "PNG",
    limits what is tried) and, with ``colour_only``, :class:`FrameFormatError` for grayscale or transparent
    images; otherwise those are converted to RGB."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # no silent 90-Mpixel decodes
            with Image.open(io.BytesIO(raw), formats=list(formats) if formats else None) as img:
                img.load()
                upright = ImageOps.exif_transpose(img)
        grey = upright.mode in _GREY_MODES
        alpha = upright.mode in _ALPHA_MODES or (upright.mode == "P" and "transparency" in upright.info)
        if not (colour_only and (grey or alpha)):
            if upright.mode.startswith("I"):  # 16/32-bit grey: Pillow's RGB conversion clips instead of scaling
                upright = Image.fromarray((np.asarray(upright, np.uint32) >> 8).clip(0, 255).astype(np.uint8))
            rgb = np.ascontiguousarray(np.asarray(upright.convert("RGB"), np.uint8))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageReadError(f"too large to decode (over {(Image.MAX_IMAGE_PIXELS or 0) // 10**6} Mpixel)") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct_error) as exc:
        reason = str(exc).split(" <_io.")[0][:120]  # not "cannot identify image file <_io.BytesIO object at 0x..>"
        raise ImageReadError(f"corrupt, truncated or not an image: {reason}") from None
    if colour_only and alpha:
        raise FrameFormatError("has 4 channels (RGBA); save it as RGB without transparency")
    if colour_only and grey:
        raise FrameFormatError("is grayscale; a colour (RGB) image is needed")
    return rgb


def read_image(path: str | Path, what: str = "image") -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB. Grayscale and RGBA files are named errors, not conversions:
    a flash pair must be colour, and silently dropping transparency hides mistakes."""
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"{what} not found: {p}")
    if p.stat().st_size == 0:
        raise ImageReadError(f"{what} is an empty file: {p}")
    try:
        return decode_image_bytes(p.read_bytes(), colour_only=True)
    except FrameFormatError as exc:
        raise FrameFormatError(f"{what} {p} {exc}") from None
    except ImageReadError as exc:
        raise ImageReadError(f"{what} is not a readable image ({exc}): {p}") from None
    except OSError as exc:
        raise ImageReadError(f"cannot read {what} {p}: {exc.strerror or exc}") from None


def write_image(path: str | Path, image: np.ndarray) -> None:
    """(H, W, 3) uint8 RGB, (H, W, 4) RGBA or (H, W) uint8/float [0,1] grey -> file (format from the suffix)."""
    if image.ndim == 2 and image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    if image.ndim == 2:
        out = image
    else:
        out = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    p = Path(path)
    ok, buf = cv2.imencode(p.suffix or ".png", out)
    if not ok:
        raise InputError(f"cannot encode an image as {p.suffix!r}: {p}")
    tmp = _partial(p)
    try:  # written beside, then renamed: a full disk leaves no truncated image under the real name
        buf.tofile(str(tmp))
        os.replace(tmp, p)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputWriteError(f"cannot write {p}: {exc.strerror or exc}") from None


def _partial(path: Path) -> Path:
    """Where ``path`` is written before it is complete (same folder, so the rename is atomic)."""
    return path.with_name(f".{path.name}.partial{path.suffix}")


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int  # as the container says; 0 if unknown


class VideoReader:
    """Iterate a video's frames as (H, W, 3) uint8 RGB. Raises :class:`VideoReadError` if nothing decodes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoReadError(f"video not found: {self.path}")
        if self.path.stat().st_size == 0:
            raise VideoReadError(f"video is an empty file: {self.path}")
        with opencv_quiet():
            self._cap = cv2.VideoCapture(str(self.path))
            if not self._cap.isOpened():
                raise VideoReadError(f"cannot open video (corrupt or unsupported): {self.path}")
            ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise VideoReadError(f"video has no decodable frame (corrupt?): {self.path}")
        self._first: np.ndarray | None = first
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.info = VideoInfo(
            width=first.shape[1],
            height=first.shape[0],
            fps=float(fps) if fps and fps > 0 and fps < 1000 else 30.0,
            frames=max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))),
        )

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._first is not None:
            first, self._first = self._first, None
            yield cv2.cvtColor(first, cv2.COLOR_BGR2RGB)
        while True:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                break
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class VideoWriter:
    """Write (H, W, 3) uint8 RGB (or (H, W) grey) frames to an .mp4 (mp4v) at a fixed size and rate."""

    def __init__(self, path: str | Path, size: tuple[int, int], fps: float) -> None:
        self.path = Path(path)
        self.size = size  # (W, H)
        self.frames = 0
        # Written under a partial name and renamed when complete and readable: OpenCV does not report a
        # failed write (a full disk), so closing checks the file instead.
        self._tmp = _partial(self.path)
        self._w = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
        if not self._w.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise OutputWriteError(f"cannot open a video writer for {self.path}")

    def write(self, frame: np.ndarray) -> None:
        if frame.ndim == 2:
            if frame.dtype != np.uint8:
                frame = (np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8)
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        else:
            frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        if (frame.shape[1], frame.shape[0]) != self.size:
            raise FrameFormatError(f"frame size {frame.shape[1]}x{frame.shape[0]} differs from the video's {self.size}")
        self._w.write(frame)
        self.frames += 1

    def close(self) -> None:
        """Finish the file and give it its name; :class:`OutputWriteError` (and no file) if it did not all
        reach the disk."""
        if not self._w.isOpened():
            return
        self._w.release()
        if self.frames:
            with opencv_quiet():
                cap = cv2.VideoCapture(str(self._tmp))
                readable = cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == self.frames
                cap.release()
            if not readable:
                self._tmp.unlink(missing_ok=True)
                raise OutputWriteError(f"cannot write {self.path}: the file did not reach the disk whole "
                                       "(disk full?)")
        try:
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self._tmp.unlink(missing_ok=True)
            raise OutputWriteError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def abandon(self) -> None:
        """Stop without keeping anything (the run failed)."""
        if self._w.isOpened():
            self._w.release()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()


def list_inputs(path: str | Path) -> tuple[str, list[Path]]:
    """Classify an INPUT argument: ('image', [file]), ('video', [file]) or ('folder', sorted image files)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ImageReadError(f"folder {p} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return "folder", files
    if not p.exists():
        raise InputError(f"input not found: {p}")
    if p.suffix.lower() in VIDEO_SUFFIXES:
        return "video", [p]
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return "image", [p]
    raise InputError(f"input {p} is neither an image ({sorted(IMAGE_SUFFIXES)}) nor a video ({sorted(VIDEO_SUFFIXES)})")
