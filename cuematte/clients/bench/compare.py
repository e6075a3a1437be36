"""Time other ONNX matting models against ours in the same run, as ratios.

Absolute milliseconds on a shared 2-core machine move by tens of percent between runs; a ratio measured in
interleaved rounds (ours, theirs, ours, theirs, ...) does not, because both sides see the same noise. Each
round times our per-frame graph (cached T^f, the cost every frame pays) and then every other model once; the
reported ratio is the median over rounds of theirs / ours, so > 1 means slower than ours.

Inputs are synthesised from each graph's declared input shapes (see :func:`synthesise_inputs`): the first
rank-4 input that is not a recurrent state is the image at the benchmark size, recurrent states (``r1i``,
``*state*``, ``*rec*``, ``*hidden*``) start at the 1x1x1x1 zeros that e.g. Robust Video Matting expects,
one-element ``*ratio*`` inputs get 0.25, every other dynamic dimension is 1. A model that rejects the size
(stride constraints) is retried with height and width rounded up to a multiple of 32; the size actually fed
is reported next to the ratio.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cuematte.engine.errors import InputError
from cuematte.engine.session import MattingSession, to_nchw

_DTYPES: dict[str, type] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}
_STATE = re.compile(r"^r\d+i$|rec|state|hidden|memory", re.IGNORECASE)


@dataclass(frozen=True)
class CompareResult:
    name: str
    path: str
    size: str  # "WxH" fed to this model ("" if it never ran)
    inputs: dict[str, list[int]] = field(default_factory=dict)
    p50_ms: float | None = None
    ours_p50_ms: float | None = None
    ratio: float | None = None  # median over rounds of theirs / ours; > 1 = slower than ours
    n: int = 0
    error: str | None = None
    # The same against our whole per-frame path (segmenter, tracking and guidance included), which the graph
    # ratio leaves out: RVM's graph needs nothing before it.
    ratio_to_path: float | None = None

    def as_dict(self) -> dict[str, object]:
        def r3(x: float | None) -> float | None:
            return None if x is None else round(x, 3)

        return {"name": self.name, "path": self.path, "size": self.size, "inputs": self.inputs,
                "p50_ms": r3(self.p50_ms), "ours_p50_ms": r3(self.ours_p50_ms), "ratio_to_ours": r3(self.ratio),
                "ratio_to_path": r3(self.ratio_to_path), "n": self.n, "error": self.error}


def _dim(d: object, default: int) -> int:
    return d if isinstance(d, int) and d > 0 else default


def synthesise_inputs(inputs: Sequence[object], size: tuple[int, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds for ONNX Runtime input metadata (``.name``, ``.shape``, ``.type``) at image size (H, W)."""
    h, w = size
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    have_image = False
    for inp in inputs:
        name: str = inp.name  # type: ignore[attr-defined]
        dims: list[object] = list(inp.shape)  # type: ignore[attr-defined]
        type_str: str = inp.type  # type: ignore[attr-defined]
        dtype = _DTYPES.get(type_str)
        if dtype is None:
            raise InputError(f"input {name!r} has type {type_str}, which --compare cannot synthesise")
        state = bool(_STATE.search(name))
        shape: list[int]
        if len(dims) == 4 and not state:
            if dims[3] == 3 and dims[1] != 3:  # NHWC
                shape = [1, _dim(dims[1], h), _dim(dims[2], w), 3]
            else:
                shape = [1, _dim(dims[1], 1 if have_image else 3), _dim(dims[2], h), _dim(dims[3], w)]
            have_image = True
        else:
            shape = [_dim(d, 1) for d in dims]
        value: np.ndarray
        if state:
            value = np.zeros(shape, dtype)
        elif dtype == np.uint8:
            value = rng.integers(0, 256, shape).astype(np.uint8)
        elif np.issubdtype(dtype, np.floating):
            if int(np.prod(shape)) == 1 and "ratio" in name.lower():
                value = np.full(shape, 0.25, dtype)
            else:
                value = rng.random(shape, dtype=np.float32).astype(dtype)
        elif dtype == np.bool_:
            value = np.ones(shape, np.bool_)
        else:
            value = np.zeros(shape, dtype)
        feeds[name] = value
    return feeds


