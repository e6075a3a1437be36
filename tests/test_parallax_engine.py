"""The parallax cue's engine: patches and their merge, the per-layer flow and warps, the model folder, and the
session end to end on a generated pair with a random-init tiny PPMNet exported to ONNX (real ONNX Runtime and
MediaPipe sessions; the export needs torch, the engine does not).

The generated pair is scikit-image's astronaut (a real person, so MediaPipe finds her; her MediaPipe mask is her
alpha) over a synthetic texture, the person and the background shifted by different amounts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from cuematte.engine.compositing import Background, composite
from cuematte.engine.cues.trimap import BG, FG, UNKNOWN
from cuematte.engine.errors import ModelError, ModelNotFoundError, NoSubjectError, SizeMismatchError
from cuematte.engine.frames import fit_within
from cuematte.engine.model import UntrainedModelWarning
from cuematte.engine.parallax.flow import branch_inputs, estimate_flow, fill_flow, layer_flows
from cuematte.engine.parallax.model import ParallaxModel, read_parallax_info, write_parallax_manifest
from cuematte.engine.parallax.patches import gaussian_window, merge_patches, patch_boxes
from cuematte.engine.parallax.session import NoParallaxError, ParallaxSession, pick_pair

FG_SHIFT, BG_SHIFT = (6, 2), (-2, 0)  # (dx, dy) of the person and of the background from view 0 to view 1
TEST_PATCH, TEST_OVERLAP, TEST_WORK_SIDE = 128, 64, 384  # small patches: many of them, each cheap


# -- generated inputs and the tiny model (shared with test_parallax_cli.py and test_parallax_server.py) ----------
def texture(h: int, w: int, seed: int) -> np.ndarray:
    """(h, w, 3) uint8 colour noise at three scales: detail for the flow everywhere."""
    rng = np.random.default_rng(seed)
    out = np.zeros((h, w, 3), np.float32)
    for s in (4, 16, 64):
        noise = rng.random((h // s + 3, w // s + 3, 3)).astype(np.float32)
        big = cv2.resize(noise, ((w // s + 3) * s, (h // s + 3) * s), interpolation=cv2.INTER_CUBIC)
        out += big[s : s + h, s : s + w]
    return np.clip(out / 3 * 255, 0, 255).astype(np.uint8)


_ASTRONAUT: dict[str, np.ndarray] = {}


def astronaut() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's astronaut (512x512 RGB) and her MediaPipe person probability, computed once."""
    if not _ASTRONAUT:
        data = pytest.importorskip("skimage.data")
        from cuematte.engine.cues.segmenter import MediaPipeSegmenter

        image = data.astronaut()
        _ASTRONAUT["image"], _ASTRONAUT["alpha"] = image, MediaPipeSegmenter().segment(image)
    return _ASTRONAUT["image"], _ASTRONAUT["alpha"]


def _shift(image: np.ndarray, d: tuple[int, int]) -> np.ndarray:
    m = np.array([[1, 0, d[0]], [0, 1, d[1]]], np.float32)
    return cv2.warpAffine(image, m, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)


