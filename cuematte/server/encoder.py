"""The service's VP8 encoder: aiortc's, at libvpx's fastest real-time speed and without its denoiser.

aiortc encodes VP8 with ``cpu-used -6`` and libvpx's temporal denoiser at its strongest (``noise-sensitivity 4``).
On two cores that encoder shares the CPU with the decoder, the segmenter and the network, so every millisecond it
takes is waited for by the frames behind it. Measured on the real talking-head clip (one encoder thread, 1 Mbit/s
CBR as aiortc starts, 150 frames; docs/service.md): 4.8 -> 2.4 ms a frame at 640x360 and 12.4 -> 7.2 ms at
1280x720 with ``cpu-used -16`` and the denoiser off, at the same bit rate and a PSNR against the frame sent
1.5 dB higher (the denoiser smooths what the camera saw; the matted frame's background is already replaced).

aiortc creates a sender's encoder itself, with no public way to choose it; :func:`install` sets one on the
sender of the processed track before its first frame when the answer chose VP8 (H.264 keeps aiortc's), and
says so in the log when this aiortc version keeps the encoder elsewhere (the service then runs as before).
"""

from __future__ import annotations

import logging
import multiprocessing

import av
from aiortc import RTCPeerConnection
from aiortc.codecs.vpx import Vp8Encoder, number_of_threads
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import SessionDescription
from av.frame import Frame
from av.video.frame import VideoFrame

log = logging.getLogger(__name__)

_ATTR = "_RTCRtpSender__encoder"  # where aiortc 1.9-1.16 keeps a sender's encoder (created at its first frame)

# libvpx's real-time settings as aiortc sets them, but for speed and the denoiser (see the module docstring).
CPU_USED = -16  # VP8's fastest real-time speed (aiortc: -6)
NOISE_SENSITIVITY = 0  # the temporal denoiser off (aiortc: 4, its strongest)


class FastVp8Encoder(Vp8Encoder):
    """aiortc's VP8 encoder (packetisation, bit-rate and key-frame handling) with a faster libvpx context. If
    libvpx refuses to open it, the sender goes on with aiortc's own settings (said once in the log)."""

    def __init__(self) -> None:
        super().__init__()
        self.fallback = False  # libvpx refused these settings: aiortc's from then on

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        if self.fallback or not isinstance(frame, VideoFrame):
            return super().encode(frame, force_keyframe)
        fresh = self._ensure_codec(frame.width, frame.height)
        try:
            return super().encode(frame, force_keyframe)  # a fresh context is opened here, at its first frame
        except av.FFmpegError as exc:
            if not fresh:
                raise  # an open encoder that fails: aiortc's sender stops, and the service closes the session
            log.warning("libvpx refused the service's VP8 settings (%s): aiortc's settings from now on", exc)
            self.fallback, self.codec = True, None
            return super().encode(frame, force_keyframe)

    def _ensure_codec(self, width: int, height: int) -> bool:
        """(Re)create the libvpx context when aiortc would: a new size, or the target bit rate moved > 10 %;
        True if it did. aiortc then finds a context that fits and keeps it."""
        codec, rate = self.codec, self.target_bitrate
        if codec is not None and codec.width == width and codec.height == height and codec.bit_rate \
                and abs(rate - codec.bit_rate) / codec.bit_rate <= 0.1:
            return False
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height = width, height
        codec.bit_rate = rate
        codec.pix_fmt = "yuv420p"
        codec.gop_size = 3000  # key frames only when the receiver asks (aiortc's kf_max_dist)
        codec.qmin, codec.qmax = 2, 56
        codec.options = {
            "bufsize": str(rate), "minrate": str(rate), "maxrate": str(rate),  # CBR with a 1 s buffer
            "cpu-used": str(CPU_USED), "deadline": "realtime", "lag-in-frames": "0",
            "noise-sensitivity": str(NOISE_SENSITIVITY), "static-thresh": "1",
            "overshoot-pct": "15", "undershoot-pct": "100", "partitions": "0",
        }
        codec.thread_count = number_of_threads(width * height, multiprocessing.cpu_count())
        self.codec = codec
        return True


def negotiated_video_codec(pc: RTCPeerConnection, mid: str | None) -> str | None:
    """The mime type the local description sends on the video section ``mid`` ("video/VP8"...), or None."""
    desc = pc.localDescription
    if desc is None:
        return None
    for media in SessionDescription.parse(desc.sdp).media:
        if media.kind == "video" and (mid is None or media.rtp.muxId == mid) and media.rtp.codecs:
            return str(media.rtp.codecs[0].mimeType)
    return None


def install(pc: RTCPeerConnection, track: MediaStreamTrack) -> bool:
    """After the answer: give the sender of ``track`` a :class:`FastVp8Encoder` if VP8 was chosen. False (and
    aiortc's encoder) for another codec, a track no sender carries, or an aiortc that keeps it elsewhere."""
    for transceiver in pc.getTransceivers():
        sender = transceiver.sender
        if sender.track is not track:
            continue
        if negotiated_video_codec(pc, transceiver.mid) != "video/VP8":
            return False
        if _ATTR not in vars(sender) or getattr(sender, _ATTR) is not None:
            log.info("aiortc keeps its video encoder elsewhere: VP8 is encoded with aiortc's settings")
            return False
        setattr(sender, _ATTR, FastVp8Encoder())
        return True
    return False
