"""Where processed frames go: a virtual camera (pyvirtualcam) or a video file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol

import numpy as np

from cuematte.engine.errors import CuematteError
from cuematte.engine.io import VideoWriter

MODPROBE = 'sudo modprobe v4l2loopback devices=1 video_nr=10 card_label="cuematte" exclusive_caps=1'


class VirtualCameraUnavailable(CuematteError):
    """No virtual-camera backend: v4l2loopback not loaded (Linux), OBS Virtual Camera missing (Windows/macOS)."""


def setup_hint(platform: str = sys.platform) -> str:
    """How to get a virtual camera on ``platform``, and the headless alternative."""
    if platform.startswith("linux"):
        how = (
            "load the v4l2loopback kernel module (Debian/Ubuntu: `sudo apt install v4l2loopback-dkms`), e.g.\n"
            f"    {MODPROBE}\n"
            "  then run again with --device /dev/video10"
        )
    elif platform in ("win32", "darwin"):
        how = "install OBS Studio (26+) and start its Virtual Camera once, or Unity Capture on Windows"
    else:
        how = "pyvirtualcam has no virtual-camera backend for this platform"
    return f"{how};\n  or write the processed stream to a video file instead with --output FILE"


class Sink(Protocol):
    width: int
    height: int

    def send(self, frame: np.ndarray) -> None: ...

    def pace(self) -> None: ...

    def close(self) -> None: ...

    @property
    def name(self) -> str: ...


class VirtualCameraSink:
    """pyvirtualcam at a fixed size and rate; RGB frames in."""

    def __init__(self, width: int, height: int, fps: float, device: str | None = None) -> None:
        import pyvirtualcam

        self.width, self.height = width, height
        try:
            self._cam = pyvirtualcam.Camera(width=width, height=height, fps=fps, device=device,
                                            fmt=pyvirtualcam.PixelFormat.RGB)
        except RuntimeError as exc:  # pyvirtualcam's way of saying no backend or device accepted us
            reason = str(exc).strip().replace("\n", "; ").rstrip(".")
            message = f"no virtual camera available: {reason}.\n  To fix: {setup_hint()}"
            raise VirtualCameraUnavailable(message) from None

    @property
    def name(self) -> str:
        return f"virtual camera {self._cam.device}"

    def send(self, frame: np.ndarray) -> None:
        self._cam.send(np.ascontiguousarray(frame))

    def pace(self) -> None:
        # Sleeps only what is left of this frame's period: a slow model gets no extra wait, a fast one is held
        # to the advertised rate.
        self._cam.sleep_until_next_frame()

    def close(self) -> None:
        self._cam.close()


class FileSink:
    """An .mp4 at a fixed size and nominal rate (every frame sent is written)."""

    def __init__(self, path: Path, width: int, height: int, fps: float) -> None:
        self.width, self.height = width, height
        self.path = path
        self._writer = VideoWriter(path, (width, height), fps)
        self.written = 0

    @property
    def name(self) -> str:
        return str(self.path)

    def send(self, frame: np.ndarray) -> None:
        self._writer.write(frame)
        self.written += 1

    def pace(self) -> None:
        pass

    def close(self) -> None:
        self._writer.close()
