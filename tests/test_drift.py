"""Scene drift: camera moves and light changes are caught, the person moving and sensor noise are not;
hysteresis in both directions."""

from __future__ import annotations

import numpy as np
import pytest

from cuematte.clients.scenes import make_pair, person_mask
from cuematte.engine.drift import DriftDetector, DriftParams, thumbnail

H, W = 360, 640


@pytest.fixture(scope="module")
def room() -> dict[str, np.ndarray]:
    """A wider view of the room, the no-flash frame cut from its left part, and the trimap background."""
    wide = make_pair(H, W + 80, seed=1)[1]
    _, noflash, alpha = make_pair(H, W, seed=1)
    return {"wide": wide, "noflash": noflash, "background": alpha < 0.01}


def _detector(room: dict[str, np.ndarray]) -> DriftDetector:
    d = DriftDetector()
    d.set_reference(room["noflash"], room["background"])
    return d


def _noisy(frame: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, frame.shape)
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


def test_thumbnail_is_small_grey_float() -> None:
    t = thumbnail(np.full((480, 640, 3), 200, np.uint8))
    assert t.shape == (18, 32) and t.dtype == np.float32
    assert np.allclose(t, 200, atol=1)


def test_same_scene_noise_and_exposure_jitter_do_not_drift(room: dict[str, np.ndarray]) -> None:
    d = _detector(room)
    for i in range(20):
        frame = _noisy(room["noflash"], 6.0, i)
        if i % 2:
            frame = (frame * 0.9).astype(np.uint8)  # auto-exposure hunting a little
        assert d.update(frame) is None
    assert not d.drifted
    assert d.last is not None and d.last.structure < 0.1


def test_person_moving_is_not_drift(room: dict[str, np.ndarray]) -> None:
    d = _detector(room)
    for dx in (-60, -30, 0, 30, 60, 30, 0, -30):
        m = np.roll(person_mask(H, W), dx, axis=1)[..., None]
        moved = (m * np.roll(room["noflash"], dx, axis=1) + (1 - m) * room["noflash"]).astype(np.uint8)
        assert d.update(moved) is None, d.last
    assert not d.drifted


@pytest.mark.parametrize("change", ["camera-pan", "lights-down", "lights-up"])
def test_camera_move_or_light_change_drifts_after_hysteresis(room: dict[str, np.ndarray], change: str) -> None:
    d = _detector(room)
    if change == "camera-pan":
        frame = np.ascontiguousarray(room["wide"][:, 60 : 60 + W])
    elif change == "lights-down":
        frame = (room["noflash"] * 0.55).astype(np.uint8)
    else:
        frame = np.clip(room["noflash"] * 1.7, 0, 255).astype(np.uint8)
    p = d.params
    results = [d.update(frame) for _ in range(p.enter_checks)]
    assert results[:-1] == [None] * (p.enter_checks - 1), "one check must not raise the prompt"
    assert results[-1] == "drifted" and d.drifted
    assert d.update(frame) is None  # reported once, not on every check


def test_drift_clears_only_after_the_scene_is_back_for_a_while(room: dict[str, np.ndarray]) -> None:
    d = DriftDetector(DriftParams(enter_checks=1, leave_checks=2))
    d.set_reference(room["noflash"], room["background"])
    dark = (room["noflash"] * 0.5).astype(np.uint8)
    assert d.update(dark) == "drifted"
    assert d.update(room["noflash"]) is None  # one good frame is not enough
    assert d.update(dark) is None  # and a relapse restarts the count
    assert d.update(room["noflash"]) is None
    assert d.update(room["noflash"]) == "settled"
    assert not d.drifted


def test_flicker_between_checks_does_not_drift(room: dict[str, np.ndarray]) -> None:
    d = _detector(room)
    dark = (room["noflash"] * 0.5).astype(np.uint8)
    for _ in range(5):  # a flickering lamp: never enter_checks bad checks in a row
        assert d.update(dark) is None
        assert d.update(room["noflash"]) is None
    assert not d.drifted


def test_new_reference_clears_drift_and_score_needs_one(room: dict[str, np.ndarray]) -> None:
    d = DriftDetector(DriftParams(enter_checks=1))
    with pytest.raises(ValueError):
        d.score(room["noflash"])
    d.set_reference(room["noflash"], room["background"])
    dark = (room["noflash"] * 0.5).astype(np.uint8)
    assert d.update(dark) == "drifted"
    d.set_reference(dark, room["background"])  # re-flash in the new light
    assert not d.drifted and d.update(dark) is None
    d.clear()
    assert not d.has_reference


def test_tiny_background_falls_back_to_every_cell(room: dict[str, np.ndarray]) -> None:
    d = DriftDetector(DriftParams(enter_checks=1))
    d.set_reference(room["noflash"], np.zeros((H, W), bool))  # trimap said "all person"
    assert d.update((room["noflash"] * 0.5).astype(np.uint8)) == "drifted"
