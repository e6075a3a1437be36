"""The per-sample breakdown behind the model card: edge band, error split, comparisons with the ablation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from cuematte.training.breakdown import (
    LOCATED,
    SEGMENTER_ONLY,
    against,
    breakdown,
    edge_band,
    error_split,
    main,
    sad_split,
)
from cuematte.training.data.config import SynthConfig
from cuematte.training.data.make_eval import make_eval
from cuematte.training.evaluate import EvalSample, score
from cuematte.training.metrics import matting_metrics
from cuematte.training.parallax_eval import EvalVariant, evaluate_parallax

pytestmark = pytest.mark.usefixtures("quiet_untrained")


def _square(size: int = 40, lo: int = 10, hi: int = 30) -> np.ndarray:
    alpha = np.zeros((size, size))
    alpha[lo:hi, lo:hi] = 1.0
    return alpha


def test_edge_band_is_the_pixels_near_the_edge_and_the_soft_ones() -> None:
    alpha = _square(60, 20, 40)
    alpha[2, 2] = 0.5  # a soft pixel far from any edge
    band = edge_band(alpha, width=3)
    assert band[20, 30] and band[39, 30]  # on the edge, inside
    assert band[16, 30] and not band[15, 30]  # 4 px outside: the edge pixel row 19 + 3 reaches row 16
    assert band[23, 30] and not band[24, 30]  # inside, the inner edge row 20 + 3 reaches row 23
    assert not band[30, 30] and not band[50, 50]  # deep inside, far outside
    assert band[2, 2]


def test_error_split_adds_up_to_the_mse_of_the_eval() -> None:
    alpha = _square()
    pred = alpha.copy()
    pred[0:3, 0:3] = 1.0  # 9 wrong pixels, more than 6 px from the square: a region error
    pred[10, 10:30] = 0.5  # the square's top row half missed: 20 pixels of 0.25 squared error on the edge
    alpha[29, 12] = 0.5  # a soft pixel on the bottom row, predicted opaque: 0.25 on the edge, all of it soft
    parts = error_split(pred, alpha, edge_band(alpha))
    assert parts["regions"] == pytest.approx(1e3 * 9 / 1600)
    assert parts["edge"] == pytest.approx(1e3 * 21 * 0.25 / 1600)
    assert parts["soft"] == pytest.approx(1e3 * 0.25 / 1600)
    sample = EvalSample(id="x", noflash=np.zeros((40, 40, 3), np.uint8), flash=np.zeros((40, 40, 3), np.uint8),
                        alpha=alpha, fg=None)
    assert parts["edge"] + parts["regions"] == pytest.approx(score(pred, None, sample)["mse"])


def test_sad_split_adds_up_and_tells_a_blurred_edge_from_one_drawn_too_far_out() -> None:
    alpha = _square()
    band = edge_band(alpha)
    blurred = cv2.GaussianBlur(alpha, (0, 0), 1.5)
    parts = sad_split(blurred, alpha, band)
    assert parts["edge"] + parts["regions"] == pytest.approx(matting_metrics(blurred, alpha)["sad"])
    assert parts["bias_opaque"] < -0.01 and parts["bias_clear"] > 0.01 and parts["soft"] == 0.0
    grown = cv2.dilate(alpha, np.ones((5, 5)))  # the edge 2 px too far out, sharp
    grown_parts = sad_split(grown, alpha, band)
    assert grown_parts["bias_opaque"] == 0.0 and grown_parts["bias_clear"] > 0.01
    assert grown_parts["regions"] == 0.0 and grown_parts["edge"] == pytest.approx((grown - alpha).sum() / 1e3)


def test_against_counts_wins_and_halves() -> None:
    ours, ref = np.array([1.0, 2.0, 6.0, 3.0]), np.array([2.0, 5.0, 4.0, 3.0])
    v = against(ours, ref)
    assert {k: v[k] for k in ("ratio", "wins", "half", "n")} == {"ratio": pytest.approx(12 / 14), "wins": 2,
                                                                  "half": 2, "n": 4}
    assert v["ci"][0] <= 12 / 14 <= v["ci"][1]


def test_breakdown_compares_each_model_with_the_ablation_per_trimap_group() -> None:
    samples = [EvalSample(id=str(i), noflash=np.zeros((40, 40, 3), np.uint8),
                          flash=np.zeros((40, 40, 3), np.uint8), alpha=_square(), fg=None) for i in range(3)]
    errors = {"0": 0.1, "1": 0.2, "2": 0.4}  # a flat error over the whole frame, per sample

    def ours(s: EvalSample) -> tuple[np.ndarray, None]:
        return s.alpha + errors[s.id], None

    def ablation(s: EvalSample) -> tuple[np.ndarray, None]:
        return s.alpha + 0.2, None

    table = breakdown({"ours": ours}, samples, [LOCATED, LOCATED, SEGMENTER_ONLY], ablation)
    mse = np.array([1e3 * e**2 for e in errors.values()])
    assert table["ours"]["mse"] == pytest.approx(mse.tolist())
    assert table["ours"]["median"] == pytest.approx(40.0)
    assert table["ours"]["edge"] + table["ours"]["regions"] == pytest.approx(mse.mean())
    assert table["ours"]["soft"] == 0.0  # the square has no soft pixels
    v = table["ours"]["vs_noflash"]
    assert {k: v[k] for k in ("ratio", "wins", "half", "n")} == {"ratio": pytest.approx(mse.mean() / 40.0),
                                                                  "wins": 1, "half": 1, "n": 3}
    assert v["ci"][0] <= v["ratio"] <= v["ci"][1]
    assert table["ours"]["by_trimap"][LOCATED]["n"] == 2
    assert table["ours"]["by_trimap"][LOCATED]["ratio"] == pytest.approx((10 + 40) / 2 / 40)
    assert table["ours"]["by_trimap"][SEGMENTER_ONLY]["mean"] == pytest.approx(160.0)
    assert "vs_noflash" not in table["noflash"]


def test_main_on_rendered_samples_with_real_models(lite_prior_model_dir: Path, lite_mask_model_dir: Path,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_eval(tmp_path / "data" / "static", 2, "static", replace(SynthConfig(), size=(144, 256)))
    out = tmp_path / "breakdown.json"
    # Random-init models: the plumbing (real sessions, real MediaPipe trimaps) is what is tested here.
    main(["--data", str(tmp_path / "data"), "--model", str(lite_prior_model_dir),
          "--noflash-model", str(lite_mask_model_dir), "--json", str(out)])
    table = json.loads(out.read_text())["static"]
    ours = table[str(lite_prior_model_dir)]
    assert len(ours["mse"]) == 2 and ours["vs_noflash"]["n"] == 2
    assert sum(b["n"] for b in ours["by_trimap"].values()) == 2
    assert ours["mean"] == pytest.approx(np.mean(ours["mse"]))
    assert "vs noflash" in capsys.readouterr().out


def test_main_on_a_parallax_split_scores_as_eval_does(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    split = tmp_path / "px"
    make_eval(split, 2, "parallax", SynthConfig(size=(96, 128)))
    shipped = Path(__file__).resolve().parents[1] / "cuematte" / "engine" / "models" / "parallax-lite"
    out = tmp_path / "px.json"
    main(["--data", str(split), "--model", str(shipped), "--reference", str(shipped), "--json", str(out)])
    ours = json.loads(out.read_text())[str(shipped)]
    assert ours["mean"] == pytest.approx(evaluate_parallax(split, shipped, EvalVariant())["mean"]["sad"])
    assert ours["edge"] + ours["regions"] == pytest.approx(ours["mean"])
    assert ours["vs_reference"]["ratio"] == 1.0 and ours["vs_reference"]["n"] == 2
    assert "vs reference 1.00x" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a flash split has no single-branch reference ...
        main(["--data", str(tmp_path / "none"), "--model", str(shipped), "--reference", str(shipped)])
    with pytest.raises(SystemExit):  # ... and a parallax split no no-flash ablation
        main(["--data", str(split), "--model", str(shipped), "--noflash-model", str(shipped)])
