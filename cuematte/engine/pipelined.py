"""The per-frame graph off each frame's critical path: every frame is matted at once with the newest graph output
there is, moved onto it by optical flow, while the graph runs on a background thread.

On two CPU cores a live call cannot afford the per-frame graph on every frame beside decoding and encoding: a
frame waits for the graph, the next frame waits for that one, and the service returns half the frames late. Here
each frame only runs the cheap half of the path:

* ``prepare`` without the cues: resizes and MediaPipe's mask of this frame;
* the dense optical flow (OpenCV's DIS, 0.4 ms at the CMN grid) from the frame the newest graph output was made
  for to this one, which moves that output (the guided filter's coefficients at half the CMN grid) and the
  flash's trimap on that frame onto this one; the guidance is built from this frame's own mask and that trimap,
  so its certain person and background are this frame's (on the rendered clips, one affine motion of the person
  instead of the flow cost twice the error at two frames' lag);
* ``finish``: the guided filter applied to *this* frame, the guidance held, smoothing;

and hands the frame to the background thread whenever that thread is idle (latest frame wins: none queue), which
runs the subject tracking, that frame's guidance and the graph. Only the network's say in the unknown band is a
few frames old, never more than ``max_age``: the trade RobustVideoMatting's users make with its downsample ratio,
made on time instead of space.

``lag`` makes the same thing deterministic for tests and evaluation: the graph runs synchronously, on the frame
the background thread would have taken, and its output is first used ``lag`` frames later. The frame after a
flash (or a reset) has no output to reuse and runs the cues and the graph itself.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace

import cv2
import numpy as np

from cuematte.engine.cues.guidance import build_guidance
from cuematte.engine.cues.trimap import FlashCue
from cuematte.engine.errors import InputError
from cuematte.engine.session import FramePrep, Matte, MattingSession, StageTimes, flash_trimap

log = logging.getLogger(__name__)

# The oldest graph output a frame is matted with (live): a frame that would take an older one waits for the run
# in progress. Lag N (evaluation) matures each output N frames after its frame and uses it until the next one, N
# to 2N - 1 frames old. On the rendered clips (MSE against the graph on every frame, smoothed as live): ages 2-3
# 1.11x, 3-5 1.14x, 4-7 1.30x, 5-9 1.39x; so 5 costs the network's say little over 3, while a cap of 3 made a
# third of the frames on two busy cores wait for the graph (added latency p95 at 640x360 roughly halved at 5).
MAX_AGE = 5
# How much lower the background graph's thread runs (Linux nice levels): the frame's own path, the codec threads
# and the event loop come first; the graph takes what is left.
BACKGROUND_NICE = 19


@dataclass(frozen=True)
class GraphOutput:
    """One finished graph run and the frame it was made for."""

    out: dict[str, np.ndarray]  # the per-frame graph's outputs, (1, C, h, w) each
    grey: np.ndarray  # (h, w) uint8 that frame at the CMN grid, what later frames' flow is measured against
    flash_trimap: np.ndarray | None  # guidance models: the flash's trimap on that frame (moved by the tracking)
    generation: int  # MattingSession.generation of its feeds
    index: int  # its frame's index since the flash


def grey(cmn: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 RGB -> (h, w) uint8 luma."""
    return np.asarray(cv2.cvtColor(cmn, cv2.COLOR_RGB2GRAY), np.uint8)


