"""Native TensorRT runner: the runtime half of TensorRT's builder/runner split (the builder is
``cuematte/export/tensorrt.py``, reached by ``cuematte build-engines``).

* :class:`TrtPlans` loads a plans folder once per process: it checks the folder's ``manifest.json`` against
  this machine's TensorRT and GPU and the model's graphs, and deserialises the engines. Engines are shared.
* :class:`TrtGraph` is one session's execution: its own execution context, CUDA stream, device buffers and
  pinned host buffers, never shared between threads. Tensors are bound by name. An input fed as the same
  read-only array as on the previous run (the session's cached flash tensors) is not copied again: it stays on
  the device between frames. With fixed shapes the run is captured once into a CUDA graph and replayed.

Only imported for the ``tensorrt`` backend: tensorrt and cuda-python are not serving dependencies, and this
module never imports torch.
"""

from __future__ import annotations

import ctypes
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cuematte.engine.errors import BackendError

log = logging.getLogger(__name__)

PLAN_FORMAT = "cuematte-tensorrt-plans"
PLAN_FORMAT_VERSION = 1


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError("the tensorrt backend needs the tensorrt package on a CUDA machine "
                           "(pip install 'cuematte[tensorrt]')") from exc
    return trt


def cudart() -> Any:
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart as runtime  # older cuda-python
        except ImportError as exc:
            raise BackendError("the tensorrt backend needs cuda-python (pip install 'cuematte[tensorrt]')") from exc
    return runtime


def check_cuda(result: Any) -> Any:
    """Unwrap a cuda-python ``(err, *values)`` result; raise :class:`BackendError` on an error code."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA call failed: {err}")
    return rest[0] if len(rest) == 1 else (tuple(rest) or None)


def gpu_identity() -> dict[str, Any]:
    """The GPU a plan is built for and runs on: {"gpu": name, "compute_capability": "9.0"}. BackendError when
    CUDA has no device here."""
    rt = cudart()
    count = check_cuda(rt.cudaGetDeviceCount())
    if not count:
        raise BackendError("no CUDA device on this machine")
    props = check_cuda(rt.cudaGetDeviceProperties(0))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"gpu": name.rstrip("\x00"), "compute_capability": f"{props.major}.{props.minor}"}


@dataclass(frozen=True)
class PlanManifest:
    """What ``manifest.json`` of a plans folder records (written by ``cuematte build-engines``)."""

    path: Path
    tensorrt: str
    gpu: str
    compute_capability: str
    graphs: dict[str, str]  # model graph file -> its sha256 when the plans were built
    plans: dict[str, str]  # role (flash, frame) -> plan file
    profile: dict[str, list[int]]  # min/opt/max frame (H, W)
    precision: str

    @classmethod
    def read(cls, plans_dir: Path) -> PlanManifest:
        path = plans_dir / "manifest.json"
        if not path.is_file():
            raise BackendError(f"{plans_dir} holds no TensorRT plans (no manifest.json): build them with "
                               f"`cuematte build-engines --out {plans_dir}`")
        try:
            raw = json.loads(path.read_text())
            if raw.get("format") != PLAN_FORMAT or raw.get("format_version") != PLAN_FORMAT_VERSION:
                raise ValueError(f"format {raw.get('format')!r} v{raw.get('format_version')!r}")
            return cls(path=plans_dir, tensorrt=str(raw["tensorrt"]), gpu=str(raw["gpu"]),
                       compute_capability=str(raw["compute_capability"]), graphs=dict(raw["graphs"]),
                       plans=dict(raw["plans"]), profile={k: list(v) for k, v in raw["profile"].items()},
                       precision=str(raw["precision"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"{path} is not a cuematte plans manifest ({exc}); rebuild with "
                               "`cuematte build-engines`") from exc

    def mismatch(self, tensorrt_version: str, gpu: dict[str, Any], graphs: dict[str, str]) -> str | None:
        """Why these plans cannot run here (None: they can). Plans are tied to one TensorRT version, one GPU
        model and the exact graphs they were built from."""
        if self.tensorrt != tensorrt_version:
            return f"built with TensorRT {self.tensorrt}, this machine has {tensorrt_version}"
        if (self.gpu, self.compute_capability) != (gpu["gpu"], gpu["compute_capability"]):
            return (f"built for {self.gpu} (compute {self.compute_capability}), this machine has {gpu['gpu']} "
                    f"(compute {gpu['compute_capability']})")
        if self.graphs != graphs:
            return "built from other graphs than this model's (re-exported or another model)"
        return None


class TrtPlans:
    """A model's deserialised TensorRT engines (shared by every session of the process)."""

    def __init__(self, plans_dir: Path, model_graphs: dict[str, str]) -> None:
        trt = import_tensorrt()
        self.manifest = PlanManifest.read(plans_dir)
        why = self.manifest.mismatch(trt.__version__, gpu_identity(), model_graphs)
        if why:
            raise BackendError(f"the TensorRT plans in {plans_dir} do not fit this machine: {why}; rebuild them "
                               f"with `cuematte build-engines --out {plans_dir}`")
        self.trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engines: dict[str, Any] = {}
        for role, name in self.manifest.plans.items():
            engine = self._runtime.deserialize_cuda_engine((plans_dir / name).read_bytes())
            if engine is None:
                raise BackendError(f"cannot deserialise {plans_dir / name}; rebuild with `cuematte build-engines`")
            self.engines[role] = engine

    def graph(self, role: str) -> TrtGraph:
        """A new execution of one engine for one session."""
        return TrtGraph(self.trt, self.engines[role], f"{role}.plan")


