"""MediaPipe selfie segmentation (Apache-2.0) -> ONNX, reproducibly.

The pretrained person segmenter behind the flash-trimap pipeline. Both models ship inside the PyPI wheel
``mediapipe==0.10.21``, which cannot be installed beside numpy 2, so this script downloads the wheel with
``pip download`` (or takes ``--wheel PATH``), checks its sha256, unzips the two ``.tflite`` files and
converts them with a small TFLite -> ONNX translator written here (no tensorflow / tf2onnx): the engine runs
on ONNX Runtime only.

    python -m cuematte.export.mediapipe_segmenter --out cuematte/engine/models/segmenter [--wheel PATH] [--verify]

ONNX contract (both models): input ``image`` float32 (1, 3, H, W) RGB in [0, 1]; output ``mask`` float32
(1, 1, H, W) person probability (the TFLite graph already ends in a LOGISTIC, and MediaPipe's
``TensorsToSegmentationCalculator`` runs with ``activation: NONE``). H, W = 256, 256 (square model) or
144, 256 (landscape model). MediaPipe's ``ImageToTensorCalculator`` feeds the models a stretched
(``keep_aspect_ratio: false``) image in the float range [0, 1], which is already the ONNX input range, so the
in-graph normalisation is the identity.

The TFLite flatbuffer is read with the generated schema accessors that ``ai-edge-litert`` ships
(``ai_edge_litert.schema_py_generated``, the same code as the ``tflite`` PyPI package).
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cuematte.engine.model import sha256_of

MEDIAPIPE_VERSION = "0.10.21"
WHEEL_FILENAME = f"mediapipe-{MEDIAPIPE_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
LICENSE_IN_WHEEL = f"mediapipe-{MEDIAPIPE_VERSION}.dist-info/LICENSE"
DEFAULT_OUT = Path("cuematte/engine/models/segmenter")
OPSET = 17
FEATURES_OUTPUT = "features"
IR_VERSION = 8  # opset 17's IR version: loadable by older runtimes (ORT >= 1.12, TensorRT 8.6) too


@dataclass(frozen=True)
class SegmenterModel:
    """One MediaPipe selfie-segmentation model: ``name``.tflite inside the wheel -> ``name``.onnx."""

    name: str
    input_hw: tuple[int, int]

    @property
    def wheel_path(self) -> str:
        return f"mediapipe/modules/selfie_segmentation/{self.name}.tflite"


MODELS = (
    SegmenterModel("selfie_segmentation", (256, 256)),
    SegmenterModel("selfie_segmentation_landscape", (144, 256)),
)

# MediaPipe's ImageToTensorCalculator options for both models (selfie_segmentation_cpu.binarypb).
MODEL_INPUT_RANGE = (0.0, 1.0)


class ConversionError(RuntimeError):
    """The wheel or the .tflite file is not what this converter knows how to translate."""


# ----------------------------------------------------------------------------------------------------
# TFLite -> ONNX
# ----------------------------------------------------------------------------------------------------


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as exc:  # pragma: no cover - ai-edge-litert is a core dependency
        raise ConversionError("reading .tflite needs ai-edge-litert (pip install ai-edge-litert)") from exc
    return schema_py_generated


# TFLite fused-activation enum (ActivationFunctionType) and padding enums.
_ACT_NONE, _ACT_RELU, _ACT_RELU_N1_TO_1, _ACT_RELU6 = 0, 1, 2, 3
_PAD_SAME, _PAD_VALID = 0, 1  # schema Padding
_TFLITE_C_PAD_SAME, _TFLITE_C_PAD_VALID = 1, 2  # C TfLitePadding, used by the custom op's raw options struct


def _same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'SAME' padding of a forward conv/pool: out = ceil(in / stride), the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class _Converter:
    """Translates the single subgraph of a float TFLite model op by op.

    Every 4-D activation tensor is kept NCHW on the ONNX side (the TFLite one is NHWC): weights are transposed
    at conversion time, so the ONNX graph needs no Transpose nodes at all.
    """

    def __init__(self, data: bytes, input_name: str, output_name: str) -> None:
        s = _schema()
        model = s.ModelT.InitFromPackedBuf(bytearray(data), 0)
        if not model.subgraphs or len(model.subgraphs) != 1:
            raise ConversionError("expected exactly one subgraph")
        self.model = model
        self.graph = model.subgraphs[0]
        self.op_names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
        dtypes: dict[int, np.dtype[Any]] = {
            s.TensorType.FLOAT32: np.dtype("<f4"),
            s.TensorType.FLOAT16: np.dtype("<f2"),
            s.TensorType.INT32: np.dtype("<i4"),
            s.TensorType.INT64: np.dtype("<i8"),
        }  # flatbuffer buffers are little-endian
        self.consts: dict[int, np.ndarray] = {}
        for i, t in enumerate(self.graph.tensors):
            buf = model.buffers[t.buffer]
            if buf.data is not None and len(buf.data):
                if t.type not in dtypes:
                    raise ConversionError(f"constant tensor {t.name!r} has unsupported TFLite type {t.type}")
                raw = np.asarray(buf.data, dtype=np.uint8).tobytes()
                shape = [int(d) for d in t.shape] if t.shape is not None else []
                self.consts[i] = np.frombuffer(raw, dtype=dtypes[t.type]).reshape(shape)
        if len(self.graph.inputs) != 1 or len(self.graph.outputs) != 1:
            raise ConversionError("expected one input and one output")
        self.io_names = {int(self.graph.inputs[0]): input_name, int(self.graph.outputs[0]): output_name}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.op_counts: dict[str, int] = {}
        self._uid = 0

    # -- naming and constants ----------------------------------------------------------------------

    def name(self, idx: int) -> str:
        if idx in self.io_names:
            return self.io_names[idx]
        return f"{self.graph.tensors[idx].name.decode()}:{idx}"

    def shape(self, idx: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.graph.tensors[idx].shape)

    def fresh(self, hint: str) -> str:
        self._uid += 1
        return f"{hint}:{self._uid}"

    def initializer(self, array: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, idx: int) -> np.ndarray:
        if idx not in self.consts:
            raise ConversionError(f"tensor {self.name(idx)} must be a constant")
        return self.consts[idx]

    def operand(self, idx: int) -> str:
        """An elementwise operand: an activation name, or a constant made broadcastable against NCHW."""
        if idx not in self.consts:
            return self.name(idx)
        value = self.consts[idx].astype(np.float32)
        if value.ndim > 4:
            raise ConversionError("elementwise constant of rank > 4")
        nhwc = value.reshape((1,) * (4 - value.ndim) + value.shape)
        return self.initializer(nhwc.transpose(0, 3, 1, 2), "operand")

    def emit(self, op_type: str, inputs: Sequence[str], output: str, **attrs: Any) -> str:
        self.nodes.append(
            helper.make_node(op_type, list(inputs), [output], name=self.fresh(op_type), **attrs)
        )
        return output

    def activation(self, pre: str, fused: int, out: str) -> None:
        if fused == _ACT_RELU:
            self.emit("Relu", [pre], out)
        elif fused == _ACT_RELU6:
            lo, hi = (self.initializer(np.array(v, np.float32), "clip") for v in (0.0, 6.0))
            self.emit("Clip", [pre, lo, hi], out)
        elif fused == _ACT_RELU_N1_TO_1:
            lo, hi = (self.initializer(np.array(v, np.float32), "clip") for v in (-1.0, 1.0))
            self.emit("Clip", [pre, lo, hi], out)
        else:
            raise ConversionError(f"unsupported fused activation {fused}")

    def target(self, out_idx: int, fused: int) -> str:
        """Where the main op writes: the output itself, or a temp when an activation is fused after it."""
        return self.name(out_idx) if fused == _ACT_NONE else self.fresh(f"{self.name(out_idx)}_preact")

    def finish(self, out_idx: int, fused: int, written: str) -> None:
        if fused != _ACT_NONE:
            self.activation(written, fused, self.name(out_idx))

    # -- ops ---------------------------------------------------------------------------------------

    def convert(self) -> None:
        for op in self.graph.operators:
            code = self.model.operatorCodes[op.opcodeIndex]
            builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
            kind = self.op_names.get(builtin, str(builtin))
            if kind == "CUSTOM":
                kind = f"CUSTOM:{code.customCode.decode()}"
            self.op_counts[kind] = self.op_counts.get(kind, 0) + 1
            handler = getattr(self, "_op_" + kind.replace("CUSTOM:", "custom_"), None)
            if handler is None:
                raise ConversionError(f"TFLite op {kind} is not supported by this converter")
            handler([int(i) for i in op.inputs], [int(i) for i in op.outputs], op)

    def _op_DEQUANTIZE(self, ins: list[int], outs: list[int], op: Any) -> None:
        # float16 weights: fold into float32 initialisers (exact: every float16 is a float32).
        value = self.const(ins[0])
        if value.dtype != np.float16:
            raise ConversionError("only float16 -> float32 DEQUANTIZE of constants is supported")
        self.consts[outs[0]] = value.astype(np.float32)

    def _conv_common(self, ins: list[int], opts: Any) -> tuple[list[int], list[int]]:
        _, in_h, in_w, _ = self.shape(ins[0])
        kh, kw = self.const(ins[1]).shape[1:3]
        if opts.padding == _PAD_SAME:
            top, bottom = _same_pads(in_h, kh, opts.strideH, opts.dilationHFactor)
            left, right = _same_pads(in_w, kw, opts.strideW, opts.dilationWFactor)
        elif opts.padding == _PAD_VALID:
            top = bottom = left = right = 0
        else:
            raise ConversionError(f"unknown padding {opts.padding}")
        return [top, left, bottom, right], [int(kh), int(kw)]

    def _bias(self, ins: list[int], channels: int) -> list[str]:
        if len(ins) > 2 and ins[2] >= 0:
            return [self.initializer(self.const(ins[2]).astype(np.float32), "bias")]
        return [self.initializer(np.zeros(channels, np.float32), "bias")]

    def _op_CONV_2D(self, ins: list[int], outs: list[int], op: Any) -> None:
        o = op.builtinOptions
        weight = self.const(ins[1]).astype(np.float32)  # OHWI
        pads, kernel = self._conv_common(ins, o)
        inputs = [self.name(ins[0]), self.initializer(weight.transpose(0, 3, 1, 2), "conv_w")]
        out = self.emit(
            "Conv",
            inputs + self._bias(ins, weight.shape[0]),
            self.target(outs[0], o.fusedActivationFunction),
            kernel_shape=kernel,
            strides=[o.strideH, o.strideW],
            dilations=[o.dilationHFactor, o.dilationWFactor],
            pads=pads,
        )
        self.finish(outs[0], o.fusedActivationFunction, out)

    def _op_DEPTHWISE_CONV_2D(self, ins: list[int], outs: list[int], op: Any) -> None:
        o = op.builtinOptions
        weight = self.const(ins[1]).astype(np.float32)  # 1, H, W, C * multiplier
        channels = self.shape(ins[0])[3]
        if weight.shape[3] != channels * o.depthMultiplier:
            raise ConversionError("depthwise weight/channel mismatch")
        pads, kernel = self._conv_common(ins, o)
        inputs = [self.name(ins[0]), self.initializer(weight.transpose(3, 0, 1, 2), "dw_w")]
        out = self.emit(
            "Conv",
            inputs + self._bias(ins, weight.shape[3]),
            self.target(outs[0], o.fusedActivationFunction),
            kernel_shape=kernel,
            strides=[o.strideH, o.strideW],
            dilations=[o.dilationHFactor, o.dilationWFactor],
            pads=pads,
            group=channels,
        )
        self.finish(outs[0], o.fusedActivationFunction, out)

    def _op_custom_Convolution2DTransposeBias(self, ins: list[int], outs: list[int], op: Any) -> None:
        # MediaPipe's custom op: options are a raw TfLiteTransposeConvParams {padding, stride_w, stride_h}.
        raw = bytes(np.asarray(op.customOptions, dtype=np.uint8)) if op.customOptions is not None else b""
        if len(raw) < 12:
            raise ConversionError("Convolution2DTransposeBias without its 12-byte options")
        padding, stride_w, stride_h = struct.unpack("<iii", raw[:12])
        weight = self.const(ins[1]).astype(np.float32)  # O, kh, kw, I
        _, in_h, in_w, _ = self.shape(ins[0])
        _, kh, kw, _ = weight.shape
        # mediapipe/util/tflite/operations/transpose_conv_bias.cc: its 'SAME' is not TF's out = in * stride.
        # It trims max(0, k - (in-1) % s - 1) pixels, the first half of them (rounded down) from the top/left.
        pad_h = pad_w = 0
        if padding == _TFLITE_C_PAD_SAME:
            pad_h = max(0, kh - (in_h - 1) % stride_h - 1)
            pad_w = max(0, kw - (in_w - 1) % stride_w - 1)
        elif padding != _TFLITE_C_PAD_VALID:
            raise ConversionError(f"unknown TfLitePadding {padding}")
        out_h, out_w = stride_h * (in_h - 1) + kh - pad_h, stride_w * (in_w - 1) + kw - pad_w
        if self.shape(outs[0])[1:3] != (out_h, out_w):
            raise ConversionError("Convolution2DTransposeBias output shape disagrees with its padding rule")
        self.emit(
            "ConvTranspose",
            [
                self.name(ins[0]),
                self.initializer(weight.transpose(3, 0, 1, 2), "deconv_w"),
                *self._bias(ins, weight.shape[0]),
            ],
            self.name(outs[0]),
            kernel_shape=[int(kh), int(kw)],
            strides=[stride_h, stride_w],
            pads=[pad_h // 2, pad_w // 2, pad_h - pad_h // 2, pad_w - pad_w // 2],
        )

    def _op_AVERAGE_POOL_2D(self, ins: list[int], outs: list[int], op: Any) -> None:
        o = op.builtinOptions
        _, in_h, in_w, _ = self.shape(ins[0])
        target = self.target(outs[0], o.fusedActivationFunction)
        if o.padding == _PAD_VALID and (o.filterHeight, o.filterWidth) == (in_h, in_w):
            out = self.emit("GlobalAveragePool", [self.name(ins[0])], target)
        else:
            if o.padding == _PAD_SAME:
                top, bottom = _same_pads(in_h, o.filterHeight, o.strideH)
                left, right = _same_pads(in_w, o.filterWidth, o.strideW)
            else:
                top = bottom = left = right = 0
            # TFLite averages over the valid pixels only, like ONNX count_include_pad=0.
            out = self.emit(
                "AveragePool",
                [self.name(ins[0])],
                target,
                kernel_shape=[o.filterHeight, o.filterWidth],
                strides=[o.strideH, o.strideW],
                pads=[top, left, bottom, right],
                count_include_pad=0,
            )
        self.finish(outs[0], o.fusedActivationFunction, out)

    def _op_MEAN(self, ins: list[int], outs: list[int], op: Any) -> None:
        axes = sorted(int(a) % 4 for a in self.const(ins[1]).reshape(-1))
        if len(self.shape(ins[0])) != 4 or not op.builtinOptions.keepDims:
            raise ConversionError("MEAN is supported on 4-D tensors with keep_dims only")
        if axes == [1, 2]:
            self.emit("GlobalAveragePool", [self.name(ins[0])], self.name(outs[0]))
        else:
            nchw_axis = {0: 0, 1: 2, 2: 3, 3: 1}
            self.emit(
                "ReduceMean",
                [self.name(ins[0])],
                self.name(outs[0]),
                axes=sorted(nchw_axis[a] for a in axes),
                keepdims=1,
            )

    def _binary(self, op_type: str, ins: list[int], outs: list[int], op: Any) -> None:
        if len(self.shape(outs[0])) != 4:
            raise ConversionError(f"{op_type} is supported on 4-D tensors only")
        fused = op.builtinOptions.fusedActivationFunction if op.builtinOptions is not None else _ACT_NONE
        out = self.emit(op_type, [self.operand(ins[0]), self.operand(ins[1])], self.target(outs[0], fused))
        self.finish(outs[0], fused, out)

    def _op_ADD(self, ins: list[int], outs: list[int], op: Any) -> None:
        self._binary("Add", ins, outs, op)

    def _op_MUL(self, ins: list[int], outs: list[int], op: Any) -> None:
        self._binary("Mul", ins, outs, op)

    def _op_RESIZE_BILINEAR(self, ins: list[int], outs: list[int], op: Any) -> None:
        o = op.builtinOptions
        n, _, _, c = self.shape(ins[0])
        out_h, out_w = (int(v) for v in self.const(ins[1]).reshape(-1))
        # TF half_pixel_centers clamps source coords to the edge like ORT's 'half_pixel'; neither flag is
        # TF's legacy out * in / out mapping, i.e. 'asymmetric'.
        mode = "align_corners" if o.alignCorners else "half_pixel" if o.halfPixelCenters else "asymmetric"
        sizes = self.initializer(np.array([n, c, out_h, out_w], np.int64), "sizes")
        self.emit(
            "Resize",
            [self.name(ins[0]), "", "", sizes],
            self.name(outs[0]),
            mode="linear",
            coordinate_transformation_mode=mode,
        )

    def _op_HARD_SWISH(self, ins: list[int], outs: list[int], op: Any) -> None:
        self.emit("HardSwish", [self.name(ins[0])], self.name(outs[0]))

    def _op_RELU(self, ins: list[int], outs: list[int], op: Any) -> None:
        self.emit("Relu", [self.name(ins[0])], self.name(outs[0]))

    def _op_RELU6(self, ins: list[int], outs: list[int], op: Any) -> None:
        self.activation(self.name(ins[0]), _ACT_RELU6, self.name(outs[0]))

    def _op_LOGISTIC(self, ins: list[int], outs: list[int], op: Any) -> None:
        self.emit("Sigmoid", [self.name(ins[0])], self.name(outs[0]))


def convert_tflite(
    data: bytes,
    *,
    input_name: str = "image",
    output_name: str = "mask",
    model_range: tuple[float, float] = MODEL_INPUT_RANGE,
    doc: str = "",
) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Translate a float NHWC image->mask TFLite model into an NCHW ONNX model.

    ``input_name``: float32 (1, 3, H, W) in [0, 1], mapped in-graph to ``model_range`` (the value range the
    TFLite model was trained on; identity for MediaPipe selfie segmentation). ``output_name``: float32
    (1, C, H, W). Returns the checked model and the TFLite op histogram (``CUSTOM:<name>`` for custom ops).
    """
    conv = _Converter(data, input_name, output_name)
    in_idx, out_idx = int(conv.graph.inputs[0]), int(conv.graph.outputs[0])
    in_shape, out_shape = conv.shape(in_idx), conv.shape(out_idx)
    if len(in_shape) != 4 or in_shape[0] != 1 or in_shape[3] != 3 or len(out_shape) != 4:
        raise ConversionError(f"expected a (1, H, W, 3) -> (1, H, W, C) model, got {in_shape} -> {out_shape}")
    lo, hi = model_range
    if (lo, hi) != (0.0, 1.0):
        # The first op reads the tflite input tensor's name; feed it the rescaled image instead.
        raw = conv.fresh("image_scaled")
        scale = conv.initializer(np.array(hi - lo, np.float32), "scale")
        shift = conv.initializer(np.array(lo, np.float32), "shift")
        scaled = conv.emit("Mul", [input_name, scale], conv.fresh("image_mul"))
        conv.emit("Add", [scaled, shift], raw)
        conv.io_names[in_idx] = raw
    conv.convert()

    _, h, w, _ = in_shape
    graph = helper.make_graph(
        conv.nodes,
        "mediapipe_selfie_segmentation",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [1, out_shape[3], *out_shape[1:3]])],
        initializer=conv.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="cuematte.export.mediapipe_segmenter",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model, conv.op_counts


