"""A one-frame mailbox: the producer overwrites, the consumer takes the newest.

A slow consumer (a model slower than the camera) skips frames instead of working through a queue of stale
ones, so the output lags the camera by at most one frame plus the processing time.
"""

from __future__ import annotations

import threading
import time

import numpy as np


class LatestFrame:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._seq = 0  # frames put so far
        self._taken = 0  # sequence number of the last frame taken
        self.dropped = 0  # frames overwritten before anyone took them
        self.closed = False

    def put(self, frame: np.ndarray) -> None:
        with self._cond:
            if self._frame is not None and self._seq > self._taken:
                self.dropped += 1
            self._frame = frame
            self._seq += 1
            self._cond.notify_all()

    def take(self, timeout: float | None = None) -> np.ndarray | None:
        """The newest frame not taken yet; waits for one. ``None`` on timeout or once closed and drained."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._seq <= self._taken:
                if self.closed:
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            self._taken = self._seq
            return self._frame

    def peek(self) -> np.ndarray | None:
        """The newest frame, taken or not (e.g. the no-flash reference at the moment the flash starts)."""
        with self._cond:
            return self._frame

    def close(self) -> None:
        """No more frames: wakes a waiting :meth:`take`."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
