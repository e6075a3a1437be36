"""The session API: cache semantics, equivalence with the uncached path and with PyTorch, sizes, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from cuematte.engine.compositing import Background, blurred, composite
from cuematte.engine.errors import (
    FlashCueError,
    FlashNotSetError,
    FrameFormatError,
    InputError,
    ModelError,
    ModelNotFoundError,
    NoSubjectError,
)
from cuematte.engine.frames import resize
from cuematte.engine.model import resolve_model_dir
from cuematte.engine.session import MattingSession

if TYPE_CHECKING:
    import torch

pytestmark = pytest.mark.usefixtures("quiet_untrained")


@pytest.fixture
def session(lite_model_dir: Path) -> MattingSession:
    return MattingSession(lite_model_dir, segmenter="grabcut", threads=2)


def test_matte_before_flash_is_a_named_error(session: MattingSession, scene: tuple[np.ndarray, ...]) -> None:
    with pytest.raises(FlashNotSetError, match="set_flash"):
        session.matte(scene[1])


def test_cached_and_uncached_paths_agree(session: MattingSession, scene: tuple[np.ndarray, ...]) -> None:
    flash, noflash, _ = scene
    session.set_flash(flash, noflash)
    cached = session.matte(noflash)
    uncached = session.matte(noflash, reuse_flash=False)
    assert np.array_equal(cached.alpha, uncached.alpha)
    assert np.array_equal(cached.foreground, uncached.foreground)
    assert cached.alpha.shape == noflash.shape[:2] and cached.alpha.dtype == np.float32
    assert cached.foreground.shape == noflash.shape and cached.foreground.dtype == np.uint8
    assert cached.alpha.min() >= 0.0 and cached.alpha.max() <= 1.0


def engine_cmn(image: np.ndarray) -> torch.Tensor:
    """An (H, W, C) image shrunk to the CMN grid as the session shrinks it (OpenCV area averaging), as a
    (1, C, 144, 256) float tensor; uint8 images scaled to [0, 1] as the session feeds them."""
    import torch

    small = np.ascontiguousarray(resize(image, (144, 256)))
    out = torch.from_numpy(small).permute(2, 0, 1)[None].float()
    return out / 255 if image.dtype == np.uint8 else out


def test_the_engine_shrinks_to_the_cmn_grid_as_training_does() -> None:
    """Training's FNFNet.to_cmn (torch area) and the engine's OpenCV area averaging agree at training's 2x and
    at 1280x720's 5x; the graphs take what the engine computes (model format 2)."""
    torch = pytest.importorskip("torch")
    from cuematte.training.models.config import get_config
    from cuematte.training.models.fnfnet import build_model

    net = build_model(get_config("lite"))
    rng = np.random.default_rng(0)
    for h, w in ((288, 512), (720, 1280)):
        image = rng.random((h, w, 3), dtype=np.float32)
        want = net.to_cmn(torch.from_numpy(image).permute(2, 0, 1)[None])
        assert torch.allclose(engine_cmn(image), want, atol=1e-5)


