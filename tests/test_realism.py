"""cuematte.training.data.realism: photographic effects on rendered samples (real renders, small sizes)."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from cuematte.training.data import SynthConfig, render_sample
from cuematte.training.data.person import build_person
from cuematte.training.data.realism import flyaways, hair_texture, key_light, motion_blur, webcam

SMALL = SynthConfig(size=(144, 256), p_dynamic=0.0, p_pseudo_flash=0.0)
CLEAN = replace(SMALL, noise_scale=0.0, p_jpeg=0.0)


def test_realism_keeps_the_scene_and_the_composite() -> None:
    taken: set[str] = set()
    for seed in range(6):
        plain, real = render_sample(seed, CLEAN), render_sample(seed, replace(CLEAN, p_realism=1.0))
        names = real.meta["realism"]
        taken |= set(names)
        assert "realism" not in plain.meta
        # Its own random stream: the room, the light and the flash are the sample's own.
        same = ("seed", "background", "wall_depth_m", "person_depth_m", "flash", "flash_ratio", "events")
        assert {k: plain.meta[k] for k in same} == {k: real.meta[k] for k in same}
        # The ground truth is still the composite the camera saw (8-bit rounding only; webcam compression is
        # the camera's, applied after it).
        if "webcam" not in names:
            comp = real.alpha[..., None] * real.foreground + (1 - real.alpha[..., None]) * real.background
            assert np.abs(comp - real.noflash).max() < 3 / 255
        if not {"flyaways", "motion_blur"} & set(names):
            assert np.array_equal(plain.alpha, real.alpha)
    assert taken == {"hair_texture", "flyaways", "key_light", "motion_blur", "webcam"}


def test_flyaways_add_thin_semi_transparent_hair_beyond_the_outline() -> None:
    grown = 0
    for seed in range(6):
        p = build_person(np.random.default_rng(seed), 144, 256)
        if p.meta["hair"] == "buzz" or not (p.hair > 0.9).any():
            continue
        before = p.alpha.copy()
        colour = np.median(p.albedo[p.hair > 0.9], 0)
        flyaways(np.random.default_rng(seed), p, 80)
        added = (p.alpha > before + 0.05)
        assert added.sum() > 20
        # Sub-pixel strands: mostly partial alpha, coloured like the hair, and never removing anything.
        assert np.median(p.alpha[added]) < 0.9
        assert np.all(p.alpha >= before - 1e-6) and p.alpha.max() <= 1
        outside = added & (before < 0.01) & (p.alpha > 0.3)
        assert np.abs(p.albedo[outside] - colour).max() < 0.05
        assert np.all(p.hair[added] > 0.05)
        grown += 1
    assert grown >= 3


def test_hair_texture_changes_the_hair_only() -> None:
    for seed in range(3):
        p = build_person(np.random.default_rng(seed), 144, 256)
        before = p.albedo.copy()
        hair_texture(np.random.default_rng(seed), p, 0.5)
        changed = np.abs(p.albedo - before).max(-1) > 1e-6
        assert changed.any()
        assert np.all(p.hair[changed] > 0)
        assert p.albedo.min() >= 0 and p.albedo.max() <= 1


def test_motion_blur_moves_alpha_and_colour_together() -> None:
    rng = np.random.default_rng(0)
    alpha = np.zeros((64, 96), np.float32)
    alpha[20:44, 30:60] = 1
    fg = rng.uniform(0.2, 0.8, (64, 96, 3)).astype(np.float32)
    a, f = motion_blur(alpha, fg, 9.0, 0.0)  # horizontal
    assert a.shape == alpha.shape and f.shape == fg.shape and a.dtype == f.dtype == np.float32
    assert abs(a.sum() - alpha.sum()) < 1e-3 * alpha.sum()  # coverage moves, none is lost
    assert np.all(a[22:42, 26] > 0.05) and np.all(a[22:42, 24] < 1e-6)  # smeared sideways by ~4 px, not more
    assert np.array_equal(a[10], np.zeros(96, np.float32))  # not upwards
    # The premultiplied colour is the blurred premultiplied colour: alpha * fg stays a consistent layer.
    k = np.zeros((9, 9), np.float32)
    k[4, :] = 1 / 9
    ref = cv2.filter2D(fg * alpha[..., None], -1, k, borderType=cv2.BORDER_REPLICATE)
    assert np.abs(a[..., None] * f - ref).max() < 0.02


def test_key_light_brightens_the_side_it_comes_from_and_webcam_keeps_the_frame() -> None:
    alpha = np.zeros((40, 80), np.float32)
    alpha[10:30, 20:60] = 1
    rad = np.full((40, 80, 3), 0.4, np.float32)
    lit = key_light(rad, alpha, 0.0, 0.5)  # from the right
    assert lit[20, 55].mean() > 0.4 > lit[20, 25].mean()
    assert np.allclose(lit[:, 40], rad[:, 40], atol=0.02)  # the middle keeps its level
    img = np.random.default_rng(0).uniform(0, 1, (48, 64, 3)).astype(np.float32)
    out = webcam(img, 0.5, 40)
    assert out.shape == img.shape and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    assert np.abs(out - img).mean() > 0.05  # soft and compressed: fine noise is gone
    flat = np.full((48, 64, 3), 0.5, np.float32)
    assert np.abs(webcam(flat, 0.5, 40) - flat).max() < 2 / 255  # a flat frame stays flat


def test_a_realism_cache_is_its_own_and_older_caches_keep_their_names() -> None:
    from cuematte.training.cache import CacheSpec

    spec = CacheSpec(n=4, size=(144, 256), split="train", camouflage=0.3)
    real = replace(spec, realism=0.5)
    assert (spec.stem, real.stem) == ("train-144x256-4-camo0.3", "train-144x256-4-camo0.3-real0.5")
    assert "realism" not in spec.meta() and real.meta()["realism"] == 0.5
    assert real.synth.p_realism == 0.5 and spec.synth.p_realism == 0.0
