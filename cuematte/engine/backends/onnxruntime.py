"""ONNX Runtime sessions: CPU by default, the CUDA execution provider on request (native TensorRT plans are
``cuematte/engine/backends/tensorrt.py``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from cuematte.engine.errors import BackendError, InferenceError

log = logging.getLogger(__name__)

# Short names users type -> ONNX Runtime provider names.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
}


def resolve_providers(names: Sequence[str]) -> list[str]:
    """Map short names ('cuda', 'cpu') to provider names, in priority order.

    CPU is always appended last as the fallback for ops the accelerators do not take. An accelerator that
    this onnxruntime build lacks is a :class:`BackendError`, not a silent CPU run.
    """
    available = set(ort.get_available_providers())
    out: list[str] = []
    for name in names:
        key = name.lower()
        if key not in PROVIDERS:
            raise BackendError(f"unknown execution provider {name!r}; choose from {sorted(PROVIDERS)}")
        provider = PROVIDERS[key]
        if provider not in available:
            raise BackendError(
                f"{provider} is not available in this onnxruntime build (available: {sorted(available)}); "
                "install onnxruntime-gpu on a CUDA machine (pip install 'cuematte[gpu]')"
            )
        out.append(provider)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


def preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from the nvidia-* wheels if they are installed (onnxruntime-gpu's own helper, 1.21+),
    so that the CUDA provider finds them without LD_LIBRARY_PATH. Where they are not, the system's are used."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # missing wheels are fine: the provider then searches the library path
            log.debug("onnxruntime.preload_dlls: %s", exc)


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


class OrtGraph:
    """One ONNX graph in one InferenceSession; inputs and outputs by name."""

    def __init__(self, path: Path, *, providers: Sequence[Any], threads: int | None = None) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or default_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.path = path
        self.session = ort.InferenceSession(str(path), opts, providers=list(providers))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata: dict[str, str] = dict(meta)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outs = self.session.run(self.output_names, feeds)
        except Exception as exc:  # ORT raises its own untyped errors; callers act on a named one
            raise InferenceError(f"ONNX Runtime failed running {self.path.name}: {exc}") from exc
        return dict(zip(self.output_names, outs, strict=True))
