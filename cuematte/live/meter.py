"""Frame rate and per-frame figures of a live loop, for status lines and ``stats`` messages."""

from __future__ import annotations

import collections
import time


class RateMeter:
    """Frames per second over the last ``window`` seconds, and the means of the last ``keep`` per-frame
    processing times and latencies (either may be left out of a tick: a pass-through frame has no matting)."""

    def __init__(self, window: float = 2.0, keep: int = 30) -> None:
        self.window = window
        self.frames = 0
        self._stamps: collections.deque[float] = collections.deque()
        self._ms: collections.deque[float] = collections.deque(maxlen=keep)
        self._latency: collections.deque[float] = collections.deque(maxlen=keep)

    def tick(self, ms: float | None = None, latency_ms: float | None = None, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        self._stamps.append(now)
        self._trim(now)
        if ms is not None:
            self._ms.append(ms)
        if latency_ms is not None:
            self._latency.append(latency_ms)
        self.frames += 1

    def _trim(self, now: float) -> None:
        while self._stamps and now - self._stamps[0] > self.window:
            self._stamps.popleft()

    def fps(self, now: float | None = None) -> float:
        """Output rate over the window ending ``now`` (0 when fewer than two frames fell in it)."""
        self._trim(time.perf_counter() if now is None else now)
        if len(self._stamps) < 2:
            return 0.0
        span = self._stamps[-1] - self._stamps[0]
        return (len(self._stamps) - 1) / span if span > 0 else 0.0

    @property
    def ms(self) -> float | None:
        """Mean processing time of recent frames that had any (None before the first)."""
        return sum(self._ms) / len(self._ms) if self._ms else None

    @property
    def latency_ms(self) -> float | None:
        return sum(self._latency) / len(self._latency) if self._latency else None
