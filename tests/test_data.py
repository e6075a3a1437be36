"""cuematte.training.data: the procedural flash/no-flash compositor (real rendering, small sizes to stay fast)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from cuematte.training.data import (
    SynthConfig,
    eval_seed,
    is_eval_seed,
    render_parallax_pair,
    render_sample,
    render_sequence,
    train_seed,
)
from cuematte.training.data.camouflage import CAMOUFLAGE_KINDS
from cuematte.training.data.contact_sheet import main as contact_sheet_main
from cuematte.training.data.contact_sheet import sheet_size
from cuematte.training.data.io import read_matte, read_rgb
from cuematte.training.data.make_eval import make_eval
from cuematte.training.data.person import build_person
from cuematte.training.data.samples import FlashSample

SMALL = SynthConfig(size=(144, 256))
CLEAN = replace(SMALL, noise_scale=0.0, p_jpeg=0.0)  # no noise, no JPEG: only 8-bit rounding remains
IMAGES = (
    "noflash",
    "flash",
    "foreground",
    "background",
    "flash_foreground",
    "flash_background",
    "background_at_flash",
)
MATTES = ("alpha", "flash_alpha", "person_prior")


def _arrays(s: FlashSample) -> dict[str, np.ndarray]:
    return {k: getattr(s, k) for k in IMAGES + MATTES}


@pytest.mark.parametrize("cfg", [SynthConfig(), SMALL], ids=["288x512", "144x256"])
def test_shapes_dtypes_ranges(cfg: SynthConfig) -> None:
    h, w = cfg.size
    s = render_sample(3, cfg)
    for name, arr in _arrays(s).items():
        assert arr.dtype == np.float32, name
        assert arr.shape == ((h, w, 3) if name in IMAGES else (h, w)), name
        assert np.isfinite(arr).all() and arr.min() >= 0.0 and arr.max() <= 1.0, name
    assert isinstance(s.dynamic, bool)
    assert s.alpha.max() == pytest.approx(1.0) and s.alpha.min() == 0.0
    json.dumps(s.meta)  # the metadata is plain data


def test_same_seed_is_bit_identical_and_seeds_differ() -> None:
    a, b, c = render_sample(11, SMALL), render_sample(11, SMALL), render_sample(12, SMALL)
    for name, arr in _arrays(a).items():
        assert np.array_equal(arr, _arrays(b)[name]), name
    assert a.meta == b.meta and a.dynamic == b.dynamic
    assert not np.array_equal(a.noflash, c.noflash)
    assert not np.array_equal(a.alpha, c.alpha)


@pytest.mark.parametrize("seed", range(4))
def test_composite_consistency(seed: int) -> None:
    # Noise-free: the frames are the 8-bit rounding of the composites of their layers.
    s = render_sample(seed, replace(CLEAN, p_pseudo_flash=0.0))
    for img, a, fg, bg in (
        (s.noflash, s.alpha, s.foreground, s.background),
        (s.flash, s.flash_alpha, s.flash_foreground, s.flash_background),
    ):
        comp = a[..., None] * fg + (1 - a[..., None]) * bg
        assert np.abs(img - comp).max() <= 0.5 / 255 + 1e-5
    # With sensor noise and JPEG: equal up to noise (a few 8-bit levels on average).
    n = render_sample(seed, replace(SMALL, p_jpeg=1.0))
    comp = n.alpha[..., None] * n.foreground + (1 - n.alpha[..., None]) * n.background
    err = np.abs(n.noflash - comp)
    assert err.mean() < 0.03 and np.percentile(err, 50) < 0.03


def test_flash_brightens_the_person_more_than_a_far_background() -> None:
    cfg = replace(SMALL, p_dynamic=0.0, p_pseudo_flash=0.0, background_depth_m=(3.5, 6.0))
    for seed in range(6):
        s = render_sample(seed, cfg)
        person = (s.alpha > 0.99) & (s.flash_alpha > 0.99)
        far = (s.alpha < 0.01) & (s.flash_alpha < 0.01)
        gain = (s.flash.mean(-1) + 0.02) / (s.noflash.mean(-1) + 0.02)
        assert np.median(gain[person]) > 1.03 * np.median(gain[far]), (seed, s.meta["flash"])


def test_pseudo_flash_brightens_the_foreground_only() -> None:
    s = render_sample(5, replace(SMALL, pseudo_flash=True, p_dynamic=0.0))
    assert s.meta["pseudo_flash"]
    core = (s.alpha > 0.99) & (s.flash_alpha > 0.99)
    far = (s.alpha < 0.01) & (s.flash_alpha < 0.01)
    assert s.flash.mean(-1)[core].mean() > s.noflash.mean(-1)[core].mean() + 0.05
    assert abs(s.flash.mean(-1)[far].mean() - s.noflash.mean(-1)[far].mean()) < 0.03


def test_fractional_alpha_at_hair() -> None:
    found = 0
    for seed in range(6):
        p = build_person(np.random.default_rng(seed), 144, 256)
        semi = (p.hair > 0.05) & (p.alpha > 0.05) & (p.alpha < 0.95)
        if p.meta["hair"] != "buzz":
            assert semi.sum() > 30, (seed, p.meta)
            found += 1
    assert found >= 3
    # Rendered samples: a band of fractional alpha, more than anti-aliasing of a silhouette would give.
    s = render_sample(2, SMALL)
    frac = (s.alpha > 0.02) & (s.alpha < 0.98)
    assert frac.sum() > 300
    assert ((s.alpha > 0.1) & (s.alpha < 0.6)).sum() > 50  # semi-transparent, not just edge pixels


def test_dynamic_backgrounds_change_static_ones_do_not() -> None:
    for seed in range(4):
        d = render_sample(seed, SMALL, dynamic=True)
        assert d.dynamic and d.meta["events"]
        change = np.abs(d.background_at_flash - d.background).max(-1)
        assert (change > 0.05).mean() > 0.002, d.meta["events"]
        st = render_sample(seed, replace(SMALL, camera_shake=0.0), dynamic=False)
        assert not st.dynamic and not st.meta["events"]
        assert np.array_equal(st.background_at_flash, st.background)
        # In the frames themselves: the flash frame's background is the no-flash one up to a per-channel gain
        # (exposure, white balance) and the little flash light a background catches.
        far = (st.alpha < 0.01) & (st.flash_alpha < 0.01)
        g = np.median(st.flash_background[far] / (st.background[far] + 1e-3), 0)
        resid = np.abs(st.flash_background[far] - g * st.background[far])
        assert np.percentile(resid, 90) < 0.15


def test_dynamic_probability_follows_config() -> None:
    flags = [render_sample(s, replace(SMALL, p_dynamic=p)).dynamic for p in (0.0, 1.0) for s in range(3)]
    assert flags == [False] * 3 + [True] * 3


def test_eval_seeds_never_collide_with_training_seeds() -> None:
    splits = ("static", "dynamic", "video", "parallax", "mixed")
    evals = {split: [eval_seed(i, split) for i in range(500)] for split in splits}
    assert evals["static"][:3] == [eval_seed(i, "static") for i in range(3)]  # fixed
    all_eval = [s for seeds in evals.values() for s in seeds]
    assert len(set(all_eval)) == len(all_eval)  # distinct within and across splits
    assert all(is_eval_seed(s) for s in all_eval)
    train = [train_seed(i) for i in range(10_000)] + [train_seed(2**62 - 1)]
    assert not any(is_eval_seed(s) for s in train)
    assert not set(train) & set(all_eval)
    with pytest.raises(ValueError):
        train_seed(2**62)


def test_sequence_moves_smoothly() -> None:
    seq = render_sequence(4, 5, SMALL)
    h, w = SMALL.size
    assert seq.noflash.shape == (5, h, w, 3) and seq.alpha.shape == (5, h, w)
    assert seq.foreground.shape == seq.background.shape == (5, h, w, 3)
    assert seq.person_prior.shape == (5, h, w) and seq.flash.shape == (h, w, 3)
    steps = [np.abs(seq.alpha[t] - seq.alpha[t - 1]).mean() for t in range(1, 5)]
    assert all(0 < d < 0.1 for d in steps)
    comp = seq.alpha[..., None] * seq.foreground + (1 - seq.alpha[..., None]) * seq.background
    assert np.abs(seq.noflash - comp).mean() < 0.03


def test_parallax_pair_moves_layers_independently() -> None:
    p = render_parallax_pair(6, SMALL)
    h, w = SMALL.size
    assert p.image0.shape == p.image1.shape == (h, w, 3) and p.alpha1.shape == (h, w)
    assert p.fg_affine.shape == p.bg_affine.shape == (2, 3)
    assert not np.allclose(p.fg_affine, p.bg_affine)
    assert not np.allclose(p.fg_affine_noisy, p.fg_affine)
    assert np.abs(p.alpha0 - p.alpha1).mean() > 0.001
    assert np.abs(p.background0 - p.background1).mean() > 0.001


def test_segmenter_failures_are_gross_and_stay_masks() -> None:
    """Each failure kind changes a large share of the mask the way a segmenter gets a frame wrong: the subject
    (mostly) gone, a part of it cut away, or a large region outside it called a person; values stay in [0, 1]
    and a seed gives the same failure."""
    from cuematte.training.data.prior import segmenter_failure

    mask = np.zeros((144, 256), np.float32)
    mask[50:, 80:180] = 1.0
    mask[20:50, 110:150] = 1.0  # a head
    seen = set()
    for seed in range(40):
        out = segmenter_failure(np.random.default_rng(seed), mask)
        assert out.shape == mask.shape and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
        assert np.array_equal(out, segmenter_failure(np.random.default_rng(seed), mask))
        inside, outside = out[mask > 0.5], out[mask < 0.5]
        if inside.mean() < 0.31:
            seen.add("missed")  # scaled down everywhere: the subject is all but gone
            assert outside.max() == 0
        elif (inside < 0.5).mean() > 0.03:
            seen.add("part")  # a part of the subject cut away, nothing added
            assert outside.max() == 0 and (inside < 0.5).mean() < 0.9
        else:
            seen.add("false")  # a blob outside the subject, the subject kept
            assert (outside > 0.5).sum() > 0.005 * mask.size and inside.min() >= 1.0 - 1e-6
    assert seen == {"missed", "part", "false"}
    # Restricted kinds: only parts cut away and false regions, the subject never all but gone.
    for seed in range(20):
        out = segmenter_failure(np.random.default_rng(seed), mask, ("part", "false"))
        assert out[mask > 0.5].mean() > 0.31


def test_camouflage_dresses_the_subject_like_the_room_and_changes_nothing_else() -> None:
    plain_cfg = replace(CLEAN, p_dynamic=0.0, p_pseudo_flash=0.0)
    camo_cfg = replace(plain_cfg, p_camouflage=1.0)
    closer = 0
    for seed in range(6):
        plain, camo = render_sample(seed, plain_cfg), render_sample(seed, camo_cfg)
        assert camo.meta["person"]["camouflage"] in CAMOUFLAGE_KINDS
        assert "camouflage" not in plain.meta["person"]
        # Its own random stream: the scene, the silhouette and the light are the same sample; only the
        # camera's auto exposure (it meters the subject too) scales the room.
        for name in ("alpha", "flash_alpha"):
            assert np.array_equal(getattr(plain, name), getattr(camo, name)), name
        same = ("seed", "background", "wall_depth_m", "person_depth_m", "flash", "flash_ratio", "events")
        assert {k: plain.meta[k] for k in same} == {k: camo.meta[k] for k in same}
        lit = (plain.background > 0.05) & (plain.background < 0.9) & (camo.background < 0.9)
        scale = camo.background[lit] / plain.background[lit]
        assert scale.std() < 0.01 * scale.mean()
        core = plain.alpha > 0.99
        assert not np.allclose(plain.foreground[core], camo.foreground[core], atol=0.02)
        # Colour distance between the subject and the room (means over the subject and the background).
        room = plain.background[plain.alpha < 0.01].mean(0)
        closer += int(np.abs(camo.foreground[core].mean(0) - room).sum()
                      < np.abs(plain.foreground[core].mean(0) - room).sum())
        # The flash still tells them apart: the nearer subject gains more than the room.
        gain = (camo.flash.mean(-1) + 0.02) / (camo.noflash.mean(-1) + 0.02)
        assert np.median(gain[core & (camo.flash_alpha > 0.99)]) > np.median(gain[camo.alpha < 0.01])
    assert closer >= 5


def test_drift_moves_the_flash_side_and_leaves_the_frame_to_matte_as_it_was() -> None:
    plain_cfg = replace(CLEAN, p_dynamic=0.0, p_pseudo_flash=0.0)  # a static room, no sensor noise
    drift_cfg = replace(plain_cfg, p_drift=1.0)
    for seed in range(4):
        plain, drift = render_sample(seed, plain_cfg), render_sample(seed, drift_cfg)
        assert plain.reference is None and not plain.meta["drift"]
        assert drift.reference is not None and drift.meta["drift"]
        assert drift.reference.shape == drift.noflash.shape and drift.reference.dtype == np.float32
        # Its own stream: what the no-flash ablation trains on is the same sample, so it stays equal-budget.
        for name in ("noflash", "alpha", "foreground", "background", "person_prior"):
            assert np.array_equal(getattr(plain, name), getattr(drift, name)), name
        # The flash caught the subject elsewhere: its matte overlaps today's much less than a plain pair's.
        def iou(a: np.ndarray, b: np.ndarray) -> float:
            return float(np.minimum(a, b).sum() / np.maximum(a, b).sum())

        assert iou(drift.flash_alpha, drift.alpha) < iou(plain.flash_alpha, plain.alpha)
        # The reference was taken with the flash: the subject stands where the flash saw it, in its no-flash
        # light, so in a static room it differs from the frame to matte only around the subject (the flash
        # frame's matte, widened by the small flash-to-reference motion, stands in for the reference's).
        diff = np.abs(drift.reference - drift.noflash).max(-1)
        near = np.maximum(drift.alpha, drift.flash_alpha) > 0.01
        near = cv2.dilate(near.astype(np.uint8), np.ones((21, 21), np.uint8)).astype(bool)
        assert diff[near].max() > 0.15 and diff[~near].max() < 2 / 255


def test_contact_sheet_png(tmp_path: Path) -> None:
    out = tmp_path / "sheet.png"
    contact_sheet_main(["--out", str(out), "--n", "2", "--seed", "0", "--scale", "0.25", "--size", "144x256"])
    img = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert img is not None
    assert img.shape[:2] == sheet_size(2, (144, 256), 0.25) == (2 * 36, 4 * 64)


def test_make_eval_writes_readable_files(tmp_path: Path) -> None:
    make_eval(tmp_path / "static", 1, "static", SMALL)
    make_eval(tmp_path / "video", 1, "video", SMALL, length=2)
    sid = "static_00000"
    for k in ("noflash", "flash", "alpha", "fg", "bg"):
        assert (tmp_path / "static" / f"{sid}_{k}.png").is_file(), k
    s = render_sample(eval_seed(0, "static"), SMALL, dynamic=False)
    assert np.abs(read_matte(tmp_path / "static" / f"{sid}_alpha.png") - s.alpha).max() < 1e-4  # 16-bit
    assert np.abs(read_rgb(tmp_path / "static" / f"{sid}_noflash.png") - s.noflash).max() < 1e-6
    clip = tmp_path / "video" / "video_00000"
    assert (clip / "flash.png").is_file() and (clip / "0001_alpha.png").is_file()
    index = json.loads((tmp_path / "video" / "index.json").read_text())
    assert index["samples"][0]["seed"] == eval_seed(0, "video")


def test_make_eval_hold_still_keeps_the_frame_to_matte_and_lines_up_the_flash(tmp_path: Path) -> None:
    from cuematte.training.data.make_eval import main as make_eval_main

    for name, extra in (("plain", []), ("still", ["--hold-still"])):
        make_eval_main(["--out", str(tmp_path / name), "--n", "1", "--split", "static", "--size", "144x256", *extra])
    read = {n: {k: read_rgb(tmp_path / n / f"static_00000_{k}.png") for k in ("noflash", "flash")}
            for n in ("plain", "still")}
    assert np.array_equal(read["plain"]["noflash"], read["still"]["noflash"])
    assert np.array_equal(read_matte(tmp_path / "plain" / "static_00000_alpha.png"),
                          read_matte(tmp_path / "still" / "static_00000_alpha.png"))
    assert not np.array_equal(read["plain"]["flash"], read["still"]["flash"])
    cfg = json.loads((tmp_path / "still" / "index.json").read_text())["config"]
    assert cfg["person_shift"] == cfg["person_rot_deg"] == cfg["person_scale"] == 0.0


def test_dataset_tensors_and_splits() -> None:
    torch = pytest.importorskip("torch")
    from cuematte.training.data.dataset import FlashDataset

    train = FlashDataset(2, "train", SMALL)
    item = train[1]
    h, w = SMALL.size
    for k in ("noflash", "flash", "fg", "bg"):
        assert item[k].shape == (3, h, w) and item[k].dtype == torch.float32
    for k in ("alpha", "flash_alpha", "prior"):
        assert item[k].shape == (1, h, w)
    assert item["seed"].item() == train_seed(1)
    train.set_epoch(1)
    assert train.seed(1) == train_seed(3)
    ev = FlashDataset(2, "eval", SMALL, eval_split="static")
    assert ev.seed(0) == eval_seed(0, "static") and not bool(ev[0]["dynamic"])
