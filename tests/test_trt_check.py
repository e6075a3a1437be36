"""Every graph export can make is one TensorRT's ONNX parser accepts (checked without a GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from cuematte.engine.model import DEFAULT_MODEL
from cuematte.export.trt_check import check_graph, check_model_dir

MODEL_FIXTURES = ["lite_model_dir", "lite_mask_model_dir", "lite_prior_model_dir", "lite_align_model_dir",
                  "lite_guided_model_dir"]


def test_shipped_model_builds_in_tensorrt() -> None:
    assert check_model_dir(DEFAULT_MODEL) == []


@pytest.mark.parametrize("fixture", MODEL_FIXTURES)
def test_every_config_exports_graphs_tensorrt_builds(fixture: str, request: pytest.FixtureRequest) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    assert sorted(p.name for p in model_dir.glob("*.onnx")) == ["flash.onnx", "frame.onnx"]
    assert check_model_dir(model_dir) == []


def _save(tmp: Path, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
          outputs: list[onnx.ValueInfoProto], inits: list[onnx.TensorProto] | None = None,
          opsets: tuple[tuple[str, int], ...] = (("", 18),)) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    path = tmp / "g.onnx"
    onnx.save(model, str(path))
    return path


def _image(name: str, h: int | str = "height", w: int | str = "width") -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, h, w])


def test_antialiased_resize_is_refused(tmp_path: Path) -> None:
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 0.5, 0.5])
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear", antialias=1, name="shrink")]
    path = _save(tmp_path, nodes, [_image("x")], [_image("y", "?h", "?w")], [scales])
    found = [str(f) for f in check_graph(path, ((360, 640),))]
    assert any("shrink is antialiased" in f for f in found), found
    plain = [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear", name="shrink")]
    path = _save(tmp_path, plain, [_image("x")], [_image("y", "?h", "?w")], [scales])
    assert not any("antialiased" in str(f) for f in check_graph(path, ((360, 640),)))


def test_custom_domains_unsupported_ops_and_int64_outputs_are_refused(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("FusedThing", ["x"], ["a"], domain="com.microsoft", name="fused"),
        helper.make_node("NonZero", ["x"], ["idx"], name="nz"),
    ]
    outputs = [_image("a"), helper.make_tensor_value_info("idx", TensorProto.INT64, [4, "n"])]
    path = _save(tmp_path, nodes, [_image("x")], outputs, opsets=(("", 18), ("com.microsoft", 1)))
    found = [str(f) for f in check_graph(path, ((360, 640),))]
    assert any("custom domain 'com.microsoft'" in f for f in found), found
    assert any("NonZero nz: operator not in TensorRT's ONNX support matrix" in f for f in found), found
    assert any("output idx is int64" in f for f in found), found


def test_sizes_that_do_not_follow_the_frame_are_found(tmp_path: Path) -> None:
    """A graph traced with its frame size baked into a Reshape runs at that size only: the corners catch it."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [4], [1, 3, 360, 640])
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="baked")]
    path = _save(tmp_path, nodes, [_image("x")], [_image("y")], [shape])
    assert check_graph(path, ((360, 640),)) == []
    found = [str(f) for f in check_graph(path, ((360, 640), (1080, 1920)))]
    assert len(found) == 1 and "1080x1920" in found[0], found


def test_the_frame_graph_runs_at_the_profile_corners(lite_guided_model_dir: Path) -> None:
    """Inference to the corners' sizes is backed by a real run: ONNX Runtime at 360p portrait and 1080p (the
    guided graph is static; the engine's refinement takes its coefficients to each size)."""
    from cuematte.engine.backends.onnxruntime import OrtGraph
    from cuematte.engine.refine import frame_result

    graph = OrtGraph(lite_guided_model_dir / "frame.onnx", providers=["CPUExecutionProvider"], threads=2)
    meta = {i.name: [d if isinstance(d, int) else None for d in i.shape] for i in graph.session.get_inputs()}
    assert all(None not in shape for shape in meta.values())
    rng = np.random.default_rng(0)
    out = graph.run({name: rng.random(shape, dtype=np.float32) for name, shape in meta.items()})
    assert out["coef_a"].shape == out["coef_b"].shape == (1, 4, 144, 256)
    for h, w in ((640, 360), (1080, 1920)):
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        alpha, fg = frame_result(out, frame)
        assert alpha.shape == (h, w) and fg.shape == (h, w, 3)
