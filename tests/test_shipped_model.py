"""The trained default model that ships inside the package: present, small, trained, loads through the engine
with no flag, and mattes held-out samples better than the person segmenter alone."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from cuematte.engine.graphspec import GraphSpec
from cuematte.engine.model import (
    DEFAULT_MODEL,
    REMOVED_SWITCHES,
    UntrainedModelWarning,
    read_model_info,
    resolve_model_dir,
)
from cuematte.engine.session import MattingSession
from cuematte.training.data.config import SynthConfig
from cuematte.training.data.make_eval import make_eval
from cuematte.training.evaluate import load_split, mediapipe_method, score, session_method

MAX_ONNX_BYTES = 16 * 1024 * 1024


def test_default_model_ships_trained_and_small() -> None:
    assert resolve_model_dir(None) == DEFAULT_MODEL
    info = read_model_info(DEFAULT_MODEL)
    assert info.trained, "the shipped model must not be a random-init export"
    graphs = sorted(DEFAULT_MODEL.glob("*.onnx"))
    assert {g.name for g in graphs} >= {"flash.onnx", "frame.onnx"}
    for g in graphs:
        assert g.stat().st_size <= MAX_ONNX_BYTES, f"{g.name} is {g.stat().st_size / 2**20:.1f} MB"
    manifest = json.loads((DEFAULT_MODEL / "model.json").read_text())
    assert max(r["alpha_max_abs"] for r in manifest["parity"]["results"]) <= 1e-3
    card = (DEFAULT_MODEL / "README.md").read_text()
    assert "MSE" in card and (DEFAULT_MODEL / "curve.png").is_file()


def test_default_model_records_its_graph_contract_and_no_removed_switch() -> None:
    """model.json carries the contract export writes ("io"), so the engine reads it instead of deriving it."""
    manifest = json.loads((DEFAULT_MODEL / "model.json").read_text())
    n, c = manifest["flash_features_shape"]
    assert GraphSpec.from_dict(manifest["io"]) == GraphSpec.for_config(manifest["config"], (n, c))
    assert not set(manifest["config"]) & set(REMOVED_SWITCHES)


def test_default_model_loads_with_no_flag_and_mattes(scene: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    flash, noflash, _ = scene
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedModelWarning)
        session = MattingSession()
    # It serves with the background-confirming guidance it was measured with (model card).
    assert session.model.info.guidance_confirm_bg and session.guidance_params.confirm_background
    session.set_flash(flash, noflash)
    m = session.matte(noflash)
    assert m.alpha.shape == noflash.shape[:2] and m.alpha.dtype == np.float32
    assert m.alpha.min() >= 0.0 and m.alpha.max() <= 1.0


def test_default_model_beats_the_segmenter_alone_on_held_out_samples(tmp_path: Path) -> None:
    """Fixed evaluation seeds (never trained on): per sample, ours has the lower median alpha MSE and the
    lower mean gradient error (edges) than MediaPipe's mask alone."""
    make_eval(tmp_path / "static", 8, "static", replace(SynthConfig(), size=(288, 512)))
    samples = load_split(tmp_path / "static")
    ours, seg = session_method(None), mediapipe_method()
    rows = {"ours": [score(*ours(s), s) for s in samples], "mediapipe": [score(*seg(s), s) for s in samples]}
    median = {k: float(np.median([r["mse"] for r in v])) for k, v in rows.items()}
    grad = {k: float(np.mean([r["grad"] for r in v])) for k, v in rows.items()}
    assert median["ours"] < median["mediapipe"], median
    assert grad["ours"] < grad["mediapipe"], grad
