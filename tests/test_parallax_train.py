"""The parallax training loop, its recipe dispatch, resume, export through the CLI and the split evaluation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cuematte.clients.cli import main
from cuematte.engine.errors import InputError
from cuematte.training.checkpoint import CheckpointError
from cuematte.training.data.config import SynthConfig
from cuematte.training.data.make_eval import make_eval
from cuematte.training.parallax_eval import EvalVariant, eval_trimap, evaluate_parallax, format_parallax_table
from cuematte.training.parallax_train import (
    ParallaxTrainConfig,
    is_parallax_checkpoint,
    load_ppm_checkpoint,
    train_parallax,
)
from cuematte.training.train import load_recipe

SMALL = dict(size=(96, 128), crop=64, batch_size=2, cache_samples=4, eval_samples=2, eval_every=2, ckpt_every=1,
             warmup=2, threads=2)


def test_recipes_validate_and_the_flash_loader_refuses_them() -> None:
    from cuematte.training.parallax_train import load_parallax_recipe
    from cuematte.training.train import read_recipe_values, recipe_path

    for name, branches, bg in (("parallax-lite", "dual", True), ("parallax-single", "single", True),
                               ("parallax-no-bg", "dual", False)):
        path = recipe_path(name)
        cfg = load_parallax_recipe(path, read_recipe_values(path))
        assert (cfg.branches, cfg.use_bg_view, cfg.flow) == (branches, bg, "dis")
        assert cfg.extra["recipe"] == name
    with pytest.raises(InputError, match="parallax recipe, not a flash one"):
        load_recipe("parallax-lite")
    with pytest.raises(InputError, match="crop"):
        ParallaxTrainConfig(crop=100).validate()
    # The network's own rules, as a named recipe error: the single branch sees one view, nothing to compare.
    with pytest.raises(InputError, match="single-branch"):
        ParallaxTrainConfig(branches="single", ratio_channels=True).validate()
    with pytest.raises(InputError, match="fusion_channels must be 4"):
        ParallaxTrainConfig(fusion_channels=(48, 32, 16)).validate()  # type: ignore[arg-type]
    with pytest.raises(InputError, match="top_loss"):
        ParallaxTrainConfig(branches="single", top_loss=True).validate()
    both = load_parallax_recipe(recipe_path("parallax-both"), read_recipe_values(recipe_path("parallax-both")))
    shipped = load_parallax_recipe(recipe_path("parallax-ratio"), read_recipe_values(recipe_path("parallax-ratio")))
    assert both.top_loss and replace(both, top_loss=False, extra={}) == replace(shipped, extra={})
    assert both.cache_stem == shipped.cache_stem.replace("-n6000", "-top-n6000")
    # The wide-head pair differs from the shipped model and its single-branch ablation in the head alone, on the
    # same data (one cache), and the network built from it has that head.
    single = load_parallax_recipe(recipe_path("parallax-single"), read_recipe_values(recipe_path("parallax-single")))
    for name, base in (("parallax-wide", shipped), ("parallax-single-wide", single)):
        wide = load_parallax_recipe(recipe_path(name), read_recipe_values(recipe_path(name)))
        assert wide.fusion_channels == (48, 32, 24, 16) and wide.cache_stem == shipped.cache_stem
        assert replace(wide, fusion_channels=None, extra={}) == replace(base, extra={})
        assert wide.net_config.fusion_channels == (48, 32, 24, 16)
        assert base.net_config.fusion_channels == (48, 32, 16, 8)  # the preset's when a recipe is silent


def test_train_resume_export_and_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = ParallaxTrainConfig(steps=2, **SMALL)  # type: ignore[arg-type]
    run = tmp_path / "run"
    last = train_parallax(cfg, run)
    assert is_parallax_checkpoint(last)
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    assert {"sep", "laplacian", "grad", "composition", "total", "eval_mse"} <= set(lines[-1])

    # Resume to 3 steps: the weights continue from step 2, the log keeps its first lines.
    before, _ = load_ppm_checkpoint(last)
    train_parallax(replace(cfg, steps=3), run, resume=True)
    after, meta = load_ppm_checkpoint(last)
    assert meta["step"] == 3
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    new = after.state_dict()
    assert any(not np.array_equal(v.numpy(), new[k].numpy()) for k, v in before.state_dict().items())
    with pytest.raises(InputError, match="step 3 already"):
        train_parallax(replace(cfg, steps=2), run, resume=True)

    model = tmp_path / "model"
    assert main(["export", "--checkpoint", str(last), "--out-dir", str(model)]) == 0
    assert "parity 448x448" in capsys.readouterr().out
    manifest = json.loads((model / "model.json").read_text())
    assert manifest["kind"] == "parallax" and manifest["trained"] and manifest["steps"] == 3
    assert manifest["work_side"] == 512

    split = tmp_path / "split"
    make_eval(split, 2, "parallax", SynthConfig(size=(96, 128)))
    res = evaluate_parallax(split, model, EvalVariant("trimap"))
    oracle = evaluate_parallax(split, model, EvalVariant("trimap", exact_flow=True))
    assert oracle["n"] == 2 and all(np.isfinite(v) for v in oracle["mean"].values())
    assert res["n"] == 2 and res["refused"] == 0
    assert all(np.isfinite(v) for v in res["mean"].values())
    table = format_parallax_table({"ours": res})
    assert "| ours | trimap | 2/2 |" in table


def test_top_loss_trains_the_top_branch_too(tmp_path: Path) -> None:
    cfg = ParallaxTrainConfig(steps=1, motion_channels=True, ratio_channels=True, top_loss=True,
                              **SMALL)  # type: ignore[arg-type]
    train_parallax(cfg, tmp_path / "run")
    (line,) = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    terms = ("sep", "laplacian", "grad", "composition")
    assert {*terms, *(f"top_{t}" for t in terms)} <= set(line)
    assert line["total"] == pytest.approx(sum(line[t] + line[f"top_{t}"] for t in terms), rel=1e-3)
    assert any(p.name.endswith("-top-n4") for p in tmp_path.iterdir())  # its own cache, with the top's truth


def test_eval_trimap_is_certain_only_far_from_the_edge() -> None:
    alpha = np.zeros((200, 200), np.float32)
    alpha[50:150, 50:150] = 1.0
    tri = eval_trimap(alpha)
    assert tri[100, 100] == 255 and tri[0, 0] == 0
    assert tri[50, 100] == 128 and tri[49, 100] == 128  # the edge itself is left to the network
    assert (tri[alpha == 1] != 0).all() and (tri[alpha == 0] != 255).all()


def test_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        is_parallax_checkpoint(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_ppm_checkpoint(bad)
