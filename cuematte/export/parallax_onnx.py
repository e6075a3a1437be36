"""PyTorch PPMNet (cuematte.training.models.parallax) -> one ONNX graph, checked and compared to PyTorch.

Inputs ``view, view_bg, view_fg, view_fg_pair, trimap, trimap_fg``, each (1, 3, height, width) float32 (images
in [0, 1], trimaps one-hot [background, unknown, foreground]) -> outputs ``alpha`` (1, 1, height, width) and
``fg`` (1, 3, height, width), the premultiplied foreground alpha*F. Height and width are dynamic, multiples of 32
(the export declares them as 32 x a dynamic factor, so the graph holds no other size); the batch is fixed at 1.

Exported the way :mod:`cuematte.export.onnx_export` exports FNFNet: the dynamo exporter, its opset, one file with
the weights inside, ``onnx.checker`` with ``full_check``, and the config in the graph's metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from cuematte.export.onnx_export import OPSET, ExportError, export_program, rename_dims, set_metadata
from cuematte.training.models.parallax import INPUT_NAMES, SIZE_MULTIPLE, PPMNet

OUTPUT_NAMES = ("alpha", "fg")
PARITY_TOL = 1e-4  # max abs error, ONNX Runtime CPU vs PyTorch CPU, float32, both outputs
MAX_SIDE = 4096


class ParityError(ExportError):
    """ONNX Runtime's output differs from PyTorch's by more than the tolerance."""


def example_inputs(size: tuple[int, int], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Deterministic (1, 3, H, W) inputs in :data:`INPUT_NAMES` order: random images and trimaps holding all three
    classes (a disc of foreground in an unknown ring), the top branch's shifted by a few pixels."""
    h, w = size
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(1, 3, h, w, generator=g) for _ in range(4)]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")

    def trimap(shift: float) -> torch.Tensor:
        r = ((xx - shift) ** 2 + yy**2).sqrt()
        return torch.stack([r > 0.7, (r > 0.4) & (r <= 0.7), r <= 0.4]).float()[None]

    return images[0], images[1], images[2], images[3], trimap(0.0), trimap(0.05)


def _check_size(size: tuple[int, int]) -> None:
    h, w = size
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE or not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        raise ValueError(f"size {size} must be multiples of {SIZE_MULTIPLE} up to {MAX_SIDE}")


def export_parallax(net: PPMNet, path: Path | str, size: tuple[int, int] = (448, 448), opset: int = OPSET) -> Path:
    """Export ``net`` (put in eval mode, on the CPU) to ``path``, traced at ``size`` (H, W) with dynamic height and
    width; returns the path. Raises :class:`ExportError` if the graph fails ``onnx.checker``.

    ``opset`` defaults to the project's (:data:`cuematte.export.onnx_export.OPSET`, 18): the dynamo exporter
    builds opset-18 graphs and would only down-convert an older request.
    """
    _check_size(size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval().cpu()
    args = example_inputs(size)
    # height = 32 * k: the exported graph carries the size rule instead of a runtime check.
    h_dim = SIZE_MULTIPLE * torch.export.Dim("h32", min=1, max=MAX_SIDE // SIZE_MULTIPLE)
    w_dim = SIZE_MULTIPLE * torch.export.Dim("w32", min=1, max=MAX_SIDE // SIZE_MULTIPLE)
    dynamic: dict[str, Any] = {name: {2: h_dim, 3: w_dim} for name in INPUT_NAMES}
    export_program(net, args, path, list(INPUT_NAMES), list(OUTPUT_NAMES), dynamic, opset)
    model = onnx.load(str(path))
    # Stable names for the exporter's 's0'-style dims.
    rename_dims(model, {v.name: {2: "height", 3: "width"} for v in list(model.graph.input) + list(model.graph.output)})
    set_metadata(model, {"cuematte.graph": "parallax", "cuematte.config": net.cfg.to_json(),
                         "cuematte.inputs": "RGB float32 in [0, 1] NCHW (normalised in-graph); trimaps one-hot "
                                            "[background, unknown, foreground]; height and width multiples of 32"})
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path.name} fails onnx.checker: {exc}") from exc
    onnx.save(model, str(path))
    return path


def check_parity(net: PPMNet, path: Path | str, size: tuple[int, int], tol: float = PARITY_TOL,
                 seed: int = 1) -> float:
    """Run the graph at ``path`` in ONNX Runtime (CPU) and ``net`` in PyTorch on the same random inputs at ``size``;
    returns the larger max-abs difference of the two outputs. Raises :class:`ParityError` above ``tol``."""
    _check_size(size)
    net = net.eval().cpu()
    args = example_inputs(size, seed)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feeds = {i.name: args[INPUT_NAMES.index(i.name)].numpy() for i in sess.get_inputs()}
    got = sess.run(list(OUTPUT_NAMES), feeds)
    with torch.no_grad():
        want = net(*args)
    err = max(float(np.abs(g - t.numpy()).max()) for g, t in zip(got, want, strict=True))
    if not err <= tol:  # also catches NaN
        raise ParityError(f"{Path(path).name} at {size}: ONNX Runtime differs from PyTorch by {err:.3g} > {tol:g}")
    return err


__all__ = ["OUTPUT_NAMES", "PARITY_TOL", "ParityError", "check_parity", "example_inputs", "export_parallax"]
