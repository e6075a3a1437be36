"""The parallax cue in a live session (``set-cue``): the reference-frame loop (:class:`ParallaxLive`) driven with
numpy frames, and the control channel end to end with real aiortc peers (``tests/test_server.py``'s client).

Random-init tiny parallax model (``tests/test_parallax_engine.py``), real ONNX Runtime and MediaPipe sessions, the
astronaut over a texture with controllable person and background shifts (so MediaPipe finds a person).
"""

from __future__ import annotations

import asyncio
import json
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cuematte.engine.compositing import Background
from cuematte.engine.model import FlashModel, UntrainedModelWarning
from cuematte.engine.parallax.session import ParallaxSession
from cuematte.live.parallax import NO_PERSON_DETAIL, SCENE_CHANGED_DETAIL, WAITING_DETAIL, ParallaxLive
from cuematte.live.state import LiveState
from cuematte.server.protocol import ProtocolError, parse_message
from tests.test_parallax_engine import BG_SHIFT, FG_SHIFT, astronaut_view, open_session, texture, tiny_parallax_model
from tests.test_server import BASE, Client, serving, until

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.filterwarnings("ignore::cuematte.engine.model.UntrainedModelWarning")]
GREEN = Background(mode="green")


@pytest.fixture(scope="module")
def parallax_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_parallax_model(tmp_path_factory)


@pytest.fixture(scope="module")
def psession(parallax_dir: Path) -> ParallaxSession:
    return open_session(parallax_dir)


@pytest.fixture(scope="module")
def views() -> dict[str, np.ndarray]:
    """view0: the reference pose; view1: the person and the background shifted apart (parallax); empty: no one."""
    return {"view0": astronaut_view()[0], "view1": astronaut_view(FG_SHIFT, BG_SHIFT)[0],
            "empty": texture(512, 512, seed=9), "alpha": astronaut_view()[1]}


@pytest.fixture(scope="module")
def flash_model(lite_model_dir: Path) -> FlashModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        return FlashModel(lite_model_dir)


def _last_stats(c: Client) -> dict[str, Any]:
    return c.stats[-1] if c.stats else {}


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_set_cue_messages_are_validated() -> None:
    assert parse_message(json.dumps({"type": "set-cue", "cue": "parallax"}), 1000)["cue"] == "parallax"
    for bad in ({"type": "set-cue", "cue": "sepia"}, {"type": "set-cue"}, {"type": "set-cue", "cue": ["flash"]}):
        with pytest.raises(ProtocolError, match="unknown cue"):
            parse_message(json.dumps(bad), 1000)


def test_reference_policy_waits_for_a_person_and_parallax_then_mattes(psession: ParallaxSession,
                                                                      views: dict[str, np.ndarray]) -> None:
    clock = Clock()
    live = ParallaxLive(psession, clock=clock)
    # No one: passes through, says so, takes no reference.
    done = live.process(views["empty"], GREEN)
    assert (done.state, done.detail, done.matted) == (LiveState.PARALLAX_WAITING, NO_PERSON_DETAIL, False)
    assert live.reference is None and done.frame is views["empty"]
    # The first frame with a person becomes the reference; the same pose again carries no parallax.
    for _ in range(2):
        clock.t += 0.1
        done = live.process(views["view0"], GREEN)
        assert (done.state, done.detail, done.matted) == (LiveState.PARALLAX_WAITING, WAITING_DETAIL, False)
        assert done.frame is views["view0"] and done.error is None
    assert live.references == 1
    # The person moved against the background: matted and composited on green.
    clock.t += 0.1
    done = live.process(views["view1"], GREEN)
    assert (done.state, done.matted) == (LiveState.PARALLAX_MATTING, True), done
    assert done.parallax_px is not None and done.parallax_px > 1
    bg = astronaut_view(FG_SHIFT, BG_SHIFT)[1] < 0.01
    assert (done.frame[bg] == (0, 177, 64)).all(1).mean() > 0.5  # certain background: exactly the green
    assert "parallax_graph" in done.ms and "composite" in done.ms
    # Held still again: the last good matte is kept for a moment (no flicker), then it waits again.
    clock.t += 0.5
    done = live.process(views["view0"], GREEN)
    assert (done.state, done.matted, done.held) == (LiveState.PARALLAX_MATTING, False, True)
    assert not np.array_equal(done.frame, views["view0"])
    clock.t += live.hold_s + 0.1
    done = live.process(views["view0"], GREEN)
    assert (done.state, done.detail, done.held) == (LiveState.PARALLAX_WAITING, WAITING_DETAIL, False)
    # A stale reference is replaced by the current frame.
    clock.t += live.refresh_s
    live.process(views["view0"], GREEN)
    assert live.references == 2 and live.reference_at == clock.t
    # The person left: the reference is dropped; the next frame with a person is the new one.
    done = live.process(views["empty"], GREEN)
    assert (done.state, done.detail) == (LiveState.PARALLAX_WAITING, NO_PERSON_DETAIL) and live.reference is None
    live.process(views["view1"], GREEN)
    assert live.references == 3
    # Per-frame errors cost the frame its matte, never raise: a broken frame, a new size.
    done = live.process(np.zeros((512, 512), np.uint8), GREEN)
    assert not done.matted and done.error
    done = live.process(views["view0"][:256, :320].copy(), GREEN)
    assert not done.matted and done.state is LiveState.PARALLAX_WAITING


