"""`cuematte eval` end to end on a generated evaluation folder: every method, image and video splits."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cuematte.clients.cli import main
from cuematte.training.data.config import SynthConfig
from cuematte.training.data.make_eval import make_eval

pytestmark = pytest.mark.usefixtures("quiet_untrained")


def test_eval_reports_every_method_and_split(lite_model_dir: Path, lite_mask_model_dir: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    cfg = replace(SynthConfig(), size=(144, 256))
    make_eval(tmp_path / "data" / "static", 2, "static", cfg)
    make_eval(tmp_path / "data" / "video", 1, "video", cfg, length=3)
    out = tmp_path / "eval.json"
    # Random-init 'no-flash' models stand in for the two ablations (the paper's, frame alone; ours, with the
    # person mask): the methods' plumbing is what is tested here.
    code = main(["eval", "--model", str(lite_model_dir), "--data", str(tmp_path / "data"), "--json", str(out),
                 "--noflash-model", str(lite_model_dir), "--noflash-model", str(lite_mask_model_dir)])
    assert code == 0
    table = json.loads(out.read_text())
    assert set(table) == {"static", "video"}
    for split in table.values():
        assert set(split) == {"ours", "classical", "mediapipe", "noflash", "noflash-nomask"}
        for m in split.values():
            assert m["mse"] >= 0 and m["sad"] >= 0 and m["grad"] >= 0 and m["conn"] >= 0
    assert table["static"]["ours"]["n"] == 2 and "mse_alpha_fg" in table["static"]["ours"]
    assert table["video"]["ours"]["n"] == 1 and table["video"]["ours"]["dtssd"] >= 0
    printed = capsys.readouterr().out
    assert "classical" in printed and "dtssd" in printed
    static = table["static"]
    ratio = static["ours"]["mse"] / static["noflash-nomask"]["mse"]
    lo, hi = static["noflash-nomask"]["ours_ratio_lo"], static["noflash-nomask"]["ours_ratio_hi"]
    # Two samples: resamples hold one twice or both, and the pooled ratio lies between the two samples' own.
    assert lo <= ratio <= hi
    assert f"noflash-nomask {ratio:.2f}x ({lo:.2f}-{hi:.2f})" in printed
    video = table["video"]  # one clip: the interval over clips is the point itself
    v_ratio = video["ours"]["mse"] / video["mediapipe"]["mse"]
    assert video["mediapipe"]["ours_ratio_lo"] == pytest.approx(v_ratio)
    assert video["mediapipe"]["ours_ratio_hi"] == pytest.approx(v_ratio)
    assert "ours_ratio_lo" not in static["ours"]


def test_mse_ratios_against_each_baseline() -> None:
    from cuematte.training.evaluate import mse_ratios

    table = {"static": {"ours": {"mse": 2.0}, "ours-smoothed": {"mse": 1.0}, "mediapipe": {"mse": 8.0},
                        "noflash": {"mse": 0.0}},
             "video": {"mediapipe": {"mse": 3.0}}}
    # smoothed ours is not a baseline; a zero-MSE baseline has no ratio; a split without ours has none
    assert mse_ratios(table) == {"static": {"mediapipe": 0.25}}


def test_two_ablations_of_one_kind_get_distinct_names(lite_model_dir: Path) -> None:
    from cuematte.training.evaluate import noflash_methods

    assert list(noflash_methods([lite_model_dir, lite_model_dir])) == ["noflash-nomask", "noflash-nomask-2"]


@pytest.mark.parametrize("model", ["lite_mask_model_dir", "lite_prior_model_dir"])
def test_noflash_ablation_with_a_person_mask_model(model: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """An ablation trained with the segmenter prior is fed MediaPipe's mask, as the shipped model is (and, with
    the flash prior, the flash graph's outputs for the no-flash frame, as in its training)."""
    from cuematte.training.evaluate import load_split, noflash_method

    make_eval(tmp_path / "static", 1, "static", replace(SynthConfig(), size=(144, 256)))
    (sample,) = load_split(tmp_path / "static")
    alpha, fg = noflash_method(request.getfixturevalue(model))(sample)
    assert alpha.shape == (144, 256) and fg is not None and fg.shape == (144, 256, 3)
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0


