"""MediaPipe person segmenter: the shipped ONNX files, their parity with the TFLite originals, the wrapper.

Real files, real ONNX Runtime (and LiteRT for parity), no mocks.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from cuematte.engine.cues.segmenter import (
    DEFAULT_MODEL_DIR,
    LANDSCAPE_MODEL,
    SQUARE_MODEL,
    MediaPipeSegmenter,
    Segmenter,
    SegmenterBackendError,
    SegmenterError,
    SegmenterInputError,
    SegmenterModelError,
)
from cuematte.engine.errors import CuematteError, FrameFormatError, ModelError

MODELS = {SQUARE_MODEL: (256, 256), LANDSCAPE_MODEL: (144, 256)}  # name -> model input (h, w)
MASK_TOLERANCE = 1e-4  # max |ONNX - TFLite| on the mask


@pytest.fixture(scope="module")
def segmenter() -> MediaPipeSegmenter:
    return MediaPipeSegmenter(threads=2)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """(512, 512, 3) uint8 RGB portrait (NASA, public domain) shipped in scikit-image's wheel."""
    data = pytest.importorskip("skimage.data")
    image = data.astronaut()
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    return np.ascontiguousarray(image)


def _model_input(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, h, w, 3) float32 in [0, 1] (NHWC, as LiteRT wants it)."""
    import cv2

    small = cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
    return (small.astype(np.float32) / 255)[None]


# --- the shipped files ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_shipped_onnx_contract(name: str) -> None:
    onnx = pytest.importorskip("onnx")
    path = DEFAULT_MODEL_DIR / f"{name}.onnx"
    assert path.stat().st_size < 1_000_000  # float32 weights of a ~110k-parameter net
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    h, w = MODELS[name]
    dims = [
        [d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*model.graph.input, *model.graph.output)
    ]
    assert [v.name for v in model.graph.input] == ["image"] and [v.name for v in model.graph.output] == [
        "mask", "features"
    ]
    assert dims == [[1, 3, h, w], [1, 1, h, w], [1, 16, h // 2, w // 2]]
    assert not any(n.op_type == "Transpose" for n in model.graph.node)  # NHWC folded into the weights
    for extra in ("LICENSE", "ORIGIN.md", f"{name}.tflite"):
        assert (DEFAULT_MODEL_DIR / extra).is_file()
    assert "Apache License" in (DEFAULT_MODEL_DIR / "LICENSE").read_text()


@pytest.mark.parametrize("name", list(MODELS))
def test_conversion_reproduces_shipped_onnx(name: str) -> None:
    """The shipped ONNX is exactly what the converter makes of the shipped .tflite."""
    pytest.importorskip("onnx")
    pytest.importorskip("ai_edge_litert")
    from cuematte.export.mediapipe_segmenter import MODELS as EXPORT_MODELS
    from cuematte.export.mediapipe_segmenter import convert_model

    spec = next(m for m in EXPORT_MODELS if m.name == name)
    model, ops = convert_model(spec, (DEFAULT_MODEL_DIR / f"{name}.tflite").read_bytes())
    assert model.SerializeToString() == (DEFAULT_MODEL_DIR / f"{name}.onnx").read_bytes()
    assert ops["CUSTOM:Convolution2DTransposeBias"] == 1 and ops["CONV_2D"] == 43


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_matches_tflite(name: str, astronaut: np.ndarray) -> None:
    """ONNX Runtime vs LiteRT (whose XNNPACK delegate runs MediaPipe's custom op) on noise and a photo."""
    interpreter = pytest.importorskip("ai_edge_litert.interpreter")
    import onnxruntime as ort

    hw = MODELS[name]
    tfl = interpreter.Interpreter(model_path=str(DEFAULT_MODEL_DIR / f"{name}.tflite"))
    tfl.allocate_tensors()
    sess = ort.InferenceSession(str(DEFAULT_MODEL_DIR / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    inputs = {"noise": rng.random((1, *hw, 3), dtype=np.float32), "astronaut": _model_input(astronaut, hw)}
    for what, x in inputs.items():
        tfl.set_tensor(tfl.get_input_details()[0]["index"], x)
        tfl.invoke()
        ref = tfl.get_tensor(tfl.get_output_details()[0]["index"])[0, :, :, 0]
        got = sess.run(["mask"], {"image": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0][0, 0]
        err = float(np.abs(got - ref).max())
        assert err <= MASK_TOLERANCE, f"{name} on {what}: max |onnx - tflite| = {err:.2e}"
    assert ref.max() > 0.99 and ref.min() < 0.01  # the photo really exercised both ends of the sigmoid


# --- MediaPipe's custom transposed convolution ----------------------------------------------------


def _mediapipe_transpose_conv(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, same: bool
) -> np.ndarray:
    """mediapipe/util/tflite/operations/transpose_conv_bias.cc in numpy. x (H, W, I), w (O, kh, kw, I)."""
    in_h, in_w, _ = x.shape
    _, kh, kw, _ = w.shape
    pad_h = max(0, kh - (in_h - 1) % stride - 1) if same else 0
    pad_w = max(0, kw - (in_w - 1) % stride - 1) if same else 0
    out = np.broadcast_to(
        b, (stride * (in_h - 1) + kh - pad_h, stride * (in_w - 1) + kw - pad_w, len(b))
    ).copy()
    for iy in range(in_h):
        for ix in range(in_w):
            for fy in range(kh):
                for fx in range(kw):
                    oy, ox = iy * stride - pad_h // 2 + fy, ix * stride - pad_w // 2 + fx
                    if 0 <= oy < out.shape[0] and 0 <= ox < out.shape[1]:
                        out[oy, ox] += w[:, fy, fx, :] @ x[iy, ix]
    return out


def _transpose_conv_tflite(
    in_hw: tuple[int, int], w: np.ndarray, b: np.ndarray, stride: int, same: bool
) -> bytes:
    """A one-op .tflite: (1, H, W, 3) -> Convolution2DTransposeBias -> (1, H', W', O), float32 weights."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    ref = _mediapipe_transpose_conv(np.zeros((*in_hw, w.shape[3]), np.float32), w, b, stride, same)

    def tensor(shape: tuple[int, ...], buffer: int, name: str) -> object:
        t = s.TensorT()
        t.shape, t.type, t.buffer, t.name = list(shape), s.TensorType.FLOAT32, buffer, name
        return t

    model = s.ModelT()
    model.version = 3
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.CUSTOM
    code.customCode = "Convolution2DTransposeBias"
    model.operatorCodes = [code]
    buffers = [b"", b"", w.astype("<f4").tobytes(), b.astype("<f4").tobytes(), b""]
    model.buffers = []
    for data in buffers:
        buf = s.BufferT()
        buf.data = list(data) if data else None
        model.buffers.append(buf)
    graph = s.SubGraphT()
    graph.tensors = [
        tensor((1, *in_hw, w.shape[3]), 1, "x"),
        tensor(w.shape, 2, "w"),
        tensor(b.shape, 3, "b"),
        tensor((1, *ref.shape), 4, "y"),
    ]
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.customOptions = list(
        struct.pack("<iii", 1 if same else 2, stride, stride)
    )  # TfLiteTransposeConvParams
    graph.operators, graph.inputs, graph.outputs = [op], [0], [3]
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.parametrize(
    ("in_hw", "kernel", "stride", "same"),
    [
        ((8, 6), 2, 2, True),
        ((5, 4), 3, 2, True),
        ((4, 5), 4, 2, True),
        ((3, 3), 3, 1, True),
        ((4, 3), 3, 2, False),
    ],
)
def test_transpose_conv_padding_matches_mediapipe(
    in_hw: tuple[int, int], kernel: int, stride: int, same: bool
) -> None:
    """MediaPipe's 'SAME' trims max(0, k - (in-1) % s - 1) pixels, the smaller half first (not TF's in * s).

    Three opinions agree: the C++ loop ported to numpy, LiteRT (XNNPACK's implementation) and the ONNX graph.
    """
    pytest.importorskip("onnx")
    interpreter = pytest.importorskip("ai_edge_litert.interpreter")
    import onnxruntime as ort

    from cuematte.export.mediapipe_segmenter import convert_tflite

    rng = np.random.default_rng(kernel * 10 + stride)
    w = rng.standard_normal((2, kernel, kernel, 3)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    x = rng.standard_normal((*in_hw, 3)).astype(np.float32)
    tflite = _transpose_conv_tflite(in_hw, w, b, stride, same)
    ref = _mediapipe_transpose_conv(x, w, b, stride, same)
    tfl = interpreter.Interpreter(model_content=tflite)
    tfl.allocate_tensors()
    tfl.set_tensor(tfl.get_input_details()[0]["index"], x[None])
    tfl.invoke()
    np.testing.assert_allclose(
        tfl.get_tensor(tfl.get_output_details()[0]["index"])[0], ref, rtol=1e-5, atol=1e-5
    )
    model, ops = convert_tflite(tflite)
    assert ops == {"CUSTOM:Convolution2DTransposeBias": 1}
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(["mask"], {"image": x.transpose(2, 0, 1)[None]})[0][0].transpose(1, 2, 0)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


# --- the engine wrapper ---------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(720, 1280), (360, 640), (480, 640), (640, 480), (97, 131), (1080, 1920)])
def test_shape_dtype_range(segmenter: MediaPipeSegmenter, hw: tuple[int, int]) -> None:
    image = np.random.default_rng(1).integers(0, 256, (*hw, 3), dtype=np.uint8)
    mask = segmenter.segment(image)
    assert mask.shape == hw and mask.dtype == np.float32 and mask.flags.c_contiguous
    assert np.isfinite(mask).all() and mask.min() >= 0.0 and mask.max() <= 1.0


def test_is_a_segmenter(segmenter: MediaPipeSegmenter) -> None:
    def use(s: Segmenter) -> str:
        return s.name

    assert use(segmenter) == "mediapipe"


def test_model_choice() -> None:
    auto = MediaPipeSegmenter(threads=1)
    assert auto.pick(720, 1280) == LANDSCAPE_MODEL
    assert auto.pick(1280, 720) == SQUARE_MODEL and auto.pick(512, 512) == SQUARE_MODEL
    assert MediaPipeSegmenter(landscape=True, threads=1).pick(1280, 720) == LANDSCAPE_MODEL
    assert MediaPipeSegmenter(landscape=False, threads=1).pick(720, 1280) == SQUARE_MODEL


def _check_person(mask: np.ndarray, left: int = 0) -> None:
    """The astronaut's chest and face are person, the two top corners are not (``left``: x of the photo)."""
    chest = mask[224:288, left + 224 : left + 288]
    face = mask[60:120, left + 190 : left + 260]
    assert chest.mean() > 0.95 and face.mean() > 0.95
    assert mask[:48, :48].mean() < 0.05 and mask[:48, -48:].mean() < 0.05


def test_astronaut_square(segmenter: MediaPipeSegmenter, astronaut: np.ndarray) -> None:
    mask = segmenter.segment(astronaut)
    _check_person(mask)
    assert 0.3 < (mask > 0.5).mean() < 0.8


@pytest.mark.parametrize("landscape", [None, False])
def test_astronaut_landscape_frame(astronaut: np.ndarray, landscape: bool | None) -> None:
    """The photo centred in a grey 16:9 frame, through the landscape model (auto) or the square (forced)."""
    frame = np.full((512, 910, 3), 128, np.uint8)
    frame[:, 199 : 199 + 512] = astronaut
    mask = MediaPipeSegmenter(landscape=landscape, threads=1).segment(frame)
    _check_person(mask, left=199)
    assert mask[:, :150].mean() < 0.05 and mask[:, -150:].mean() < 0.05  # the grey side bars


def test_features_come_with_the_same_mask(astronaut: np.ndarray, tmp_path: Path) -> None:
    """The decoder features (real-data features a model can take) at half the model grid, beside the very mask
    ``segment`` returns; a segmenter file without them is a named error, not a crash."""
    import shutil

    seg = MediaPipeSegmenter(landscape=True, threads=1)
    frame = cv2.resize(astronaut, (256, 144), interpolation=cv2.INTER_AREA)
    mask, feats = seg.segment_with_features(frame)
    np.testing.assert_array_equal(mask, seg.segment(frame))
    # Any size out: a 720p frame's mask straight at the model grid is the frame's mask without the detour.
    big = cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_LINEAR)
    assert seg.segment(big, size=(144, 256)).shape == (144, 256)
    np.testing.assert_allclose(seg.segment(big, size=(144, 256)), seg.segment(big, size=(720, 1280))[2::5, 2::5],
                               atol=0.05)
    assert feats.shape == (16, 72, 128) and feats.dtype == np.float32 and feats.min() >= 0.0  # ReLU outputs
    # The person and the wall do not look alike to a network trained on real people.
    person, wall = mask[::2, ::2] >= 0.9, mask[::2, ::2] <= 0.1
    assert np.abs(feats[:, person].mean(1) - feats[:, wall].mean(1)).max() > 0.5
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(DEFAULT_MODEL_DIR / f"{LANDSCAPE_MODEL}.onnx"))
    del model.graph.output[1]
    shutil.copy(DEFAULT_MODEL_DIR / f"{SQUARE_MODEL}.onnx", tmp_path / f"{SQUARE_MODEL}.onnx")
    onnx.save(model, str(tmp_path / f"{LANDSCAPE_MODEL}.onnx"))
    old = MediaPipeSegmenter(tmp_path, landscape=True, threads=1)
    np.testing.assert_array_equal(old.segment(frame), mask)
    with pytest.raises(SegmenterModelError, match="features"):
        old.segment_with_features(frame)


def test_segment_is_deterministic(segmenter: MediaPipeSegmenter, astronaut: np.ndarray) -> None:
    np.testing.assert_array_equal(segmenter.segment(astronaut), segmenter.segment(astronaut))


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((64, 64), np.uint8),
        np.zeros((64, 64, 4), np.uint8),
        np.zeros((64, 64, 3), np.float32),
        np.zeros((0, 64, 3), np.uint8),
        [[0, 0, 0]],
    ],
    ids=["gray", "rgba", "float", "empty", "list"],
)
def test_bad_input_named_error(segmenter: MediaPipeSegmenter, bad: object) -> None:
    with pytest.raises(SegmenterInputError) as info:
        segmenter.segment(bad)  # type: ignore[arg-type]
    assert isinstance(info.value, SegmenterError) and isinstance(info.value, FrameFormatError)


def test_missing_model_named_error(tmp_path: Path) -> None:
    with pytest.raises(SegmenterModelError, match=r"export\.mediapipe_segmenter") as info:
        MediaPipeSegmenter(tmp_path)
    assert isinstance(info.value, ModelError) and isinstance(info.value, CuematteError)


def test_corrupt_model_named_error(tmp_path: Path) -> None:
    (tmp_path / f"{SQUARE_MODEL}.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(SegmenterModelError, match="cannot load"):
        MediaPipeSegmenter(tmp_path, landscape=False)


def test_unknown_provider_named_error() -> None:
    with pytest.raises(SegmenterBackendError, match="NoSuchExecutionProvider"):
        MediaPipeSegmenter(providers=["NoSuchExecutionProvider"])