def astronaut_view(fg_shift: tuple[int, int] = (0, 0), bg_shift: tuple[int, int] = (0, 0),
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One view: the astronaut moved by ``fg_shift`` over the texture moved by ``bg_shift`` -> (image (512, 512, 3)
    uint8, alpha (512, 512) float32). The texture is cut from a larger canvas, so its borders are real texture."""
    person, alpha = astronaut()
    h, w = alpha.shape
    m = 16
    canvas = texture(h + 2 * m, w + 2 * m, seed)
    bg = canvas[m - bg_shift[1] : m - bg_shift[1] + h, m - bg_shift[0] : m - bg_shift[0] + w].astype(np.float32)
    a = _shift(alpha, fg_shift)[..., None]
    fg = _shift(person, fg_shift).astype(np.float32)
    return (a * fg + (1 - a) * bg + 0.5).astype(np.uint8), a[..., 0]


def astronaut_pair() -> tuple[np.ndarray, np.ndarray]:
    """(view 1, view 0): view 1 = view 0 with the person moved by FG_SHIFT and the background by BG_SHIFT (so the
    parallax is |FG_SHIFT - BG_SHIFT|)."""
    return astronaut_view(FG_SHIFT, BG_SHIFT)[0], astronaut_view()[0]


def tiny_parallax_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny PPMNet exported with export_parallax into a model folder, once per test session (the
    folder is found again by the modules that share it)."""
    out = tmp_path_factory.getbasetemp() / "parallax-tiny"
    if (out / "model.json").is_file():
        return out
    torch = pytest.importorskip("torch")
    from cuematte.export.parallax_onnx import export_parallax
    from cuematte.training.models.parallax import PPMConfig, PPMNet

    torch.manual_seed(0)
    cfg = PPMConfig(name="tiny", dim=32, heads=2, depth_enc=1, depth_dec=1, mlp_ratio=1.0, kv_pool=2,
                    stem_channels=(8, 16), detail_channels=(8, 8, 8), fusion_channels=(8, 8, 8, 8))
    staging = tmp_path_factory.mktemp("parallax-export")
    graph = export_parallax(PPMNet(cfg), staging / "parallax.onnx", size=(64, 64))
    write_parallax_manifest(staging, graph, {"name": "tiny", "source": "random-init seed 0 (tests)"},
                            patch=TEST_PATCH, overlap=TEST_OVERLAP, work_side=TEST_WORK_SIDE)
    staging.rename(out)
    return out


def open_session(model_dir: Path) -> ParallaxSession:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        return ParallaxSession(model_dir)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_parallax_model(tmp_path_factory)


@pytest.fixture(scope="module")
def session(model_dir: Path) -> ParallaxSession:
    return open_session(model_dir)


# -- patches ---------------------------------------------------------------------------------------------------------
def test_patch_grid_is_flush_with_the_edges_and_covers_what_needs_the_network() -> None:
    boxes = patch_boxes((700, 1000), size=448, overlap=224)
    assert sorted({y for y, _ in boxes}) == [0, 224, 252] and sorted({x for _, x in boxes}) == [0, 224, 448, 552]
    assert patch_boxes((448, 448)) == [(0, 0)]
    rng = np.random.default_rng(0)
    need = np.zeros((300, 410), bool)
    need[rng.integers(0, 300, 40), rng.integers(0, 410, 40)] = True
    need[:, 0] = False
    need[150, 0] = True  # one lone pixel at the edge
    boxes = patch_boxes(need.shape, need, size=128, overlap=64)
    covered = np.zeros_like(need)
    for y, x in boxes:
        assert need[y : y + 128, x : x + 128].any()  # only patches that hold a need pixel
        covered[y : y + 128, x : x + 128] = True
    assert covered[need].all()
    assert patch_boxes(need.shape, np.zeros_like(need), size=128, overlap=64) == []
    with pytest.raises(ValueError, match="pad it first"):
        patch_boxes((300, 100), size=128, overlap=64)


def test_window_is_positive_and_a_constant_merges_to_itself_exactly() -> None:
    win = gaussian_window(448)
    assert win.shape == (448, 448) and win.dtype == np.float32 and (win > 0).all()
    assert win.max() == win[223:225, 223:225].max() and np.allclose(win, win.T) and np.allclose(win, win[::-1])
    shape = (300, 410)
    need = np.zeros(shape, bool)
    need[40:60, 30:380] = True
    boxes = patch_boxes(shape, need, size=128, overlap=64)
    value = np.float32(0.3712345)
    merged, weight = merge_patches([np.full((4, 128, 128), value, np.float32)] * len(boxes), boxes, shape, 128)
    assert merged.shape == (4, *shape) and weight.shape == shape
    assert (merged[:, weight > 0] == value).all()  # exactly, not approximately
    assert (weight[need] > 0).all() and (weight[250:] == 0).all() and (merged[:, weight == 0] == 0).all()


# -- flow ------------------------------------------------------------------------------------------------------------
def test_flow_fill_keeps_certain_pixels_and_takes_the_nearest_certain_one_elsewhere() -> None:
    rng = np.random.default_rng(1)
    flow = rng.normal(size=(40, 60, 2)).astype(np.float32)
    points = [(5, 7), (30, 50), (20, 10)]
    certain = np.zeros((40, 60), bool)
    for y, x in points:
        certain[y, x] = True
    filled = fill_flow(flow, certain)
    assert np.array_equal(filled[certain], flow[certain])
    ys, xs = np.mgrid[:40, :60]
    dist = np.stack([np.hypot(ys - y, xs - x) for y, x in points])
    order = np.sort(dist, axis=0)
    clear = order[1] - order[0] > 2.0  # away from the ties, where an approximate distance may pick either
    nearest = np.array([flow[y, x] for y, x in points])[np.argmin(dist, axis=0)]
    assert clear.sum() > 1500 and np.array_equal(filled[clear], nearest[clear])


def _square_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A textured square over a texture: from view 0 to view 1 the square moved by (5, 3), the background by
    (-2, 1), so view 1 finds its square at x - (5, 3) in view 0 and its background at x + (2, -1).
    -> (view1, view0, trimap1, trimap0)."""
    h, w, m = 240, 320, 16
    canvas = texture(h + 2 * m, w + 2 * m, seed=3)
    square = texture(100, 100, seed=4)

    def view(fs: tuple[int, int], bs: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        img = canvas[m - bs[1] : m - bs[1] + h, m - bs[0] : m - bs[0] + w].copy()
        y, x = 70 + fs[1], 110 + fs[0]
        img[y : y + 100, x : x + 100] = square
        mask = np.zeros((h, w), np.uint8)
        mask[y : y + 100, x : x + 100] = 1
        trimap = np.full((h, w), UNKNOWN, np.uint8)
        trimap[cv2.dilate(mask, np.ones((15, 15), np.uint8)) == 0] = BG
        trimap[cv2.erode(mask, np.ones((15, 15), np.uint8)) == 1] = FG
        return img, trimap

    (v1, t1), (v0, t0) = view((5, 3), (-2, 1)), view((0, 0), (0, 0))
    return v1, v0, t1, t0


def test_the_two_warps_align_the_background_and_the_person_on_view1() -> None:
    v1, v0, t1, t0 = _square_pair()
    flow_fg, flow_bg = layer_flows(estimate_flow(v1, v0), t1)
    assert np.allclose(np.median(flow_fg[t1 == FG], axis=0), (-5, -3), atol=0.3)
    assert np.allclose(np.median(flow_bg[t1 == BG], axis=0), (2, -1), atol=0.3)
    x = branch_inputs(v1 / np.float32(255), v0 / np.float32(255), t1, t0, flow_fg, flow_bg)
    inner = np.zeros(t1.shape, bool)
    inner[8:-8, 8:-8] = True  # replicated borders are not the scene
    bg, fg = (t1 == BG) & inner, (t1 == FG) & inner

    def err(a: np.ndarray, where: np.ndarray) -> float:
        return float(np.abs(a - x["view"])[where].mean())

    assert err(x["view_bg"], bg) < 0.01 and err(x["view_fg"], fg) < 0.01
    assert err(x["view_bg"], fg) > 0.05 and err(x["view_fg"], bg) > 0.05  # each aligns its own layer only
    assert (x["trimap_fg"][fg] == FG).mean() > 0.99  # view 0's trimap lands on view 1's person


# -- the model folder ------------------------------------------------------------------------------------------------
def test_model_folder_is_read_and_its_problems_are_named(model_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    info = read_parallax_info(model_dir)
    assert (info.patch, info.overlap, info.work_side, info.trained) == (TEST_PATCH, TEST_OVERLAP, TEST_WORK_SIDE,
                                                                          False)
    manifest = json.loads((model_dir / "model.json").read_text())
    assert manifest["kind"] == "parallax" and manifest["format"] == 1 and manifest["graph"] == "parallax.onnx"
    assert set(manifest["guidance"]) == {"sure", "unsure", "inner", "outer"} and len(manifest["sha256"]) == 64
    with pytest.warns(UntrainedModelWarning):
        ParallaxModel(model_dir)

    with pytest.raises(ModelNotFoundError, match="not found"):
        read_parallax_info(tmp_path / "nowhere")
    import cuematte.engine.parallax.model as pm

    monkeypatch.setattr(pm, "DEFAULT_MODEL", tmp_path / "parallax-lite")
    with pytest.raises(ModelNotFoundError, match="parallax-lite is not installed"):
        ParallaxModel()
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    with (broken / "parallax.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match="sha256 differs"):
        read_parallax_info(broken)
    (broken / "parallax.onnx").unlink()
    with pytest.raises(ModelError, match="missing its graph"):
        read_parallax_info(broken)
    (broken / "model.json").write_text(json.dumps({"format": "cuematte-flash-model", "graphs": {}}))
    with pytest.raises(ModelError, match="holds a flash model"):
        read_parallax_info(broken)
    (broken / "model.json").write_text(json.dumps({**manifest, "format": 7}))
    with pytest.raises(ModelError, match="format 7"):
        read_parallax_info(broken)
    with pytest.raises(ValueError, match="may not set"):
        write_parallax_manifest(tmp_path / "x", model_dir / "parallax.onnx", {"patch": 64})


def test_the_engine_runs_without_torch(model_dir: Path) -> None:
    code = ("import sys, warnings; sys.modules['torch'] = None; warnings.simplefilter('ignore')\n"
            "from cuematte.engine.parallax.session import ParallaxSession\n"
            f"ParallaxSession({str(model_dir)!r})\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# -- the session -----------------------------------------------------------------------------------------------------
def test_a_pair_mattes_with_certain_pixels_exactly_0_and_1(session: ParallaxSession) -> None:
    v1, v0 = astronaut_pair()
    # Not a multiple of 32 and larger than the work side: padding, shrinking and upsampling all run.
    v1, v0 = v1[:470, 6:], v0[:470, 6:]
    m = session.matte(v1, v0)
    h, w = v1.shape[:2]
    assert m.alpha.shape == (h, w) and m.alpha.dtype == np.float32
    assert m.foreground.shape == (h, w, 3) and m.foreground.dtype == np.uint8 and m.trimap.shape == (h, w)
    assert m.work_size == fit_within((h, w), TEST_WORK_SIDE) and m.patches > 1
    assert m.alpha.min() >= 0.0 and m.alpha.max() <= 1.0
    fg, bg, unknown = m.trimap == FG, m.trimap == BG, m.trimap == UNKNOWN
    assert fg.mean() > 0.2 and bg.mean() > 0.2 and unknown.mean() > 0.05
    assert (m.alpha[fg] == 1.0).all() and (m.alpha[bg] == 0.0).all()
    assert np.array_equal(m.foreground[fg], v1[fg])  # alpha = 1: the colour is the view's
    # The person moved (6, 2), the background (-2, 0): parallax |(8, 2)| px at 512 px, measured at the work size.
    assert m.parallax_px == pytest.approx(np.hypot(8, 2) * TEST_WORK_SIDE / 512, abs=0.4)
    assert {"segment", "flow", "graph", "post", "total"} <= set(m.times)
    out = composite(v1, m.alpha, m.foreground, Background(mode="green"))
    assert np.array_equal(out[fg], v1[fg]) and (out[bg] == (0, 177, 64)).all()


def test_a_prepared_second_view_mattes_the_same(session: ParallaxSession) -> None:
    """A view prepared once (shrunk and segmented) and passed again and again mattes as the raw view does."""
    v1, v0 = astronaut_pair()
    prepared = session.prepare(v0)
    assert prepared.has_person and prepared.small.shape[:2] == fit_within(v0.shape[:2], TEST_WORK_SIDE)
    raw, again = session.matte(v1, v0), session.matte(v1, prepared)
    assert np.array_equal(raw.alpha, again.alpha) and np.array_equal(raw.foreground, again.foreground)
    with pytest.raises(SizeMismatchError, match="second view is 320x256"):
        session.matte(v1, session.prepare(v0[:256, :320].copy()))
    assert not session.prepare(texture(480, 640, seed=9)).has_person


def test_bad_pairs_are_named_errors(session: ParallaxSession) -> None:
    v1, v0 = astronaut_pair()
    with pytest.raises(SizeMismatchError, match="reference view is 512x512 but the second view is 320x256"):
        session.matte(v1, v0[:256, :320])
    with pytest.raises(NoParallaxError, match="no parallax"):
        session.matte(v1, v1.copy())
    empty = texture(480, 640, seed=9)
    with pytest.raises(NoSubjectError, match="no one found"):
        session.matte(empty, np.roll(empty, 4, axis=1))


def test_pick_pair_takes_the_first_person_and_the_most_parallax(session: ParallaxSession) -> None:
    empty = texture(512, 512, seed=5)
    # The person moves, the background stays: parallax |(d, d // 3)| px at 512 px.
    frames = [empty, astronaut_view()[0]] + [astronaut_view((d, d // 3))[0] for d in (2, 9, 4)]
    pick = session.pick_pair(iter(frames))
    assert (pick.reference, pick.other) == (1, 3)
    assert pick.parallax_px == pytest.approx(np.hypot(9, 3) * TEST_WORK_SIDE / 512, rel=0.2)
    assert pick_pair([*frames[:2], frames[3]], session.segmenter).other == 2
    with pytest.raises(NoParallaxError, match="show no parallax"):
        session.pick_pair([frames[1]] * 3)
    with pytest.raises(NoSubjectError, match="no one found in the 2 frame"):
        session.pick_pair([empty, empty])
