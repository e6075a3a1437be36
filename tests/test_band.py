"""The refinement in the unknown band only (cuematte.engine.band): its rectangles cover every unknown pixel, and it
gives what the whole-frame path gives (guided filter, temporal smoothing, hold, opaque foreground), on random
coefficients and through a real ONNX Runtime session of the shipped model on a real photo at 1280x720."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cuematte.clients.realcheck import uniform_flash
from cuematte.engine.band import band_rects, nearest_index, refine_band
from cuematte.engine.cues.trimap import BG, FG, UNKNOWN
from cuematte.engine.refine import apply_guided, hold_guidance, opaque_foreground
from cuematte.engine.session import MattingSession
from cuematte.engine.temporal import TemporalSmoother


def _guidance(seed: int, shape: tuple[int, int] = (144, 256)) -> np.ndarray:
    """A person-like blob: certain inside, certain background outside, an unknown band around its edge."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = h * rng.uniform(0.4, 0.6), w * rng.uniform(0.35, 0.65), h * rng.uniform(0.25, 0.4)
    d = np.hypot(yy - cy, (xx - cx) * 0.8) - r
    g = np.full(shape, BG, np.uint8)
    g[d < 6] = UNKNOWN
    g[d < -6] = FG
    g[rng.integers(0, h, 6), rng.integers(0, w, 6)] = UNKNOWN  # a few stray unknown cells, away from the band
    return g


def _covered(rects: list[tuple[int, int, int, int]], size: tuple[int, int]) -> np.ndarray:
    count = np.zeros(size, np.int32)
    for y0, y1, x0, x1 in rects:
        count[y0:y1, x0:x1] += 1
    return count


@pytest.mark.parametrize("size", [(720, 1280), (360, 640)])
def test_rects_cover_every_unknown_pixel_once(size: tuple[int, int]) -> None:
    g = _guidance(0)
    rects = band_rects(g, (72, 128), size)
    assert rects is not None and rects
    # The guidance at each pixel as the session upsamples it (nearest).
    unknown = cv2.resize(g, size[::-1], interpolation=cv2.INTER_NEAREST) == UNKNOWN
    count = _covered(rects, size)
    assert (count[unknown] == 1).all()
    assert count.max() == 1
    assert count.mean() < 0.6  # a band, not the frame
    sy = size[0] // 72
    assert all(y0 % sy == 0 for y0, *_ in rects)  # strips start on coefficient rows


def test_rects_none_without_a_whole_grid_and_empty_without_unknown() -> None:
    g = _guidance(1)
    assert band_rects(g, (72, 128), (562, 1000)) is None  # 562 is not a multiple of 72 rows
    assert band_rects(np.where(g == UNKNOWN, FG, g).astype(np.uint8), (72, 128), (720, 1280)) == []


def test_nearest_index_is_opencvs() -> None:
    src = np.arange(144, dtype=np.float32)[:, None]
    for n in (360, 720, 480):
        idx = nearest_index(144, n)
        assert (idx == cv2.resize(src, (1, n), interpolation=cv2.INTER_NEAREST)[:, 0]).all()


def _dense(frame: np.ndarray, coef_a: np.ndarray, coef_b: np.ndarray, guidance: np.ndarray,
           smoother: TemporalSmoother) -> tuple[np.ndarray, np.ndarray]:
    """The whole-frame path, in MattingSession.finish's order."""
    alpha, fg = apply_guided(frame, coef_a, coef_b)
    alpha = smoother(frame, alpha)
    hold_guidance(alpha, guidance)
    return alpha, opaque_foreground(frame, alpha, fg)


@pytest.mark.parametrize("size", [(720, 1280), (360, 640)])
def test_band_gives_the_whole_frames_numbers(size: tuple[int, int]) -> None:
    """Three frames with smoothing: alpha identical everywhere, the foreground wherever alpha is not 0, and the
    frame itself where the guidance is certain."""
    rng = np.random.default_rng(2)
    h, w = size
    dense_s, band_s = TemporalSmoother(strength=0.5), TemporalSmoother(strength=0.5)
    base = cv2.resize((rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8), (w, h))
    g = _guidance(3)
    for step in range(3):
        frame = np.roll(base, 3 * step, axis=1)  # motion: the smoother blends only where nothing moved
        coef_a = cv2.GaussianBlur(rng.normal(1.0, 0.3, (72, 128, 4)).astype(np.float32), (0, 0), 2).transpose(2, 0, 1)
        coef_b = cv2.GaussianBlur(rng.normal(0.0, 0.3, (72, 128, 4)).astype(np.float32), (0, 0), 2).transpose(2, 0, 1)
        coef_a, coef_b = np.ascontiguousarray(coef_a), np.ascontiguousarray(coef_b)
        want_alpha, want_fg = _dense(frame, coef_a, coef_b, g, dense_s)
        rects = band_rects(g, (72, 128), size)
        assert rects is not None
        alpha, fg = refine_band(frame, coef_a, coef_b, g, rects, band_s)
        assert alpha.shape == (h, w) and alpha.dtype == np.float32 and fg.shape == (h, w, 3) and fg.dtype == np.uint8
        np.testing.assert_allclose(alpha, want_alpha, rtol=0, atol=1e-6)
        seen = want_alpha > 0
        assert np.abs(fg.astype(int) - want_fg.astype(int))[seen].max() <= 1
        soft = (want_alpha > 0.05) & (want_alpha < 0.95)
        assert soft.mean() > 0.02  # the band has soft pixels to compare
        certain_fg = cv2.resize(g, (w, h), interpolation=cv2.INTER_NEAREST) == FG
        assert (alpha[certain_fg] == 1.0).all() and (fg[certain_fg] == frame[certain_fg]).all()


@pytest.fixture(scope="module")
def pan720() -> list[np.ndarray]:
    """Four 1280x720 frames of the astronaut on a grey wall, moving 6 px a frame."""
    from skimage.data import astronaut

    photo = cv2.resize(astronaut(), (720, 720), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(4):
        f = np.full((720, 1280, 3), 90, np.uint8)
        f[:, 280 + 6 * i:1000 + 6 * i] = photo
        frames.append(f)
    return frames


def test_session_takes_the_band_at_720p_with_the_same_matte(pan720: list[np.ndarray]) -> None:
    results = {}
    for band in (False, True):
        s = MattingSession(temporal=0.5)
        s.band_refinement = band
        s.set_flash(uniform_flash(pan720[0]), pan720[0])
        results[band] = [s.matte(f) for f in pan720]
        assert (s.times.ms["post"] == 0.0) is band  # the band fuses refinement and post-processing
    for frame, dense, band in zip(pan720, results[False], results[True], strict=True):
        np.testing.assert_allclose(band.alpha, dense.alpha, rtol=0, atol=1e-6)
        seen = dense.alpha > 0
        assert np.abs(band.foreground.astype(int) - dense.foreground.astype(int))[seen].max() <= 1
        assert band.guidance is not None
        g = cv2.resize(band.guidance, (1280, 720), interpolation=cv2.INTER_NEAREST)
        assert (band.alpha[g == FG] == 1.0).all() and (band.alpha[g == BG] == 0.0).all()
        assert (band.foreground[g == FG] == frame[g == FG]).all()  # where the camera saw the person alone
        assert 0.01 < ((band.alpha > 0) & (band.alpha < 1)).mean() < 0.5
        for m in (dense, band):  # one contract whichever path ran: the alpha is not the caller's to change
            with pytest.raises(ValueError, match="read-only"):
                m.alpha[0, 0] = 0.5
