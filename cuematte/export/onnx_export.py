"""PyTorch FNFNet -> two ONNX graphs split at the cache boundary, checked and compared to PyTorch.

``flash.onnx``: ``flash`` (1,3,h,w) + ``flash_trimap`` (1,3,h,w), both at the CMN grid
-> ``flash_features`` (1,N,C') = T^f.
``frame.onnx``: ``frame`` (1,3,H,W) + ``frame_cmn`` (1,3,h,w) + ``flash_features`` (1,N,C')
[+ ``person_mask`` (1,1,h,w)] [+ ``flash_prior`` (1,6,h,w)] [+ ``guidance`` (1,3,h,w)]
-> ``alpha`` (1,1,H,W), ``foreground`` (1,3,H,W). Only H and W are
dynamic. Guided-refinement models (``lite``) take no ``frame`` and end at the guided filter's coefficients
``coef_a`` / ``coef_b`` (1,4,h,w), which the engine applies at the frame's size (``cuematte.engine.refine``); their
parity is checked end to end through that code. Models with ``flash_prior`` get it as a second output of
``flash.onnx`` (cached beside T^f).
The CMN-grid images come in ready-made (the engine shrinks with area averaging), so the graphs hold no
antialiased Resize, which TensorRT cannot build (format version 2; version 1 graphs shrank in-graph).

The folder also gets ``model.json`` (the engine's manifest); every graph carries the config and
normalisation in its ONNX metadata too, so a lone .onnx file still says what it is.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from cuematte.engine.cues.guidance import trimap_from_one_hot
from cuematte.engine.errors import CuematteError
from cuematte.engine.graphspec import GraphSpec
from cuematte.engine.model import FORMAT, FORMAT_VERSION, sha256_of
from cuematte.engine.refine import guided_float
from cuematte.training.models.fnfnet import FlashGraph, FNFNet, FrameGraph

log = logging.getLogger(__name__)

OPSET = 18
# Parity tolerances (max abs error, ONNX Runtime CPU vs PyTorch CPU, float32).
ALPHA_TOL = 1e-3
FOREGROUND_TOL = 1e-3
FEATURES_TOL = 1e-3


class ExportError(CuematteError):
    """An exported graph failed the ONNX checker or its parity check against PyTorch."""


@dataclass
class ParityResult:
    size: tuple[int, int]
    flash_features_max_abs: float  # with flash_prior: the larger of the two cached outputs' errors
    alpha_max_abs: float  # at the frame's size; for guided models through the engine's refinement
    foreground_max_abs: float
    coefficients_max_abs: float | None = None  # guided models: the graph's own outputs

    def ok(self) -> bool:
        return (
            self.flash_features_max_abs <= FEATURES_TOL
            and self.alpha_max_abs <= ALPHA_TOL
            and self.foreground_max_abs <= FOREGROUND_TOL
            and (self.coefficients_max_abs is None or self.coefficients_max_abs <= FEATURES_TOL)
        )


def _metadata(net: FNFNet, graph: str, trained: bool, source: str) -> dict[str, str]:
    cfg = net.cfg
    return {
        "cuematte.format": FORMAT,
        "cuematte.graph": graph,
        "cuematte.config": cfg.to_json(),
        "cuematte.trained": "true" if trained else "false",
        "cuematte.source": source,
        "cuematte.normalization": json.dumps(_normalization(net)),
    }


def _normalization(net: FNFNet) -> dict[str, Any]:
    return {
        "input": "RGB float32 in [0, 1], NCHW",
        "mean": list(net.cfg.norm_mean),
        "std": list(net.cfg.norm_std),
        "applied": "in-graph",
        "cmn_grid": "frame_cmn, flash and flash_trimap come at the CMN grid, shrunk by area averaging "
        "(OpenCV INTER_AREA)",
        "flash_trimap": "one-hot float32 channels [background, unknown, foreground]",
        "person_mask": "float32 person probability in [0, 1]" if net.cfg.person_mask else None,
        "flash_prior": f"float32 (1, {net.cfg.prior_channels}, h, w) at the CMN grid: normalised flash RGB, then "
        "the trimap"
        if net.cfg.flash_prior else None,
        "guidance": "float32 (1, 3, h, w) one-hot [background, unknown, foreground] at the CMN grid: the "
        "segmenter's certain regions less where the flash contradicts them (cuematte.engine.cues.guidance); alpha is "
        "the network's only where it is unknown" if net.cfg.guidance else None,
    }



def rename_dims(model: onnx.ModelProto, names: dict[str, dict[int, str]]) -> None:
    """Give dynamic dims stable names (the exporter invents ones like 's78')."""
    for value in list(model.graph.input) + list(model.graph.output):
        for axis, name in names.get(value.name, {}).items():
            dim = value.type.tensor_type.shape.dim[axis]
            dim.ClearField("dim_value")
            dim.dim_param = name


def set_metadata(model: onnx.ModelProto, meta: dict[str, str]) -> None:
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def export_program(module: torch.nn.Module, args: tuple[Any, ...], path: Path, input_names: list[str],
                   output_names: list[str], dynamic_shapes: dict[str, Any], opset: int = OPSET) -> None:
    """torch's dynamo exporter at ``opset`` with dynamic shapes, the graph saved to ``path`` in one file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            args,
            input_names=input_names,
            output_names=output_names,
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            verbose=False,
        )
    assert program is not None
    program.save(str(path), external_data=False)


