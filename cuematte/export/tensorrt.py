"""TensorRT plans from a model folder's ONNX graphs: the builder half of TensorRT's builder/runner split (the
runner is ``cuematte/engine/backends/tensorrt.py``). ``cuematte build-engines`` calls :func:`build_plans`.

The flash graph has fixed shapes (it takes the CMN grid); the frame graph gets one optimisation profile over
the frame's height and width. Plans are tied to the TensorRT version, the GPU and the graphs they were built
from, so the folder's ``manifest.json`` records all three and the runner refuses plans that do not match.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from cuematte.engine.backends.tensorrt import (
    PLAN_FORMAT,
    PLAN_FORMAT_VERSION,
    PlanManifest,
    gpu_identity,
    import_tensorrt,
)
from cuematte.engine.errors import BackendError
from cuematte.engine.model import read_model_info
from cuematte.export.trt_check import check_graph

log = logging.getLogger(__name__)

MIN_SIDE = 64  # smallest frame side a plan takes
TIMING_CACHE = "timing.cache"


def frame_profile(max_size: tuple[int, int], opt_size: tuple[int, int]) -> dict[str, list[int]]:
    """(H, W) corners of the frame profile. ``max_size`` is (width, height) as users write it; its long side
    bounds both dimensions so that portrait frames of the same size fit too."""
    long_side = max(max_size)
    if min(opt_size) < MIN_SIDE or max(opt_size) > long_side:
        raise BackendError(f"the profile's optimum {opt_size[1]}x{opt_size[0]} is outside {MIN_SIDE}..{long_side}")
    return {"min": [MIN_SIDE, MIN_SIDE], "opt": list(opt_size), "max": [long_side, long_side]}


def build_engine(trt: Any, onnx_path: Path, plan_path: Path, *, profile: dict[str, list[int]] | None,
                 fp16: bool, timing_cache: Path, workspace_gb: float = 4.0) -> Path:
    """Parse ``onnx_path`` and serialise a plan to ``plan_path``. ``profile`` (frame graph only) gives the
    min/opt/max (H, W) of the dynamic ``frame`` input. The timing cache is read and written back."""
    findings = check_graph(onnx_path)
    if findings:
        raise BackendError(f"TensorRT cannot build {onnx_path}: " + "; ".join(str(f) for f in findings))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    if profile is not None:
        opt_profile = builder.create_optimization_profile()
        lo, opt, hi = ((1, 3, *profile[k]) for k in ("min", "opt", "max"))
        opt_profile.set_shape("frame", lo, opt, hi)
        config.add_optimization_profile(opt_profile)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build a plan for {onnx_path.name} (see its log above)")
    plan_path.write_bytes(bytes(serialized))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    log.info("built %s in %.0f s (%.1f MB)", plan_path, time.perf_counter() - t0, plan_path.stat().st_size / 1e6)
    return plan_path


def build_plans(model_dir: Path, out_dir: Path, *, fp16: bool = True, max_size: tuple[int, int] = (1920, 1080),
                opt_size: tuple[int, int] = (720, 1280)) -> PlanManifest:
    """Build ``flash.plan`` and ``frame.plan`` for the model in ``model_dir`` into ``out_dir`` with its
    ``manifest.json``; returns the manifest. BackendError without TensorRT or a GPU."""
    trt = import_tensorrt()
    gpu = gpu_identity()
    info = read_model_info(model_dir)
    graphs = info.manifest["graphs"]
    out_dir.mkdir(parents=True, exist_ok=True)
    profile = frame_profile(max_size, opt_size)
    plans = {}
    for role in ("flash", "frame"):
        plan = out_dir / f"{role}.plan"
        # Only a frame graph that takes the full-resolution frame has a dynamic input (guided models are static).
        dynamic = role == "frame" and info.spec.frame_input("frame")
        build_engine(trt, model_dir / graphs[role], plan, profile=profile if dynamic else None, fp16=fp16,
                     timing_cache=out_dir / TIMING_CACHE)
        plans[role] = plan.name
    manifest: dict[str, Any] = {
        "format": PLAN_FORMAT,
        "format_version": PLAN_FORMAT_VERSION,
        "model": info.name,
        "model_path": str(model_dir),
        "tensorrt": trt.__version__,
        **gpu,
        "graphs": dict(info.manifest.get("sha256", {})),
        "plans": plans,
        "profile": profile,
        "precision": "fp16" if fp16 else "fp32",
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return PlanManifest.read(out_dir)


def plans_fit(model_dir: Path, out_dir: Path) -> str | None:
    """Why the plans in ``out_dir`` cannot serve ``model_dir`` on this machine (None: they can)."""
    try:
        trt = import_tensorrt()
        manifest = PlanManifest.read(out_dir)
        return manifest.mismatch(trt.__version__, gpu_identity(),
                                 dict(read_model_info(model_dir).manifest.get("sha256", {})))
    except BackendError as exc:
        return str(exc)
