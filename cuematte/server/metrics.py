"""A few Prometheus metrics in the text exposition format (version 0.0.4), without a client library.

Observations come from the per-session worker threads and the event loop, so every update takes a lock.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds. Per-frame stages on CPU sit between 0.1 ms (composite at 360p) and ~100 ms (graph at 720p);
# the flash path (trimap + flash graph) up to about a second.
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)

Labels = tuple[tuple[str, str], ...]


def _fmt_labels(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    items = labels + extra
    if not items:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in items)
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, lock: threading.Lock) -> None:
        self.name = name
        self.help = help_text
        self._lock = lock

    def samples(self) -> Iterable[str]:
        raise NotImplementedError

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}", *self.samples()]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, lock: threading.Lock) -> None:
        super().__init__(name, help_text, lock)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(tuple(sorted(labels.items())), 0.0)

    def samples(self) -> Iterable[str]:
        with self._lock:
            items = sorted(self._values.items()) or [((), 0.0)]
        return [f"{self.name}{_fmt_labels(k)} {_num(v)}" for k, v in items]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[tuple(sorted(labels.items()))] = value


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, lock: threading.Lock,
                 buckets: tuple[float, ...] = STAGE_BUCKETS) -> None:
        super().__init__(name, help_text, lock)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[Labels, tuple[list[int], list[float]]] = {}  # counts per bucket (+Inf last), [sum]

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts, total = self._series.setdefault(key, ([0] * (len(self.buckets) + 1), [0.0]))
            counts[bisect.bisect_left(self.buckets, value)] += 1
            total[0] += value

    def count(self, **labels: str) -> int:
        with self._lock:
            series = self._series.get(tuple(sorted(labels.items())))
            return sum(series[0]) if series else 0

    def samples(self) -> Iterable[str]:
        out = []
        with self._lock:
            items = sorted((k, (list(c), t[0])) for k, (c, t) in self._series.items())
        for key, (counts, total) in items:
            running = 0
            for bound, n in zip((*self.buckets, float("inf")), counts, strict=True):
                running += n
                out.append(f"{self.name}_bucket{_fmt_labels(key, (('le', _num(bound)),))} {running}")
            out.append(f"{self.name}_sum{_fmt_labels(key)} {_num(round(total, 6))}")
            out.append(f"{self.name}_count{_fmt_labels(key)} {running}")
        return out


class Metrics:
    """The service's metrics; one instance per app."""

    def __init__(self) -> None:
        lock = threading.Lock()
        self.sessions = Gauge("cuematte_sessions", "WebRTC sessions open now.", lock)
        self.sessions_total = Counter("cuematte_sessions_total", "WebRTC sessions accepted.", lock)
        self.rejected = Counter("cuematte_offers_rejected_total",
                                "Offers refused, by reason (bad_offer, unauthorized, capacity).", lock)
        self.frames_received = Counter("cuematte_frames_received_total", "Decoded camera frames received.", lock)
        self.frames_processed = Counter("cuematte_frames_processed_total",
                                        "Frames sent back, by mode (matting, passthrough).", lock)
        self.frames_dropped = Counter("cuematte_frames_dropped_total",
                                      "Camera frames replaced by a newer one before processing (latest wins).", lock)
        self.flashes = Counter("cuematte_flashes_total", "Flash captures, by result (ok, error).", lock)
        self.drift = Counter("cuematte_scene_drift_total", "Times the scene drifted away from the cached flash.",
                             lock)
        self.stage = Histogram("cuematte_stage_seconds",
                               "Per-stage latency: trimap, flash (flash path); decode, pre, graph, refine, post, "
                               "composite, encode (per frame).", lock)
        self.frame = Histogram("cuematte_frame_seconds",
                               "Per-frame latency in the service, from decoded frame to processed frame, by mode.",
                               lock)
        self._all: list[_Metric] = [self.sessions, self.sessions_total, self.rejected, self.frames_received,
                                    self.frames_processed, self.frames_dropped, self.flashes, self.drift,
                                    self.stage, self.frame]

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._all:
            lines += metric.render()
        return "\n".join(lines) + "\n"