def example_inputs(net: FNFNet, size: tuple[int, int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic inputs for export and parity: a smooth 'scene' plus noise, a trimap with all classes."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    # On uint8 levels: the engine's frames are uint8, and guided models are refined from them (parity).
    frame = torch.round(torch.rand(1, 3, h, w, generator=g) * 255) / 255
    flash = (frame * 1.3).clamp(0, 1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    r = (xx**2 + yy**2).sqrt()
    trimap = torch.stack([(r > 0.7), (r > 0.4) & (r <= 0.7), (r <= 0.4)]).float()[None]
    inputs = {"frame": frame, "frame_cmn": net.to_cmn(frame), "flash": net.to_cmn(flash),
              "flash_trimap": net.to_cmn(trimap)}
    if net.cfg.person_mask:
        inputs["person_mask"] = net.to_cmn((r <= 0.6).float()[None, None])
    if net.cfg.guidance:
        gy, gx = torch.meshgrid(torch.linspace(-1, 1, net.cfg.cmn_size[0]), torch.linspace(-1, 1, net.cfg.cmn_size[1]),
                                indexing="ij")
        gr = (gx**2 + gy**2).sqrt()
        inputs["guidance"] = torch.stack([(gr > 0.8), (gr > 0.3) & (gr <= 0.8), (gr <= 0.3)]).float()[None]
    return inputs


def git_commit() -> str | None:
    """The commit of the source tree that exports (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def export_onnx(net: FNFNet, out_dir: Path, *, trained: bool, source: str,
                export_size: tuple[int, int] = (360, 640), recipe: str | None = None) -> dict[str, Any]:
    """Export ``net`` (eval mode, CPU) into ``out_dir``; returns the manifest written to model.json, which
    also records the training ``recipe``, the exporting commit and each graph's sha256.

    Raises :class:`ExportError` if a graph fails ``onnx.checker`` or parity (see the tolerances above).
    """
    net = net.eval().cpu()
    out_dir.mkdir(parents=True, exist_ok=True)
    ex = example_inputs(net, export_size)
    h_dim = torch.export.Dim("height", min=32, max=4096)
    w_dim = torch.export.Dim("width", min=32, max=4096)
    with torch.no_grad():
        prior = net.flash_prior(ex["flash"], ex["flash_trimap"])
        tokens = net.encode_prior(prior)
    # The contract the engine will read back from model.json; the export follows it by name.
    spec = GraphSpec.for_config(net.cfg.to_dict(), (int(tokens.shape[1]), int(tokens.shape[2])))
    values = {**ex, "flash_features": tokens, "flash_prior": prior}

    flash_path, frame_path = out_dir / "flash.onnx", out_dir / "frame.onnx"
    t0 = time.perf_counter()
    flash_names = [t.name for t in spec.flash_inputs]
    export_program(FlashGraph(net), tuple(values[k] for k in flash_names), flash_path, flash_names, list(spec.cached),
            {k: None for k in flash_names})
    # FrameGraph's parameters in order; those this config does not take are passed as None.
    frame_names = [t.name for t in spec.frame_inputs]
    params = ("frame", "frame_cmn", "flash_features", "person_mask", "flash_prior", "guidance")
    frame_args = tuple(values[k] if k in frame_names else None for k in params)
    frame_dyn: dict[str, Any] = {k: None for k in params}
    if "frame" in frame_names:
        frame_dyn["frame"] = {2: h_dim, 3: w_dim}
    export_program(FrameGraph(net), frame_args, frame_path, frame_names, [t.name for t in spec.frame_outputs],
                   frame_dyn)
    log.info("exported in %.1f s", time.perf_counter() - t0)

    hw = {2: "height", 3: "width"}
    dims = {
        "flash": {},
        "frame": {"frame": hw, "alpha": hw, "foreground": hw},
    }
    for graph, path in (("flash", flash_path), ("frame", frame_path)):
        model = onnx.load(str(path))
        rename_dims(model, dims[graph])
        set_metadata(model, _metadata(net, graph, trained, source))
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"{path.name} fails onnx.checker: {exc}") from exc
        onnx.save(model, str(path))

    parity = [check_parity(net, out_dir, size) for size in ((export_size[0], export_size[1]), (720, 1280))]
    bad = [p for p in parity if not p.ok()]
    if bad:
        raise ExportError(f"ONNX/PyTorch parity failed: {bad}")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": net.cfg.name,
        "config": net.cfg.to_dict(),
        "trained": trained,
        "source": source,
        "graphs": {"flash": flash_path.name, "frame": frame_path.name},
        "sha256": {p.name: sha256_of(p) for p in (flash_path, frame_path)},
        "recipe": recipe,
        "commit": git_commit(),
        "normalization": _normalization(net),
        "flash_features_shape": list(tokens.shape[1:]),
        "io": spec.to_dict(),
        "opset": OPSET,
        "parity": {
            "tolerance": {"alpha": ALPHA_TOL, "foreground": FOREGROUND_TOL, "flash_features": FEATURES_TOL},
            "results": [p.__dict__ | {"size": list(p.size)} for p in parity],
        },
        "exported_with": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
    }
    (out_dir / "model.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def check_parity(net: FNFNet, out_dir: Path, size: tuple[int, int], seed: int = 1) -> ParityResult:
    """Run both graphs in ONNX Runtime (CPU) and the PyTorch model on the same inputs at ``size``, fed by the
    names of the model's graph contract."""
    ex = example_inputs(net, size, seed)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    flash_sess = ort.InferenceSession(str(out_dir / "flash.onnx"), opts, providers=["CPUExecutionProvider"])
    frame_sess = ort.InferenceSession(str(out_dir / "frame.onnx"), opts, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        prior = net.flash_prior(ex["flash"], ex["flash_trimap"])
        cached = {"flash_features": net.encode_prior(prior), "flash_prior": prior}
        out = net.forward_frame(ex["frame"], ex["frame_cmn"], cached["flash_features"], ex.get("person_mask"),
                                cached["flash_prior"] if net.cfg.flash_prior else None, ex.get("guidance"))
    n, c = cached["flash_features"].shape[1:]
    spec = GraphSpec.for_config(net.cfg.to_dict(), (int(n), int(c)))
    names = list(spec.cached)
    ort_cached = dict(zip(names, flash_sess.run(names, {t.name: ex[t.name].numpy() for t in spec.flash_inputs}),
                          strict=True))
    values = {k: v.numpy() for k, v in ex.items()} | ort_cached
    got = frame_sess.run(None, {t.name: values[t.name] for t in spec.frame_inputs})
    coef_err = None
    if spec.frame_outputs[0].name == "coef_a":
        coef_err = max(float(np.abs(g - out[k].numpy()).max()) for g, k in zip(got, ("coef_a", "coef_b"), strict=True))
        frame_u8 = np.round(values["frame"][0].transpose(1, 2, 0) * 255).astype(np.uint8)
        guidance = trimap_from_one_hot(values["guidance"][0]) if "guidance" in values else None
        alpha_hw, fg255 = guided_float(frame_u8, got[0][0], got[1][0], guidance)
        alpha, fg = alpha_hw[None, None], (fg255 / 255.0).transpose(2, 0, 1)[None]
    else:
        alpha, fg = got
    return ParityResult(
        size=size,
        flash_features_max_abs=max(float(np.abs(ort_cached[k] - cached[k].numpy()).max()) for k in names),
        alpha_max_abs=float(np.abs(alpha - out["alpha"].numpy()).max()),
        foreground_max_abs=float(np.abs(fg - out["fg"].numpy()).max()),
        coefficients_max_abs=coef_err,
    )
