"""The live loop's parts, shared by the WebRTC service (``cuematte.server.peer``) and the virtual webcam
(``cuematte.clients.virtualcam.pipeline``): where each is only transport (WebRTC frames and a data channel, or a
camera and a virtual camera), these hold the logic.

* :class:`LiveState`: what a live session is doing (waiting for a flash, capturing one, matting, error);
* :class:`FlashCapture`: a flash burst's bookkeeping (the no-flash reference, the brightest frame while lit);
* :class:`LiveMatter`: matte, composite and check drift once a flash is cached, pass frames through until then;
* :class:`RateMeter`: frames per second over a window and the mean per-frame cost and latency.
"""

from cuematte.live.capture import FlashCapture, FlashCaptureError
from cuematte.live.matter import LiveMatter, Processed
from cuematte.live.meter import RateMeter
from cuematte.live.state import LiveState

__all__ = ["FlashCapture", "FlashCaptureError", "LiveMatter", "LiveState", "Processed", "RateMeter"]