def test_a_model_compared_with_itself_is_one_times(lite_model_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``--ablation NAME=DIR`` on a flash split scores another model folder the same way and gives the paired
    interval of ours against it: the model a change is measured against. Against itself that is exactly 1x."""
    make_eval(tmp_path / "data" / "static", 3, "static", replace(SynthConfig(), size=(144, 256)))
    out = tmp_path / "eval.json"
    code = main(["eval", "--model", str(lite_model_dir), "--data", str(tmp_path / "data"), "--no-baselines",
                 "--ablation", f"before={lite_model_dir}", "--json", str(out)])
    assert code == 0
    static = json.loads(out.read_text())["static"]
    assert set(static) == {"ours", "before"}
    assert static["before"]["mse"] == pytest.approx(static["ours"]["mse"])
    assert static["before"]["ours_ratio_lo"] == pytest.approx(1.0)
    assert static["before"]["ours_ratio_hi"] == pytest.approx(1.0)
    assert "before 1.00x (1.00-1.00)" in capsys.readouterr().out


def test_graph_lag_rows_vary_the_smoothed_row(lite_model_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``--graph-lag N`` scores the live service's background graph (its output first used N frames later) beside
    the row it varies, with the same smoothing. A still has its own flash, so its one frame runs the graph itself:
    the same matte. A clip's later frames reuse outputs, and the paired interval says what that costs."""
    cfg = replace(SynthConfig(), size=(144, 256))
    make_eval(tmp_path / "data" / "static", 2, "static", cfg)
    make_eval(tmp_path / "data" / "video", 1, "video", cfg, length=4)
    out = tmp_path / "eval.json"
    code = main(["eval", "--model", str(lite_model_dir), "--data", str(tmp_path / "data"), "--no-baselines",
                 "--temporal", "0.5", "--graph-lag", "1", "--json", str(out)])
    assert code == 0
    table = json.loads(out.read_text())
    static, video = table["static"], table["video"]
    assert set(static) == set(video) == {"ours", "ours-smoothed", "ours-lag1"}
    assert static["ours-lag1"]["mse"] == pytest.approx(static["ours-smoothed"]["mse"])
    assert static["ours-lag1"]["ref_ratio_lo"] == pytest.approx(1.0)
    row = video["ours-lag1"]
    assert row["ref_ratio"] == pytest.approx(row["mse"] / video["ours-smoothed"]["mse"])
    assert row["ref_ratio_lo"] == pytest.approx(row["ref_ratio"])  # one clip: the interval is the point
    printed = capsys.readouterr().out
    assert f"ours-lag1 / ours-smoothed {row['ref_ratio']:.2f}x" in printed
    assert "ours_ratio_lo" not in row  # a variant of ours is not a baseline


@pytest.mark.parametrize("spec", ["before", "=dir", "mediapipe=dir"])
def test_a_malformed_or_taken_ablation_name_is_a_named_error(spec: str, lite_model_dir: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    make_eval(tmp_path / "data" / "static", 1, "static", replace(SynthConfig(), size=(144, 256)))
    code = main(["eval", "--model", str(lite_model_dir), "--data", str(tmp_path / "data"), "--ablation", spec])
    assert code == 2
    assert "--ablation" in capsys.readouterr().err


def test_eval_on_a_parallax_split_scores_the_shipped_parallax_model(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    split = tmp_path / "px"
    make_eval(split, 2, "parallax", SynthConfig(size=(96, 128)))
    shipped = Path(__file__).resolve().parents[1] / "cuematte" / "engine" / "models" / "parallax-lite"
    out = tmp_path / "px.json"
    code = main(["eval", "--data", str(split), "--model", str(shipped), "--no-baselines", "--limit", "1",
                 "--json", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    assert set(results) == {"ours", "ours-engine"} and results["ours"]["n"] == 1
    assert results["ours"]["variant"]["protocol"] == "trimap"
    assert "| ours | trimap | 1/1 |" in capsys.readouterr().out
