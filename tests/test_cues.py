"""Flash cue pre-processing: alignment, the paper's flash-ratio map, segmentation fusion, trimap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cuematte.clients.scenes import make_glint_pair, make_pair, person_mask
from cuematte.engine.cues.align import estimate_alignment, estimate_gains, estimate_subject_warp
from cuematte.engine.cues.flash_ratio import FlashRatioParams, flash_ratio_map, pick_seeds
from cuematte.engine.cues.trimap import (
    BG,
    FG,
    UNKNOWN,
    PersonSegmenter,
    build_flash_trimap,
    trimap_for_model,
    trimap_from_mask,
)
from cuematte.engine.errors import FlashCueError, FrameFormatError, SizeMismatchError
from cuematte.engine.frames import resize


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


def test_subject_warp_follows_the_person_not_the_wall() -> None:
    """The person stepped 6 px right between flash and frame while the wall stayed: the whole-frame fit
    compromises between them, the subject fit follows the person and puts the flash's matte on the frame's; with
    no person to fit on it falls back to the whole-frame warp."""
    flash, noflash, alpha = make_pair(seed=5, shift=-6)  # the flash caught the person 6 px left of where they are
    camera = estimate_alignment(flash, noflash)
    assert abs(camera.warp[0, 2] + 6) > 2.0  # the whole-frame fit is pulled only part of the way by the person
    person = alpha.astype(np.float32)
    fit = estimate_subject_warp(flash, noflash, person, camera.warp)
    ys, xs = np.nonzero(alpha > 0.5)
    centre = np.array([xs.mean(), ys.mean(), 1.0])
    assert fit.kind == "affine" and np.allclose(fit.warp @ centre - centre[:2], [-6, 0], atol=1.5)
    flash_alpha = np.roll(alpha, -6, axis=1).astype(np.float32)
    assert np.abs(fit.to_noflash(flash_alpha) - alpha).mean() < 0.3 * np.abs(flash_alpha - alpha).mean()
    empty = estimate_subject_warp(flash, noflash, np.zeros((90, 160), np.float32), camera.warp)
    assert empty.kind == "global" and np.array_equal(empty.warp, camera.warp)


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


def _eval_pair(tmp_path: Path, split: str, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rendered evaluation sample ``index`` of ``split`` -> (flash, no-flash, the flash frame's alpha)."""
    from dataclasses import replace

    from cuematte.training.data.config import SynthConfig
    from cuematte.training.data.io import read_matte
    from cuematte.training.data.make_eval import make_eval
    from cuematte.training.evaluate import load_split

    make_eval(tmp_path, 1, split, replace(SynthConfig(), size=(288, 512)), start=index)
    (s,) = load_split(tmp_path)
    return s.flash, s.noflash, read_matte(tmp_path / f"{s.id}_flash_alpha.png")


@pytest.fixture(scope="module")
def mediapipe() -> PersonSegmenter:
    from cuematte.engine.cues.segmenter import MediaPipeSegmenter

    return MediaPipeSegmenter()


def test_a_weak_flash_still_confirms_the_segmenters_person(tmp_path: Path, mediapipe: PersonSegmenter) -> None:
    """Evaluation sample static/0: a far torch in a bright room brightens the subject by ~3 % over the wall,
    never the 12 % an absolute threshold asks for, yet far above the wall's own spread: judged against the
    background, the flash confirms the segmenter's person. On its own it is too weak to seed GrabCut."""
    flash, noflash, alpha = _eval_pair(tmp_path, "static", 0)
    cue = build_flash_trimap(flash, noflash, mediapipe)
    assert cue.method == "segmenter"
    assert iou(cue.person > 0.5, alpha > 0.5) > 0.8
    # Without a segmenter the weight-free GrabCut fallback is seeded by the same relative evidence.
    cue = build_flash_trimap(flash, noflash, None)
    assert cue.method == "grabcut" and iou(cue.person > 0.5, alpha > 0.5) > 0.6