def test_engine_matches_pytorch_end_to_end(session: MattingSession, scene: tuple[np.ndarray, ...]) -> None:
    """The cached ONNX path equals the full PyTorch model run on the same frame, flash and trimap."""
    torch = pytest.importorskip("torch")
    from cuematte.training.models.config import get_config
    from cuematte.training.models.fnfnet import build_model

    torch.manual_seed(0)
    net = build_model(get_config("lite")).eval()  # the fixture's weights (same seed)
    flash, noflash, _ = scene
    cue = session.set_flash(flash, noflash)
    got = session.matte(noflash).alpha

    def t(img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255

    tri = engine_cmn(cue.one_hot().transpose(1, 2, 0))
    with torch.no_grad():
        tokens = net.encode_flash(engine_cmn(flash), tri)
        ref = net.forward_frame(t(noflash), engine_cmn(noflash), tokens)["alpha"][0, 0].numpy()
    assert np.abs(got - ref).max() <= 1e-3


def test_any_frame_size_round_trips(lite_model_dir: Path, scene: tuple[np.ndarray, ...]) -> None:
    flash, noflash, _ = scene
    session = MattingSession(lite_model_dir, segmenter="grabcut", max_side=640)
    session.set_flash(flash, noflash)
    for h, w in ((97, 211), (480, 640), (1080, 1920)):  # odd, 4:3, larger than max_side
        frame = np.ascontiguousarray(np.resize(noflash, (h, w, 3)))
        m = session.matte(frame)
        assert m.alpha.shape == (h, w) and m.foreground.shape == (h, w, 3)


def test_reset_and_reflash(session: MattingSession, scene: tuple[np.ndarray, ...]) -> None:
    flash, noflash, _ = scene
    session.set_flash(flash, noflash)
    assert session.has_flash
    session.reset()
    assert not session.has_flash
    with pytest.raises(FlashNotSetError):
        session.matte(noflash)
    session.set_flash(flash, noflash)
    assert session.matte(noflash).alpha.shape == noflash.shape[:2]


def test_failed_reflash_keeps_the_previous_flash(session: MattingSession, scene: tuple[np.ndarray, ...]) -> None:
    flash, noflash, _ = scene
    session.set_flash(flash, noflash)
    before = session.matte(noflash).alpha
    with pytest.raises(FlashCueError):
        session.set_flash(noflash, noflash)  # no flash at all
    assert np.array_equal(session.matte(noflash).alpha, before)


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (np.zeros((64, 64), np.uint8), "grayscale"),
        (np.zeros((64, 64, 4), np.uint8), "RGBA"),
        (np.zeros((64, 64, 3), np.float32), "uint8"),
        (np.zeros((0, 64, 3), np.uint8), "empty"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_bad_frames_are_named_errors(session: MattingSession, scene: tuple[np.ndarray, ...], frame: object,
                                     match: str) -> None:
    session.set_flash(scene[0], scene[1])
    with pytest.raises(FrameFormatError, match=match):
        session.matte(frame)  # type: ignore[arg-type]
    assert session.has_flash  # a bad frame never loses the session's state


def test_compositing_modes(scene: tuple[np.ndarray, ...]) -> None:
    _, frame, alpha = scene
    fg = frame
    green = composite(frame, alpha, fg, Background(mode="green"))
    assert np.all(green[alpha == 0] == [0, 177, 64])
    assert np.array_equal(green[alpha == 1], frame[alpha == 1])
    red = composite(frame, alpha, fg, Background(mode="color", color=(255, 0, 0)))
    assert np.all(red[alpha == 0] == [255, 0, 0])
    plate = np.full((50, 90, 3), 7, np.uint8)
    img = composite(frame, alpha, fg, Background(mode="image", image=plate))
    assert np.all(img[alpha == 0] == 7)
    blur = composite(frame, alpha, fg, Background(mode="blur"))
    bg = alpha == 0
    assert blur[bg].std() < frame[bg].std()  # the wall's texture is smoothed away
    assert composite(frame, alpha, fg, Background(mode="none")) is frame
    # Soft edges blend as alpha * F + (1 - alpha) * B, rounded (within a level).
    soft = np.random.default_rng(1).random(alpha.shape, dtype=np.float32)
    other = np.roll(frame, 7, axis=1)
    expected = soft[..., None] * other + (1 - soft[..., None]) * np.float32(7)
    got = composite(frame, soft, other, Background(mode="image", image=plate))
    assert np.abs(got.astype(np.float32) - expected).max() <= 1.0
    with pytest.raises(InputError, match="unknown background"):
        Background(mode="sepia")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="needs an image"):
        Background(mode="image")


def test_background_blur_looks_the_same_at_every_size() -> None:
    """The blur is computed at a short side of ~90 px whatever the frame: a 1280x720 frame blurs like its 640x360
    self (same sigma in frame pixels), and a plain wall stays plain."""
    from skimage.data import astronaut

    small = np.ascontiguousarray(resize(astronaut(), (360, 360))[:, :, ::-1])
    small = np.ascontiguousarray(np.concatenate([small, small[:, ::-1], small[:, :280]], axis=1)[:, :640])
    large = resize(small, (720, 1280))
    b_small, b_large = blurred(small, 0.04), blurred(large, 0.04)
    assert b_small.shape == small.shape and b_large.shape == large.shape and b_large.dtype == np.uint8
    assert np.abs(resize(b_large, (360, 640)).astype(int) - b_small).mean() < 2.0
    assert b_small.std() < small.std() * 0.8  # blurred, not copied
    wall = np.full((720, 1280, 3), (40, 90, 200), np.uint8)
    assert np.abs(blurred(wall, 0.04).astype(int) - wall).max() <= 1


def test_no_model_anywhere_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import cuematte.engine.model as em

    monkeypatch.setattr(em, "DEFAULT_MODEL", tmp_path / "absent")
    with pytest.raises(ModelNotFoundError, match="cuematte export"):
        resolve_model_dir(None)


def test_serving_code_imports_without_torch() -> None:
    """Serving must install and start without torch: importing the engine must not pull it in."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['timm'] = None\n"
        "import cuematte.engine.session, cuematte.engine.compositing, cuematte.engine.io\n"
        "import cuematte.engine.cues.trimap, cuematte.clients.cli\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_a_flash_prior_model_caches_its_prior_and_mattes_when_no_subject_is_located(
    lite_prior_model_dir: Path, lite_mask_model_dir: Path
) -> None:
    """A flash that lit only a glint in an empty room: neither the flash nor MediaPipe locates a subject. A model
    that reads the flash frame per frame still mattes, from an all-unknown trimap; the cached flash prior is the
    flash graph's output and the cached path equals the uncached one."""
    from cuematte.clients.scenes import make_glint_pair

    flash, noflash = make_glint_pair(288, 512)
    session = MattingSession(lite_prior_model_dir, threads=2)
    cue = session.set_flash(flash, noflash)
    assert cue.method == "unknown" and (cue.trimap == 128).all()
    cache = session._flash.cache if session._flash else {}
    assert sorted(cache) == ["flash_features", "flash_prior"] and cache["flash_prior"].shape == (1, 6, 144, 256)
    cached, uncached = session.matte(noflash), session.matte(noflash, reuse_flash=False)
    assert np.array_equal(cached.alpha, uncached.alpha) and cached.alpha.shape == noflash.shape[:2]
    # An older model without the prior needs a located subject: the same flash is a named error there.
    with pytest.raises(FlashCueError, match="no foreground"):
        MattingSession(lite_mask_model_dir).set_flash(flash, noflash)
    # A live call asks for a subject: "no one found", and the flash cached before stays.
    before = session._flash
    with pytest.raises(NoSubjectError, match="no one found"):
        session.set_flash(flash, noflash, require_subject=True)
    assert session._flash is before


def test_an_align_flash_model_takes_its_flash_where_the_subject_is_now(
    lite_align_model_dir: Path, lite_prior_model_dir: Path
) -> None:
    """A rendered pair whose person turned and stepped between flash and frame: the session fits the subject's
    motion, and its flash graph sees the flash and trimap warped by it (checked against the PyTorch model fed
    those inputs by hand); the warp puts the flash's own matte on the frame's. Models without the switch take
    the flash as shot; the switch needs the segmenter."""
    torch = pytest.importorskip("torch")
    from cuematte.engine.cues.align import estimate_subject_warp
    from cuematte.engine.cues.segmenter import MediaPipeSegmenter
    from cuematte.engine.cues.trimap import build_flash_trimap, trimap_for_model, trimap_one_hot
    from cuematte.engine.frames import resize
    from cuematte.training.data import SynthConfig, render_sample
    from cuematte.training.models.config import get_config
    from cuematte.training.models.fnfnet import build_model

    s = render_sample(11, SynthConfig(size=(288, 512)))
    u8 = lambda x: (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)  # noqa: E731
    flash, noflash = u8(s.flash), u8(s.noflash)
    session = MattingSession(lite_align_model_dir, threads=2)
    assert session.model.info.align_flash
    session.set_flash(flash, noflash)
    warp = session.subject_warp
    assert warp is not None and warp.kind in ("affine", "euclidean")
    moved = warp.to_noflash(s.flash_alpha.astype(np.float32))
    assert ((moved - s.alpha) ** 2).mean() < 0.5 * ((s.flash_alpha - s.alpha) ** 2).mean()
    got = session.matte(noflash).alpha

    seg = MediaPipeSegmenter()
    cue = trimap_for_model(build_flash_trimap(flash, noflash, seg), reads_flash=True)
    fit = estimate_subject_warp(flash, noflash, seg.segment(resize(noflash, (144, 256))), cue.alignment.warp)
    assert np.allclose(fit.warp, warp.warp)
    torch.manual_seed(0)
    net = build_model(get_config("lite", person_mask=True, flash_prior=True)).eval()  # the fixture's weights

    def t(img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255

    mask = torch.from_numpy(seg.segment(resize(noflash, (144, 256))))[None, None]
    tri = engine_cmn(trimap_one_hot(fit.to_noflash(cue.trimap, nearest=True)).transpose(1, 2, 0))
    with torch.no_grad():
        prior = net.flash_prior(engine_cmn(fit.to_noflash(flash)), tri)
        ref = net.forward_frame(t(noflash), engine_cmn(noflash), net.encode_prior(prior), mask,
                                prior)["alpha"][0, 0].numpy()
    assert np.abs(got - ref).max() <= 1e-3
    # The cached prior is the warped flash's, not the flash as shot (a random-init net's alpha barely shows it).
    cached = session._flash.cache["flash_prior"] if session._flash else None
    with torch.no_grad():
        aligned = prior.numpy()
        as_shot = net.flash_prior(engine_cmn(flash), engine_cmn(cue.one_hot().transpose(1, 2, 0))).numpy()
    assert cached is not None and np.abs(cached - aligned).max() <= 1e-4
    assert np.abs(cached - as_shot).mean() > 10 * np.abs(cached - aligned).mean()

    plain = MattingSession(lite_prior_model_dir, threads=2)
    plain.set_flash(flash, noflash)
    assert plain.subject_warp is None
    with pytest.raises(ModelError, match="segmenter"):
        MattingSession(lite_align_model_dir, segmenter=None)


def test_an_align_flash_session_moves_the_cached_prior_with_the_person(lite_align_model_dir: Path) -> None:
    """After the flash the person keeps moving: each frame the session fits the person's motion from the frame
    taken with the flash and moves the cached prior onto them (the fit carries from frame to frame); with
    tracking off the prior stays where the flash caught them."""
    from cuematte.clients.scenes import make_pair
    from cuematte.engine.frames import resize

    flash, noflash, alpha = make_pair(288, 512, seed=3, shift=3)
    later = np.roll(noflash, 10, axis=1)  # the person (and the wall) 10 px to the right
    session = MattingSession(lite_align_model_dir, threads=2)
    session.set_flash(flash, noflash)
    state = session._flash
    assert state is not None and state.tracker is not None
    tracker = state.tracker
    session.matte(noflash)
    assert np.allclose(tracker.warp, np.eye(2, 3), atol=0.05)  # the frame taken with the flash: no motion
    ys, xs = np.nonzero(alpha > 0.5)
    centre = np.array([xs.mean() / 2, ys.mean() / 2, 1.0])  # at the CMN grid, half the frame's size
    for _ in range(2):
        assert session.matte(later).alpha.shape == later.shape[:2]
        assert np.allclose(tracker.warp @ centre - centre[:2], [-5, 0], atol=1.0)  # 10 px = 5 CMN px back
    prior = state.cache["flash_prior"]
    person = np.roll(resize(alpha.astype(np.float32), (144, 256)), 5, axis=1)
    moved = tracker.move(prior, resize(later, (144, 256)), person)
    assert moved.shape == prior.shape and moved.dtype == np.float32
    fg = prior[0, 5, :, :-5]  # the trimap's foreground channel where the flash caught the person
    as_cached = np.abs(prior[0, 5, :, 5:] - fg)[:, 10:-10].mean()
    assert (fg > 0.5).any() and np.abs(moved[0, 5, :, 5:] - fg)[:, 10:-10].mean() < 0.3 * as_cached

    still = MattingSession(lite_align_model_dir, threads=2, track_subject=False)
    still.set_flash(flash, noflash)
    still.matte(later)
    assert still._flash is not None and still._flash.tracker is None  # no tracker: the prior stays as cached


def test_frame_buffers_are_kept_by_glibc_unless_the_user_tuned_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes.util
    import os
    import platform

    from cuematte.engine.allocator import keep_freed_memory

    # The user's own setting wins, either way glibc takes it (these return before touching the allocator).
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")
    assert keep_freed_memory() is False
    monkeypatch.delenv("GLIBC_TUNABLES")
    # In a child: the thresholds, once set, would stay for the rest of this test process.
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" and ctypes.util.find_library("c")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", "from cuematte.engine.allocator import keep_freed_memory as k; "
                          "print(k())"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0 and out.stdout.strip() == str(bool(glibc)), out.stderr


_FREEZE_CHECK = """
import gc, weakref
from cuematte.engine.allocator import freeze_startup_heap, unfreeze_heap

class Node:
    pass

def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a

kept = cycle()                      # alive at startup: frozen, out of every full pass
dropped = weakref.ref(cycle())      # already garbage at startup: freed, not frozen
n = freeze_startup_heap()
assert n > 1000 and dropped() is None, (n, dropped())
assert gc.get_freeze_count() == n and not any(o is kept for o in gc.get_objects())
later = weakref.ref(cycle())        # a session's garbage after startup: still collected
gc.collect()
assert later() is None
unfreeze_heap()
assert gc.get_freeze_count() == 0 and any(o is kept for o in gc.get_objects())
print("ok")
"""


def test_startup_heap_is_frozen_but_later_cycles_are_still_collected() -> None:
    # In a child: freezing pytest's own heap would keep later tests' cycles among its objects.
    out = subprocess.run([sys.executable, "-c", _FREEZE_CHECK], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
