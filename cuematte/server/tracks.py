"""The latest-frame slot and the processed video track sent back to the browser.

The camera track is read by a task that puts every decoded frame into a :class:`LatestFrameSlot`; the
processed track takes the newest frame each time the encoder asks for one and runs the (slow) processing off
the event loop. Frames that arrive while a frame is being processed overwrite each other in the slot and are
counted as dropped: nothing is queued, so the service's latency is one frame's processing at most, whatever
the camera rate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import cv2
import numpy as np
from aiortc import VideoStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from cuematte.live.capture import mean_luma

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Arrival:
    frame: VideoFrame
    t: float  # perf_counter when the decoded frame reached the service


class Latest(Generic[T]):
    """One item, the newest (event-loop side). ``put`` overwrites and says whether it replaced an item nobody
    took; ``get`` waits for an item not taken yet, and raises MediaStreamError once closed and empty."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._event = asyncio.Event()
        self.closed = False

    def put(self, item: T) -> bool:
        replaced = self._item is not None
        self._item = item
        self._event.set()
        return replaced

    async def get(self) -> T:
        while self._item is None:
            if self.closed:
                raise MediaStreamError
            self._event.clear()
            await self._event.wait()
        item, self._item = self._item, None
        return item

    def close(self) -> None:
        self.closed = True
        self._event.set()


class LatestFrameSlot:
    """The newest camera frame. Overwriting a frame nobody took counts as a drop, once the consumer has
    started."""

    def __init__(self) -> None:
        self._latest: Latest[Arrival] = Latest()
        self._started = False  # no drops are counted before the first get: the sender is not running yet
        self.dropped = 0
        self.on_drop: Callable[[], None] | None = None

    @property
    def closed(self) -> bool:
        return self._latest.closed

    def put(self, frame: VideoFrame) -> None:
        if self._latest.put(Arrival(frame, time.perf_counter())) and self._started:
            self.count_drop()

    def count_drop(self) -> None:
        self.dropped += 1
        if self.on_drop is not None:
            self.on_drop()

    async def get(self) -> Arrival:
        self._started = True
        return await self._latest.get()

    def close(self) -> None:
        self._latest.close()


class ProcessedTrack(VideoStreamTrack):
    """The track answered to the camera track: the newest camera frame, processed, with the camera frame's
    ``pts``/``time_base`` (so the browser's jitter buffer and A/V sync see the camera's clock, not ours).

    aiortc's sender encodes a frame before it asks for the next one. Processing on demand would put each
    frame's matting behind the previous frame's encoding; instead a pump task processes the newest camera
    frame as soon as the last one is done, so matting frame N+1 overlaps encoding frame N. A processed frame
    the encoder has not taken when the next one is ready is replaced (latest wins) and counted as dropped.
    """

    def __init__(self, slot: LatestFrameSlot, process: Callable[[Arrival], Awaitable[VideoFrame]]) -> None:
        super().__init__()
        self._slot = slot
        self._process = process
        self._ready: Latest[VideoFrame] = Latest()
        self._pump: asyncio.Task[None] | None = None
        self._waiting_since: float | None = None  # monotonic time a processed frame began waiting untaken
        self._stopped_at: float | None = None

    async def _run(self) -> None:
        try:
            while True:
                arrival = await self._slot.get()
                out = await self._process(arrival)
                out.pts = arrival.frame.pts
                out.time_base = arrival.frame.time_base
                if self._ready.put(out):
                    self._slot.count_drop()
                elif self._waiting_since is None:
                    self._waiting_since = time.monotonic()
        except MediaStreamError:
            pass
        except Exception:  # never silently: the encoder would wait for a frame that never comes
            log.exception("processing the outgoing video failed")
        finally:
            self._ready.close()

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._run())
        out = await self._ready.get()
        self._waiting_since = None
        return out

    def stalled_for(self, now: float) -> float:
        """Seconds the sender has not been taking frames: since the track was stopped (aiortc stops it when
        its sender dies, e.g. on an encoder error), or since a processed frame began waiting untaken (a sender
        takes each one within an encode's time); 0 while frames flow."""
        since = self._stopped_at if self._stopped_at is not None else self._waiting_since
        return 0.0 if since is None else now - since

    def stop(self) -> None:
        super().stop()
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        if self._pump is not None:
            self._pump.cancel()


def frame_luma(frame: VideoFrame) -> float:
    """Mean luma of a decoded frame from a subsample of its Y plane: cheap enough for every frame of a flash
    window, with no RGB conversion."""
    if frame.format.name in ("yuv420p", "yuvj420p", "nv12"):
        plane = frame.planes[0]
        y = np.frombuffer(memoryview(plane), np.uint8, count=frame.height * plane.line_size)
        y = y.reshape(frame.height, plane.line_size)[:, : frame.width]
        return float(y[::8, ::8].mean())
    return mean_luma(frame_rgb(frame))


def frame_rgb(frame: VideoFrame) -> np.ndarray:
    """A decoded frame -> (H, W, 3) uint8 RGB. yuv420p (what the VP8 and H.264 decoders give) is converted by
    OpenCV, with the same BT.601 limited-range levels as libswscale: PyAV builds a new swscale context, with
    threads of its own, for every frame it converts (measured: 0.07 ms against 0.19 ms at 640x360 in process,
    and thread churn beside ONNX Runtime in the service)."""
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return np.asarray(cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420), np.uint8)
    return frame.to_ndarray(format="rgb24")
