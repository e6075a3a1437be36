"""`cuematte bench --parallax`: the parallax graph's latency per patch (the paper's 448x448 patches)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from cuematte.engine.parallax.model import INPUTS, ParallaxModel


def patch_feeds(patch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random views and an all-unknown trimap at (1, 3, patch, patch): the graph's cost does not depend on them."""
    rng = np.random.default_rng(seed)
    feeds = {name: rng.random((1, 3, patch, patch), dtype=np.float32) for name in INPUTS[:4]}
    unknown = np.zeros((1, 3, patch, patch), np.float32)
    unknown[:, 1] = 1.0
    feeds |= {name: unknown for name in INPUTS[4:]}
    return feeds


def bench_patch(model: Path | str | None, *, threads: int | None, warmup: int, repeat: int) -> dict[str, Any]:
    """Milliseconds per patch (p50, p95, min) of the parallax graph on ONNX Runtime CPU."""
    graph = ParallaxModel(model, threads)
    feeds = patch_feeds(graph.info.patch)
    for _ in range(warmup):
        graph.run(feeds)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        graph.run(feeds)
        times.append((time.perf_counter() - t0) * 1000.0)
    return {"model": graph.info.name, "patch": graph.info.patch, "threads": threads,
            "p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)),
            "min_ms": float(min(times)), "repeat": repeat}


def format_patch(r: dict[str, Any]) -> str:
    return (f"parallax {r['model']}: one {r['patch']}x{r['patch']} patch p50 {r['p50_ms']:.1f} ms, "
            f"p95 {r['p95_ms']:.1f} ms, min {r['min_ms']:.1f} ms ({r['repeat']} runs, threads "
            f"{r['threads'] or 'default'})")
