"""`cuematte bench --report DIR`: a markdown report with PNG plots and the JSON behind it.

Plots (matplotlib, Agg): end-to-end and added latency CDFs per size, per-stage stacked bars (once per flash:
trimap + flash graph; per frame: pre-processing, per-frame graph, refinement, post-processing, compositing,
transport, the rest), and the returned frame rate over time. The stage figures come from the engine timed
in-process in the same run; the refinement's share of the per-frame graph is estimated by ONNX Runtime's
profiler, attributing each kernel to the module it was exported from (``pkg.torch.onnx.name_scopes``).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cuematte.clients.bench.compare import Comparison
from cuematte.clients.bench.stages import Record
from cuematte.clients.bench.webrtc import SizeResult

log = logging.getLogger(__name__)

# Issue 23's targets, per size offered at 30 fps: (frames back per second at least, added latency p95 at most).
TARGETS: dict[str, tuple[float, float]] = {"640x360": (29.0, 40.0), "1280x720": (20.0, 100.0)}
TARGET_FPS = 30.0  # what the client offers
REFINE_SCOPES = ("net.guided", "net.refiner")  # lite's guided upsampler, paper's BMN


# -- measurements the report needs beyond the stage bench ---------------------------------------------------------
def refinement_share(frame_onnx: Path, size: tuple[int, int], threads: int | None = None, runs: int = 5
                     ) -> float | None:
    """Fraction of the per-frame graph's kernel time spent in the refinement module, or None if unknown
    (no ``onnx`` package in a serving install, or a graph exported without name scopes)."""
    try:
        import onnx
    except ImportError:
        return None
    import onnxruntime as ort

    from cuematte.engine.backends.onnxruntime import default_threads

    model = onnx.load(str(frame_onnx), load_external_data=False)
    refine: set[str] = set()
    known: set[str] = set()
    for node in model.graph.node:
        scopes = {p.key: p.value for p in node.metadata_props}.get("pkg.torch.onnx.name_scopes", "")
        known.add(node.name)
        if any(f"'{s}'" in scopes for s in REFINE_SCOPES):
            refine.add(node.name)
    if not refine:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "frame")
        opts.intra_op_num_threads = threads or default_threads()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(frame_onnx), opts, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feeds = {}
        for inp in sess.get_inputs():
            shape = [d if isinstance(d, int) else 1 for d in inp.shape]
            if inp.name == "frame":
                shape = [1, 3, *size]
            elif inp.name == "person_mask":
                shape = [1, 1, *(d if isinstance(d, int) else 64 for d in inp.shape[2:])]
            feeds[inp.name] = rng.random(shape, dtype=np.float32)
        for _ in range(runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    total = inside = 0.0
    for ev in events:
        name = str(ev.get("name", ""))
        if ev.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name[: -len("_kernel_time")]
        # ORT renames nodes it rewrites (layout transforms add "_nchwc", fusions keep the first node's name, the
        # exporter's "node_" prefix is dropped on the way); kernels it adds itself (reorders) stay unattributed.
        candidates = (node, "node_" + node, node.removesuffix("_nchwc"), "node_" + node.removesuffix("_nchwc"))
        match = next((c for c in candidates if c in known), None)
        if match is None:
            continue
        total += float(ev.get("dur", 0))
        if match in refine:
            inside += float(ev.get("dur", 0))
    return inside / total if total > 0 else None


def composite_ms(size: tuple[int, int], repeat: int = 10) -> float:
    """Median ms of compositing onto a blurred background at (H, W): the post-matting work a call pays."""
    import time

    from cuematte.engine.compositing import Background, composite

    h, w = size
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = rng.random((h, w), dtype=np.float32)
    bg = Background("blur")
    out = []
    for _ in range(repeat + 2):
        t = time.perf_counter()
        composite(frame, alpha, frame, bg)
        out.append((time.perf_counter() - t) * 1000.0)
    return float(np.median(out[2:]))


@dataclass
class StageBreakdown:
    """Milliseconds (p50) per stage at one size."""

    size: str
    once: dict[str, float] = field(default_factory=dict)  # per flash
    per_frame: dict[str, float] = field(default_factory=dict)
    source: str = "in-process"  # where the per-frame figures come from: "service" stats or "in-process"

    def as_dict(self) -> dict[str, Any]:
        return {"size": self.size, "source": self.source,
                "once_per_flash_ms": {k: round(v, 2) for k, v in self.once.items()},
                "per_frame_ms": {k: round(v, 2) for k, v in self.per_frame.items()}}


def breakdown(records: Sequence[Record], size: str, *, refine_share: float | None,
              webrtc: SizeResult | None) -> StageBreakdown:
    """Stage p50s at ``size``: once-per-flash stages from the in-process stage bench; per-frame stages from the
    service's own ``stats`` during the WebRTC run when it reported them (else the stage bench), completed with
    transport (the pass-through median) and what the end-to-end median leaves."""
    p50 = {r.stage: r.p50_ms for r in records if r.size == size}
    b = StageBreakdown(size)
    b.once = {"trimap": p50.get("trimap", 0.0), "flash graph": p50.get("flash", 0.0)}
    service = webrtc.service_stages() if webrtc is not None else {}
    graph = service.get("graph", p50.get("frame_graph", 0.0))
    # Guided models refine in the engine, timed as its own stage; graphs that refine in-graph get the
    # profiler's share of the graph.
    engine_refine = service.get("refine", p50.get("frame_refine"))
    if engine_refine is not None:
        refine = engine_refine
    else:
        refine = graph * refine_share if refine_share is not None else 0.0
        graph -= refine
    if service:
        b.source = "service"
        b.per_frame = {"colour conversion": service.get("to_rgb", 0.0) + service.get("to_yuv", 0.0),
                       # With the graph beside the frames its share of a frame's path is moving its output there.
                       "pre-processing": service.get("pre", 0.0), "per-frame graph": graph + service.get("move", 0.0),
                       "refinement": refine, "post-processing": service.get("post", 0.0),
                       "compositing": service.get("composite", 0.0), "drift check": service.get("drift", 0.0)}
    else:
        b.per_frame = {"pre-processing": p50.get("frame_pre", 0.0), "per-frame graph": graph,
                       "refinement": refine, "post-processing": p50.get("frame_post", 0.0)}
    if webrtc is not None:
        b.per_frame["transport"] = float(np.median(webrtc.passthrough.latencies_ms))
        end_to_end = float(np.median(webrtc.matting.latencies_ms))
        b.per_frame["other"] = max(0.0, end_to_end - sum(b.per_frame.values()))
    return b


# -- plots --------------------------------------------------------------------------------------------------------
_COLORS = {"trimap": "#8c6bb1", "flash graph": "#c994c7", "colour conversion": "#fee391",
           "pre-processing": "#9ecae1", "per-frame graph": "#3182bd", "refinement": "#08519c",
           "post-processing": "#6baed6", "compositing": "#74c476", "drift check": "#c7e9c0",
           "transport": "#fdae6b", "other": "#bdbdbd"}
_SIZE_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 110})
    return plt


def _cdf(values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    v = np.sort(np.asarray(values, np.float64))
    return v, np.arange(1, v.size + 1) / max(1, v.size)


def plot_latency_cdf(results: Sequence[SizeResult], path: Path) -> None:
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, r in enumerate(results):
        c = _SIZE_COLORS[i % len(_SIZE_COLORS)]
        ax1.plot(*_cdf(r.matting.latencies_ms), color=c, label=f"{r.label} matting")
        ax1.plot(*_cdf(r.passthrough.latencies_ms), color=c, ls="--", label=f"{r.label} pass-through")
        added = r.added_ms
        ax2.plot(*_cdf(added.tolist()), color=c, label=f"{r.label} (p95 {np.percentile(added, 95):.1f} ms)")
    ax1.set(title="End-to-end latency (loopback WebRTC)", xlabel="ms from send to decoded return",
            ylabel="fraction of frames")
    ax2.axhline(0.95, color="k", ls=":", lw=1)
    for i, r in enumerate(results):
        if r.label in TARGETS:
            limit = TARGETS[r.label][1]
            ax2.axvline(limit, color=_SIZE_COLORS[i % len(_SIZE_COLORS)], ls=":", lw=1)
            ax2.text(limit, 0.5, f" {r.label} target: p95 ≤ {limit:g} ms", fontsize=8, rotation=90,
                     va="center", ha="right")
    ax2.set(title="Latency added by matting over pass-through", xlabel="ms", ylabel="fraction of frames")
    for ax in (ax1, ax2):
        ax.set_ylim(0, 1.01)
        ax.set_xlim(left=min(0.0, ax.get_xlim()[0]))
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_stages(stages: Sequence[StageBreakdown], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.5, 2.6 * len(stages) + 3), 4.6))
    labels: list[str] = []
    x = 0
    seen: set[str] = set()
    top = 0.0
    for s in stages:
        for kind, parts in (("once per flash", s.once), ("per frame", s.per_frame)):
            bottom = 0.0
            for name, ms in parts.items():
                if ms <= 0:
                    continue
                ax.bar(x, ms, bottom=bottom, color=_COLORS.get(name, "#999999"), width=0.7, edgecolor="white",
                       label=None if name in seen else name)
                if ms > 0.06 * max(1.0, top):
                    ax.text(x, bottom + ms / 2, f"{ms:.1f}", ha="center", va="center", fontsize=7)
                seen.add(name)
                bottom += ms
            ax.text(x, bottom, f"{bottom:.1f} ms", ha="center", va="bottom", fontsize=8, fontweight="bold")
            top = max(top, bottom)
            labels.append(f"{s.size}\n{kind}")
            x += 1
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(0, top * 1.15 + 1)
    ax.set(ylabel="ms (p50)", title="Where the time goes, per stage")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def fps_series(arrivals_s: Sequence[float], seconds: float, bin_s: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres in s, frames per second in each bin) of arrival times within [0, seconds)."""
    bins = max(1, math.floor(seconds / bin_s))
    counts, edges = np.histogram(np.asarray(arrivals_s), bins=bins, range=(0.0, bins * bin_s))
    return (edges[:-1] + edges[1:]) / 2, counts / bin_s


