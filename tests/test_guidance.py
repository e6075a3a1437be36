"""The guidance trimap (cuematte.engine.cues.guidance) and the composition that keeps what the real-data cues are sure
of: certain pixels come out exactly 0 or 1 from a real ONNX graph, on a real photo of a person."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cuematte.engine.cues.guidance import GuidanceParams, build_guidance, guidance_input, trimap_from_one_hot
from cuematte.engine.cues.trimap import BG, FG, UNKNOWN, trimap_from_mask, trimap_one_hot
from cuematte.engine.frames import resize

H, W = 144, 256


def _disc(cx: int, cy: int, r: int) -> np.ndarray:
    m = np.zeros((H, W), np.float32)
    cv2.circle(m, (cx, cy), r, 1.0, -1)
    return m


def test_segmenter_alone_certain_inside_and_outside_with_a_band_at_the_edge() -> None:
    """A thin band inside the segmenter's confident person, a wide one outside it."""
    person = _disc(128, 72, 40)
    params = GuidanceParams(inner=0.015, outer=0.04)
    g = build_guidance(person, None, params)
    r_in, r_out = round(H * 0.015), round(H * 0.04)
    assert g[72, 128] == FG and g[2, 2] == BG
    assert (g[72, 128 + 40 - r_in + 1: 128 + 40 + r_out] == UNKNOWN).all()
    assert g[72, 128 + 40 - r_in - 1] == FG and g[72, 128 + 40 + r_out + 1] == BG


def test_unsure_segmenter_pixels_are_unknown() -> None:
    person = _disc(128, 72, 50) * 0.5  # the segmenter is unsure everywhere on this person
    g = build_guidance(person, None)
    assert not (g == FG).any()
    assert g[72, 128] == UNKNOWN


def test_where_the_flash_contradicts_the_segmenter_the_guidance_is_unknown() -> None:
    person = _disc(100, 72, 40)
    flash_person = np.maximum(person, _disc(200, 72, 20))  # a flash-lit held object the segmenter missed
    flash_person[60:85, 80:120] = 0  # and a region the segmenter calls person that the flash left unlit
    flash = trimap_from_mask(flash_person > 0.5)
    g = build_guidance(person, flash)
    assert g[72, 200] == UNKNOWN  # lit object: the network decides, with the flash in view
    assert g[72, 100] == UNKNOWN  # unlit 'person': likewise
    assert g[72, 70] == FG and g[10, 10] == BG  # where both agree, certain


def test_an_all_unknown_flash_trimap_leaves_the_segmenter_alone() -> None:
    person = _disc(128, 72, 40)
    assert (build_guidance(person, np.full((H, W), UNKNOWN, np.uint8)) == build_guidance(person, None)).all()


def test_confirm_background_needs_the_flash_to_agree_once_it_located_the_subject() -> None:
    """A model configured with ``confirm_background`` may add to the person where the flash cannot say, even in
    the segmenter's confident background; the segmenter's confident person stays certain without the flash's
    word (on real faces the flash is often unsure)."""
    person = _disc(128, 72, 40)
    flash = np.full((H, W), BG, np.uint8)
    flash[20:124, 70:186] = UNKNOWN  # the flash's own band around the subject
    flash[45:100, 100:156] = FG  # the lit part it is sure of
    params = GuidanceParams(confirm_background=True)
    g = build_guidance(person, flash, params)
    assert g[72, 128] == FG and g[2, 2] == BG  # both sure: certain
    assert g[25, 75] == UNKNOWN  # segmenter sure of the background, flash unsure: the network decides
    assert g[72, 95] == FG  # segmenter sure of the person, flash unsure: still certain
    old = build_guidance(person, flash, GuidanceParams(confirm_background=False))
    assert old[25, 75] == BG  # the default rule: the flash's silence is enough
    # A flash that located nobody leaves the segmenter alone under either rule.
    nobody = np.full((H, W), UNKNOWN, np.uint8)
    assert (build_guidance(person, nobody, params) == build_guidance(person, None, params)).all()


