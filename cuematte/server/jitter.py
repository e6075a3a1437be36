"""A video jitter buffer that hands a frame to the decoder as soon as its last packet is in.

aiortc's video jitter buffer knows a frame is complete only when the first packet of the *next* frame arrives
(its timestamp differs), so every received frame waits one frame interval (33 ms at 30 fps) before decoding:
half of the 75 ms a pass-through session measures on loopback. RTP senders set the marker bit on the last
packet of a video frame (RFC 7741 for VP8, RFC 6184 for H.264; browsers and aiortc do): when the packets from
the buffer's start through a marked packet are all present and share one timestamp, the frame is complete
now. Anything else (a lost or late packet, a sender that never marks) falls back to aiortc's rule.

The buffer is aiortc's own object inside its receiver, with no public way to choose it; :func:`install` swaps
it on a receiver and says so when this aiortc version keeps it elsewhere (the service then runs as before).
"""

from __future__ import annotations

import logging

from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame

log = logging.getLogger(__name__)

_ATTR = "_RTCRtpReceiver__jitter_buffer"  # where aiortc 1.9-1.16 keeps a receiver's buffer


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer, releasing a frame at its marked last packet."""

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        if self._origin is not None:
            first = self._packets[self._origin % self._capacity]
            if first is not None:
                for count in range(self.capacity):
                    packet = self._packets[(self._origin + count) % self._capacity]
                    if packet is None or packet.timestamp != first.timestamp:
                        break  # a gap or the next frame: not complete by its marker
                    if packet.marker:
                        frame = self._collect(count + 1)
                        self.remove(count + 1)
                        return frame
        return super()._remove_frame(sequence_number)

    def _collect(self, count: int) -> JitterFrame:
        assert self._origin is not None
        packets = [self._packets[(self._origin + i) % self._capacity] for i in range(count)]
        return JitterFrame(data=b"".join(p._data for p in packets if p is not None),  # type: ignore[attr-defined]
                           timestamp=packets[0].timestamp if packets[0] is not None else 0)


def install(receiver: RTCRtpReceiver) -> bool:
    """Give a video receiver a :class:`MarkerJitterBuffer`; False for audio, or (with a log line) if aiortc
    keeps the buffer elsewhere."""
    current = getattr(receiver, _ATTR, None)
    if not isinstance(current, JitterBuffer):
        log.info("aiortc keeps its video jitter buffer elsewhere: frames decode one frame interval late")
        return False
    if not current._is_video:
        return False  # audio keeps aiortc's prefetching buffer
    setattr(receiver, _ATTR, MarkerJitterBuffer(capacity=current.capacity, is_video=True))
    return True