class FlowMover:
    """Moves what was made for one frame onto a later one by dense optical flow (OpenCV's DIS) at the CMN grid:
    each pixel of the new frame takes the value from where the flow says it was in the earlier frame, so an arm or
    a head that moves on its own is followed, not just the person's one affine motion."""

    def __init__(self) -> None:
        # Ultrafast: 0.4 ms at 144x256; the finer presets (1.2 / 3.8 ms) scored the same on the rendered clips.
        self._dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._grid: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def flow(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Two frames (h, w) uint8 luma -> (h, w, 2) float32: target px p sits at p + flow(p) in the source."""
        h, w = source.shape
        # The buffer is output only: no initial flow is used.
        return np.asarray(self._dis.calc(target, source, np.zeros((h, w, 2), np.float32)), np.float32)

    def outputs(self, out: dict[str, np.ndarray], flow: np.ndarray) -> dict[str, np.ndarray]:
        """Graph outputs (1, C, h', w') made for the flow's source -> on its target (bilinear; outputs at another
        grid than the flow's, the guided filter's coefficients at half of it, with the flow scaled to theirs)."""
        moved: dict[str, np.ndarray] = {}
        for name, arr in out.items():
            map_x, map_y = self._maps(flow, arr.shape[-2:])
            dst = np.empty_like(arr, dtype=np.float32)
            for c in range(arr.shape[1]):  # plane by plane, straight from and into NCHW
                cv2.remap(np.ascontiguousarray(arr[0, c], np.float32), map_x, map_y, cv2.INTER_LINEAR,
                          dst=dst[0, c], borderMode=cv2.BORDER_REPLICATE)
            moved[name] = dst
        return moved

    def labels(self, labels: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """(h, w) uint8 labels (a trimap) made for the flow's source -> on its target (nearest: labels stay)."""
        map_x, map_y = self._maps(flow, labels.shape[:2])
        return np.asarray(cv2.remap(labels, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE),
                          np.uint8)

    def _maps(self, flow: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        oh, ow = int(shape[0]), int(shape[1])
        f = oh / flow.shape[0]
        xs, ys = self._coords(oh, ow)
        fl = flow if (oh, ow) == flow.shape[:2] else cv2.resize(flow, (ow, oh), interpolation=cv2.INTER_LINEAR)
        return xs + f * fl[..., 0], ys + f * fl[..., 1]

    def _coords(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        grid = self._grid.get((h, w))
        if grid is None:
            ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
            grid = self._grid[(h, w)] = (xs, ys)
        return grid


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: the graph just runs at normal priority
        log.debug("cannot lower the background graph's priority: %r", exc)


class PipelinedSession:
    """A :class:`MattingSession` whose per-frame graph runs beside the frames instead of in their path.

    ``lag=None``: a background thread runs the graph (live use; :meth:`close` stops it). ``lag=N`` (N >= 1):
    deterministic, no thread: the graph runs on the frame the idle thread would take and its output is first
    used N frames later, and until the next one (N to 2N - 1 frames old; tests, evaluation). Same calls as the
    session: :meth:`set_flash`, :meth:`matte`, :meth:`reset`. Not thread-safe: one caller at a time, as the
    session.
    """

    def __init__(self, session: MattingSession, *, lag: int | None = None, max_age: int = MAX_AGE) -> None:
        if lag is not None and lag < 1:
            raise InputError(f"graph lag must be >= 1 frame, got {lag}")
        if max_age < 1:
            raise InputError(f"max_age must be >= 1 frame, got {max_age}")
        self.max_age = max_age
        self.session = session
        self.lag = lag
        self._move = FlowMover()
        self._latest: GraphOutput | None = None
        self._pending: Future[GraphOutput] | None = None
        self._pending_ready = 0  # lag mode: the frame index from which the pending output may be used
        self._index = 0  # frames since the flash
        self._generation = -1
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # guards graph_ms, written by the background thread
        self.graph_ms = 0.0  # the last graph run's time, wherever it ran
        self.graph_runs = 0  # graph outputs made (a rate for stats)
        self.graph_waits = 0  # frames that waited for the run in progress, more than max_age behind (a share)
        self.age = 0  # how many frames the last matte's graph output lagged behind its frame
        self._closed = False

    # -- the session's calls ------------------------------------------------------------------------------
    @property
    def has_flash(self) -> bool:
        return self.session.has_flash

    @property
    def times(self) -> StageTimes:
        """Stage times of the last frame (ms), the session's: ``graph`` and ``pre_track`` only where they ran in
        the frame's path (0 otherwise), ``wait`` a frame too far behind waiting for the graph, ``move`` the flow
        and what it moves (the output, the flash trimap, the guidance), ``graph_background`` the last graph run
        wherever it ran (tracking included). How many frames the output lagged behind the frame is :attr:`age`."""
        return self.session.times

    def set_flash(self, flash: np.ndarray, noflash: np.ndarray, *, require_subject: bool = False) -> FlashCue:
        return self.session.set_flash(flash, noflash, require_subject=require_subject)

    def reset(self) -> None:
        self.session.reset()

    def close(self, *, wait: bool = False) -> None:
        """Stop the background thread. An unfinished run is left to end on its own, or with ``wait`` waited
        for (its output is not used). Frames matted after this reuse the last output (or run the graph
        themselves after a new flash)."""
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)
            self._executor = None
        self._pending = None

    def matte(self, frame: np.ndarray) -> Matte:
        """Alpha and foreground of one frame (H, W, 3) uint8 RGB, as :meth:`MattingSession.matte`, with the
        newest graph output moved onto it."""
        session = self.session
        prep = session.prepare(frame, cues=False)  # resizes and the segmenter: the tracking goes with the graph
        if prep.generation != self._generation:  # a new flash: earlier outputs and runs are another cache's
            self._generation, self._index, self._latest = prep.generation, 0, None
            self._drop_pending()
        else:
            self._index += 1
        self._collect()
        ms = session.times.ms
        ms["wait"] = 0.0
        if (self._latest is not None and self._pending is not None and self.lag is None
                and self._index - self._latest.index > self.max_age):
            # Too far behind (the machine is busier than the graph's share allows): this frame waits for the run.
            t0 = time.perf_counter()
            wait([self._pending])
            ms["wait"] = (time.perf_counter() - t0) * 1e3
            self.graph_waits += 1
            self._collect()
        luma = grey(prep.cmn)  # what the flow is measured on, now or when this frame's output is used
        if self._latest is None:  # nothing to reuse yet (a new flash): this frame runs the cues and the graph
            t0 = time.perf_counter()
            prep = session.add_cues(prep, session.times)
            self._latest = self._run(prep, luma, self._index, cues_done=True)
            ms["graph"], ms["move"] = (time.perf_counter() - t0) * 1e3, 0.0
            out = self._latest.out
        else:
            ms["graph"] = ms["pre_track"] = 0.0  # both run on the graph's thread
            if self._pending is None:
                self._start(prep, luma)
            t0 = time.perf_counter()
            latest = self._latest
            flow = self._move.flow(latest.grey, luma)
            out = self._move.outputs(latest.out, flow)
            if latest.flash_trimap is not None and prep.person is not None:
                # This frame's guidance: its own segmenter mask, and the flash's say moved with the output.
                flash_tri = self._move.labels(latest.flash_trimap, flow)
                prep = replace(prep, guidance=build_guidance(prep.person, flash_tri, session.guidance_params))
            ms["move"] = (time.perf_counter() - t0) * 1e3
        self.age = self._index - self._latest.index
        result = session.finish(prep, out)
        with self._lock:
            ms["graph_background"] = self.graph_ms
        return result

    # -- the graph's runs ----------------------------------------------------------------------------------
    def _run(self, prep: FramePrep, luma: np.ndarray, index: int, *, cues_done: bool = False) -> GraphOutput:
        """The frame's cues (the subject tracking and guidance, unless done) and the graph; ``luma`` is the
        frame's :func:`grey`."""
        t0 = time.perf_counter()
        if not cues_done:
            prep = self.session.add_cues(prep)
        out = self.session.frame_graph.run(prep.feeds)
        with self._lock:
            self.graph_ms = (time.perf_counter() - t0) * 1e3
            self.graph_runs += 1
        guided = prep.guidance is not None
        return GraphOutput(out=out, grey=luma, flash_trimap=flash_trimap(prep.feeds) if guided else None,
                           generation=prep.generation, index=index)

    def _start(self, prep: FramePrep, luma: np.ndarray) -> None:
        if self.lag is not None:  # deterministic: run now, use from `lag` frames on
            done: Future[GraphOutput] = Future()
            done.set_result(self._run(prep, luma, self._index))
            self._pending, self._pending_ready = done, self._index + self.lag
            return
        if self._closed:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frame-graph",
                                                initializer=_lower_priority)
        self._pending = self._executor.submit(self._run, prep, luma, self._index)

    def _collect(self) -> None:
        """Take the pending run's output once it is done (lag mode: once its frame has come)."""
        pending = self._pending
        if pending is None or not pending.done():
            return
        if self.lag is not None and self._index < self._pending_ready:
            return
        self._pending = None
        try:
            result = pending.result()
        except Exception:  # a failed run costs its output, not the stream: the next frame starts another
            log.exception("background frame graph failed")
            return
        if result.generation == self._generation:
            self._latest = result

    def _drop_pending(self) -> None:
        """Forget a run of an earlier flash; wait for it first, so that two runs never share the graph."""
        pending, self._pending = self._pending, None
        if pending is not None and self.lag is None:
            try:
                pending.result()
            except Exception:
                log.debug("an earlier flash's graph run failed", exc_info=True)