def test_fill_pockets_makes_unsure_pockets_inside_the_certain_person_certain() -> None:
    """Hair over a forehead that the segmenter is unsure of, wholly inside its confident person: certain person with
    ``fill_pockets`` (unknown without). A gap it is sure is background, a dip reaching the frame's edge, and a pocket
    the flash calls background stay as they were."""
    person = _disc(128, 72, 60)
    person[60:70, 120:136] = 0.5  # the unsure pocket
    person[95:110, 110:125] = 0.0  # a sure gap, between an arm and the body
    edge = np.zeros((H, W), np.float32)
    edge[:, :200] = 1.0
    edge[60:70, 150:256] = 0.5  # unsure, but reaching the right edge of the frame
    fill = GuidanceParams(fill_pockets=True)
    assert build_guidance(person, None)[65, 128] == UNKNOWN
    g = build_guidance(person, None, fill)
    assert (g[60:70, 120:136] == FG).all()
    assert g[102, 117] == BG and g[100, 111] == UNKNOWN  # the sure gap, and its band
    assert (build_guidance(edge, None, fill)[65, 160:] == UNKNOWN).all()
    unlit = trimap_from_mask(person > 0.2)
    unlit[60:70, 120:136] = BG  # the flash says the pocket is background: the network decides
    assert (build_guidance(person, unlit, fill)[60:70, 120:136] == UNKNOWN).all()


def test_one_hot_round_trip() -> None:
    tri = trimap_from_mask(_disc(128, 72, 40) > 0.5)
    assert (trimap_from_one_hot(trimap_one_hot(tri)) == tri).all()
    one_hot = guidance_input(tri)
    assert one_hot.shape == (1, 3, H, W) and one_hot.dtype == np.float32
    assert (one_hot.sum(1) == 1).all()


@pytest.mark.usefixtures("quiet_untrained")
def test_certain_regions_come_out_exactly_0_or_1_on_a_real_photo(lite_guided_model_dir: Path) -> None:
    """Even an untrained network cannot touch what the segmenter and the flash agree on."""
    from skimage.data import astronaut

    from cuematte.clients.realcheck import uniform_flash
    from cuematte.engine.session import MattingSession

    photo = astronaut()
    session = MattingSession(lite_guided_model_dir)
    session.set_flash(uniform_flash(photo), photo)
    matte = session.matte(photo)
    assert matte.guidance is not None
    g = matte.guidance
    assert (g == FG).mean() > 0.2 and (g == BG).mean() > 0.1  # a real person and a real background found
    # One CMN pixel in from each region's edge, so the graph's nearest upsampling and ours cannot differ.
    k = np.ones((3, 3), np.uint8)
    fg = resize((cv2.erode((g == FG).astype(np.uint8), k) * 255), photo.shape[:2], nearest=True) > 0
    bg = resize((cv2.erode((g == BG).astype(np.uint8), k) * 255), photo.shape[:2], nearest=True) > 0
    assert (matte.alpha[fg] == 1.0).all()
    assert (matte.alpha[bg] == 0.0).all()
    unknown = resize(((g == UNKNOWN) * 255).astype(np.uint8), photo.shape[:2], nearest=True) > 0
    assert ((matte.alpha[unknown] > 0) & (matte.alpha[unknown] < 1)).any()  # the network decides the band


def test_trimap_from_warped_scores_is_argmax_with_ties_to_the_first() -> None:
    """A warped one-hot is no longer one-hot: each pixel takes its largest score, the first of equal ones
    (background before unknown before foreground), exactly as argmax over the channels."""
    rng = np.random.default_rng(0)
    scores = rng.random((3, 40, 64)).astype(np.float32)
    scores[:, :5] = rng.integers(0, 3, (3, 5, 64)) / 2  # many ties
    want = np.array([BG, UNKNOWN, FG], np.uint8)[np.argmax(scores, axis=0)]
    got = trimap_from_one_hot(scores)
    assert got.dtype == np.uint8 and np.array_equal(got, want)
    assert trimap_from_one_hot(np.full((3, 2, 2), 0.5, np.float32)).tolist() == [[BG, BG], [BG, BG]]