def test_grabcut_trimap_does_not_depend_on_what_ran_before(tmp_path: Path, mediapipe: PersonSegmenter) -> None:
    """GrabCut starts its colour models from OpenCV's global RNG. On evaluation sample dynamic/36 (a GrabCut
    trimap) the matte flipped between right and empty with the RNG's state, i.e. with whatever ran earlier in
    the process; the engine seeds it, so a flash pair always gives the same trimap."""
    import cv2

    flash, noflash, _ = _eval_pair(tmp_path, "dynamic", 36)
    trimaps = []
    for seed in (1, 2, 3, 4):
        cv2.setRNGSeed(seed)
        cue = build_flash_trimap(flash, noflash, mediapipe)
        assert cue.method == "grabcut"
        trimaps.append(cue.trimap)
    assert all(np.array_equal(t, trimaps[0]) for t in trimaps[1:])


def test_a_flash_that_lit_no_subject_is_unknown_or_an_error(mediapipe: PersonSegmenter) -> None:
    """An empty room whose flash lit one small glint: brighter, but no subject for the flash or MediaPipe. The
    measurement says so (method "unknown", all unknown); a model that needs a located subject refuses it, one
    that reads the flash frame per frame takes the all-unknown trimap."""
    flash, noflash = make_glint_pair()
    for segmenter in (None, mediapipe):
        cue = build_flash_trimap(flash, noflash, segmenter)
        assert cue.method == "unknown" and (cue.trimap == 128).all() and cue.one_hot()[1].all()
        with pytest.raises(FlashCueError, match="no foreground"):
            trimap_for_model(cue, reads_flash=False)
        assert trimap_for_model(cue, reads_flash=True) is cue
    with pytest.raises(FlashCueError, match="no brighter"):
        build_flash_trimap(noflash, noflash, None)  # no flash at all is an error for every model


@pytest.mark.parametrize(("split", "index"), [("static", 8), ("dynamic", 17)])
def test_a_flash_that_cannot_tell_the_person_apart_keeps_the_segmenters_mask(
    tmp_path: Path, mediapipe: PersonSegmenter, split: str, index: int
) -> None:
    """static/8: the subject brightens within the wall's noise; dynamic/17: a lamp behind brightens far more
    than the subject. MediaPipe is right in both, and GrabCut seeded by the flash (the old fallback) cut out
    the wrong things (person-map MSE 62 and 295 x1e-3): the trimap now comes from the segmenter's mask."""
    flash, noflash, alpha = _eval_pair(tmp_path, split, index)
    cue = build_flash_trimap(flash, noflash, mediapipe)
    assert cue.method == "segmenter-only"
    assert np.array_equal(cue.person, mediapipe.segment(flash))
    assert ((cue.person - alpha) ** 2).mean() < 0.01
    assert (alpha[cue.trimap == FG] > 0.5).mean() > 0.9
    # A model that takes an all-unknown trimap gets one: the flash confirmed nothing the mask says.
    assert trimap_for_model(cue, reads_flash=False) is cue
    cue = trimap_for_model(cue, reads_flash=True)
    assert cue.method == "segmenter-only" and (cue.trimap == UNKNOWN).all()
    assert np.array_equal(cue.person, mediapipe.segment(flash))


def test_a_weak_flash_does_not_repeat_a_wrong_segmenter_mask(tmp_path: Path, mediapipe: PersonSegmenter) -> None:
    """static/10: a weak flash before a wall of coins MediaPipe calls a person (62 % of the frame, the true subject
    16 %). As a trimap, that mask made the shipped model matte the wall (MSE 253 x1e-3); with the flash
    prior the trimap says unknown everywhere and the wall is left for the model to judge."""
    flash, noflash, alpha = _eval_pair(tmp_path, "static", 10)
    cue = build_flash_trimap(flash, noflash, mediapipe)
    assert cue.method == "segmenter-only"
    assert (alpha[cue.trimap == FG] < 0.5).mean() > 0.5  # the mask's trimap: mostly wall called foreground
    assert (trimap_for_model(cue, reads_flash=True).trimap == UNKNOWN).all()


