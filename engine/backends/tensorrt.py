"""Native TensorRT runner (the runtime half of TensorRT's builder/runner split; the builder is
``export/tensorrt.py``). Tensors are bound by name; host<->device copies go through cuda-python.

Only imported when a user asks for the ``trt-native`` backend: tensorrt and cuda-python are not serving
dependencies, and this module never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import BackendError


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise BackendError("the trt-native backend needs cuda-python (`pip install cuda-python`)") from exc
    return cudart


def _check(result: Any) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA call failed: {err}")
    return rest[0] if len(rest) == 1 else rest


class TrtGraph:
    """A serialized TensorRT engine (.plan) with the same ``run(feeds) -> outputs`` contract as OrtGraph."""

    def __init__(self, plan: Path) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendError("the trt-native backend needs the tensorrt package on a CUDA machine") from exc
        if not plan.is_file():
            raise BackendError(f"TensorRT engine not found: {plan} (build it with `cuematte export --tensorrt`)")
        self._trt = trt
        self._cudart = _cudart()
        self.path = plan
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
        if self._engine is None:
            raise BackendError(f"cannot deserialize {plan}: built for another TensorRT version or GPU?")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self.input_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.metadata: dict[str, str] = {}
        self._stream = _check(self._cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:  # grow only; frames of one size reuse their buffers
            if ptr:
                _check(self._cudart.cudaFree(ptr))
            ptr = _check(self._cudart.cudaMalloc(nbytes))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, trt = self._cudart, self._trt
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.input_names:
            arr = np.ascontiguousarray(feeds[name], dtype=trt.nptype(self._engine.get_tensor_dtype(name)))
            self._context.set_input_shape(name, arr.shape)
            ptr = self._device(name, arr.nbytes)
            _check(cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d, self._stream))
            self._context.set_tensor_address(name, ptr)
        outputs: dict[str, np.ndarray] = {}
        for name in self.output_names:
            shape = tuple(self._context.get_tensor_shape(name))
            out = np.empty(shape, dtype=trt.nptype(self._engine.get_tensor_dtype(name)))
            self._context.set_tensor_address(name, self._device(name, out.nbytes))
            outputs[name] = out
        if not self._context.execute_async_v3(self._stream):
            raise BackendError(f"TensorRT execution of {self.path.name} failed")
        for name, out in outputs.items():
            _check(cudart.cudaMemcpyAsync(out.ctypes.data, self._buffers[name][0], out.nbytes, d2h, self._stream))
        _check(cudart.cudaStreamSynchronize(self._stream))
        return {k: v.astype(np.float32, copy=False) for k, v in outputs.items()}

    def __del__(self) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for ptr, _ in getattr(self, "_buffers", {}).values():
            cudart.cudaFree(ptr)
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)
