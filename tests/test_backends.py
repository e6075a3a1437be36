"""Backend choice and TensorRT plan manifests, on a machine without a GPU (the GPU runs are tests/test_gpu.py)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from cuematte.engine.backends.tensorrt import PLAN_FORMAT, PLAN_FORMAT_VERSION, PlanManifest
from cuematte.engine.errors import BackendError, ModelError
from cuematte.engine.model import DEFAULT_MODEL, FlashModel

NO_GPU = ("CUDAExecutionProvider" not in ort.get_available_providers()
          and importlib.util.find_spec("tensorrt") is None)
needs_no_gpu = pytest.mark.skipif(not NO_GPU, reason="checks the fallbacks of a machine without GPU backends")


@needs_no_gpu
def test_auto_falls_back_to_cpu_and_says_why(tmp_path: Path) -> None:
    model = FlashModel(backend="auto", plans=tmp_path / "none")
    assert model.backend == "cpu"
    assert "no TensorRT" in model.backend_reason and "no ONNX Runtime CUDA" in model.backend_reason
    assert model.session_graphs() == (model.flash, model.frame)  # CPU sessions are shared


@needs_no_gpu
@pytest.mark.parametrize(("backend", "message"), [("tensorrt", "tensorrt package"),
                                                  ("cuda", "CUDAExecutionProvider is not available")])
def test_an_unavailable_backend_asked_for_is_a_named_error(backend: str, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        FlashModel(backend=backend)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(BackendError, match="choose from auto, cpu, cuda, tensorrt"):
        FlashModel(backend="opencl")


def test_graphs_of_the_old_format_ask_for_a_re_export(tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(DEFAULT_MODEL, old)
    manifest = json.loads((old / "model.json").read_text())
    manifest["format_version"] = 1
    (old / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=r"format version 1.*re-export"):
        FlashModel(old)


def _manifest(tmp_path: Path, **changes: object) -> Path:
    graphs = json.loads((DEFAULT_MODEL / "model.json").read_text())["sha256"]
    raw = {"format": PLAN_FORMAT, "format_version": PLAN_FORMAT_VERSION, "tensorrt": "10.13.0", "gpu": "NVIDIA H200",
           "compute_capability": "9.0", "graphs": graphs, "plans": {"flash": "flash.plan", "frame": "frame.plan"},
           "profile": {"min": [64, 64], "opt": [720, 1280], "max": [1920, 1920]}, "precision": "fp16"} | changes
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    return tmp_path


def test_plans_are_tied_to_tensorrt_gpu_and_graphs(tmp_path: Path) -> None:
    graphs = json.loads((DEFAULT_MODEL / "model.json").read_text())["sha256"]
    manifest = PlanManifest.read(_manifest(tmp_path))
    here = {"gpu": "NVIDIA H200", "compute_capability": "9.0"}
    assert manifest.mismatch("10.13.0", here, graphs) is None
    assert "built with TensorRT 10.13.0, this machine has 10.14.1" in str(manifest.mismatch("10.14.1", here, graphs))
    other_gpu = {"gpu": "NVIDIA L4", "compute_capability": "8.9"}
    assert "built for NVIDIA H200 (compute 9.0)" in str(manifest.mismatch("10.13.0", other_gpu, graphs))
    assert "other graphs" in str(manifest.mismatch("10.13.0", here, {"frame.onnx": "0" * 64}))


@pytest.mark.parametrize("broken", ["not json", json.dumps({"format": "something-else"}),
                                    json.dumps({"format": PLAN_FORMAT, "format_version": PLAN_FORMAT_VERSION})])
def test_a_broken_plans_manifest_is_a_named_error(tmp_path: Path, broken: str) -> None:
    (tmp_path / "manifest.json").write_text(broken)
    with pytest.raises(BackendError, match="not a cuematte plans manifest"):
        PlanManifest.read(tmp_path)
    with pytest.raises(BackendError, match=r"no manifest\.json"):
        PlanManifest.read(tmp_path / "elsewhere")


@needs_no_gpu
def test_build_engines_without_tensorrt_exits_with_one_line(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "cuematte.clients.cli", "build-engines", "--out", str(tmp_path / "plans")]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "tensorrt package" in done.stderr
    assert not (tmp_path / "plans").exists()
    check = subprocess.run([*cli, "--check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 1 and "do not fit" in check.stdout
