"""The real-photo check: a flash rendered for scikit-image's astronaut portrait, then the whole pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cuematte.engine.cues.simulated_flash import render_flash
from cuematte.engine.frames import luma
from cuematte.training.photo_flash import REGIONS, main, region_means, skimage_photo

pytestmark = pytest.mark.usefixtures("quiet_untrained")


def test_rendered_flash_lights_the_near_person_more_than_the_far_wall() -> None:
    noflash = skimage_photo("astronaut.png")
    person = np.zeros(noflash.shape[:2], np.float32)
    person[200:, 100:400] = 1.0
    flash = render_flash(noflash, person, shift=(0.0, 0.0))
    assert flash.shape == noflash.shape and flash.dtype == np.uint8
    gain = (luma(flash.astype(np.float32)) + 4) / (luma(noflash.astype(np.float32)) + 4)
    assert np.median(gain[260:, 150:350]) > 1.3 * np.median(gain[:150, :80])


def test_region_means_read_each_marked_region() -> None:
    alpha = np.zeros((512, 512), np.float32)
    alpha[:256] = 1.0  # the top half: face, turtleneck and room lie in it, the helmet below it
    alpha[300:480, 40:150] = 0.5  # the left part of the suit region (40..260) at one half
    means = region_means("astronaut.png", alpha)
    assert set(means) == set(REGIONS["astronaut.png"])
    assert means["face"] == means["turtleneck"] == means["room"] == 1.0 and means["helmet"] == 0.0
    assert means["suit"] == pytest.approx(0.5 * 109 / 219, abs=1e-3)  # columns 41..149 of 41..259
    assert region_means("camera.png", alpha) == {}


def test_photo_sheet_runs_the_pipeline(lite_model_dir: Path, tmp_path: Path) -> None:
    assert main(["--model", str(lite_model_dir), "--out", str(tmp_path)]) == 0
    sheet = cv2.imread(str(tmp_path / "photos.png"))
    alpha = cv2.imread(str(tmp_path / "astronaut_alpha.png"), cv2.IMREAD_UNCHANGED)
    assert sheet is not None and sheet.shape[0] == 256 and sheet.shape[1] == 5 * 256
    assert alpha is not None and alpha.shape == (512, 512)
    for tag in ("noflash", "flash", "green"):
        assert (tmp_path / f"astronaut_{tag}.png").is_file()
    readings = json.loads((tmp_path / "regions.json").read_text())["astronaut.png"][lite_model_dir.name]
    # The saved 8-bit alpha read the same way (its rounding moves a mean by at most 0.002).
    assert readings == pytest.approx(region_means("astronaut.png", alpha / 255.0), abs=3e-3)


def test_photo_sheet_compares_models_row_by_row(lite_model_dir: Path, tmp_path: Path) -> None:
    """Two --model folders: one labelled row per model, and each model's alpha kept under its folder name."""
    other = tmp_path / "other"
    other.symlink_to(lite_model_dir, target_is_directory=True)
    out = tmp_path / "out"
    assert main(["--model", str(lite_model_dir), "--model", str(other), "--out", str(out)]) == 0
    sheet = cv2.imread(str(out / "photos.png"))
    assert sheet is not None and sheet.shape[:2] == (2 * 256, 5 * 256)
    a = cv2.imread(str(out / f"astronaut_{lite_model_dir.name}_alpha.png"), cv2.IMREAD_UNCHANGED)
    b = cv2.imread(str(out / "astronaut_other_alpha.png"), cv2.IMREAD_UNCHANGED)
    assert a is not None and b is not None and np.array_equal(a, b)  # the same weights matte alike
