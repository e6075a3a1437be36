"""GPU paths: ONNX Runtime CUDA/TensorRT providers and native TensorRT engines. Skipped without CUDA."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from engine.session import MattingSession

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("quiet_untrained")]

HAS_ORT_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _cpu_reference(model_dir: Path, scene: tuple[np.ndarray, ...]) -> np.ndarray:
    s = MattingSession(model_dir, segmenter="grabcut")
    s.set_flash(scene[0], scene[1])
    return s.matte(scene[1]).alpha


@pytest.mark.skipif(not HAS_ORT_CUDA, reason="onnxruntime has no CUDAExecutionProvider here (no GPU)")
def test_ort_cuda_matches_cpu(lite_model_dir: Path, scene: tuple[np.ndarray, ...]) -> None:
    ref = _cpu_reference(lite_model_dir, scene)
    s = MattingSession(lite_model_dir, providers=("cuda",), segmenter="grabcut")
    s.set_flash(scene[0], scene[1])
    assert np.abs(s.matte(scene[1]).alpha - ref).max() <= 1e-3


@pytest.mark.skipif(not (HAS_TRT and HAS_ORT_CUDA), reason="TensorRT and CUDA are not available here")
def test_native_tensorrt_engine_matches_cpu(lite_model_dir: Path, tmp_path: Path,
                                            scene: tuple[np.ndarray, ...]) -> None:
    import shutil

    from export.tensorrt import build_model_engines

    model = tmp_path / "m"
    shutil.copytree(lite_model_dir, model)
    build_model_engines(model, max_size=(720, 1280), opt_size=(360, 640))
    ref = _cpu_reference(model, scene)
    s = MattingSession(model, providers=("trt-native",), segmenter="grabcut")
    s.set_flash(scene[0], scene[1])
    # FP16 engine: a looser, stated tolerance than the fp32 ONNX parity (1e-3).
    assert np.abs(s.matte(scene[1]).alpha - ref).max() <= 2e-2
