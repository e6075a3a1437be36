"""The service's video jitter buffer: a frame is released at its marked last packet, not one frame later."""

from __future__ import annotations

import asyncio

from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from cuematte.server.jitter import MarkerJitterBuffer, install


def _packet(seq: int, ts: int, data: bytes, marker: bool) -> RtpPacket:
    p = RtpPacket(sequence_number=seq, timestamp=ts, marker=int(marker))
    p._data = data  # type: ignore[attr-defined]  # what the depacketiser leaves for the jitter buffer
    return p


def _frames(buf: JitterBuffer, packets: list[RtpPacket]) -> list[tuple[int, bytes, bytes] | None]:
    """(sequence number that released it, its timestamp's payload) per packet added, None if none released."""
    out: list[tuple[int, bytes, bytes] | None] = []
    for p in packets:
        _, frame = buf.add(p)
        out.append(None if frame is None else (p.sequence_number, str(frame.timestamp).encode(), frame.data))
    return out


def test_a_complete_marked_frame_is_released_at_its_last_packet() -> None:
    packets = [_packet(10, 3000, b"a", False), _packet(11, 3000, b"b", True),
               _packet(12, 6000, b"c", False), _packet(13, 6000, b"d", True)]
    ours = _frames(MarkerJitterBuffer(capacity=128, is_video=True), packets)
    assert ours == [None, (11, b"3000", b"ab"), None, (13, b"6000", b"cd")]
    theirs = _frames(JitterBuffer(capacity=128, is_video=True), packets)  # aiortc: one frame later
    assert theirs == [None, None, (12, b"3000", b"ab"), None]


def test_a_gap_waits_for_the_missing_packet_and_unmarked_frames_fall_back() -> None:
    buf = MarkerJitterBuffer(capacity=128, is_video=True)
    # The middle packet of the first frame is late: the marker alone must not release a torn frame.
    got = _frames(buf, [_packet(20, 100, b"x", False), _packet(22, 100, b"z", True), _packet(21, 100, b"y", False)])
    assert got == [None, None, (21, b"100", b"xyz")]
    # A sender that never marks: released when the next frame starts, as aiortc does.
    got = _frames(buf, [_packet(23, 200, b"p", False), _packet(24, 200, b"q", False), _packet(25, 300, b"r", False)])
    assert got == [None, None, (25, b"200", b"pq")]


def test_install_swaps_a_real_receivers_buffer() -> None:
    async def run() -> None:
        pc = RTCPeerConnection()
        try:
            video = pc.addTransceiver("video", direction="recvonly")
            audio = pc.addTransceiver("audio", direction="recvonly")
            assert install(video.receiver)
            assert isinstance(video.receiver._RTCRtpReceiver__jitter_buffer, MarkerJitterBuffer)  # type: ignore[attr-defined]
            assert not install(audio.receiver)  # audio keeps aiortc's prefetching buffer
        finally:
            await pc.close()
    asyncio.run(run())
