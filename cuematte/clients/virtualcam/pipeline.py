"""The virtual webcam's processing: fit, matte against the cached flash, composite; the file and live loops.

File mode (``--input FILE --output FILE``) processes every frame in order: deterministic, nothing dropped.
Live mode takes the newest frame from a :class:`LatestFrame` each time round, so a slow model lowers the
output rate instead of building a queue; frames it never saw are counted as dropped.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from cuematte.clients.virtualcam.latest import LatestFrame
from cuematte.clients.virtualcam.sinks import Sink
from cuematte.engine.compositing import Background
from cuematte.engine.errors import CuematteError
from cuematte.engine.frames import resize
from cuematte.engine.pipelined import PipelinedSession
from cuematte.engine.session import MattingSession
from cuematte.live import FlashCapture, LiveMatter, LiveState, RateMeter
from cuematte.live.capture import mean_luma


def fit_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale to cover (H, W) and centre-crop: a 4:3 camera fills a 16:9 virtual camera without bars."""
    h, w = size
    ih, iw = image.shape[:2]
    if (ih, iw) == (h, w):
        return image
    s = max(h / ih, w / iw)
    nh, nw = max(h, round(ih * s)), max(w, round(iw * s))
    scaled = resize(image, (nh, nw))
    y0, x0 = (nh - h) // 2, (nw - w) // 2
    return np.ascontiguousarray(scaled[y0 : y0 + h, x0 : x0 + w])


class Processor:
    """Frames at the output size in, composited frames out; pass-through until a flash is set
    (:class:`cuematte.live.LiveMatter` at a fixed output size)."""

    def __init__(self, session: MattingSession | PipelinedSession, background: Background,
                 size: tuple[int, int]) -> None:
        self.matter = LiveMatter(session, background)
        self.size = size  # (H, W) of every output frame
        self.error: str | None = None  # the last frame's matting error, if it had one

    @property
    def session(self) -> MattingSession | PipelinedSession:
        return self.matter.session

    @property
    def background(self) -> Background:
        return self.matter.background

    @background.setter
    def background(self, value: Background) -> None:
        self.matter.background = value

    @property
    def matting(self) -> bool:
        return self.matter.has_flash

    def set_flash(self, flash: np.ndarray, noflash: np.ndarray) -> None:
        self.matter.set_flash(fit_to(flash, self.size), fit_to(noflash, self.size))

    def reset(self) -> None:
        self.matter.reset()

    def close(self) -> None:
        """Stop the session's background graph, if it has one."""
        self.matter.close()

    def process(self, frame: np.ndarray) -> np.ndarray:
        done = self.matter.process(fit_to(frame, self.size))
        self.error = done.error
        return done.frame


