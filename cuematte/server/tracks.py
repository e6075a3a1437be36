"""The latest-frame slot and the processed video track sent back to the browser.

The camera track is read by a task that puts every decoded frame into a :class:`LatestFrameSlot`; the
processed track takes the newest frame each time the encoder asks for one and runs the (slow) processing off
the event loop. Frames that arrive while a frame is being processed overwrite each other in the slot and are
counted as dropped: nothing is queued, so the service's latency is one frame's processing at most, whatever
the camera rate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from aiortc import VideoStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from cuematte.live.capture import mean_luma


@dataclass(frozen=True)
class Arrival:
    frame: VideoFrame
    t: float  # perf_counter when the decoded frame reached the service


class LatestFrameSlot:
    """Holds only the newest frame (event-loop side). ``put`` overwrites, ``get`` waits for a frame not
    taken yet. Overwriting a frame nobody took counts as a drop, once the consumer has started."""

    def __init__(self) -> None:
        self._item: Arrival | None = None
        self._event = asyncio.Event()
        self._started = False  # no drops are counted before the first get: the sender is not running yet
        self.closed = False
        self.dropped = 0
        self.on_drop: Callable[[], None] | None = None

    def put(self, frame: VideoFrame) -> None:
        if self._item is not None and self._started:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop()
        self._item = Arrival(frame, time.perf_counter())
        self._event.set()

    async def get(self) -> Arrival:
        self._started = True
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


class ProcessedTrack(VideoStreamTrack):
    """The track answered to the camera track: the newest camera frame, processed, with the camera frame's
    ``pts``/``time_base`` (so the browser's jitter buffer and A/V sync see the camera's clock, not ours)."""

    def __init__(self, slot: LatestFrameSlot, process: Callable[[Arrival], Awaitable[VideoFrame]]) -> None:
        super().__init__()
        self._slot = slot
        self._process = process

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        arrival = await self._slot.get()
        out = await self._process(arrival)
        out.pts = arrival.frame.pts
        out.time_base = arrival.frame.time_base
        return out


def frame_luma(frame: VideoFrame) -> float:
    """Mean luma of a decoded frame from a subsample of its Y plane: cheap enough for every frame of a flash
    window, with no RGB conversion."""
    if frame.format.name in ("yuv420p", "yuvj420p", "nv12"):
        plane = frame.planes[0]
        y = np.frombuffer(memoryview(plane), np.uint8, count=frame.height * plane.line_size)
        y = y.reshape(frame.height, plane.line_size)[:, : frame.width]
        return float(y[::8, ::8].mean())
    return mean_luma(frame.to_ndarray(format="rgb24"))