def test_lit_specks_do_not_outweigh_the_lit_body(tmp_path: Path, mediapipe: PersonSegmenter) -> None:
    """dynamic/37: two 4-pixel segmenter specks on a lamp gain 3.5x what the subject gains. Judged by the
    sizeable components, the subject is kept and a large unlit component on the wall is dropped."""
    flash, noflash, alpha = _eval_pair(tmp_path, "dynamic", 37)
    cue = build_flash_trimap(flash, noflash, mediapipe)
    assert cue.method == "segmenter"
    assert ((cue.person - alpha) ** 2).mean() < 0.03  # 0.18 when a speck set the bar and the body was dropped
    assert (alpha[cue.trimap == BG] >= 0.5).mean() < 0.01


def test_where_the_flash_contradicts_the_segmenter_the_trimap_is_unknown() -> None:
    """A segmenter that misses the lit body below the head: the lit body becomes unknown, not background, and
    a segmenter blob on the unlit wall is not called foreground."""
    flash, noflash, alpha = make_pair(seed=7)
    h, w = alpha.shape

    class HeadOnly:
        name = "head-only"

        def segment(self, image: np.ndarray) -> np.ndarray:
            m = person_mask(h, w).astype(np.float32)
            m[int(0.45 * h):] = 0.0  # misses everything below the neck
            blob = np.zeros((h, w), np.float32)
            blob[20:70, 20:70] = 1.0  # and calls a patch of the wall a person, joined to nothing
            return np.maximum(m, blob)

    cue = build_flash_trimap(flash, noflash, HeadOnly())
    assert cue.method == "segmenter"
    body = (alpha > 0.9) & (np.arange(h)[:, None] > 0.55 * h)
    assert (cue.trimap[body] == BG).mean() < 0.05
    assert (cue.trimap[body] == UNKNOWN).mean() > 0.8
    assert (cue.trimap[25:65, 25:65] != FG).all()


def test_the_tracker_keeps_the_flash_on_the_person_when_its_fit_slides_off() -> None:
    """ECC's fit is checked against the segmenter's person masks: a fit that left the person (a turning head on
    a real clip) is replaced by the one that puts the reference's person on this frame's, a right fit is kept, and
    a frame that is the reference keeps the identity."""
    from cuematte.engine.cues.align import SubjectWarp
    from cuematte.engine.cues.tracking import SubjectTracker, checked_against_masks

    h, w = 144, 256
    yy, xx = np.mgrid[:h, :w]
    ref = ((xx - 100) ** 2 / 40**2 + (yy - 80) ** 2 / 55**2) < 1  # the person where the flash caught them
    now = np.roll(ref, 20, axis=1)  # 20 px to the right since
    stuck = SubjectWarp(warp=np.eye(2, 3, dtype=np.float32), kind="affine")  # ECC stayed where it was
    fixed = checked_against_masks(stuck, ref, now)
    assert fixed.kind in ("recentred", "shifted")
    assert iou(fixed.to_noflash(ref.astype(np.uint8), nearest=True) > 0, now) > 0.97
    true = SubjectWarp(warp=np.array([[1, 0, -20], [0, 1, 0]], np.float32), kind="affine")
    assert checked_against_masks(true, ref, now) is true
    assert checked_against_masks(stuck, ref, ref) is stuck
    assert checked_against_masks(stuck, ref, np.zeros_like(ref)) is stuck  # nobody in the frame: nothing to check
    # Someone walks in behind: the masks' centre moves, the subject does not, and neither does the fit.
    other = ((xx - 215) ** 2 / 30**2 + (yy - 60) ** 2 / 45**2) < 1
    assert checked_against_masks(stuck, ref, ref | other) is stuck

    # Through the tracker: flat frames with nothing for ECC to hold on to, its fit started 30 px off.
    frame_ref = np.where(ref[..., None], 200, 60).astype(np.uint8).repeat(3, axis=2)
    frame_now = np.where(now[..., None], 200, 60).astype(np.uint8).repeat(3, axis=2)
    off = np.array([[1, 0, 30], [0, 1, 0]], np.float32)
    tracker = SubjectTracker(frame_ref, warp=off.copy(), reference_person=ref.astype(np.float32))
    fit = tracker.follow(frame_now, now.astype(np.float32))
    assert iou(fit.to_noflash(ref.astype(np.uint8), nearest=True) > 0, now) > 0.95
    assert np.array_equal(tracker.warp, fit.warp)  # the next frame's fit starts from the checked one
