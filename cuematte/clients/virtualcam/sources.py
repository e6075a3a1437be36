"""Frame sources for the live loop: a camera (OpenCV) or a video file played at its own rate.

Each runs a reader thread that only ever overwrites the newest frame in a :class:`LatestFrame`; the slot is
closed when the source ends, which ends the live loop.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

import cv2

from cuematte.clients.virtualcam.latest import LatestFrame
from cuematte.engine.errors import InputError
from cuematte.engine.io import VideoReader

log = logging.getLogger(__name__)


class _ThreadSource:
    def __init__(self) -> None:
        self.slot = LatestFrame()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._guarded, name=type(self).__name__, daemon=True)
        self.frames = 0  # frames read

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def _guarded(self) -> None:
        try:
            self._run()
        except Exception:  # the loop sees a closed slot and ends; the reason goes to the log
            log.exception("frame source failed")
        finally:
            self.slot.close()

    def _run(self) -> None:
        raise NotImplementedError


class CameraSource(_ThreadSource):
    """OpenCV camera ``index`` asked for ``size`` (H, W) at ``fps``; the camera may pick another mode."""

    def __init__(self, index: int, size: tuple[int, int], fps: float) -> None:
        super().__init__()
        api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        self._cap = cv2.VideoCapture(index, api)
        if not self._cap.isOpened():
            raise InputError(f"cannot open camera {index} (is it connected and not in use by another program?)")
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[1])
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[0])
        self._cap.set(cv2.CAP_PROP_FPS, fps)
        self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the driver's own queue would add latency
        self.index = index

    def _run(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                ok, bgr = self._cap.read()
                if not ok or bgr is None:
                    failures += 1
                    if failures > 30:
                        log.error("camera %d stopped delivering frames", self.index)
                        return
                    time.sleep(0.03)
                    continue
                failures = 0
                self.frames += 1
                self.slot.put(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        finally:
            self._cap.release()


class FileSource(_ThreadSource):
    """A video file delivered at its frame rate (or ``fps``), as if it were a camera."""

    def __init__(self, path: Path, fps: float | None = None) -> None:
        super().__init__()
        self._reader = VideoReader(path)
        self.fps = fps or self._reader.info.fps
        self.size = (self._reader.info.height, self._reader.info.width)

    def close(self) -> None:
        """Release the file if the source is never started."""
        self._reader.close()

    def _run(self) -> None:
        period = 1.0 / self.fps
        next_t = time.perf_counter()
        with self._reader as reader:
            for frame in reader:
                if self._stop.is_set():
                    return
                self.frames += 1
                self.slot.put(frame)
                next_t += period
                delay = next_t - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
