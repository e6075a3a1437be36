"""GPU backends against ONNX Runtime CPU on the shipped model: ONNX Runtime CUDA and native TensorRT plans.
Skipped, with the reason, where there is no CUDA (``make gpu-check`` runs them on a GPU machine)."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from cuematte.engine.model import FlashModel
from cuematte.engine.session import MattingSession

pytestmark = pytest.mark.gpu

HAS_ORT_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
HAS_TRT = importlib.util.find_spec("tensorrt") is not None
# FP16 plans and TF32 convolutions: the stated tolerance on alpha, against fp32 ONNX Runtime CPU.
ALPHA_TOL = 1e-2
SIZES = ((720, 1280), (1080, 1920))


def _scene(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A real person (scikit-image's astronaut) at (h, w) and a flash rendered on her."""
    import cv2
    from skimage import data

    from cuematte.engine.cues.segmenter import MediaPipeSegmenter
    from cuematte.engine.cues.simulated_flash import render_flash

    noflash = np.ascontiguousarray(cv2.resize(data.astronaut(), (w, h), interpolation=cv2.INTER_LINEAR))
    return render_flash(noflash, MediaPipeSegmenter().segment(noflash)), noflash


def _alphas(session: MattingSession, flash: np.ndarray, noflash: np.ndarray, frames: int = 3) -> list[np.ndarray]:
    session.set_flash(flash, noflash)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(frames):  # the same cached flash features, slightly different frames
        noisy = np.clip(noflash.astype(np.int16) + rng.integers(-3, 4, noflash.shape), 0, 255).astype(np.uint8)
        out.append(session.matte(noisy).alpha)
    return out


def _compare(backend: str, plans: Path | None = None) -> None:
    cpu = FlashModel(backend="cpu")
    gpu = FlashModel(backend=backend, plans=plans)
    assert gpu.backend == backend, gpu.backend_reason
    for h, w in SIZES:
        flash, noflash = _scene(h, w)
        ref = _alphas(MattingSession(cpu, max_side=max(h, w)), flash, noflash)
        got = _alphas(MattingSession(gpu, max_side=max(h, w)), flash, noflash)
        err = max(float(np.abs(a - b).max()) for a, b in zip(ref, got, strict=True))
        unknown = float(np.mean((ref[0] > 0.02) & (ref[0] < 0.98)))
        print(f"{backend} {w}x{h}: alpha max abs error {err:.2e} against ONNX Runtime CPU "
              f"({unknown:.1%} of pixels partly transparent)")
        assert err <= ALPHA_TOL


@pytest.mark.skipif(not HAS_ORT_CUDA, reason="onnxruntime has no CUDAExecutionProvider here (no GPU build)")
def test_ort_cuda_matches_cpu() -> None:
    _compare("cuda")


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cuematte.engine.model import DEFAULT_MODEL
    from cuematte.export.tensorrt import build_plans

    out = tmp_path_factory.mktemp("plans")
    build_plans(DEFAULT_MODEL, out, fp16=True, max_size=(1920, 1080))
    return out


@pytest.mark.skipif(not HAS_TRT, reason="the tensorrt package is not installed here (no GPU)")
def test_tensorrt_plans_match_cpu(plans: Path) -> None:
    _compare("tensorrt", plans)


@pytest.mark.skipif(not HAS_TRT, reason="the tensorrt package is not installed here (no GPU)")
def test_tensorrt_sessions_in_threads_do_not_share_a_context(plans: Path) -> None:
    """Two sessions on two threads at once give what each gives alone: each has its own context and stream."""
    model = FlashModel(backend="tensorrt", plans=plans)
    scenes = [_scene(720, 1280), _scene(360, 640)]
    alone = [_alphas(MattingSession(model), *s, frames=4) for s in scenes]
    together: list[list[np.ndarray]] = [[], []]

    def work(i: int) -> None:
        together[i] = _alphas(MattingSession(model), *scenes[i], frames=4)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, together, strict=True):
        assert len(b) == 4 and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.skipif(not HAS_TRT, reason="the tensorrt package is not installed here (no GPU)")
def test_plans_for_another_gpu_are_refused(plans: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from cuematte.engine.errors import BackendError

    other = tmp_path / "other"
    shutil.copytree(plans, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["gpu"] = "NVIDIA GeForce GTX 1080"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BackendError, match="built for NVIDIA GeForce GTX 1080"):
        FlashModel(backend="tensorrt", plans=other)
    assert FlashModel(backend="auto", plans=other).backend != "tensorrt"
