"""Motion-aware alpha smoothing: flicker on still pixels is damped, moving pixels take the new alpha at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cuematte.engine.errors import InputError
from cuematte.engine.session import MattingSession
from cuematte.engine.temporal import TemporalSmoother


def _frame(value: int, h: int = 32, w: int = 48) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def test_still_pixels_are_blended_with_the_previous_alpha() -> None:
    sm = TemporalSmoother(strength=0.6)
    first = sm(_frame(100), np.zeros((32, 48), np.float32))
    assert np.all(first == 0.0)  # nothing to blend with yet
    second = sm(_frame(100), np.ones((32, 48), np.float32))
    np.testing.assert_allclose(second, 0.4, atol=1e-6)  # 0.6 * 0 + 0.4 * 1
    third = sm(_frame(100), np.ones((32, 48), np.float32))
    np.testing.assert_allclose(third, 0.6 * 0.4 + 0.4, atol=1e-6)


def test_moving_pixels_take_the_new_alpha() -> None:
    sm = TemporalSmoother(strength=0.6, motion=10.0)
    sm(_frame(100), np.zeros((32, 48), np.float32))
    moved = _frame(100)
    moved[:, 24:] = 200  # the right half changed a lot
    out = sm(moved, np.ones((32, 48), np.float32))
    np.testing.assert_allclose(out[:, 30:], 1.0)  # away from the 5x5 blur's reach of the edge
    np.testing.assert_allclose(out[:, :18], 0.4, atol=1e-6)


def test_reset_and_disabled() -> None:
    sm = TemporalSmoother(strength=0.6)
    sm(_frame(100), np.zeros((32, 48), np.float32))
    sm.reset()
    np.testing.assert_array_equal(sm(_frame(100), np.ones((32, 48), np.float32)), 1.0)
    off = TemporalSmoother(strength=0.0)
    a = np.random.default_rng(0).random((32, 48), dtype=np.float32)
    off(_frame(1), 1 - a)
    assert np.array_equal(off(_frame(1), a), a)
    with pytest.raises(InputError, match="strength"):
        TemporalSmoother(strength=1.0)
    with pytest.raises(InputError, match="motion"):
        TemporalSmoother(motion=0.0)


@pytest.mark.usefixtures("quiet_untrained")
def test_session_smoothing_restarts_with_each_flash(lite_model_dir: Path,
                                                    scene: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    flash, noflash, _ = scene
    plain = MattingSession(lite_model_dir, segmenter=None)
    smooth = MattingSession(lite_model_dir, segmenter=None, temporal=0.5)
    for s in (plain, smooth):
        s.set_flash(flash, noflash)
    a0 = plain.matte(noflash).alpha
    # The first frame after a flash has nothing to blend with; a still second frame blends with itself.
    np.testing.assert_allclose(smooth.matte(noflash).alpha, a0, atol=1e-6)
    np.testing.assert_allclose(smooth.matte(noflash).alpha, a0, atol=1e-5)
    dark = (noflash // 2).astype(np.uint8)
    smooth.set_flash(flash, noflash)  # a new flash forgets the previous frames
    np.testing.assert_allclose(smooth.matte(dark).alpha, plain.matte(dark).alpha, atol=1e-6)


def test_fixed_pixels_are_never_blended() -> None:
    """Where the guidance is certain the alpha is final: a still pixel that flips is taken as it is."""
    frame = np.full((8, 8, 3), 100, np.uint8)
    smoother = TemporalSmoother(strength=0.5)
    smoother(frame, np.zeros((8, 8), np.float32))
    fixed = np.zeros((8, 8), bool)
    fixed[:4] = True
    out = smoother(frame, np.ones((8, 8), np.float32), fixed)
    assert (out[:4] == 1.0).all()
    assert np.allclose(out[4:], 0.5)