class StatusLine:
    """One status line on a terminal, rewritten in place at most ``every`` seconds (a plain line if not a tty)."""

    def __init__(self, stream: TextIO | None = None, every: float = 0.5) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self._last = 0.0
        self._tty = self.stream.isatty()
        self.text = ""

    def update(self, text: str, force: bool = False) -> None:
        self.text = text
        now = time.monotonic()
        if not force and now - self._last < (self.every if self._tty else 5.0):
            return
        self._last = now
        if self._tty:
            self.stream.write("\r\x1b[2K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self._tty and self.text:
            self.stream.write("\n")
            self.stream.flush()


def status_text(meter: RateMeter, session: MattingSession | PipelinedSession, dropped: int, state: str) -> str:
    ms = session.times.ms
    graph_s = ""
    if session.has_flash and isinstance(session, PipelinedSession):  # the graph beside the frames: its own figures
        graph_s = f" (graph beside {ms.get('graph_background', 0.0):.1f} ms, {session.age} frames behind)"
    elif session.has_flash and "graph" in ms:
        graph_s = f" (graph {ms['graph']:.1f})"
    return f"{meter.fps():5.1f} fps | {meter.ms or 0.0:6.1f} ms/frame{graph_s} | dropped {dropped} | {state}"


@dataclass
class FileResult:
    frames: int
    seconds: float
    mean_ms: float


def run_file(processor: Processor, frames: Iterable[np.ndarray], sink: Sink, total: int | None = None,
             desc: str = "virtualcam") -> FileResult:
    """Every frame of ``frames`` -> ``sink``, in order, with a progress bar showing fps and ms/frame."""
    from tqdm import tqdm

    meter = RateMeter()
    t0 = time.perf_counter()
    bar = tqdm(frames, total=total, unit="frame", desc=desc, file=sys.stderr)
    for frame in bar:
        t = time.perf_counter()
        out = processor.process(frame)
        meter.tick((time.perf_counter() - t) * 1000.0)
        sink.send(out)
        if meter.frames % 5 == 0:
            bar.set_postfix_str(f"{meter.ms or 0.0:.1f} ms/frame")
    bar.close()
    return FileResult(meter.frames, time.perf_counter() - t0, meter.ms or 0.0)


def screen_flash(delay: float = 0.08, duration: float = 0.6) -> FlashCapture[np.ndarray]:
    """The preview's screen flash: frames are measured from ``delay`` after the screen turns white (it needs a
    frame or two) until ``duration``, when the screen goes back."""
    return FlashCapture(mean_luma, delay=delay, duration=duration)


class LiveLoop:
    """Newest frame -> processor -> sink, until the source ends or :meth:`stop`. Thread-safe controls
    (:meth:`request_flash`, :meth:`reset`, ``processor.background``) for the preview window."""

    def __init__(self, processor: Processor, slot: LatestFrame, sink: Sink, status: StatusLine | None = None,
                 flash: FlashCapture[np.ndarray] | None = None) -> None:
        self.processor = processor
        self.slot = slot
        self.sink = sink
        self.status = status
        self.flash = flash or screen_flash()
        self.meter = RateMeter()
        self.latest_output: np.ndarray | None = None
        self.message = ""  # the last flash error, shown in the status line
        self._stop = threading.Event()
        self._flash_requested = threading.Event()
        self._reset_requested = threading.Event()
        self.finished = threading.Event()

    # -- controls (any thread) -------------------------------------------------------------------------------
    def request_flash(self) -> None:
        self._flash_requested.set()

    def reset(self) -> None:
        self._reset_requested.set()

    def stop(self) -> None:
        self._stop.set()

    @property
    def flashing(self) -> bool:
        """True while the screen should be white."""
        return self._flash_requested.is_set() or self.flash.active

    @property
    def live_state(self) -> LiveState:
        if self.flashing:
            return LiveState.CAPTURING
        return LiveState.MATTING if self.processor.matting else LiveState.WAITING_FLASH

    @property
    def state(self) -> str:
        """The status line's words for :attr:`live_state`."""
        state = self.live_state
        if state is LiveState.CAPTURING:
            return "capturing flash"
        if state is LiveState.MATTING:
            drifted = "; scene changed: flash again (press f)" if self.processor.matter.drifted else ""
            error = f"; {self.processor.error}" if self.processor.error else ""
            return f"matting{drifted}{error}"
        return "waiting for flash (press f)" if not self.message else f"waiting for flash: {self.message}"

    # -- the loop (one thread) -------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        finally:
            self.finished.set()
            if self.status is not None:
                self.status.update(status_text(self.meter, self.processor.session, self.slot.dropped,
                                               "stopped"), force=True)
                self.status.done()

    def _run(self) -> None:
        while not self._stop.is_set():
            frame = self.slot.take(timeout=0.25)
            if frame is None:
                if self.slot.closed:
                    return
                continue
            t = time.perf_counter()
            if self._reset_requested.is_set():
                self._reset_requested.clear()
                self.processor.reset()
            if self._flash_requested.is_set() and not self.flash.active:
                self._flash_requested.clear()
                self.flash.begin(fit_to(frame, self.processor.size))
                self.message = ""
            if self.flash.active:
                if self.flash.offer(fit_to(frame, self.processor.size)):
                    self._finish_flash()
                # Hold the last output while the screen is white: the call should not see the flash.
                out = self.latest_output if self.latest_output is not None else fit_to(frame, self.processor.size)
            else:
                out = self.processor.process(frame)
            self.meter.tick((time.perf_counter() - t) * 1000.0)
            self.sink.send(out)
            self.latest_output = out
            if self.status is not None:
                self.status.update(status_text(self.meter, self.processor.session, self.slot.dropped, self.state))
            self.sink.pace()

    def _finish_flash(self) -> None:
        try:
            self.processor.set_flash(*self.flash.end())
        except CuematteError as exc:  # e.g. the screen flash did not light the face: say so, keep running
            self.message = str(exc)
