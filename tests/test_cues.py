"""Flash cue pre-processing: alignment, the paper's flash-ratio map, segmentation fusion, trimap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clients.scenes import make_pair, person_mask
from engine.cues.align import estimate_alignment, estimate_gains
from engine.cues.flash_ratio import FlashRatioParams, flash_ratio_map, pick_seeds
from engine.cues.trimap import BG, FG, UNKNOWN, build_flash_trimap, trimap_from_mask
from engine.errors import FlashCueError, FrameFormatError, SizeMismatchError
from engine.frames import resize


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_gains_recover_auto_exposure() -> None:
    flash, noflash, _ = make_pair(seed=1, exposure=0.75)
    gains = estimate_gains(flash, noflash)
    # The wall gets 1/20 of the flash (x1.045) and then the whole frame is scaled by 0.75.
    assert np.allclose(gains, 0.75 * 1.045, atol=0.04)


def test_alignment_recovers_camera_shift() -> None:
    flash, noflash, _ = make_pair(seed=2)
    moved = np.roll(noflash, (5, -9), axis=(0, 1))  # the whole camera moved between the frames
    al = estimate_alignment(flash, moved)
    assert al.converged
    assert np.allclose(al.warp[:, 2], [9, -5], atol=1.5)
    err_before = np.abs(moved.astype(float) - noflash).mean()
    err_after = np.abs(al.warp_noflash(moved).astype(float) - noflash)[20:-20, 20:-20].mean()
    assert err_after < 0.3 * err_before


def test_flash_ratio_map_marks_the_lit_subject() -> None:
    flash, noflash, alpha = make_pair(seed=4)
    al = estimate_alignment(flash, noflash)
    fr = flash_ratio_map(flash, noflash, al)
    h, w = fr.ratio.shape
    # c' = 20 with a 36-px floor on the short side: 360x640 -> 36x64.
    assert (h, w) == (36, 64)
    assert fr.ratio.min() >= 0 and fr.ratio.max() <= 1
    assert set(np.unique(fr.ratio[fr.ratio > 0]) >= FlashRatioParams().delta - 1e-6) == {True}
    gt_small = resize(alpha, (h, w)) > 0.5
    assert fr.confident.sum() > 0.2 * gt_small.sum()
    assert fr.confident[~gt_small].mean() < 0.02  # almost nothing of the wall is confident


def test_seeds_are_spread_inside_the_subject() -> None:
    flash, noflash, alpha = make_pair(seed=5)
    fr = flash_ratio_map(flash, noflash, estimate_alignment(flash, noflash))
    seeds = pick_seeds(fr.confident, fr.ratio, 5, flash.shape[:2])
    assert seeds.shape == (5, 2)
    assert all(alpha[y, x] > 0.5 for x, y in seeds)
    d = np.linalg.norm(seeds[:, None] - seeds[None], axis=-1)
    assert d[np.triu_indices(5, 1)].min() > 20  # farthest-point sampling keeps them apart


@pytest.mark.parametrize("kw", [{}, {"shift": 6}, {"exposure": 0.8}, {"shift": -5, "exposure": 0.85}])
def test_grabcut_trimap_matches_the_subject(kw: dict[str, float]) -> None:
    flash, noflash, alpha = make_pair(seed=6, **kw)  # type: ignore[arg-type]
    cue = build_flash_trimap(flash, noflash, segmenter=None)
    flash_alpha = np.roll(alpha, int(kw.get("shift", 0)), axis=1)  # the trimap is the flash frame's
    assert cue.method == "grabcut"
    assert iou(cue.person > 0.5, flash_alpha > 0.5) > 0.9
    assert cue.trimap.shape == flash.shape[:2] and cue.trimap.dtype == np.uint8
    assert set(np.unique(cue.trimap)) == {BG, UNKNOWN, FG}
    # Foreground lies inside the subject, background outside, the unknown band straddles the edge.
    assert (flash_alpha[cue.trimap == FG] > 0.5).mean() > 0.97
    assert (flash_alpha[cue.trimap == BG] < 0.5).mean() > 0.97
    onehot = cue.one_hot()
    assert onehot.shape == (3, *flash.shape[:2]) and np.all(onehot.sum(0) == 1)


class TwoPeopleSegmenter:
    """A segmenter that sees the subject and also a person far behind (whom the flash cannot reach)."""

    name = "two-people"

    def segment(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        return np.maximum(person_mask(h, w), person_mask(h, w, cx=0.88, scale=0.4)).astype(np.float32)


def test_segmenter_components_are_kept_only_where_the_flash_lit_them() -> None:
    flash, noflash, alpha = make_pair(seed=7)
    cue = build_flash_trimap(flash, noflash, segmenter=TwoPeopleSegmenter())
    assert cue.method == "segmenter"
    far = person_mask(*alpha.shape, cx=0.88, scale=0.4) > 0.5
    assert (cue.person[far & (alpha < 0.1)] < 0.5).all()  # the unlit person behind is background
    assert iou(cue.person > 0.5, alpha > 0.5) > 0.97


def test_trimap_from_mask_band_scales_with_size() -> None:
    mask = np.zeros((400, 400), bool)
    mask[100:300, 100:300] = True
    tri = trimap_from_mask(mask, band=0.05)  # 21-px kernel
    assert tri[200, 200] == FG and tri[10, 10] == BG and tri[100, 200] == UNKNOWN
    assert tri[88, 200] == BG and tri[92, 200] == UNKNOWN


def test_flash_no_brighter_is_rejected() -> None:
    _, noflash, _ = make_pair(seed=8)
    with pytest.raises(FlashCueError, match="no brighter"):
        build_flash_trimap(noflash.copy(), noflash, None)
    darker = (noflash * 0.7).astype(np.uint8)
    with pytest.raises(FlashCueError, match="no brighter"):
        build_flash_trimap(darker, noflash, None)


def test_bad_pairs_are_named_errors() -> None:
    flash, noflash, _ = make_pair(seed=9)
    with pytest.raises(SizeMismatchError, match="640x360"):
        build_flash_trimap(flash, noflash[:200], None)
    with pytest.raises(FrameFormatError, match="grayscale"):
        build_flash_trimap(flash[..., 0], noflash, None)
    with pytest.raises(FrameFormatError, match=r"4 channels|3 channels"):
        build_flash_trimap(np.dstack([flash, flash[..., :1]]), noflash, None)


def test_a_flash_too_weak_to_find_the_subject_falls_back_to_the_segmenter_alone(tmp_path: Path) -> None:
    """Evaluation sample 0 is a weak flash (far torch, bright room): the flash brightens the frame but the
    flash-ratio map singles out nothing. With a person segmenter the trimap comes from its mask alone; without
    one it is a named error."""
    from dataclasses import replace

    from engine.cues.segmenter import MediaPipeSegmenter
    from training.data.config import SynthConfig
    from training.data.make_eval import make_eval
    from training.evaluate import load_split

    make_eval(tmp_path, 1, "static", replace(SynthConfig(), size=(288, 512)))
    (s,) = load_split(tmp_path)
    cue = build_flash_trimap(s.flash, s.noflash, MediaPipeSegmenter())
    assert cue.method == "segmenter-only"
    assert iou(cue.person > 0.5, s.alpha > 0.5) > 0.8
    with pytest.raises(FlashCueError, match="no foreground"):
        build_flash_trimap(s.flash, s.noflash, None)
    # A model that reads the flash frame per frame takes an all-unknown trimap instead.
    cue = build_flash_trimap(s.flash, s.noflash, None, allow_unknown=True)
    assert cue.method == "unknown" and (cue.trimap == 128).all() and cue.one_hot()[1].all()
    with pytest.raises(FlashCueError, match="no brighter"):
        build_flash_trimap(s.noflash, s.noflash, None, allow_unknown=True)  # no flash at all is still an error
