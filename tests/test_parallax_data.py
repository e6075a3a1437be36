"""cuematte.training.data.parallax and the depth-driven parallax renderer: motion, exact flows, training items,
the shard cache and the parallax evaluation split (real rendering at small sizes)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cuematte.engine.cues.trimap import BG, FG, UNKNOWN
from cuematte.engine.parallax.flow import warp
from cuematte.training.data import ParallaxConfig, SynthConfig, eval_seed, is_eval_seed, render_parallax_pair
from cuematte.training.data.make_eval import make_eval
from cuematte.training.data.parallax import (
    ITEM_KEYS,
    TOP_KEYS,
    ParallaxCache,
    build_parallax_cache,
    exact_flows,
    parallax_training_item,
    read_parallax_sample,
    training_trimap,
)
from cuematte.training.data.render import affine_at, plane_homography

SMALL = SynthConfig(size=(144, 256))
SIDEWAYS = ParallaxConfig(baseline_vertical=0.0, dolly_m=0.0, cam_rot_deg=(0.0, 0.0, 0.0), subject_sway=0.0)
CROP = 96


def _shift(m: np.ndarray, point: tuple[float, float]) -> np.ndarray:
    """How far the affine moves ``point`` (px)."""
    return m[:, :2] @ np.asarray(point) + m[:, 2] - np.asarray(point)


def test_plane_motion_is_focal_times_move_over_depth() -> None:
    focal, centre = 180.0, (128.0, 72.0)
    for z in (0.7, 4.0):
        m = affine_at(plane_homography(focal, centre, z, (0.04, 0.0, 0.0), (0.0, 0.0, 0.0)), centre)
        np.testing.assert_allclose(m, np.array([[1.0, 0.0, -focal * 0.04 / z], [0.0, 1.0, 0.0]]), atol=1e-9)
    # Moving towards a plane magnifies it by depth / (depth - tz) about the principal point.
    m = affine_at(plane_homography(focal, centre, 2.0, (0.0, 0.0, 0.1), (0.0, 0.0, 0.0)), centre)
    np.testing.assert_allclose(m[:, :2], np.eye(2) * 2.0 / 1.9, atol=1e-9)
    np.testing.assert_allclose(_shift(m, centre), 0.0, atol=1e-9)


def test_sideways_camera_move_moves_the_nearer_layer_more() -> None:
    for seed in range(3):
        p = render_parallax_pair(seed, SMALL, SIDEWAYS)
        par = p.meta["parallax"]
        assert par["motion"] == "depth" and 0.5 <= par["z_fg_m"] <= 1.2 and 2.0 <= par["z_bg_m"] <= 8.0
        assert par["cam_move_m"][1] == par["cam_move_m"][2] == 0.0 and abs(par["cam_move_m"][0]) >= 0.01
        centre = (128.0, 72.0)
        fg, bg = _shift(p.fg_affine, centre), _shift(p.bg_affine, centre)
        assert np.linalg.norm(fg) > np.linalg.norm(bg) > 0
        assert np.sign(fg[0]) == np.sign(bg[0]) == -np.sign(par["cam_move_m"][0])  # the scene moves against it
        # Parallax is inversely proportional to depth.
        assert fg[0] / bg[0] == pytest.approx(par["z_bg_m"] / par["z_fg_m"], rel=1e-3)


def test_exact_flows_align_view0_on_view1() -> None:
    p = render_parallax_pair(3, SMALL)
    flow_fg, flow_bg = exact_flows(p)
    h, w = p.alpha1.shape
    gx, gy = np.meshgrid(np.arange(w), np.arange(h))
    sx, sy = gx + flow_bg[..., 0], gy + flow_bg[..., 1]
    inside = (sx >= 1) & (sx <= w - 2) & (sy >= 1) & (sy <= h - 2)
    # Pure background in view 1 that view 0 also shows unoccluded.
    bg_only = (p.alpha1 == 0) & inside & (warp(p.alpha0, flow_bg) == 0)
    assert bg_only.mean() > 0.3
    assert np.abs(warp(p.background0, flow_bg) - p.background1)[bg_only].mean() < 0.004
    aligned = np.abs(warp(p.image0, flow_bg) - p.image1)[bg_only].mean()  # sensor noise remains
    assert aligned < 0.03 and aligned < np.abs(p.image0 - p.image1)[bg_only].mean()
    # The foreground flow (affine and non-rigid jitter) carries view 0's matte onto view 1's.
    assert np.abs(warp(p.alpha0, flow_fg) - p.alpha1).mean() < 0.008


def test_histogram_matching_is_recorded_and_moves_the_foreground_colours() -> None:
    always, never = replace(SIDEWAYS, p_hist_match=1.0), replace(SIDEWAYS, p_hist_match=0.0)
    a, b = render_parallax_pair(2, SMALL, always), render_parallax_pair(2, SMALL, never)
    assert a.meta["hist_match"] and not b.meta["hist_match"]
    np.testing.assert_array_equal(a.alpha1, b.alpha1)  # only colours change
    np.testing.assert_array_equal(a.background1, b.background1)
    subject = a.alpha0 > 0.5
    assert np.abs(a.foreground0 - b.foreground0)[subject].mean() > 0.01
    # Closer to the background's colour distribution (per-channel means) than before.
    gap = [np.abs(x.foreground0[subject].mean(0) - x.background0.mean((0, 1))).sum() for x in (a, b)]
    assert gap[0] < gap[1]


def test_training_item_keys_shapes_and_ranges() -> None:
    item = parallax_training_item(5, SMALL, crop=CROP, flow_noise_px=2.0)
    assert tuple(item) == ITEM_KEYS
    for k, v in item.items():
        assert v.dtype == np.float32 and v.shape == ((1,) if k == "alpha" else (3,)) + (CROP, CROP), k
        assert v.min() >= 0 and v.max() <= 1, k
    for k in ("trimap", "trimap_fg"):
        np.testing.assert_array_equal(item[k].sum(0), 1.0)
        assert set(np.unique(item[k])) <= {0.0, 1.0}
    assert item["trimap"][1].any()  # the crop holds unknown band
    full = parallax_training_item(5, SMALL, flow="exact", crop=None)
    assert full["view"].shape == (3, 144, 256) and full["alpha"].shape == (1, 144, 256)
    with pytest.raises(ValueError):
        parallax_training_item(5, SMALL, crop=200)


def test_the_top_branch_truth_is_view_0_moved_as_its_image() -> None:
    """``top_truth``: view 0's alpha and layers moved by the foreground flow, as ``view_fg`` (the top branch's
    image) is, so they recompose it as the bottom's truth recomposes ``view`` (up to the views' webcam noise)."""
    item = parallax_training_item(5, SMALL, crop=CROP, top_truth=True)
    assert tuple(item) == (*ITEM_KEYS, *TOP_KEYS)
    plain = parallax_training_item(5, SMALL, crop=CROP)
    for k in ITEM_KEYS:  # the same item otherwise
        np.testing.assert_array_equal(item[k], plain[k])

    def recomposed(a: np.ndarray, f: np.ndarray, b: np.ndarray, image: np.ndarray) -> float:
        return float(np.abs(a * f + (1 - a) * b - image).mean())

    top = recomposed(item["alpha_top"], item["fg_top"], item["bg_top"], item["view_fg"])
    bottom = recomposed(item["alpha"], item["fg"], item["bg"], item["view"])
    assert top < 2 * bottom + 0.005, (top, bottom)
    # Not view 1's truth: the person sits where view 0 shows it, moved onto view 1's person by the flow.
    wrong = recomposed(item["alpha"], item["fg"], item["bg"], item["view_fg"])
    assert top < wrong, (top, wrong)
    assert item["alpha_top"].shape == (1, CROP, CROP) and item["fg_top"].shape == (3, CROP, CROP)


def test_trimap_certain_regions_agree_with_ground_truth() -> None:
    for seed in range(4):
        p = render_parallax_pair(seed, SMALL)
        tri = training_trimap(p.alpha1, np.random.default_rng(seed))
        assert set(np.unique(tri)) == {BG, UNKNOWN, FG}
        # Exactly within the binarisation, and (stray hairs aside) fully opaque / transparent.
        assert (p.alpha1[tri == FG] > 0.5).all() and (p.alpha1[tri == BG] <= 0.5).all()
        assert (p.alpha1[tri == FG] > 0.99).mean() > 0.98 and (p.alpha1[tri == BG] < 0.01).mean() > 0.98
        np.testing.assert_array_equal(tri, training_trimap(p.alpha1, np.random.default_rng(seed)))
    # Through the item: its one-hot trimap agrees with its alpha the same way.
    item = parallax_training_item(1, SMALL, crop=None)
    alpha = item["alpha"][0]
    assert (alpha[item["trimap"][2] == 1] > 0.5).all() and (alpha[item["trimap"][0] == 1] <= 0.5).all()


def test_trimap_band_width_follows_the_short_side() -> None:
    """Radii of 60-120 px at a 1024-px short side: 8.4-16.9 px at 144, drawn per side."""
    alpha = np.zeros((144, 256), np.float32)
    alpha[40:, 80:176] = 1.0  # a block leaving the frame's bottom edge
    for seed in range(5):
        tri = training_trimap(alpha, np.random.default_rng(seed))
        col = tri[:, 128]
        assert col[-1] == FG  # the frame's edge is not background
        band_above = int((col[:40] == UNKNOWN).sum())
        band_below = int((col[40:] == UNKNOWN).sum())
        assert 8 <= band_above <= 18 and 8 <= band_below <= 18


def test_items_are_seeded() -> None:
    a = parallax_training_item(7, SMALL, crop=CROP, flow_noise_px=3.0)
    b = parallax_training_item(7, SMALL, crop=CROP, flow_noise_px=3.0)
    c = parallax_training_item(8, SMALL, crop=CROP, flow_noise_px=3.0)
    for k in ITEM_KEYS:
        np.testing.assert_array_equal(a[k], b[k])
    assert any(not np.array_equal(a[k], c[k]) for k in ITEM_KEYS)
    clean = parallax_training_item(7, SMALL, crop=CROP)  # noise moves only the foreground-aligned inputs
    np.testing.assert_array_equal(clean["view_bg"], a["view_bg"])
    assert not np.array_equal(clean["view_fg"], a["view_fg"])


def test_cache_round_trip_and_resume(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    assert build_parallax_cache(root, 5, SMALL, seed0=10, workers=2, crop=CROP, shard_size=2) == root
    cache = ParallaxCache(root)
    assert len(cache) == 5 and cache.seed(4) == 14
    for i in (0, 3, 4):
        got, want = cache[i], parallax_training_item(10 + i, SMALL, crop=CROP)
        assert tuple(got) == ITEM_KEYS
        for k in ITEM_KEYS:
            assert got[k].dtype == np.float32 and got[k].shape == want[k].shape
            tol = 0.0 if k.startswith("trimap") else (1e-3 if k == "alpha" else 0.5 / 255 + 1e-6)
            np.testing.assert_allclose(got[k], want[k], atol=tol, rtol=0, err_msg=k)
    with pytest.raises(IndexError):
        cache[5]
    # Resume: a missing shard is rendered again, the others are left alone.
    kept = (root / "shard_00000" / "view.npy").stat().st_mtime_ns
    shutil.rmtree(root / "shard_00001")
    with pytest.raises(FileNotFoundError):
        ParallaxCache(root)
    build_parallax_cache(root, 5, SMALL, seed0=10, workers=1, crop=CROP, shard_size=2)
    assert (root / "shard_00000" / "view.npy").stat().st_mtime_ns == kept
    np.testing.assert_array_equal(ParallaxCache(root)[2]["view_fg"], cache[2]["view_fg"])
    with pytest.raises(ValueError):  # other settings never mix into a folder
        build_parallax_cache(root, 5, SMALL, seed0=10, workers=1, crop=64, shard_size=2)
    with pytest.raises(ValueError):  # nor items with the top branch's truth
        build_parallax_cache(root, 5, SMALL, seed0=10, workers=1, crop=CROP, shard_size=2, top_truth=True)
    top = build_parallax_cache(tmp_path / "top", 2, SMALL, seed0=10, workers=1, crop=CROP, top_truth=True)
    got, want = ParallaxCache(top)[1], parallax_training_item(11, SMALL, crop=CROP, top_truth=True)
    assert tuple(got) == (*ITEM_KEYS, *TOP_KEYS)
    np.testing.assert_allclose(got["alpha_top"], want["alpha_top"], atol=1e-3, rtol=0)
    np.testing.assert_allclose(got["bg_top"], want["bg_top"], atol=0.5 / 255 + 1e-6, rtol=0)


def test_parallax_eval_split_is_written_and_readable(tmp_path: Path) -> None:
    entries = make_eval(tmp_path, 2, "parallax", SMALL, workers=1)
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["split"] == "parallax" and index["parallax"]["motion"] == "depth"
    seeds = [e["seed"] for e in entries]
    assert seeds == [eval_seed(0, "parallax"), eval_seed(1, "parallax")] and all(map(is_eval_seed, seeds))
    assert entries[0]["meta"]["parallax"]["z_bg_m"] > entries[0]["meta"]["parallax"]["z_fg_m"]
    s = read_parallax_sample(tmp_path, entries[1]["id"])
    p = render_parallax_pair(seeds[1], SMALL)
    for k, ref in (("view0", p.image0), ("view1", p.image1), ("fg1", p.foreground1), ("bg1", p.background1)):
        assert s[k].shape == (144, 256, 3) and s[k].dtype == np.float32
        np.testing.assert_allclose(s[k], ref, atol=0.5 / 255 + 1e-6, err_msg=k)
    np.testing.assert_allclose(s["alpha1"], p.alpha1, atol=1e-4)
    np.testing.assert_allclose(s["fg_affine"], p.fg_affine)
    np.testing.assert_allclose(s["bg_affine"], p.bg_affine)