def test_the_reference_is_segmented_once_not_per_frame(psession: ParallaxSession,
                                                     views: dict[str, np.ndarray]) -> None:
    """Each matted frame runs the segmenter on itself only: the reference's guidance is kept with it."""
    real = psession.segmenter
    calls: list[tuple[int, ...]] = []

    class Counting:
        def segment(self, rgb: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
            calls.append(rgb.shape)
            return real.segment(rgb, *args, **kwargs)

    psession.segmenter = Counting()  # type: ignore[assignment]
    try:
        live = ParallaxLive(psession, clock=Clock())
        live.process(views["view0"], GREEN)
        assert live.references == 1 and len(calls) == 1
        for _ in range(3):
            assert live.process(views["view1"], GREEN).matted
        assert len(calls) == 4
    finally:
        psession.segmenter = real


def test_a_parallax_past_the_share_is_a_scene_change_and_a_new_reference(psession: ParallaxSession,
                                                                         views: dict[str, np.ndarray]) -> None:
    clock = Clock()
    live = ParallaxLive(psession, clock=clock, max_share=0.005)  # ~2 px at the tiny model's 384-px work size
    live.process(views["view0"], GREEN)
    done = live.process(views["view1"], GREEN)
    assert (done.state, done.detail, done.matted) == (LiveState.PARALLAX_WAITING, SCENE_CHANGED_DETAIL, False)
    assert live.references == 2 and done.parallax_px is not None


# -- the control channel end to end ----------------------------------------------------------------------------------
async def test_set_cue_over_the_data_channel(views: dict[str, np.ndarray], flash_model: FlashModel,
                                             parallax_dir: Path) -> None:
    config = replace(BASE, parallax_model=parallax_dir)
    async with serving(config, flash_model) as (url, _app):
        c = Client(views)
        c.track.scene = "view0"
        try:
            await c.connect(url, {"background": "green"})
            await c.state("waiting-flash")
            c.send({"type": "set-cue", "cue": "sepia"})
            err = await c.state("error")
            assert "unknown cue 'sepia'" in err["detail"]
            assert (await c.state("waiting-flash", "parallax-waiting"))["state"] == "waiting-flash"

            c.send({"type": "set-cue", "cue": "parallax"})
            waiting = await c.state("parallax-waiting", "error", timeout=60)
            assert waiting["state"] == "parallax-waiting", waiting
            await c.frames_back(3, timeout=60)  # the reference is taken from these
            c.send({"type": "flash-begin"})  # no flash in parallax mode: a named error, the cue stays
            err = await c.state("error")
            assert "set-cue" in err["detail"]
            c.track.scene = "view1"  # the person moved against the background
            matting = await c.state("parallax-matting", timeout=90)
            assert matting["detail"] == "matting"
            await until(lambda: bool(c.stats) and c.stats[-1]["cue"] == "parallax"
                        and c.stats[-1]["parallax_px"] is not None, lambda: f"stats: {c.stats[-1:]}", 30)
            s = c.stats[-1]
            assert s["parallax_px"] > 0 and s["matted_fps"] >= 0 and "parallax_graph" in s["stages"]

            c.send({"type": "set-cue", "cue": "flash"})  # back to the flash cue: no flash cached yet
            assert (await c.state("waiting-flash"))["detail"] == "flash to start"
            await asyncio.sleep(1.5)  # a parallax frame still in flight does not take the state back
            assert c.seen[-1]["state"] == "waiting-flash"
            await until(lambda: _last_stats(c).get("cue") == "flash", lambda: f"stats: {c.stats[-1:]}", 10)
            assert c.seen[-1]["state"] == "waiting-flash"
        finally:
            await c.close()


async def test_set_cue_parallax_without_the_model_is_an_error_and_stays_flash(
        views: dict[str, np.ndarray], flash_model: FlashModel, tmp_path: Path) -> None:
    config = replace(BASE, parallax_model=tmp_path / "parallax-lite")
    async with serving(config, flash_model) as (url, _app):
        c = Client(views)
        c.track.scene = "view0"
        try:
            await c.connect(url)
            await c.state("waiting-flash")
            c.send({"type": "set-cue", "cue": "parallax"})
            err = await c.state("error", "parallax-waiting")
            assert err["state"] == "error" and "parallax model folder not found" in err["detail"], err
            assert (await c.state("waiting-flash", "parallax-waiting"))["state"] == "waiting-flash"
            await c.frames_back(3)
            await until(lambda: bool(c.stats), lambda: "no stats", 10)
            assert c.stats[-1]["cue"] == "flash" and c.stats[-1]["parallax_px"] is None
        finally:
            await c.close()