def _align(size: tuple[int, int], to: int) -> tuple[int, int]:
    return (-(-size[0] // to) * to, -(-size[1] // to) * to)


def _image_size(feeds: dict[str, np.ndarray], fallback: tuple[int, int]) -> str:
    for v in feeds.values():
        if v.ndim == 4 and max(v.shape[1:]) > 4:
            h, w = (v.shape[1], v.shape[2]) if v.shape[3] == 3 and v.shape[1] != 3 else (v.shape[2], v.shape[3])
            return f"{w}x{h}"
    return f"{fallback[1]}x{fallback[0]}"


def _load(path: Path, threads: int | None) -> ort.InferenceSession:
    """The same session options for every model, ours included. Spinning is off: with it on, the pool of the
    model that just ran keeps spinning on the 2 cores and slows the next one, which biases the ratio."""
    from cuematte.engine.backends.onnxruntime import default_threads

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _prepare(path: Path, size: tuple[int, int], threads: int | None
             ) -> tuple[Callable[[], object], dict[str, np.ndarray]]:
    """Load ``path`` into ONNX Runtime and find feeds it accepts (as given, then 32-aligned)."""
    sess = _load(path, threads)
    metas = sess.get_inputs()
    error: Exception | None = None
    for s in (size, _align(size, 32)):
        feeds = synthesise_inputs(metas, s)
        try:
            sess.run(None, feeds)
        except Exception as exc:  # onnxruntime raises its own types for shape errors
            error = exc
            continue
        return partial(sess.run, None, feeds), feeds
    raise InputError(f"{path.name} rejects synthesised inputs at {size[1]}x{size[0]}: {str(error)[:300]}")


def _ours(session: MattingSession, flash: np.ndarray, noflash: np.ndarray, size: tuple[int, int],
          threads: int | None) -> Callable[[], object]:
    """Our per-frame graph with cached T^f, and for guided models the engine's refinement to ``size`` after it:
    the cost every frame pays to get a full-resolution alpha, as RVM's graph (refiner included) does."""
    from cuematte.engine.cues.trimap import UNKNOWN
    from cuematte.engine.frames import resize
    from cuematte.engine.refine import Workspace, frame_result

    f, n = resize(flash, size), resize(noflash, size)
    session.set_flash(f, n)
    state = session._flash  # the cached features, as the stage bench uses them
    assert state is not None
    info = session.model.info
    feeds = {"frame_cmn": to_nchw(resize(n, info.cmn_size)), **state.cache}
    if info.spec.frame_input("frame"):
        feeds["frame"] = to_nchw(n)
    if info.person_mask:
        feeds["person_mask"] = np.ones((1, 1, *info.cmn_size), np.float32)
    guidance = None
    if info.guidance:  # all unknown: the network's whole output is used, the most it can cost
        feeds["guidance"] = np.zeros((1, 3, *info.cmn_size), np.float32)
        feeds["guidance"][:, 1] = 1.0
        guidance = np.full(info.cmn_size, UNKNOWN, np.uint8)
    sess = _load(info.path / info.manifest["graphs"]["frame"], threads)
    names = [o.name for o in sess.get_outputs()]
    workspace = Workspace()  # buffers kept between frames, as the session keeps them

    def once() -> object:
        return frame_result(dict(zip(names, sess.run(None, feeds), strict=True)), n, guidance, workspace)

    return once


@dataclass(frozen=True)
class Comparison:
    size: str  # "WxH" of our graph
    ours_p50_ms: float  # our per-frame graph with its refinement
    results: list[CompareResult]
    path_p50_ms: float = 0.0  # our whole per-frame path: ``MattingSession.matte`` on the same frame

    def as_dict(self) -> dict[str, object]:
        return {"size": self.size, "ours_p50_ms": round(self.ours_p50_ms, 3),
                "path_p50_ms": round(self.path_p50_ms, 3), "models": [r.as_dict() for r in self.results]}


def compare_models(paths: Sequence[Path], session: MattingSession, flash: np.ndarray, noflash: np.ndarray,
                   size: tuple[int, int], *, threads: int | None = None, warmup: int = 3,
                   repeat: int = 20) -> Comparison:
    """Interleaved timing of our per-frame graph (with its refinement), our whole per-frame path and every model in
    ``paths`` at ``size`` (H, W)."""
    from cuematte.engine.frames import resize

    ours = _ours(session, flash, noflash, size, threads)
    whole = partial(session.matte, resize(noflash, size))  # _ours left the session flashed at this size
    results: dict[int, CompareResult] = {}
    runners: list[tuple[int, Callable[[], object]]] = []
    for i, path in enumerate(paths):
        p = Path(path)
        if not p.is_file():
            results[i] = CompareResult(p.name, str(p), "", error="file not found")
            continue
        try:
            fn, feeds = _prepare(p, size, threads)
        except Exception as exc:  # a broken or unsupported model is reported, the others still run
            results[i] = CompareResult(p.name, str(p), "", error=str(exc)[:300])
            continue
        runners.append((i, fn))
        results[i] = CompareResult(p.name, str(p), _image_size(feeds, size),
                                   inputs={k: list(v.shape) for k, v in feeds.items()})
    for _ in range(warmup):
        ours()
        whole()
        for _, fn in runners:
            fn()
    ours_ms: list[float] = []
    path_ms: list[float] = []
    theirs: dict[int, list[float]] = {i: [] for i, _ in runners}
    for _ in range(repeat):
        t = time.perf_counter()
        ours()
        ours_ms.append((time.perf_counter() - t) * 1000.0)
        t = time.perf_counter()
        whole()
        path_ms.append((time.perf_counter() - t) * 1000.0)
        for i, fn in runners:
            t = time.perf_counter()
            fn()
            theirs[i].append((time.perf_counter() - t) * 1000.0)
    ours_p50 = float(np.median(ours_ms)) if ours_ms else 0.0
    for i, ms in theirs.items():
        r = results[i]
        results[i] = CompareResult(r.name, r.path, r.size, r.inputs, p50_ms=float(np.median(ms)),
                                   ours_p50_ms=ours_p50, ratio=float(np.median(np.asarray(ms) / np.asarray(ours_ms))),
                                   n=len(ms), ratio_to_path=float(np.median(np.asarray(ms) / np.asarray(path_ms))))
    return Comparison(f"{size[1]}x{size[0]}", ours_p50, [results[i] for i in range(len(paths))],
                      path_p50_ms=float(np.median(path_ms)) if path_ms else 0.0)


def format_compare(cmp: Comparison) -> str:
    lines = [f"{'model':<28} {'size':>10} {'p50 ms':>9} {'x ours':>8} {'x path':>8}"]
    path_ratio = cmp.path_p50_ms / cmp.ours_p50_ms if cmp.ours_p50_ms else 0.0
    lines.append(f"{'ours (graph + refinement)':<28} {cmp.size:>10} {cmp.ours_p50_ms:>9.2f} {1.0:>8.2f}")
    lines.append(f"{'ours (whole per-frame path)':<28} {cmp.size:>10} {cmp.path_p50_ms:>9.2f} {path_ratio:>8.2f} "
                 f"{1.0:>8.2f}")
    for r in cmp.results:
        if r.error:
            lines.append(f"{r.name:<28} {'-':>10} {'-':>9} {'-':>8} {'-':>8}  error: {r.error}")
        else:
            lines.append(f"{r.name:<28} {r.size:>10} {r.p50_ms or 0:>9.2f} {r.ratio or 0:>8.2f} "
                         f"{r.ratio_to_path or 0:>8.2f}")
    return "\n".join(lines)
