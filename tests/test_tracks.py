"""The service's video plumbing: the processed track's pump (matting overlaps encoding, latest wins) and the
decoded-frame colour conversion. Real asyncio tasks and real PyAV frames; no peer connection needed."""

from __future__ import annotations

import asyncio
import fractions

import cv2
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame
from skimage import data

from cuematte.server.tracks import Arrival, LatestFrameSlot, ProcessedTrack, frame_rgb


def _frame(value: int, pts: int) -> VideoFrame:
    vf = VideoFrame.from_ndarray(np.full((36, 64, 3), value, np.uint8), format="rgb24").reformat(format="yuv420p")
    vf.pts, vf.time_base = pts, fractions.Fraction(1, 90000)
    return vf


async def _until(cond: object, timeout: float = 2.0) -> None:
    async def wait() -> None:
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.005)
    await asyncio.wait_for(wait(), timeout)


def test_the_next_frame_is_processed_while_the_last_is_being_encoded() -> None:
    """aiortc encodes a frame before it asks for the next: the pump must not wait for that ask."""
    async def run() -> None:
        slot, seen = LatestFrameSlot(), []

        async def process(arrival: Arrival) -> VideoFrame:
            seen.append(arrival.frame.pts)
            return arrival.frame

        track = ProcessedTrack(slot, process)
        slot.put(_frame(10, 3000))
        first = await track.recv()
        assert first.pts == 3000 and first.time_base == fractions.Fraction(1, 90000)
        slot.put(_frame(20, 6000))  # the "encoder" is busy with the first frame and has not asked yet
        await _until(lambda: len(seen) == 2)
        assert (await track.recv()).pts == 6000
        track.stop()
    asyncio.run(run())


def test_a_processed_frame_the_encoder_did_not_take_is_replaced_and_counted() -> None:
    async def run() -> None:
        slot, done = LatestFrameSlot(), []

        async def process(arrival: Arrival) -> VideoFrame:
            out = VideoFrame.from_ndarray(np.zeros((36, 64, 3), np.uint8), format="rgb24")
            done.append(arrival.frame.pts)
            return out

        track = ProcessedTrack(slot, process)
        slot.put(_frame(0, 1))
        await track.recv()
        for pts in (2, 3):  # two frames processed while the encoder takes none
            slot.put(_frame(0, pts))
            await _until(lambda: done[-1] == pts)  # noqa: B023  (awaited inside the iteration)
        out = await track.recv()
        assert out.pts == 3  # the newest, with its camera timestamp
        assert slot.dropped == 1  # frame 2's output, never sent
        track.stop()
    asyncio.run(run())


def test_recv_ends_when_the_camera_ends_or_processing_fails() -> None:
    async def run() -> None:
        slot = LatestFrameSlot()

        async def process(arrival: Arrival) -> VideoFrame:
            return arrival.frame

        track = ProcessedTrack(slot, process)
        waiting = asyncio.ensure_future(track.recv())
        await asyncio.sleep(0.01)
        slot.close()
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(waiting, 2.0)

        slot2 = LatestFrameSlot()

        async def broken(arrival: Arrival) -> VideoFrame:
            raise RuntimeError("boom")

        track2 = ProcessedTrack(slot2, broken)
        slot2.put(_frame(0, 1))
        with pytest.raises(MediaStreamError):  # not a recv that waits forever
            await asyncio.wait_for(track2.recv(), 2.0)
    asyncio.run(run())


def test_frame_rgb_matches_libswscale() -> None:
    rgb = cv2.resize(data.astronaut(), (640, 360))
    yuv = VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    ours, theirs = frame_rgb(yuv), yuv.to_ndarray(format="rgb24")
    assert ours.shape == (360, 640, 3) and ours.dtype == np.uint8
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    assert diff.max() <= 3 and diff.mean() < 1.5  # rounding differences only, same BT.601 levels
    # Sizes and formats OpenCV's I420 path cannot take still convert.
    odd = VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:35, :63]), format="rgb24").reformat(format="yuv420p")
    assert frame_rgb(odd).shape == (35, 63, 3)
    assert frame_rgb(VideoFrame.from_ndarray(rgb, format="rgb24")).shape == (360, 640, 3)
