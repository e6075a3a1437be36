"""TensorRT engine builds from the exported ONNX graphs (the builder half; the runner is
``engine/backends/tensorrt.py``). Dynamic frame sizes become one optimisation profile per graph."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from engine.errors import BackendError
from training.models.config import FNFConfig

log = logging.getLogger(__name__)


def build_engine(onnx_path: Path, plan_path: Path, *, profiles: dict[str, tuple[tuple[int, ...], ...]],
                 fp16: bool = True, workspace_gb: float = 2.0) -> Path:
    """Parse ``onnx_path`` and serialize an engine to ``plan_path``.

    ``profiles`` maps each dynamic input name to its (min, opt, max) shapes.
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError("building TensorRT engines needs the tensorrt package on a CUDA machine") from exc
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16 and builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profiles.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine for {onnx_path.name}")
    plan_path.write_bytes(bytes(serialized))
    log.info("built %s (%.1f MB)", plan_path, plan_path.stat().st_size / 1e6)
    return plan_path


def build_model_engines(model_dir: Path, *, max_size: tuple[int, int] = (1080, 1920),
                        opt_size: tuple[int, int] = (720, 1280), fp16: bool = True) -> list[Path]:
    """Build ``flash.plan`` and ``frame.plan`` beside the ONNX graphs of a model folder."""
    manifest = json.loads((model_dir / "model.json").read_text())
    n, c = manifest["flash_features_shape"]
    lo, opt, hi = (1, 3, 64, 64), (1, 3, *opt_size), (1, 3, *max_size)
    feats = (1, n, c)
    flash_profiles: dict[str, tuple[tuple[int, ...], ...]] = {"flash": (lo, opt, hi), "flash_trimap": (lo, opt, hi)}
    plans = [build_engine(model_dir / "flash.onnx", model_dir / "flash.plan", fp16=fp16, profiles=flash_profiles)]
    frame_profiles: dict[str, tuple[tuple[int, ...], ...]] = {
        "frame": (lo, opt, hi),
        "flash_features": (feats, feats, feats),
    }
    h, w = (int(v) for v in manifest["config"]["cmn_size"])
    if manifest["config"].get("person_mask"):
        frame_profiles["person_mask"] = ((1, 1, 16, 16), (1, 1, h, w), (1, 1, *max_size))
    if manifest["config"].get("flash_prior"):
        channels = FNFConfig.from_dict(manifest["config"]).prior_channels
        frame_profiles["flash_prior"] = ((1, channels, h, w),) * 3
    plans.append(build_engine(model_dir / "frame.onnx", model_dir / "frame.plan", fp16=fp16, profiles=frame_profiles))
    return plans