def plot_fps(results: Sequence[SizeResult], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.4))
    for i, r in enumerate(results):
        c = _SIZE_COLORS[i % len(_SIZE_COLORS)]
        ax.plot(*fps_series(r.matting.arrivals_s, r.matting.seconds), color=c, marker="o", ms=3,
                label=f"{r.label} matting ({r.matting.fps:.1f} fps)")
        ax.plot(*fps_series(r.passthrough.arrivals_s, r.passthrough.seconds), color=c, ls="--",
                label=f"{r.label} pass-through ({r.passthrough.fps:.1f} fps)")
    ax.axhline(TARGET_FPS, color="k", ls=":", lw=1)
    ax.set(title="Frames returned per second (0.5 s bins)", xlabel="s since the window's first frame came back",
           ylabel="fps")
    ax.set_ylim(0, max(TARGET_FPS * 1.3, ax.get_ylim()[1]))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -- the report ---------------------------------------------------------------------------------------------------
def _fmt(v: float | None, digits: int = 1) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def write_report(out_dir: Path, *, machine: dict[str, Any], model: dict[str, Any],
                 results: Sequence[SizeResult] = (), stages: Sequence[StageBreakdown] = (),
                 records: Sequence[Record] = (), comparisons: Sequence[Comparison] = (),
                 blur_composite_ms: dict[str, float] | None = None, settings: dict[str, Any] | None = None) -> Path:
    """Write report.md, the PNGs and bench.json into ``out_dir``; returns the markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "machine": machine,
        "model": model,
        "settings": settings or {},
        "results": [r.as_dict() for r in results],
        "stages": [s.as_dict() for s in stages],
        "records": [r.as_dict() for r in records],
        "compare": [c.as_dict() for c in comparisons],
        "blur_composite_ms": {k: round(v, 2) for k, v in (blur_composite_ms or {}).items()},
    }
    (out_dir / "bench.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = ["# cuematte latency report", ""]
    trained = "trained" if model.get("trained") else "**untrained (random init)**: timings are real, mattes are not"
    lines += [f"Model `{model.get('name')}` from `{model.get('path')}` ({trained}); "
              f"{machine.get('cpu')}, {machine.get('cores')} cores, backend {machine.get('backend')}, "
              f"threads {machine.get('threads') or 'default'}, onnxruntime {machine.get('onnxruntime')}.", ""]
    if results:
        s = settings or {}
        lines += [
            "## End-to-end (WebRTC on loopback)",
            "",
            f"Service: {s.get('service', '?')}. Each size runs a pass-through session (never flashed: the service "
            "returns frames untouched while it waits for the flash) and then a matting session (flash burst, then "
            "every frame through the per-frame graph), "
            f"{s.get('seconds', '?')} s each at {s.get('fps', '?')} fps offered, "
            f"codec {s.get('codec') or 'aiortc default (VP8)'}. "
            "Frame numbers travel in the pixels (a band of grey cells with a CRC at the top of the frame) and are "
            "read back from the returned frames, so latency is per frame, send to decoded return. *Added* latency "
            "is a frame's matting latency minus the pass-through median. The matting session uses background "
            "`none`: the session still runs its whole per-frame path, but the compositor then returns the frame, "
            "so the code band survives (a replaced background would overwrite it); compositing is timed "
            "in-process below.",
            "",
            "*Graph fps* is how often the per-frame graph ran, *age* how many frames its output lagged behind the "
            "frame matted and *waited* the share of frames matted that waited for a graph run, their output being "
            "more than the service's limit behind (the service's `stats`): with the graph beside the frames (the "
            "default), each frame is matted with the newest output moved onto it.",
            "",
            "| size | added p50 | added p95 | added p99 | end-to-end p50 | pass-through p50 | fps | dropped | "
            "graph fps | age (p50 / max) | waited |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in results:
            d = r.as_dict()
            a, g = d["added_latency_ms"], d["service_graph"]
            e = r.matting.percentiles()
            graph = (f"{g['fps']:.1f} | {g['age_p50']:g} / {g['age_max']:g} | {100 * g['waited']:.0f} %"
                     if g else "- | - | -")
            lines.append(f"| {r.label} | {_fmt(a['p50'])} ms | {_fmt(a['p95'])} ms | {_fmt(a['p99'])} ms | "
                         f"{_fmt(e['p50'])} ms | {_fmt(r.passthrough.percentiles()['p50'])} ms | "
                         f"{r.matting.fps:.1f} | {r.matting.dropped}/{r.matting.sent} | {graph} |")
        checks = []
        for r in results:
            if r.label not in TARGETS:
                continue
            min_fps, max_p95 = TARGETS[r.label]
            p95 = float(np.percentile(r.added_ms, 95))
            checks.append(f"{r.label}: ≥ {min_fps:g} fps — {'met' if r.matting.fps >= min_fps else 'missed'} "
                          f"({r.matting.fps:.1f}), added p95 ≤ {max_p95:g} ms — "
                          f"{'met' if p95 <= max_p95 else 'missed'} ({p95:.1f} ms)")
        if checks:
            lines += ["", f"Targets ({TARGET_FPS:g} fps offered): " + "; ".join(checks) + "."]
        lines += ["", "![latency CDF](latency_cdf.png)", "", "![fps over time](fps.png)", ""]
    if stages:
        from_service = any(st.source == "service" for st in stages)
        lines += ["## Stages", "",
                  "ms at each size. Once per flash: trimap and flash graph, timed in-process (p50). Per frame: "
                  + ("the medians the service reported in its `stats` messages during the matting window"
                     if from_service else "the engine timed in-process (p50)")
                  + ". *refinement* is the guided filter the engine applies at the frame's size (guided models), "
                  "or the refinement module's share of the per-frame graph for graphs that refine in-graph (ONNX "
                  "Runtime profiler, by export scope); *transport* is the pass-through median (encode, decode and "
                  "jitter buffers, both ways); *other* is what the end-to-end median leaves (queueing in the "
                  "latest-frame slot, thread hand-offs, the encoder waiting for the next frame).", "",
                  "![stages](stages.png)", ""]
        columns = list(dict.fromkeys(k for st in stages for k in [*st.once, *st.per_frame]))
        lines += ["| size | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
        for st in stages:
            vals = st.once | st.per_frame
            lines.append(f"| {st.size} | " + " | ".join(_fmt(vals.get(c)) for c in columns) + " |")
        lines.append("")
    if blur_composite_ms:
        lines += ["Compositing onto a blurred background (what a call with `blur` pays on top; the latency run "
                  "uses `none`), timed in-process: "
                  + ", ".join(f"{k} {v:.1f} ms" for k, v in blur_composite_ms.items()) + ".", ""]
    for cmp in comparisons:
        lines += [f"## Other models at {cmp.size}", "",
                  "Ratio = their time / our per-frame graph's with its refinement to the frame's size, median over "
                  "interleaved rounds (> 1: slower than "
                  f"ours). Ours: {cmp.ours_p50_ms:.2f} ms p50. *× path*: the same against our whole per-frame path "
                  f"(segmenter, tracking, guidance, graph, refinement, post: {cmp.path_p50_ms:.2f} ms p50), which "
                  "a single-frame model such as RVM does not need. Inputs synthesised from each graph's input shapes.",
                  "", "| model | size fed | p50 ms | × ours | × path |", "| --- | --- | ---: | ---: | ---: |"]
        for c in cmp.results:
            if c.error:
                lines.append(f"| {c.name} | – | – | error: {c.error} | – |")
            else:
                lines.append(f"| {c.name} | {c.size} | {_fmt(c.p50_ms, 2)} | {_fmt(c.ratio, 2)} | "
                             f"{_fmt(c.ratio_to_path, 2)} |")
        lines.append("")
    lines += ["Raw numbers: [bench.json](bench.json).", ""]
    if results:
        plot_latency_cdf(results, out_dir / "latency_cdf.png")
        plot_fps(results, out_dir / "fps.png")
    if stages:
        plot_stages(stages, out_dir / "stages.png")
    md = out_dir / "report.md"
    md.write_text("\n".join(lines))
    return md
