"""Split ONNX export: checker, names, metadata, dynamic sizes and parity with PyTorch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from cuematte.engine.errors import ModelError  # noqa: E402
from cuematte.engine.model import FlashModel, UntrainedModelWarning, read_model_info  # noqa: E402
from cuematte.export.onnx_export import ALPHA_TOL, check_parity  # noqa: E402
from cuematte.training.models.config import get_config  # noqa: E402
from cuematte.training.models.fnfnet import build_model  # noqa: E402


def test_graphs_pass_checker_and_carry_metadata(lite_model_dir: Path) -> None:
    for name, graph in (("flash.onnx", "flash"), ("frame.onnx", "frame")):
        model = onnx.load(str(lite_model_dir / name))
        onnx.checker.check_model(model, full_check=True)
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["cuematte.graph"] == graph
        assert json.loads(meta["cuematte.config"])["name"] == "lite"
        assert json.loads(meta["cuematte.normalization"])["mean"] == [0.485, 0.456, 0.406]
        assert meta["cuematte.trained"] == "false"
        assert (lite_model_dir / name).stat().st_size <= 16 * 1024 * 1024


def test_graph_io_names_and_dynamic_dims(lite_model_dir: Path) -> None:
    flash = onnx.load(str(lite_model_dir / "flash.onnx"))
    frame = onnx.load(str(lite_model_dir / "frame.onnx"))

    def dims(v: onnx.ValueInfoProto) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    assert {i.name: dims(i) for i in flash.graph.input} == {
        "flash": [1, 3, 144, 256],  # at the CMN grid: the engine shrinks, no antialiased Resize in the graph
        "flash_trimap": [1, 3, 144, 256],
    }
    assert [o.name for o in flash.graph.output] == ["flash_features"]
    # A guided model's frame graph is static: it ends at the guided filter's coefficients at the CMN grid and
    # the engine applies them at the frame's size.
    assert {i.name: dims(i) for i in frame.graph.input} == {
        "frame_cmn": [1, 3, 144, 256],
        "flash_features": [1, 144, 64],  # 9x16 tokens of 64 channels, the cached T^f
    }
    assert {o.name: dims(o) for o in frame.graph.output} == {"coef_a": [1, 4, 144, 256], "coef_b": [1, 4, 144, 256]}


def test_graphs_that_refine_in_graph_keep_the_full_resolution_contract() -> None:
    from cuematte.engine.graphspec import GraphSpec

    config = get_config("lite").to_dict() | {"refine": "bmn"}
    spec = GraphSpec.for_config(config, (144, 64))
    assert [t.name for t in spec.frame_inputs] == ["frame", "frame_cmn", "flash_features"]
    assert spec.frame_inputs[0].shape == (1, 3, "height", "width")
    assert [(t.name, t.shape) for t in spec.frame_outputs] == [("alpha", (1, 1, "height", "width")),
                                                               ("foreground", (1, 3, "height", "width"))]


def test_parity_at_an_unseen_size(lite_model_dir: Path) -> None:
    """ONNX Runtime vs PyTorch on the same weights at an odd size that was not used for export."""
    from cuematte.training.checkpoint import load_checkpoint  # noqa: F401  (import cost paid once, keeps test honest)

    torch.manual_seed(0)
    net = build_model(get_config("lite")).eval()  # same seed as the fixture -> same weights
    result = check_parity(net, lite_model_dir, (271, 483))
    assert result.alpha_max_abs <= ALPHA_TOL
    assert result.foreground_max_abs <= 1e-3
    assert result.flash_features_max_abs <= 1e-3
    manifest = json.loads((lite_model_dir / "model.json").read_text())
    assert all(r["alpha_max_abs"] <= ALPHA_TOL for r in manifest["parity"]["results"])


def test_person_mask_graph(lite_mask_model_dir: Path) -> None:
    frame = onnx.load(str(lite_mask_model_dir / "frame.onnx"))
    assert [i.name for i in frame.graph.input] == ["frame_cmn", "flash_features", "person_mask"]
    info = read_model_info(lite_mask_model_dir)
    assert info.person_mask and not info.trained


def test_flash_prior_graphs(lite_prior_model_dir: Path) -> None:
    """The flash graph also outputs the cached prior; the frame graph takes it by name; parity holds for both."""
    flash = onnx.load(str(lite_prior_model_dir / "flash.onnx"))
    frame = onnx.load(str(lite_prior_model_dir / "frame.onnx"))
    assert [o.name for o in flash.graph.output] == ["flash_features", "flash_prior"]
    assert [i.name for i in frame.graph.input] == ["frame_cmn", "flash_features", "person_mask", "flash_prior"]
    prior = next(i for i in frame.graph.input if i.name == "flash_prior")
    assert [d.dim_value for d in prior.type.tensor_type.shape.dim] == [1, 6, 144, 256]
    info = read_model_info(lite_prior_model_dir)
    assert info.flash_prior and info.person_mask
    torch.manual_seed(0)
    net = build_model(get_config("lite", person_mask=True, flash_prior=True)).eval()  # the fixture's weights
    result = check_parity(net, lite_prior_model_dir, (271, 483))
    assert result.ok(), result


@pytest.mark.parametrize("net_config", ["lite", "lite-half-sep", "lite-shared"])
def test_guided_model_exports_from_the_cli_and_mattes(net_config: str, tmp_path: Path,
                                                      scene: tuple[np.ndarray, np.ndarray, np.ndarray],
                                                      quiet_untrained: None) -> None:
    """The shipped configuration's graph contract (with the paper's decoders, with them stopped at half the grid
    with separable last groups, and with the shared trunk): the frame graph also takes the guidance trimap at the
    fixed CMN grid, ends at the coefficients' grid, holds parity at an unseen size, and the session feeds it; a
    removed switch is a named error. The guidance rules are the engine's, recorded in model.json for the session
    to apply: the shipped configuration takes both (as shipped), the others the pocket fill only."""
    from cuematte.clients.cli import main
    from cuematte.engine.session import MattingSession

    out = tmp_path / "guided"
    shipped = net_config == "lite-half-sep"
    assert main(["export", "--config", net_config, "--random-init", "--person-mask", "--flash-prior", "--align-flash",
                 "--guidance", "--guidance-fill-pockets", *(["--guidance-confirm-bg"] if shipped else []),
                 "--out-dir", str(out)]) == 0
    config = json.loads((out / "model.json").read_text())["config"]
    assert config["guidance"] and config["align_flash"] and "person_features" not in config
    assert config["guidance_fill_pockets"] and config["guidance_confirm_bg"] is shipped
    frame = onnx.load(str(out / "frame.onnx"))
    dims = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in frame.graph.input}
    assert list(dims) == ["frame_cmn", "flash_features", "person_mask", "flash_prior", "guidance"]
    assert dims["guidance"] == [1, 3, 144, 256]
    coef = [d.dim_value for d in frame.graph.output[0].type.tensor_type.shape.dim]
    assert coef == ([1, 4, 72, 128] if net_config == "lite-half-sep" else [1, 4, 144, 256])
    torch.manual_seed(0)
    cfg = get_config(net_config, person_mask=True, flash_prior=True, align_flash=True, guidance=True)
    net = build_model(cfg).eval()
    assert check_parity(net, out, (271, 483)).ok()
    flash_img, noflash, _ = scene
    session = MattingSession(out)
    assert session.guidance_params.fill_pockets and session.guidance_params.confirm_background is shipped
    session.set_flash(flash_img, noflash)
    m = session.matte(noflash)
    assert m.alpha.shape == noflash.shape[:2] and m.guidance is not None and m.guidance.shape == (144, 256)
    with pytest.raises(ModelError, match="mediapipe"):
        MattingSession(out, segmenter="grabcut")
    manifest = json.loads((out / "model.json").read_text())
    manifest["config"]["person_features"] = True  # an experiment's model, from before the switch was removed
    (out / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=r"person_features.*person-features-2026-12-04"):
        MattingSession(out)


def test_frame_graph_that_does_not_take_the_cache_is_a_model_error(
    lite_model_dir: Path, lite_prior_model_dir: Path, tmp_path: Path
) -> None:
    """A manifest that promises the flash prior with graphs that lack it is refused at load, not mid-call."""
    mixed = tmp_path / "mixed"
    shutil.copytree(lite_model_dir, mixed)
    manifest = json.loads((lite_prior_model_dir / "model.json").read_text())
    (mixed / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="sha256"):  # its digests name other graphs
        FlashModel(mixed)
    del manifest["sha256"]
    (mixed / "model.json").write_text(json.dumps(manifest))
    with pytest.warns(UntrainedModelWarning), pytest.raises(ModelError, match="flash graph outputs"):
        FlashModel(mixed)


def test_untrained_model_warns(lite_model_dir: Path) -> None:
    with pytest.warns(UntrainedModelWarning, match="untrained"):
        FlashModel(lite_model_dir)


def test_model_folder_missing_a_graph(lite_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(lite_model_dir, broken)
    (broken / "frame.onnx").unlink()
    with pytest.raises(ModelError, match="missing its frame graph"):
        read_model_info(broken)
    (broken / "model.json").unlink()
    with pytest.raises(ModelError, match=r"no model\.json"):
        read_model_info(broken)
    with pytest.raises(ModelError, match="not found"):
        read_model_info(tmp_path / "nowhere")


@pytest.mark.usefixtures("quiet_untrained")
def test_corrupt_graph_is_a_model_error(lite_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "corrupt"
    shutil.copytree(lite_model_dir, broken)
    (broken / "flash.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(ModelError, match="sha256"):  # model.json records each graph's digest
        FlashModel(broken)
    manifest = json.loads((broken / "model.json").read_text())
    assert manifest["sha256"]["frame.onnx"] and manifest["recipe"] is None  # a random-init export has no recipe
    del manifest["sha256"]
    (broken / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="cannot load"):  # a folder without digests still fails by name
        FlashModel(broken)


@pytest.mark.slow
def test_paper_config_exports_with_parity(tmp_path: Path) -> None:
    from cuematte.export.onnx_export import export_onnx

    torch.manual_seed(0)
    net = build_model(get_config("paper"))
    manifest = export_onnx(net, tmp_path, trained=False, source="test", export_size=(176, 320))
    assert all(r["alpha_max_abs"] <= ALPHA_TOL for r in manifest["parity"]["results"])
    assert manifest["flash_features_shape"] == [11 * 20, 256]
    assert np.isclose(manifest["parity"]["tolerance"]["alpha"], 1e-3)


def test_a_guidance_rule_needs_the_guidance_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model without the guidance input cannot take the engine's guidance rules (their use: the test above)."""
    from cuematte.clients.cli import main

    assert main(["export", "--config", "lite", "--random-init", "--guidance-confirm-bg",
                 "--out-dir", str(tmp_path / "plain")]) == 2
    assert "guidance" in capsys.readouterr().err and not (tmp_path / "plain").exists()