# ----------------------------------------------------------------------------------------------------
# Wheel handling and outputs
# ----------------------------------------------------------------------------------------------------


def download_wheel(dest: Path) -> Path:
    """``pip download`` the pinned manylinux cp311 wheel (platform pinned: the same bytes from any host)."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp",
        "--abi", "cp311", f"mediapipe=={MEDIAPIPE_VERSION}", "-d", str(dest),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    wheel = dest / WHEEL_FILENAME
    if not wheel.is_file():
        raise ConversionError(f"pip download did not produce {WHEEL_FILENAME} in {dest}")
    return wheel


def read_wheel(wheel: Path) -> tuple[dict[str, bytes], bytes]:
    """Verify ``wheel`` against :data:`WHEEL_SHA256`; return ({model name: tflite bytes}, LICENSE bytes)."""
    digest = sha256_of(wheel)
    if digest != WHEEL_SHA256:
        raise ConversionError(f"{wheel} has sha256 {digest}, expected {WHEEL_SHA256} ({WHEEL_FILENAME})")
    with zipfile.ZipFile(wheel) as zf:
        models = {m.name: zf.read(m.wheel_path) for m in MODELS}
        license_text = zf.read(LICENSE_IN_WHEEL)
    return models, license_text


def _origin_md(rows: list[tuple[SegmenterModel, str, str, dict[str, int], int]]) -> str:
    lines = [
        "# MediaPipe selfie segmentation (person segmenter)",
        "",
        "Pretrained person segmenter used by the flash-trimap pipeline (`cuematte/engine/cues/segmenter.py`).",
        "Generated by `cuematte/export/mediapipe_segmenter.py`; do not edit by hand.",
        "",
        "## Source",
        "",
        f"- PyPI wheel: `{WHEEL_FILENAME}` (mediapipe {MEDIAPIPE_VERSION}, not installed, only unzipped)",
        f"- wheel sha256: `{WHEEL_SHA256}`",
        f"- license: Apache-2.0, `LICENSE` copied verbatim from `{LICENSE_IN_WHEEL}`",
        "",
        "| file | path inside the wheel | sha256 |",
        "|---|---|---|",
    ]
    lines += [f"| `{m.name}.tflite` | `{m.wheel_path}` | `{tsha}` |" for m, tsha, _, _, _ in rows]
    lines += [
        "",
        "## Conversion",
        "",
        "```",
        "python -m cuematte.export.mediapipe_segmenter --out cuematte/engine/models/segmenter"
        "   # add --wheel PATH to skip pip",
        "```",
        "",
        "Own TFLite -> ONNX translator (opset 17, float16 weights widened to float32, NHWC -> NCHW folded",
        "into the weights, no Transpose nodes). `Convolution2DTransposeBias` (MediaPipe custom op) becomes",
        "`ConvTranspose` with MediaPipe's own padding rule.",
        "",
        "| file | input `image` | output `mask` | sha256 | TFLite ops |",
        "|---|---|---|---|---|",
    ]
    for m, _, osha, ops, _ in rows:
        h, w = m.input_hw
        op_list = ", ".join(f"{k} x{v}" for k, v in sorted(ops.items()))
        lines.append(f"| `{m.name}.onnx` | (1,3,{h},{w}) | (1,1,{h},{w}) | `{osha}` | {op_list} |")
    lines += [
        "",
        "## Contract",
        "",
        "- input `image`: float32 (1, 3, H, W), RGB in [0, 1]: MediaPipe's `ImageToTensorCalculator` feeds",
        "  these models float [0, 1] (`output_tensor_float_range {min: 0 max: 1}`) from a stretched image",
        "  (`keep_aspect_ratio: false`).",
        "- output `mask`: float32 (1, 1, H, W) person probability: the graph ends in a sigmoid and",
        "  `TensorsToSegmentationCalculator` uses `activation: NONE`.",
        "- output `features`: float32 (1, 16, H/2, W/2), the decoder's last feature map (the input of the",
        "  transposed convolution that draws the mask), added by the converter: real-data features that",
        "  a matting model can take beside the mask (`MediaPipeSegmenter.segment_with_features`).",
        "- Numerical parity with the TFLite model (LiteRT) is checked by `tests/test_segmenter.py`.",
        "",
    ]
    return "\n".join(lines)


def add_features_output(model: onnx.ModelProto, name: str = FEATURES_OUTPUT) -> onnx.ModelProto:
    """Expose the decoder's last feature map, the input of the transposed convolution that draws the mask
    logits, as a second graph output ``name`` (1, C, H/2, W/2): features of a network trained on real people,
    which the matting network takes beside the mask. The mask is unchanged."""
    producers = {out: node for node in model.graph.node for out in node.output}
    node = producers[model.graph.output[0].name]
    while node.op_type != "ConvTranspose":
        node = producers[node.input[0]]
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: v for v in inferred.graph.value_info}
    feature = node.input[0]
    if feature not in shapes:
        raise ConversionError(f"cannot infer the shape of the decoder features {feature!r}")
    dims = [d.dim_value for d in shapes[feature].type.tensor_type.shape.dim]
    model.graph.node.append(helper.make_node("Identity", [feature], [name]))
    model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
    onnx.checker.check_model(model, full_check=True)
    return model


def convert_model(m: SegmenterModel, tflite_bytes: bytes) -> tuple[onnx.ModelProto, dict[str, int]]:
    """:func:`convert_tflite` with this model's doc string and input-size check, plus the decoder features
    as a second output (deterministic bytes)."""
    doc = (
        f"MediaPipe {m.name} ({WHEEL_FILENAME}:{m.wheel_path}, Apache-2.0). "
        "image: float32 (1,3,H,W) RGB in [0,1]; mask: float32 (1,1,H,W) person probability; "
        "features: float32 (1,16,H/2,W/2) the decoder's last feature map."
    )
    model, ops = convert_tflite(tflite_bytes, doc=doc)
    if tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[2:]) != m.input_hw:
        raise ConversionError(f"{m.name}: input size is not {m.input_hw}")
    return add_features_output(model), ops


def export(wheel: Path, out_dir: Path) -> dict[str, dict[str, int]]:
    """Write ``<name>.tflite`` and ``<name>.onnx`` of both models, ``LICENSE`` and ``ORIGIN.md``."""
    models, license_text = read_wheel(wheel)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    histograms = {}
    for m in MODELS:
        tflite_bytes = models[m.name]
        tflite_path = out_dir / f"{m.name}.tflite"
        tflite_path.write_bytes(tflite_bytes)
        model, ops = convert_model(m, tflite_bytes)
        onnx_path = out_dir / f"{m.name}.onnx"
        onnx.save_model(model, onnx_path)
        rows.append((m, sha256_of(tflite_path), sha256_of(onnx_path), ops, onnx_path.stat().st_size))
        histograms[m.name] = ops
        print(f"{onnx_path}: {onnx_path.stat().st_size / 1e6:.2f} MB, ops {ops}")
    (out_dir / "LICENSE").write_bytes(license_text)
    (out_dir / "ORIGIN.md").write_text(_origin_md(rows))
    return histograms


def verify_with_litert(out_dir: Path, seed: int = 0) -> dict[str, float]:
    """Max |ONNX - TFLite| of the mask on a random image per model (LiteRT runs the custom op in XNNPACK)."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(seed)
    errors = {}
    for m in MODELS:
        h, w = m.input_hw
        image = rng.random((1, 3, h, w), dtype=np.float32)
        interp = Interpreter(model_path=str(out_dir / f"{m.name}.tflite"))
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], image.transpose(0, 2, 3, 1).copy())
        interp.invoke()
        ref = interp.get_tensor(interp.get_output_details()[0]["index"])[..., 0]
        sess = ort.InferenceSession(str(out_dir / f"{m.name}.onnx"), providers=["CPUExecutionProvider"])
        got = sess.run(["mask"], {"image": image})[0][:, 0]
        errors[m.name] = float(np.abs(got - ref).max())
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    parser.add_argument("--wheel", type=Path, help=f"an already downloaded {WHEEL_FILENAME} (skips pip)")
    parser.add_argument("--verify", action="store_true", help="compare ONNX Runtime with LiteRT afterwards")
    args = parser.parse_args(argv)
    try:
        if args.wheel is not None:
            export(args.wheel, args.out)
        else:
            with tempfile.TemporaryDirectory(prefix="mediapipe_wheel_") as tmp:
                export(download_wheel(Path(tmp)), args.out)
        if args.verify:
            for name, err in verify_with_litert(args.out).items():
                print(f"{name}: max |onnx - tflite| = {err:.2e}")
    except (ConversionError, subprocess.CalledProcessError, OSError, zipfile.BadZipFile) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
