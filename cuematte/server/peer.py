"""One WebRTC peer: the WebRTC wiring around a live loop (``cuematte.live``: flash capture, matte-composite-
pass-through, rate meter), its worker thread and the control protocol.

States (:class:`cuematte.live.LiveState`, sent as ``{"type": "state", ...}`` on every change):

* ``waiting-flash``: no cached flash; the camera comes back unprocessed so the user sees themselves.
* ``capturing``: between ``flash-begin`` and ``flash-end`` (plus a short grace, see :class:`ServerConfig`);
  every arriving frame's mean luma is measured and the brightest is kept. Output continues as before.
* ``matting``: flash features cached; every frame runs the per-frame graph and is composited.
  ``reflash: true`` while the scene has drifted away from the flash.
* ``parallax-waiting`` / ``parallax-matting``: the parallax cue (``set-cue parallax``), see
  :mod:`cuematte.live.parallax`: waiting for a person or for enough parallax against the reference frame (frames pass
  through), or matting each frame against it. ``set-cue flash`` goes back to the flash states (the flash cache is
  kept across the switch).
* ``error``: something the client caused failed (no flash cue, bad message); sent once with the reason, then
  the session goes back to the state it was in (and keeps its previous flash cache, if any).

The matter (engine session and drift detector) is not thread-safe, so everything that touches it (set_flash,
matte, reset) runs on this peer's single worker thread, in submission order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import cv2
import numpy as np
from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from cuematte.engine.compositing import Background
from cuematte.engine.errors import CuematteError
from cuematte.engine.pipelined import PipelinedSession
from cuematte.engine.session import MattingSession
from cuematte.live import FlashCapture, LiveMatter, LiveState, RateMeter
from cuematte.live.parallax import WAITING_DETAIL as PARALLAX_WAITING_DETAIL
from cuematte.live.parallax import ParallaxLive
from cuematte.server import encoder, jitter
from cuematte.server.config import ServerConfig
from cuematte.server.metrics import Metrics
from cuematte.server.protocol import ProtocolError, parse_background, parse_message, state_message
from cuematte.server.tracks import Arrival, LatestFrameSlot, ProcessedTrack, frame_luma, frame_rgb

if TYPE_CHECKING:
    from cuematte.engine.parallax.session import ParallaxSession

log = logging.getLogger(__name__)
MAX_BUFFERED_STATS_BYTES = 65536  # data channel bytes not yet sent beyond which stats messages are skipped
T = TypeVar("T")

DETAIL = {
    LiveState.WAITING_FLASH: "flash to start",
    LiveState.CAPTURING: "flash window open: hold still",
    LiveState.MATTING: "matting",
}
DRIFT_DETAIL = "scene changed: flash again"
# Matting goes on from the person segmenter's mask, but a flash that lit the subject clearly gives sharper edges.
WEAK_FLASH_HINT = "; the flash barely lit you: flash again closer to the screen or camera for a better cut-out"


class _Closed(Exception):
    """The peer closed while work for it was pending."""


@dataclass
class _Window:
    """An open flash window: the burst, the state to go back to if it fails, its closing."""

    capture: FlashCapture[VideoFrame]
    previous: LiveState
    ending: bool = False
    timer: asyncio.TimerHandle | None = None


@dataclass
class _Work:
    """What the worker hands back to the event loop for one frame."""

    frame: VideoFrame
    matted: bool
    ms: dict[str, float] = field(default_factory=dict)
    drift: str | None = None  # "drifted" / "settled" when the drift state flipped on this frame
    error: str | None = None
    cue: str = "flash"  # the cue the frame was processed with (a switch may overtake it)
    state: LiveState | None = None  # parallax: the loop's state and detail after this frame
    detail: str = ""
    parallax_px: float | None = None
    busy_ms: float | None = None  # matted: the worker's time on it (not the stages' sum: pre holds pre_*)
    graph_age: int = 0  # frames the per-frame graph's output lagged behind this frame


class PeerSession:
    """Everything about one browser connection. Created by the service per accepted offer."""

    def __init__(self, config: ServerConfig, engine: MattingSession | PipelinedSession, background: Background,
                 metrics: Metrics,
                 on_closed: Callable[[PeerSession], None],
                 on_connected: Callable[[PeerSession], bool] = lambda _: True,
                 open_parallax: Callable[[], Awaitable[ParallaxSession]] | None = None) -> None:
        from aiortc import RTCConfiguration

        self.id = uuid.uuid4().hex
        self.config = config
        self.matter = LiveMatter(engine, background, drift_every=config.drift_every)
        self.metrics = metrics
        # No ICE servers: aiortc would otherwise ask Google's STUN server, which a loopback/LAN service needs
        # not and an offline machine cannot reach (gathering would stall on it).
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.state = LiveState.WAITING_FLASH
        self.detail = DETAIL[LiveState.WAITING_FLASH]
        self.channel: RTCDataChannel | None = None
        self.slot = LatestFrameSlot()
        self.slot.on_drop = lambda: self.metrics.frames_dropped.inc()
        self.received = 0
        self.processed = 0
        self.frame_size: tuple[int, int] | None = None  # (W, H) of the last frame
        self._last_frame: VideoFrame | None = None
        self._window: _Window | None = None
        self._last_error: str | None = None
        self._rate = RateMeter()
        self._stages: dict[str, float] = {}
        self._flash_stats: dict[str, Any] | None = None
        self._messages = TokenBucket(rate=config.max_messages_per_s, burst=2 * config.max_messages_per_s)
        self._last_drop = -1e9  # when a control message was last dropped by the rate limit
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"matte-{self.id[:6]}")
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._has_video = False
        self._out_track: ProcessedTrack | None = None
        self._on_closed = on_closed
        self._on_connected = on_connected
        self._open_parallax = open_parallax  # the service's shared parallax session, opened on first use
        self.cue = "flash"
        self.parallax: ParallaxLive | None = None  # set while the cue is parallax; used on the worker only
        self._matted_rate = RateMeter()  # fresh mattes only (not pass-through or held frames)
        # graph runs, frames that waited for one, frames matted, and when: at the last stats message
        self._graph_count = (0, 0, 0, time.perf_counter())
        self._graph_figures = (0.0, 0.0)  # graph runs a second, share of frames that waited: the last window's
        self.frames_matted = 0  # frames matted (not passed through)
        self._graph_age = 0
        self._parallax_px: float | None = None
        self.connected = False  # ICE and DTLS completed once; until then the peer is a pending offer
        self._last_arrival = time.monotonic()  # of a camera frame (or the connection), for the idle timeout
        self._wire()

    # -- wiring ---------------------------------------------------------------------------------------------
    def _wire(self) -> None:
        pc = self.pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind != "video" or self._has_video:
                return  # audio, or a second camera: one processed video per peer
            self._has_video = True
            for transceiver in pc.getTransceivers():
                if transceiver.receiver.track is track:
                    jitter.install(transceiver.receiver)  # decode each frame at its last packet
            self._spawn(self._read(track))
            self._out_track = ProcessedTrack(self.slot, self._process)
            pc.addTrack(self._out_track)

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label != "control":
                return
            self.channel = channel
            channel.on("message", self._on_message)
            self._send(state_message(self.state, self.detail, self.matter.drifted))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("session %s: connection %s", self.id[:8], pc.connectionState)
            if pc.connectionState == "connected" and not self.connected:
                self.connected = True
                self._last_arrival = time.monotonic()
                if not self._on_connected(self):
                    await self.close()
            elif pc.connectionState in ("failed", "closed"):
                await self.close()

    def start(self) -> None:
        """After the answer is sent: the processed video's encoder, stats ticker, the connect deadline and the
        idle watch."""
        if self.config.fast_vp8 and self._out_track is not None and encoder.install(self.pc, self._out_track):
            log.info("session %s: VP8 out with the service's fast encoder", self.id[:8])
        self._spawn(self._stats_loop())
        self._spawn(self._connect_deadline())
        self._spawn(self._idle_watch())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise _Closed
        try:
            return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)
        except RuntimeError:  # "cannot schedule new futures after shutdown": closed meanwhile
            if self._closed:
                raise _Closed from None
            raise

    # -- camera in ------------------------------------------------------------------------------------------
    async def _read(self, track: MediaStreamTrack) -> None:
        """Every decoded camera frame: flash bookkeeping, then into the latest-frame slot."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, VideoFrame)
            self._last_arrival = time.monotonic()
            self.received += 1
            self.metrics.frames_received.inc()
            if self._window is not None:
                self._window.capture.offer(frame)
            self._last_frame = frame
            self.slot.put(frame)

    # -- frames out -----------------------------------------------------------------------------------------
    async def _process(self, arrival: Arrival) -> VideoFrame:
        live = self.parallax if self.cue == "parallax" else None
        if live is not None:
            try:
                work = await self._in_worker(self._matte_parallax, live, arrival.frame)
            except _Closed:
                raise MediaStreamError from None
        elif not self.matter.has_flash:
            work = _Work(arrival.frame, matted=False)  # pass-through: no conversion, no worker round trip
        else:
            try:
                work = await self._in_worker(self._matte, arrival.frame)
            except _Closed:
                raise MediaStreamError from None
        now = time.perf_counter()
        latency = now - arrival.t
        self.processed += 1
        self.frame_size = (arrival.frame.width, arrival.frame.height)
        mode = "matting" if work.matted else "passthrough"
        self.metrics.frames_processed.inc(mode=mode)
        self.metrics.frame.observe(latency, mode=mode)
        for stage, ms in work.ms.items():
            self.metrics.stage.observe(ms / 1000.0, stage=stage)
        if work.ms:
            self._stages = work.ms
        self._rate.tick(work.busy_ms if work.matted else None, latency * 1000.0, now)
        self._graph_age = work.graph_age
        if work.matted:
            self.frames_matted += 1
            self._matted_rate.tick(now=now)
        if work.cue == "parallax":
            if work.parallax_px is not None:
                self._parallax_px = work.parallax_px
            if (work.state is not None and self.cue == "parallax" and self.parallax is live
                    and (work.state, work.detail) != (self.state, self.detail)):
                self._set_state(work.state, work.detail)
        if work.drift == "drifted":
            self.metrics.drift.inc()
            if self.state is LiveState.MATTING:
                self._set_state(LiveState.MATTING, DRIFT_DETAIL)
        elif work.drift == "settled" and self.state is LiveState.MATTING:
            self._set_state(LiveState.MATTING, DETAIL[LiveState.MATTING])
        if work.error and work.error != self._last_error:
            self._report_error(work.error)  # once per distinct error, not once per frame
        self._last_error = work.error
        return work.frame

    def _matte(self, frame: VideoFrame) -> _Work:
        """Worker thread: decode to RGB, the live matter (matte, composite, drift), back to a video frame."""
        if not self.matter.has_flash:  # reset between submission and now
            return _Work(frame, matted=False)
        t0 = time.perf_counter()
        rgb = frame_rgb(frame)
        t1 = time.perf_counter()
        done = self.matter.process(rgb)
        if not done.matted:
            return _Work(frame, matted=False, error=done.error)
        t2 = time.perf_counter()
        vf = to_i420_frame(done.frame)
        t3 = time.perf_counter()
        ms = {"to_rgb": (t1 - t0) * 1e3, **done.ms, "to_yuv": (t3 - t2) * 1e3}
        return _Work(vf, matted=True, ms=ms, drift=done.drift, busy_ms=(t3 - t0) * 1e3, graph_age=done.graph_age)

    def _matte_parallax(self, live: ParallaxLive, frame: VideoFrame) -> _Work:
        """Worker thread: the parallax loop on one frame (never raises for a frame's content)."""
        t0 = time.perf_counter()
        rgb = frame_rgb(frame)
        t1 = time.perf_counter()
        done = live.process(rgb, self.matter.background)
        if not done.matted and not done.held:
            return _Work(frame, matted=False, error=done.error, cue="parallax", state=done.state,
                         detail=done.detail, parallax_px=done.parallax_px)
        t2 = time.perf_counter()
        vf = to_i420_frame(done.frame)
        t3 = time.perf_counter()
        ms = {"to_rgb": (t1 - t0) * 1e3, **done.ms, "to_yuv": (t3 - t2) * 1e3}
        return _Work(vf, matted=done.matted, ms=ms if done.matted else {}, busy_ms=(t3 - t0) * 1e3,
                     error=done.error, cue="parallax", state=done.state, detail=done.detail,
                     parallax_px=done.parallax_px)

    # -- control channel ------------------------------------------------------------------------------------
    def _on_message(self, raw: str | bytes) -> None:
        now = time.monotonic()
        if not self._messages.take(now):
            # A flood must not starve this peer's video or the executor other peers share: drop, tell once per
            # flood (a flood is over after a second without a drop).
            self.metrics.rejected.inc(reason="message_rate")
            if now - self._last_drop > 1.0:
                self._report_error(f"more than {self.config.max_messages_per_s} control messages a second: "
                                   "dropping messages")
            self._last_drop = now
            return
        try:
            msg = parse_message(raw, self.config.max_message_bytes)
        except ProtocolError as exc:
            self._report_error(str(exc))
            return
        kind = msg["type"]
        if kind == "flash-begin":
            self._flash_begin()
        elif kind == "flash-end":
            self._flash_end()
        elif kind == "reset":
            self._spawn(self._reset())
        elif kind == "set-background":
            self._spawn(self._set_background(msg))
        elif kind == "set-cue":
            self._spawn(self._set_cue(msg["cue"]))

    def _flash_begin(self) -> None:
        if self.cue != "flash":
            self._report_error("flash-begin while the cue is parallax: send {\"type\": \"set-cue\", \"cue\": "
                               "\"flash\"} first")
            return
        if self._window is not None:
            return  # a second flash-begin inside the window changes nothing
        capture: FlashCapture[VideoFrame] = FlashCapture(frame_luma)
        capture.begin(self._last_frame)
        self._window = _Window(capture, previous=self.state)
        self._window.timer = asyncio.get_running_loop().call_later(self.config.flash_window_s, self._flash_end)
        self._set_state(LiveState.CAPTURING, DETAIL[LiveState.CAPTURING])

    def _flash_end(self) -> None:
        window = self._window
        if window is None:
            self._report_error("flash-end without flash-begin")
            return
        if window.ending:
            return
        window.ending = True
        if window.timer is not None:
            window.timer.cancel()
        # The data channel overtakes the video: the last flash-lit frames are still in the jitter buffer
        # and the decoder when flash-end arrives, so keep measuring for a moment.
        asyncio.get_running_loop().call_later(self.config.flash_grace_s,
                                              lambda: self._spawn(self._finish_flash(window)))

    async def _finish_flash(self, window: _Window) -> None:
        if self._window is not window:
            return  # reset during the grace period
        self._window = None
        try:
            flash, noflash = window.capture.end()
            ms, method = await self._in_worker(self._set_flash, flash, noflash)
        except CuematteError as exc:
            self.metrics.flashes.inc(result="error")
            self._fail(f"flash failed: {exc}", window.previous)
            return
        except _Closed:
            return
        except Exception as exc:
            log.exception("session %s: set_flash failed", self.id[:8])
            self.metrics.flashes.inc(result="error")
            self._fail(f"flash failed: internal error: {exc}", window.previous)
            return
        self.metrics.flashes.inc(result="ok")
        for stage in ("trimap", "flash"):
            self.metrics.stage.observe(ms[stage] / 1000.0, stage=stage)
        weak = WEAK_FLASH_HINT if method in ("segmenter-only", "unknown") else ""
        # The status line says what the user needs; the timings go to the stats line.
        self._flash_stats = {"method": method, "trimap_ms": round(ms["trimap"], 1), "graph_ms": round(ms["flash"], 1),
                             "frames": window.capture.frames}
        self._set_state(LiveState.MATTING, f"flash cached{weak}")

    def _set_flash(self, flash_frame: VideoFrame, noflash_frame: VideoFrame) -> tuple[dict[str, float], str]:
        """Worker thread: trimap + flash graph once. Returns the stage times (ms) and how the trimap was made."""
        cue = self.matter.set_flash(frame_rgb(flash_frame), frame_rgb(noflash_frame))
        return dict(self.matter.session.times.ms), cue.method

    def _close_window(self) -> None:
        window, self._window = self._window, None
        if window is not None and window.timer is not None:
            window.timer.cancel()

    async def _reset(self) -> None:
        self._close_window()
        live = self.parallax
        try:
            await self._in_worker(self.matter.reset)
            if live is not None:
                await self._in_worker(live.reset)
        except _Closed:
            return
        if self.cue == "parallax":
            self._set_state(LiveState.PARALLAX_WAITING, PARALLAX_WAITING_DETAIL)
        else:
            self._set_state(LiveState.WAITING_FLASH, DETAIL[LiveState.WAITING_FLASH])

    async def _set_cue(self, cue: str) -> None:
        """``set-cue``: parallax opens the service's shared parallax session (an error, and the flash cue stays,
        when the service has no parallax model); flash goes back to the flash states, keeping the flash cache."""
        if cue == self.cue:
            self._set_state(self.state, self.detail)  # answered: the client learns where it is
            return
        if cue == "flash":
            self.cue, self.parallax = "flash", None
            self._parallax_px = None
            has_flash = self.matter.has_flash
            state = LiveState.MATTING if has_flash else LiveState.WAITING_FLASH
            self._set_state(state, DRIFT_DETAIL if has_flash and self.matter.drifted else DETAIL[state])
            return
        if self._open_parallax is None:
            self._report_error("the parallax cue is not available on this service")
            return
        try:
            session = await self._open_parallax()
        except CuematteError as exc:  # ModelError: no parallax model installed
            self._report_error(f"the parallax cue is not available on this service: {exc}")
            return
        except Exception as exc:
            log.exception("session %s: opening the parallax model failed", self.id[:8])
            self._report_error(f"the parallax cue is not available on this service: internal error: {exc}")
            return
        if self._closed or self.cue == "parallax":
            return
        self._close_window()
        self.cue, self.parallax = "parallax", ParallaxLive(session)
        self._set_state(LiveState.PARALLAX_WAITING, PARALLAX_WAITING_DETAIL)

    async def _set_background(self, msg: dict[str, Any]) -> None:
        try:
            # off the loop: an image background is a base64 decode and an image decode
            self.matter.background = await asyncio.get_running_loop().run_in_executor(None, parse_background, msg)
        except CuematteError as exc:
            self._report_error(str(exc))

    # -- server -> client -------------------------------------------------------------------------------------
    def _set_state(self, state: LiveState, detail: str) -> None:
        self.state, self.detail = state, detail
        self._send(state_message(state, detail, self.matter.drifted and state is LiveState.MATTING))

    def _report_error(self, message: str) -> None:
        """An ``error`` state with the reason, then back to the state the session is in."""
        self._fail(message, self.state)

    def _fail(self, message: str, back_to: LiveState) -> None:
        log.info("session %s: %s", self.id[:8], message)
        self._send(state_message(LiveState.ERROR, message))
        if back_to is LiveState.MATTING and not self.matter.has_flash:
            back_to = LiveState.WAITING_FLASH
        if back_to in (LiveState.PARALLAX_WAITING, LiveState.PARALLAX_MATTING):
            detail = self.detail if back_to is self.state else PARALLAX_WAITING_DETAIL
        else:
            detail = DRIFT_DETAIL if back_to is LiveState.MATTING and self.matter.drifted else DETAIL.get(back_to, "")
        self._set_state(back_to, detail)

    def _send(self, text: str) -> None:
        ch = self.channel
        if ch is not None and ch.readyState == "open":
            ch.send(text)

    def stats(self) -> dict[str, Any]:
        r = self._rate
        graph_fps, graph_waited = self._graph_window()
        return {
            "type": "stats",
            "state": self.state.value,
            "fps": round(r.fps(), 2),
            "ms": round(r.ms, 2) if r.ms is not None else None,  # per matted frame, in the worker
            "latency_ms": round(r.latency_ms, 2) if r.latency_ms is not None else None,  # decoded -> processed
            "stages": {k: round(v, 2) for k, v in self._stages.items()},
            "frames": self.processed,
            "received": self.received,
            "dropped": self.slot.dropped,
            "size": list(self.frame_size) if self.frame_size else None,
            "flash": self._flash_stats,  # how the cached flash was made (None before one)
            "cue": self.cue,
            "matted_fps": round(self._matted_rate.fps(), 2),  # fresh mattes a second (held or passed-through not)
            # per-frame graph runs a second: with the background graph, fewer than the frames matted
            "graph_fps": round(graph_fps, 2),
            "graph_age": self._graph_age,  # frames the last matte's graph output lagged behind it
            # the share of frames matted since the last message that waited for the background graph: a median
            # stage time hides it until half of them do
            "graph_waited": round(graph_waited, 3),
            "parallax_px": round(self._parallax_px, 2) if self._parallax_px is not None else None,
        }

    def _graph_window(self) -> tuple[float, float]:
        """Graph runs a second since the last call (the stats interval) and the share of the frames matted since
        then that waited for one, over the same window; the last figures when called sooner."""
        runs, waits, now = self.matter.graph_runs, self.matter.graph_waits, time.perf_counter()
        matted = self.frames_matted
        last_runs, last_waits, last_matted, last_t = self._graph_count
        if now - last_t >= 0.5:
            waited = (waits - last_waits) / (matted - last_matted) if matted > last_matted else 0.0
            self._graph_figures = ((runs - last_runs) / (now - last_t), waited)
            self._graph_count = (runs, waits, matted, now)
        return self._graph_figures

    async def _stats_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.config.stats_interval_s)
            ch = self.channel
            # A client that reads nothing would otherwise have a stats message a second pile up in the SCTP
            # send buffer for as long as it keeps sending video: skip them until it catches up.
            if ch is not None and ch.bufferedAmount > MAX_BUFFERED_STATS_BYTES:
                continue
            self._send(json.dumps(self.stats()))

    async def _connect_deadline(self) -> None:
        await asyncio.sleep(self.config.connect_timeout_s)
        if not self.connected:
            log.info("session %s: not connected after %.0f s, closing", self.id[:8], self.config.connect_timeout_s)
            await self.close()

    async def _idle_watch(self) -> None:
        """Close a connected peer that sends no camera frames (a receive-only offer, a stalled camera), or whose
        processed video stopped going out (the encoder failed): it would hold its slot forever."""
        limit = self.config.idle_timeout_s
        while not self._closed:
            await asyncio.sleep(min(limit, 1.0))
            now = time.monotonic()
            idle = now - self._last_arrival
            if self.connected and idle > limit:
                log.info("session %s: no camera frame for %.0f s, closing", self.id[:8], idle)
                self.metrics.rejected.inc(reason="idle")
                await self.close()
                return
            stalled = self._out_track.stalled_for(now) if self._out_track is not None else 0.0
            if self.connected and stalled > limit:  # aiortc's sender died (its encoder raised): no video goes out
                log.warning("session %s: the outgoing video stopped %.0f s ago, closing", self.id[:8], stalled)
                self.metrics.rejected.inc(reason="video_stalled")
                self._report_error("the processed video stopped (its encoder failed): reconnect")
                await self.close()
                return

    # -- end ------------------------------------------------------------------------------------------------
    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.slot.close()
        if self._window is not None and self._window.timer is not None:
            self._window.timer.cancel()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        try:  # aiortc can raise closing a half-negotiated peer; the slot and the worker are freed regardless
            await self.pc.close()
        except Exception as exc:
            log.info("session %s: closing the peer connection raised %r", self.id[:8], exc)
        finally:
            self._worker.shutdown(wait=False, cancel_futures=True)
            self.matter.close()
            # The peer's event handlers close over this session: without them (and the frames it holds) a
            # closed session is freed at once, not at the next cyclic collection (the soak test's RSS ramp).
            self.pc.remove_all_listeners()
            if self.channel is not None:
                self.channel.remove_all_listeners()
            self._last_frame = self._window = None
            self._on_closed(self)


@dataclass
class TokenBucket:
    """``rate`` events a second on average, ``burst`` at once."""

    rate: float
    burst: float
    tokens: float = -1.0
    at: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def to_i420_frame(rgb: np.ndarray) -> VideoFrame:
    """RGB -> a yuv420p frame for the encoder, converted by OpenCV: libswscale's RGB path (what the encoder
    would run on an rgb24 frame) costs ~7 ms at 1280x720 on these cores, OpenCV's ~0.3 ms, same BT.601 levels."""
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:  # I420 needs even sizes; browsers send them, but do not fail on an odd one
        return VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
    return VideoFrame.from_ndarray(np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), np.uint8), format="yuv420p")