class TrtGraph:
    """One session's execution of a TensorRT engine, with the ``run(feeds) -> outputs`` contract of OrtGraph."""

    def __init__(self, trt: Any, engine: Any, name: str, *, cuda_graphs: bool = True) -> None:
        self._trt, self._rt, self._engine, self.path = trt, cudart(), engine, Path(name)
        self._context = engine.create_execution_context()
        if self._context is None:
            raise BackendError(f"TensorRT could not create an execution context for {name} (out of GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtype = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.metadata: dict[str, str] = {}
        self._stream = check_cuda(self._rt.cudaStreamCreate())
        self._device: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._host: dict[str, np.ndarray] = {}  # name -> pinned host array of the current shape
        self._pinned: dict[str, int] = {}  # name -> pinned host pointer
        self._resident: dict[str, np.ndarray] = {}  # inputs left on the device: the host array they came from
        self._cuda_graphs = cuda_graphs
        self._graph_exec: Any = None
        self._graph_key: tuple[Any, ...] | None = None

    # -- buffers -------------------------------------------------------------------------------------------
    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._device.get(name, (0, 0))
        if size < nbytes:  # grow only: frames of one size keep their addresses (and the captured graph)
            if ptr:
                check_cuda(self._rt.cudaFree(ptr))
            ptr = check_cuda(self._rt.cudaMalloc(nbytes))
            self._device[name] = (ptr, nbytes)
            self._drop_graph()
        return ptr

    def _host_buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        arr = self._host.get(name)
        if arr is None or arr.shape != shape:
            dtype, count = self._dtype[name], int(np.prod(shape))
            if name in self._pinned:
                check_cuda(self._rt.cudaFreeHost(self._pinned.pop(name)))
            ptr = check_cuda(self._rt.cudaMallocHost(max(1, count * dtype.itemsize)))
            self._pinned[name] = ptr
            raw = (ctypes.c_byte * max(1, count * dtype.itemsize)).from_address(ptr)
            arr = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)
            self._host[name] = arr
        return arr

    def _drop_graph(self) -> None:
        if self._graph_exec is not None:
            self._rt.cudaGraphExecDestroy(self._graph_exec)
        self._graph_exec, self._graph_key = None, None

    # -- running -------------------------------------------------------------------------------------------
    def _execute(self) -> None:
        key = tuple((n, tuple(self._context.get_tensor_shape(n))) for n in self.input_names)
        if self._cuda_graphs and self._graph_exec is not None and key == self._graph_key:
            check_cuda(self._rt.cudaGraphLaunch(self._graph_exec, self._stream))
            return
        if not self._context.execute_async_v3(self._stream):
            raise BackendError(f"TensorRT execution of {self.path.name} failed")
        if not self._cuda_graphs:
            return
        # Capture after a plain run (TensorRT allocates lazily on the first one); replayed while shapes hold.
        check_cuda(self._rt.cudaStreamSynchronize(self._stream))
        try:
            mode = self._rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            check_cuda(self._rt.cudaStreamBeginCapture(self._stream, mode))
            self._context.execute_async_v3(self._stream)
            graph = check_cuda(self._rt.cudaStreamEndCapture(self._stream))
            self._drop_graph()
            self._graph_exec = check_cuda(self._rt.cudaGraphInstantiate(graph, 0))
            self._rt.cudaGraphDestroy(graph)
            self._graph_key = key
        except BackendError as exc:  # some engines (data-dependent shapes) cannot be captured: run plainly
            log.info("CUDA graph capture of %s failed (%s); running without", self.path.name, exc)
            self._cuda_graphs = False

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rt = self._rt
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.input_names:
            arr = feeds[name]
            if name in self._resident and self._resident[name] is arr and not arr.flags.writeable:
                continue  # the same cached tensor as last time: still on the device
            if not self._context.set_input_shape(name, arr.shape):
                raise BackendError(f"{self.path.name}: input {name} of shape {arr.shape} is outside the plan's "
                                   "optimisation profile (rebuild with a larger --max-size)")
            host = self._host_buffer(name, arr.shape)
            np.copyto(host, arr, casting="same_kind")
            ptr = self._device_buffer(name, host.nbytes)
            check_cuda(rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, h2d, self._stream))
            self._context.set_tensor_address(name, ptr)
            if not arr.flags.writeable:
                self._resident[name] = arr
            else:
                self._resident.pop(name, None)
        hosts: dict[str, np.ndarray] = {}
        for name in self.output_names:
            shape = tuple(self._context.get_tensor_shape(name))
            hosts[name] = self._host_buffer(name, shape)
            self._context.set_tensor_address(name, self._device_buffer(name, hosts[name].nbytes))
        self._execute()
        for name, host in hosts.items():
            check_cuda(rt.cudaMemcpyAsync(host.ctypes.data, self._device[name][0], host.nbytes, d2h, self._stream))
        check_cuda(rt.cudaStreamSynchronize(self._stream))
        return {k: v.astype(np.float32, copy=True) for k, v in hosts.items()}

    def close(self) -> None:
        """Free this execution's GPU and pinned memory (also on garbage collection)."""
        rt = getattr(self, "_rt", None)
        if rt is None:
            return
        self._drop_graph()
        for ptr, _ in self._device.values():
            rt.cudaFree(ptr)
        for ptr in self._pinned.values():
            rt.cudaFreeHost(ptr)
        self._device, self._pinned, self._host = {}, {}, {}
        if getattr(self, "_stream", None) is not None:
            rt.cudaStreamDestroy(self._stream)
            self._stream = None
        self._rt = None

    def __del__(self) -> None:
        self.close()
