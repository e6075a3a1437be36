"""The engine's guided-filter refinement against the PyTorch module it replaces at the end of the frame graph."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cuematte.engine.cues.trimap import BG, FG, UNKNOWN, trimap_one_hot  # noqa: E402
from cuematte.engine.refine import Workspace, apply_guided, frame_result, guided_float  # noqa: E402
from cuematte.training.models.fnfnet import compose_guidance  # noqa: E402
from cuematte.training.models.layers import GuidedUpsampler  # noqa: E402


def _inputs(size: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    a = rng.normal(0.0, 1.5, (4, 36, 64)).astype(np.float32)
    b = rng.normal(0.3, 0.5, (4, 36, 64)).astype(np.float32)
    guidance = rng.choice(np.array([BG, UNKNOWN, FG], np.uint8), (36, 64))
    return frame, a, b, guidance


def _torch_reference(frame: np.ndarray, a: np.ndarray, b: np.ndarray, guidance: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """What FNFNet.forward_frame does after the coefficients: upsample, clamp, compose the guidance."""
    fine = torch.from_numpy(frame.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    fg, alpha = GuidedUpsampler.upsample(fine, torch.from_numpy(a[None]), torch.from_numpy(b[None]))
    fg, alpha = fg.clamp(0.0, 1.0), alpha.clamp(0.0, 1.0)
    if guidance is not None:
        alpha = compose_guidance(alpha, torch.from_numpy(trimap_one_hot(guidance)[None]))
    return alpha[0, 0].numpy(), fg[0].numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("size", [(180, 320), (271, 483), (720, 1280)])
@pytest.mark.parametrize("with_guidance", [True, False])
def test_matches_the_pytorch_refinement(size: tuple[int, int], with_guidance: bool) -> None:
    frame, a, b, guidance = _inputs(size)
    g = guidance if with_guidance else None
    want_alpha, want_fg = _torch_reference(frame, a, b, g)
    alpha, fg = guided_float(frame, a, b, g)
    assert alpha.shape == size and fg.shape == (*size, 3)
    np.testing.assert_allclose(alpha, want_alpha, atol=1e-4)
    np.testing.assert_allclose(fg / 255.0, want_fg, atol=1e-4)
    # Rounded to uint8: at most half a level from the float foreground.
    _, fg8 = apply_guided(frame, a, b, g)
    assert fg8.dtype == np.uint8
    assert np.abs(fg8 / 255.0 - want_fg).max() <= 0.5 / 255 + 1e-4


def test_certain_guidance_is_exact_and_unknown_is_clamped() -> None:
    frame, a, b, guidance = _inputs((271, 483), seed=3)
    alpha, _ = apply_guided(frame, a * 50, b * 50, guidance)  # wild coefficients: far outside [0, 1]
    nearest = guidance[(np.arange(271) * 36 // 271)[:, None], (np.arange(483) * 64 // 483)[None, :]]
    assert np.all(alpha[nearest == FG] == 1.0)
    assert np.all(alpha[nearest == BG] == 0.0)
    unknown = alpha[nearest == UNKNOWN]
    assert unknown.min() >= 0.0 and unknown.max() <= 1.0
    assert np.any((unknown > 0.0) & (unknown < 1.0))


def test_workspace_reuse_across_frames_and_sizes() -> None:
    ws = Workspace()
    for size, seed in (((180, 320), 0), ((360, 640), 1), ((180, 320), 2)):
        frame, a, b, guidance = _inputs(size, seed)
        alpha, fg = apply_guided(frame, a, b, guidance, ws)
        alpha2, fg2 = apply_guided(frame, a, b, guidance)
        np.testing.assert_array_equal(alpha, alpha2)
        np.testing.assert_array_equal(fg, fg2)
    # Results are the caller's: the next frame does not overwrite them.
    first, _ = apply_guided(*_inputs((180, 320), 5)[:3], None, ws)
    kept = first.copy()
    apply_guided(*_inputs((180, 320), 6)[:3], None, ws)
    np.testing.assert_array_equal(first, kept)


def test_frame_result_reads_full_resolution_graphs_as_they_are() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    alpha = rng.random((1, 1, 90, 160), dtype=np.float32)
    fg = rng.random((1, 3, 90, 160), dtype=np.float32)
    got_alpha, got_fg = frame_result({"alpha": alpha, "foreground": fg}, frame)
    np.testing.assert_array_equal(got_alpha, alpha[0, 0])
    np.testing.assert_array_equal(got_fg, np.round(fg[0].transpose(1, 2, 0) * 255).astype(np.uint8))


def test_holding_the_guidance_after_smoothing_equals_never_blending_certain_pixels() -> None:
    """The session composes the guidance once, after temporal smoothing, instead of composing before it and
    masking certain pixels out of the blend: the same alphas, frame after frame."""
    from cuematte.engine.frames import resize
    from cuematte.engine.refine import hold_guidance
    from cuematte.engine.temporal import TemporalSmoother

    masked, held = TemporalSmoother(strength=0.5), TemporalSmoother(strength=0.5)
    rng = np.random.default_rng(0)
    frame, a, b, guidance = _inputs((271, 483), seed=7)
    for step in range(4):
        moved = np.clip(frame.astype(np.int16) + rng.integers(-3, 4, frame.shape), 0, 255).astype(np.uint8)
        composed, _ = apply_guided(moved, a + 0.1 * step, b, guidance)
        raw, _ = apply_guided(moved, a + 0.1 * step, b)
        fixed = resize(guidance, (271, 483), nearest=True) != UNKNOWN
        want = masked(moved, composed, fixed)
        got = hold_guidance(held(moved, raw), guidance)
        np.testing.assert_allclose(got, want, atol=1e-6)
        assert np.all(got[resize(guidance, (271, 483), nearest=True) == FG] == 1.0)


def test_opaque_pixels_composite_the_frame_itself() -> None:
    """Where alpha is 1 the foreground is the camera's pixel (I = F there); at or below 0.9 it is the network's
    decontaminated colour; in between a blend, so no seam shows."""
    from cuematte.engine.refine import opaque_foreground

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    net_fg = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    alpha = np.tile(np.linspace(0.0, 1.0, 160, dtype=np.float32), (90, 1))
    alpha[:, -10:] = 1.0
    fg = opaque_foreground(frame, alpha, net_fg)
    assert fg.dtype == np.uint8 and fg.shape == frame.shape
    np.testing.assert_array_equal(fg[alpha == 1.0], frame[alpha == 1.0])
    low = alpha <= 0.9
    np.testing.assert_array_equal(fg[low], net_fg[low])
    mid = (alpha > 0.92) & (alpha < 0.98)
    w = ((alpha[mid] - 0.9) / 0.1)[:, None]
    want = w * frame[mid] + (1 - w) * net_fg[mid]
    assert np.abs(fg[mid].astype(np.float64) - want).max() <= 1.0


def test_the_session_composites_the_frame_where_the_guidance_is_certain_person() -> None:
    """The shipped model on the astronaut: inside MediaPipe's certain person the foreground is her own pixels."""
    from skimage import data

    from cuematte.engine.cues.trimap import FG
    from cuematte.engine.frames import resize
    from cuematte.engine.session import MattingSession

    img = data.astronaut()
    session = MattingSession()
    session.set_flash(np.clip(img.astype(np.int16) + 50, 0, 255).astype(np.uint8), img)
    m = session.matte(img)
    assert m.guidance is not None
    certain = resize(m.guidance, img.shape[:2], nearest=True) == FG
    assert certain.mean() > 0.1
    np.testing.assert_array_equal(m.foreground[certain], img[certain])
    # Every stage of the frame is timed, the parts of pre-processing too (stats, bench).
    assert {"pre", "pre_segment", "pre_track", "graph", "refine", "post"} <= set(session.times.ms)
