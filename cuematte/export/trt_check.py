"""Will TensorRT build this ONNX graph? A check that needs no GPU and no tensorrt package.

It reads the graph and reports what TensorRT's ONNX parser (onnx-tensorrt, TensorRT 10) refuses: operators it
does not implement, custom domains, antialiased or cubic Resize (NVIDIA/TensorRT#3560), int64 graph outputs,
and dynamic shapes that do not infer to the right output sizes at the corners of the optimisation profile
that ``cuematte build-engines`` uses. ``cuematte build-engines`` runs it before it parses, and ``make test`` runs
it on every graph export can make.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import shape_inference

# ONNX operators that onnx-tensorrt's support matrix (docs/operators.md) marks as supported and that graphs of
# this kind use or could plausibly use. An allow-list on purpose: an operator new to our graphs fails the check
# until someone has looked it up in that matrix and added it here.
TRT_OPS = frozenset({
    "Abs", "Add", "And", "ArgMax", "ArgMin", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Concat",
    "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "CumSum", "DepthToSpace", "Div", "Dropout",
    "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "Flatten", "Floor", "Gather", "GatherElements", "GatherND",
    "Gelu", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample", "HardSigmoid",
    "HardSwish", "Identity", "InstanceNormalization", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual",
    "Log", "LogSoftmax", "MatMul", "Max", "MaxPool", "Mean", "Min", "Mul", "Neg", "Not", "Or", "Pad", "Pow",
    "PRelu", "Range", "Reciprocal", "ReduceL2", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Relu",
    "Reshape", "Resize", "Round", "Shape", "Sigmoid", "Sign", "Sin", "Slice", "Softmax", "Softplus", "SpaceToDepth",
    "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Tile", "TopK", "Transpose", "Unsqueeze", "Where",
})
DEFAULT_DOMAINS = ("", "ai.onnx")
RESIZE_MODES = (b"nearest", b"linear")
RESIZE_TRANSFORMS = (b"half_pixel", b"pytorch_half_pixel", b"tf_half_pixel_for_nn", b"asymmetric", b"align_corners")

# The frame sizes (H, W) an engine's profile must take: 360p to 1080p, landscape and portrait.
PROFILE_CORNERS = ((360, 640), (640, 360), (1080, 1920), (1920, 1080))


@dataclass(frozen=True)
class TrtFinding:
    graph: str
    what: str

    def __str__(self) -> str:
        return f"{self.graph}: {self.what}"


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _node_findings(name: str, nodes: list[onnx.NodeProto]) -> list[TrtFinding]:
    out: list[TrtFinding] = []
    for node in nodes:
        where = f"{node.op_type} {node.name or '(unnamed)'}"
        if node.domain not in DEFAULT_DOMAINS:
            out.append(TrtFinding(name, f"{where} is in the custom domain {node.domain!r}"))
            continue
        if node.op_type not in TRT_OPS:
            out.append(TrtFinding(name, f"{where}: operator not in TensorRT's ONNX support matrix"))
        if node.op_type == "Resize":
            if _attr(node, "antialias", 0):
                out.append(TrtFinding(name, f"{where} is antialiased (TensorRT refuses antialias=1)"))
            if _attr(node, "mode", b"nearest") not in RESIZE_MODES:
                out.append(TrtFinding(name, f"{where} has mode {_attr(node, 'mode', b'')!r}"))
            if _attr(node, "coordinate_transformation_mode", b"half_pixel") not in RESIZE_TRANSFORMS:
                out.append(TrtFinding(name, f"{where} has an unsupported coordinate_transformation_mode"))
        for a in node.attribute:  # If / Loop bodies
            if a.type == onnx.AttributeProto.GRAPH:
                out += _node_findings(name, list(a.g.node))
    return out


def _with_frame_size(model: onnx.ModelProto, size: tuple[int, int]) -> onnx.ModelProto:
    """A copy of ``model`` whose inputs' named height/width dims are fixed at ``size``."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == "height":
                dim.ClearField("dim_param")
                dim.dim_value = size[0]
            elif dim.dim_param == "width":
                dim.ClearField("dim_param")
                dim.dim_value = size[1]
    return fixed


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


def check_graph(path: Path, corners: tuple[tuple[int, int], ...] = PROFILE_CORNERS) -> list[TrtFinding]:
    """Everything in the graph at ``path`` that TensorRT's ONNX parser would refuse (empty: it builds).

    Dynamic inputs must name their dims ``height`` / ``width`` (as export writes them); each output with such
    dims must infer to exactly the corner's size, and every other dim of every output to a fixed number.
    """
    model = onnx.load(str(path))
    name = path.name
    findings = _node_findings(name, list(model.graph.node))
    for fn in model.functions:
        findings.append(TrtFinding(name, f"local function {fn.domain}.{fn.name} (inline it before export)"))
    for out in model.graph.output:
        if out.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            findings.append(TrtFinding(name, f"output {out.name} is int64"))
    dynamic = {d.dim_param for v in model.graph.input for d in v.type.tensor_type.shape.dim if d.dim_param}
    unknown = dynamic - {"height", "width"}
    if unknown:
        findings.append(TrtFinding(name, f"inputs have dynamic dims {sorted(unknown)} outside the profile"))
    if not dynamic:
        corners = corners[:1]
    declared = {o.name: _dims(o) for o in model.graph.output}
    for size in corners:
        try:
            inferred = shape_inference.infer_shapes(_with_frame_size(model, size), strict_mode=True, data_prop=True)
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
            findings.append(TrtFinding(name, f"shapes do not infer at {size[0]}x{size[1]}: {exc}"))
            continue
        for out in inferred.graph.output:
            want = [size[0] if d == "height" else size[1] if d == "width" else d for d in declared[out.name]]
            got = _dims(out)
            if got != want or any(not isinstance(d, int) or d <= 0 for d in got):
                findings.append(TrtFinding(name, f"output {out.name} infers to {got} at {size[0]}x{size[1]}, "
                                                 f"expected {want}"))
    return findings


def check_model_dir(model_dir: Path) -> list[TrtFinding]:
    """:func:`check_graph` over every ``*.onnx`` of a model folder."""
    findings: list[TrtFinding] = []
    for path in sorted(model_dir.glob("*.onnx")):
        findings += check_graph(path)
    return findings
