"""Per-stage latency of the flash pipeline: trimap, flash graph, cached per-frame path, first frame.

Stages (milliseconds, p50/p90 over ``repeat`` runs after ``warmup`` runs):

* ``trimap`` — alignment, flash-ratio map, segmentation, erode/dilate (once per flash);
* ``flash`` — the flash graph producing T^f (once per flash);
* ``frame`` — the steady-state per-frame path with cached T^f: resize, graph, post-processing;
  ``frame_graph`` is the ONNX graph alone, ``frame_refine`` the guided filter applied at the frame's size
  (guided models), ``frame_pre``/``frame_post`` the numpy work around them;
* ``total_first_frame`` — ``set_flash`` followed by the first ``matte``: what the first frame costs.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from cuematte.engine.session import MattingSession


@dataclass(frozen=True)
class Record:
    stage: str
    size: str  # "WxH"
    p50_ms: float
    p90_ms: float
    n: int

    def as_dict(self) -> dict[str, object]:
        return {"stage": self.stage, "size": self.size, "p50_ms": round(self.p50_ms, 3),
                "p90_ms": round(self.p90_ms, 3), "n": self.n}


def parse_sizes(spec: str) -> list[tuple[int, int]]:
    """'640x360,1280x720' -> [(360, 640), (720, 1280)] as (H, W)."""
    from cuematte.engine.errors import InputError

    sizes = []
    for part in spec.split(","):
        try:
            w, h = (int(v) for v in part.lower().strip().split("x"))
        except ValueError:
            raise InputError(f"size {part!r} is not WIDTHxHEIGHT (e.g. 1280x720)") from None
        if w < 16 or h < 16:
            raise InputError(f"size {part!r} is too small")
        sizes.append((h, w))
    return sizes


def machine_info(threads: int | None, backend: str) -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "backend": backend,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _time(fn: Callable[[], object], warmup: int, repeat: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000.0)
    return out


def _rec(stage: str, size: tuple[int, int], ms: list[float]) -> Record:
    return Record(stage, f"{size[1]}x{size[0]}", float(np.percentile(ms, 50)), float(np.percentile(ms, 90)), len(ms))


def bench_stages(session: MattingSession, flash: np.ndarray, noflash: np.ndarray, frame: np.ndarray,
                 size: tuple[int, int], *, warmup: int = 3, repeat: int = 20) -> list[Record]:
    """Time every stage at ``size`` (H, W); the inputs are resized to it first."""
    from cuematte.engine.cues.trimap import build_flash_trimap
    from cuematte.engine.frames import resize

    f, n, x = resize(flash, size), resize(noflash, size), resize(frame, size)
    records = [_rec("trimap", size, _time(lambda: build_flash_trimap(f, n, session.segmenter, session.trimap_params),
                                          max(1, warmup // 2), max(5, repeat // 2)))]
    session.set_flash(f, n)
    state_flash = session._flash
    assert state_flash is not None
    feeds = state_flash.inputs
    records.append(_rec("flash", size, _time(lambda: session.flash_graph.run(feeds), warmup, repeat)))

    parts: dict[str, list[float]] = {"frame_pre": [], "frame_graph": [], "frame_refine": [], "frame_post": []}

    def frame_once() -> None:
        session.matte(x)
        for key in ("pre", "graph", "refine", "post"):
            parts[f"frame_{key}"].append(session.times.ms[key])

    records.append(_rec("frame", size, _time(frame_once, warmup, repeat)))
    records += [_rec(k, size, v[-repeat:]) for k, v in parts.items()]

    def first_frame() -> None:
        session.set_flash(f, n)
        session.matte(x)

    records.append(_rec("total_first_frame", size, _time(first_frame, 1, max(5, repeat // 2))))
    return records


def format_table(records: list[Record]) -> str:
    lines = [f"{'stage':<18} {'size':>10} {'p50 ms':>9} {'p90 ms':>9} {'n':>4}"]
    lines += [f"{r.stage:<18} {r.size:>10} {r.p50_ms:>9.2f} {r.p90_ms:>9.2f} {r.n:>4}" for r in records]
    return "\n".join(lines)
