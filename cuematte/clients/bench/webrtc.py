"""End-to-end latency of the WebRTC service, measured from the pixels.

An aiortc client sends generated frames at a fixed rate, each carrying its frame number in a band of grey
cells (:mod:`cuematte.clients.bench.framecode`), and reads the number back from every frame the service returns: the
latency of a frame is the time from handing it to the encoder to getting it back decoded. Two sessions per
size, in the same run and the same process:

* **pass-through**: a session that never flashes. The service returns frames unprocessed while it waits for
  the flash, so this is the transport alone: two encodes, two decodes, loopback, jitter buffers.
* **matting**: the same stream, after a flash burst (a brighter frame between ``flash-begin`` and
  ``flash-end`` on the control channel). The service now runs the per-frame graph on every frame it takes.

The added latency of a frame is its matting latency minus the pass-through median; p50/p95/p99 are taken over
frames. Frames sent in the window that never come back are *dropped* (the service's latest-frame-wins skips
them, or the transport lost them); *fps* is the rate of frames coming back.

Why background ``none``: the service composites alpha * F + (1 - alpha) * B, which replaces whatever the code
band shows wherever the model says "background" (random-init models say it anywhere). With ``none`` the
compositor returns the frame, but only after the session has run the full per-frame path (pre-processing,
graph, post-processing) on it, so the work is measured while the band survives; compositing itself is timed
in-process and shown in the stage breakdown. The band is read with a checksum, so a frame whose band was
overwritten counts as unreadable, never as a wrong number.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from aiortc import MediaStreamTrack

from cuematte.clients.bench import framecode

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)


class BenchError(Exception):
    """The benchmark could not measure (no frames back, no flash state, unreadable frame codes)."""


# -- what we send -----------------------------------------------------------------------------------------------
def make_frames(size: tuple[int, int], count: int = 12) -> tuple[list[np.ndarray], np.ndarray]:
    """(no-flash frames with a subject swaying a few pixels, one flash frame) at (H, W)."""
    from cuematte.clients.scenes import make_pair

    h, w = size
    flash, noflash, _ = make_pair(h, w, seed=7)
    step = max(1, w // 320)
    offsets = [step * (i if i < count // 2 else count - i) for i in range(count)]
    return [np.ascontiguousarray(np.roll(noflash, o, axis=1)) for o in offsets], flash


class NumberedTrack(MediaStreamTrack):
    """Frames at ``fps`` with their number in the pixels; remembers when each number was handed over."""

    kind = "video"

    def __init__(self, frames: list[np.ndarray], flash: np.ndarray, fps: float) -> None:
        super().__init__()
        self.frames = frames
        self.flash_frame = flash
        self.fps = fps
        self.flashing = False
        self.sent: dict[int, float] = {}  # frame number -> perf_counter when handed to the encoder
        self.n = 0
        self._t0: float | None = None

    async def recv(self) -> Any:
        from av import VideoFrame

        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + self.n / self.fps
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > 2 / self.fps:
            self._t0 = now - self.n / self.fps  # fell behind (busy loop): keep the rate, do not burst
        base = self.flash_frame if self.flashing else self.frames[self.n % len(self.frames)]
        img = framecode.stamp(base.copy(), self.n)
        # I420 by OpenCV rather than rgb24 for the encoder to convert: libswscale's RGB path costs ~11 ms a
        # frame at 1280x720 on this CPU, OpenCV's ~0.5 ms, and the client shares the cores with the service.
        i420 = cv2.cvtColor(img, cv2.COLOR_RGB2YUV_I420).astype(np.uint8, copy=False)
        frame = VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = round(self.n * VIDEO_CLOCK / self.fps)
        frame.time_base = TIME_BASE
        self.sent[self.n] = time.perf_counter()
        self.n += 1
        return frame


def read_number(frame: Any) -> int | None:
    """The frame number of a decoded av.VideoFrame, from its luma plane when it has one (no RGB conversion)."""
    if frame.format.name in ("yuv420p", "yuvj420p", "nv12"):
        plane = frame.planes[0]
        y = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)[:, : frame.width]
        return framecode.read(y)
    return framecode.read(frame.to_ndarray(format="rgb24"))


# -- one connection ---------------------------------------------------------------------------------------------
@dataclass
class StreamRun:
    """One session's frames inside the measurement window."""

    label: str  # "pass-through" or "matting"
    size: tuple[int, int]  # (H, W)
    seconds: float
    sent: int
    latencies_ms: list[float]  # per frame that came back, in arrival order
    arrivals_s: list[float]  # arrival time of those frames, seconds from the first one
    unreadable: int  # frames back whose code did not decode
    stats: list[dict[str, Any]] = field(default_factory=list)  # the service's "stats" messages

    @property
    def received(self) -> int:
        return len(self.latencies_ms)

    @property
    def dropped(self) -> int:
        return self.sent - self.received

    @property
    def fps(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0

    def percentiles(self) -> dict[str, float]:
        return _pcts(np.asarray(self.latencies_ms))


def _pcts(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    return {f"p{q}": round(float(np.percentile(values, q)), 2) for q in (50, 95, 99)}


@dataclass(frozen=True)
class StreamConfig:
    size: tuple[int, int]  # (H, W)
    fps: float = 30.0
    seconds: float = 5.0  # measurement window
    warmup: float = 1.5  # seconds after the first frame back (or after the flash) before the window
    tail: float = 1.0  # seconds after the window for late frames
    flash: bool = True
    background: str = "none"
    codec: str | None = None  # "vp8" / "h264": preferred codec; None = aiortc's default order
    timeout: float = 30.0


async def _post_offer(url: str, offer: dict[str, Any], timeout: float) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http, \
            http.post(url.rstrip("/") + "/offer", json=offer) as resp:
        if resp.status != 200:
            raise BenchError(f"POST {url}/offer answered {resp.status}: {(await resp.text())[:300]}")
        answer: dict[str, Any] = await resp.json()
        return answer


async def measure_stream(url: str, cfg: StreamConfig, label: str | None = None) -> StreamRun:
    """Connect, (flash), warm up, then count frames for ``cfg.seconds``."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

    frames, flash = make_frames(cfg.size)
    track = NumberedTrack(frames, flash, cfg.fps)
    arrivals: dict[int, float] = {}
    unreadable = [0]
    first_back = asyncio.Event()
    states: asyncio.Queue[str] = asyncio.Queue()
    stats: list[dict[str, Any]] = []  # the service's stats messages while the window is open
    window = [False]
    # No ICE servers: aiortc would ask a public STUN server, which loopback does not need and an offline
    # machine cannot reach.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tasks: list[asyncio.Task[None]] = []

    async def consume(remote: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        while True:
            try:
                frame = await remote.recv()
            except MediaStreamError:
                return
            t = time.perf_counter()
            n = read_number(frame)
            if n is None:
                unreadable[0] += 1
                continue
            arrivals.setdefault(n, t)
            first_back.set()

    @pc.on("track")
    def on_track(remote: Any) -> None:
        if remote.kind == "video":
            tasks.append(asyncio.ensure_future(consume(remote)))

    channel = pc.createDataChannel("control")
    opened = asyncio.Event()
    channel.on("open", opened.set)

    @channel.on("message")
    def on_message(message: Any) -> None:
        try:
            msg = json.loads(message)
        except (TypeError, ValueError):
            return
        if msg.get("type") == "state":
            states.put_nowait(str(msg.get("state")))
        elif msg.get("type") == "stats" and window[0]:
            stats.append(msg)

    transceiver = pc.addTransceiver(track, direction="sendrecv")
    if cfg.codec:
        caps = RTCRtpSender.getCapabilities("video").codecs
        wanted = [c for c in caps if c.mimeType.lower() == f"video/{cfg.codec.lower()}"]
        if not wanted:
            raise BenchError(f"codec {cfg.codec!r} is not offered by aiortc here")
        transceiver.setCodecPreferences(wanted + [c for c in caps if c not in wanted])
    try:
        await pc.setLocalDescription(await pc.createOffer())
        answer = await _post_offer(url, {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type,
                                          "options": {"background": cfg.background}}, cfg.timeout)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        try:
            await asyncio.wait_for(first_back.wait(), cfg.timeout)
        except TimeoutError:
            raise BenchError(f"no readable frame came back within {cfg.timeout:.0f} s "
                             f"({unreadable[0]} unreadable); is the service returning frames?") from None
        await asyncio.wait_for(opened.wait(), cfg.timeout)
        if cfg.background != "none":
            channel.send(json.dumps({"type": "set-background", "mode": cfg.background}))
        if cfg.flash:
            await _flash(channel, track, states, cfg)
        await asyncio.sleep(cfg.warmup)
        unreadable[0] = 0
        n0, t0 = track.n, time.perf_counter()
        window[0] = True
        await asyncio.sleep(cfg.seconds)
        n1, t1 = track.n, time.perf_counter()
        window[0] = False
        await asyncio.sleep(cfg.tail)
    finally:
        await pc.close()
        for task in tasks:
            task.cancel()
    lat, arr = [], []
    for n in range(n0, n1):
        n16 = n % framecode.MODULO
        if n16 in arrivals:
            lat.append((arrivals[n16] - track.sent[n]) * 1000.0)
            arr.append(arrivals[n16] - t0)
    order = np.argsort(arr)
    first = min(arr, default=0.0)
    arr = [a - first for a in arr]  # from the first frame back, so fps bins are not half-empty at the start
    return StreamRun(label or ("matting" if cfg.flash else "pass-through"), cfg.size, t1 - t0, n1 - n0,
                     [lat[i] for i in order], [arr[i] for i in order], unreadable[0], stats)


FLASH_ATTEMPTS = 3


async def _flash(channel: Any, track: NumberedTrack, states: asyncio.Queue[str], cfg: StreamConfig) -> None:
    """A flash burst the way the browser demo does it: flash-begin, brighter frames, flash-end, until matting.
    A flash the service answers with ``error`` is tried again, as a user would (on a loaded machine the video
    can trail the control channel past the capture window); :data:`FLASH_ATTEMPTS` failures are a BenchError."""
    for _attempt in range(FLASH_ATTEMPTS):
        channel.send(json.dumps({"type": "flash-begin"}))
        track.flashing = True
        await asyncio.sleep(0.3)
        track.flashing = False
        await asyncio.sleep(2 / cfg.fps)  # the last flash frame reaches the service before flash-end does
        channel.send(json.dumps({"type": "flash-end"}))
        if await _flash_answer(states, cfg.timeout) == "matting":
            return
    raise BenchError(f"the service answered {FLASH_ATTEMPTS} flashes with state 'error'")


async def _flash_answer(states: asyncio.Queue[str], timeout: float) -> str:
    """The service's answer to a flash: 'matting' or 'error' (other states pass); a BenchError after
    ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError("the service did not reach state 'matting' after the flash")
        try:
            state = await asyncio.wait_for(states.get(), left)
        except TimeoutError:
            continue
        if state in ("matting", "error"):
            return state


# -- the service in-process -------------------------------------------------------------------------------------
class InProcessServer:
    """An aiohttp app on 127.0.0.1 (free port) with its own event loop on a thread, so the client's loop and
    the service's loop do not wait for each other (they still share the process and its 2 cores)."""

    def __init__(self, app_factory: Callable[[], Any]) -> None:
        self._factory = app_factory
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._main, name="bench-server", daemon=True)

    def __enter__(self) -> InProcessServer:
        self._thread.start()
        self._ready.wait(120)
        if self._error is not None:
            raise self._error
        if not self.url:
            raise BenchError("the in-process service did not start within 120 s")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # handed to the caller of __enter__
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        from aiohttp import web

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.AppRunner(self._factory())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()


# -- both sessions per size -------------------------------------------------------------------------------------
@dataclass
class SizeResult:
    size: tuple[int, int]
    passthrough: StreamRun
    matting: StreamRun

    @property
    def label(self) -> str:
        return f"{self.size[1]}x{self.size[0]}"

    @property
    def added_ms(self) -> np.ndarray:
        base = float(np.median(self.passthrough.latencies_ms)) if self.passthrough.latencies_ms else 0.0
        return np.asarray(self.matting.latencies_ms) - base

    def as_dict(self) -> dict[str, Any]:
        """The per-size JSON record: the issue's keys first, then the raw figures behind them."""
        return {
            "size": self.label,
            "added_latency_ms": _pcts(self.added_ms),
            "fps": round(self.matting.fps, 2),
            "dropped": self.matting.dropped,
            "frames": {"sent": self.matting.sent, "received": self.matting.received,
                       "unreadable": self.matting.unreadable, "seconds": round(self.matting.seconds, 2)},
            "latency_ms": self.matting.percentiles(),
            "passthrough": {"latency_ms": self.passthrough.percentiles(), "fps": round(self.passthrough.fps, 2),
                            "dropped": self.passthrough.dropped, "sent": self.passthrough.sent},
            "service_stages_ms": self.service_stages(),
            "service_graph": self.service_graph(),
            "service_stats": self.matting.stats[-1] if self.matting.stats else None,
        }

    def service_graph(self) -> dict[str, float]:
        """The per-frame graph's own rate (runs a second), how many frames its output lagged behind the frames
        matted and the share of those frames that waited for it (``stats.graph_fps`` / ``graph_age`` /
        ``graph_waited``: medians, the largest age and the mean share; empty for a service that reports neither
        rate nor age). With the graph beside the frames it runs on fewer frames than come back."""
        def figures(key: str) -> list[float]:
            return [float(m[key]) for m in self.matting.stats if isinstance(m.get(key), int | float)]

        fps, age, waited = figures("graph_fps"), figures("graph_age"), figures("graph_waited")
        if not fps or not age:
            return {}
        return {"fps": round(float(np.median(fps)), 2), "age_p50": float(np.median(age)), "age_max": max(age),
                "waited": round(float(np.mean(waited)), 3) if waited else 0.0}

    def service_stages(self) -> dict[str, float]:
        """Median per-stage ms the service reported (``stats.stages``) during the matting window."""
        samples: dict[str, list[float]] = {}
        for msg in self.matting.stats:
            stages = msg.get("stages")
            if isinstance(stages, dict):
                for k, v in stages.items():
                    if isinstance(v, int | float):
                        samples.setdefault(str(k), []).append(float(v))
        return {k: round(float(np.median(v)), 3) for k, v in samples.items()}


async def run_sizes(url: str, sizes: list[tuple[int, int]], *, fps: float = 30.0, seconds: float = 5.0,
                    warmup: float = 1.5, codec: str | None = None,
                    progress: Callable[[str], None] | None = None) -> list[SizeResult]:
    """Pass-through then matting at every size, against the service at ``url``."""
    out = []
    for size in sizes:
        runs = {}
        for flash in (False, True):
            cfg = StreamConfig(size=size, fps=fps, seconds=seconds, warmup=warmup, flash=flash, codec=codec)
            run = await measure_stream(url, cfg)
            if run.received == 0:
                raise BenchError(f"{run.label} at {size[1]}x{size[0]}: no readable frame in the window "
                                 f"({run.unreadable} unreadable)")
            runs[flash] = run
            if progress:
                p = run.percentiles()
                progress(f"{run.label:>12} {size[1]}x{size[0]}: latency p50 {p['p50']:.1f} ms, "
                         f"p95 {p['p95']:.1f} ms, {run.fps:.1f} fps, dropped {run.dropped}/{run.sent}")
        out.append(SizeResult(size, runs[False], runs[True]))
    return out


def run_webrtc(url: str | None, sizes: list[tuple[int, int]], *, app_factory: Callable[[], Any] | None = None,
               fps: float = 30.0, seconds: float = 5.0, warmup: float = 1.5, codec: str | None = None,
               progress: Callable[[str], None] | None = None) -> list[SizeResult]:
    """Measure against ``url``, or start ``app_factory()`` in-process on 127.0.0.1 and measure against it."""

    async def go(target: str) -> list[SizeResult]:
        return await run_sizes(target, sizes, fps=fps, seconds=seconds, warmup=warmup, codec=codec,
                               progress=progress)

    if url:
        return asyncio.run(go(url))
    if app_factory is None:
        raise BenchError("no --url and no service to start in-process")
    with InProcessServer(app_factory) as server:
        return asyncio.run(go(server.url))
