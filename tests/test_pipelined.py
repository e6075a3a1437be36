"""The background graph (cuematte.engine.pipelined): outputs moved by optical flow onto later frames, the lag schedule,
each frame's own certain pixels kept, a new flash run at once, and the live thread's life cycle. Real ONNX Runtime
sessions of the shipped model on a real photo (scikit-image's astronaut) panning across a 640x360 frame."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from cuematte.clients.realcheck import uniform_flash
from cuematte.engine.cues.trimap import BG, FG
from cuematte.engine.errors import FlashNotSetError, InputError
from cuematte.engine.pipelined import FlowMover, PipelinedSession
from cuematte.engine.session import Matte, MattingSession

H, W = 360, 640


@pytest.fixture(scope="module")
def pan() -> list[np.ndarray]:
    """Ten 640x360 frames of the astronaut, the camera panning 4 px a frame to the left."""
    from skimage.data import astronaut

    photo = cv2.resize(astronaut(), (720, 720), interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(photo[:H, 40 - 4 * i:40 - 4 * i + W]) for i in range(10)]


@pytest.fixture(scope="module")
def synced(pan: list[np.ndarray]) -> list[Matte]:
    """The same frames through the plain session: the graph on every frame."""
    s = MattingSession()
    s.set_flash(uniform_flash(pan[0]), pan[0])
    return [s.matte(f) for f in pan]


def _certain_exact(m: Matte) -> bool:
    """The frame's own guidance holds: certain person exactly 1, certain background exactly 0."""
    assert m.guidance is not None
    g = cv2.resize(m.guidance, (W, H), interpolation=cv2.INTER_NEAREST)
    return bool((m.alpha[g == FG] == 1.0).all() and (m.alpha[g == BG] == 0.0).all())


def test_flow_mover_follows_a_shift() -> None:
    rng = np.random.default_rng(0)
    source = cv2.GaussianBlur((rng.random((144, 256)) * 255).astype(np.uint8), (0, 0), 2.0)
    target = np.roll(source, (-2, -4), axis=(0, 1))  # content moved 4 px left and 2 px up: p sits at p + (4, 2)
    mover = FlowMover()
    flow = mover.flow(source, target)
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(flow[inner] - np.float32([4, 2])).mean() < 0.5
    ramp = np.broadcast_to(np.arange(128, dtype=np.float32), (72, 128))
    rows = np.broadcast_to(np.arange(72, dtype=np.float32)[:, None], (72, 128))
    moved = mover.outputs({"coef": np.stack([ramp, rows])[None]}, flow)["coef"]
    assert moved.shape == (1, 2, 72, 128) and moved.dtype == np.float32
    # At half the grid the shift halves: the x ramp reads x + 2, the y ramp y + 1 (inside the borders).
    inner = (slice(4, -4), slice(4, -4))
    assert np.abs(moved[0, 0][inner] - (ramp[inner] + 2.0)).mean() < 0.25
    assert np.abs(moved[0, 1][inner] - (rows[inner] + 1.0)).mean() < 0.25
    # A trimap moves whole: its labels stay labels, shifted with the content.
    tri = np.full((144, 256), BG, np.uint8)
    tri[40:100, 100:160] = FG
    tri[38:40, 100:160] = 128
    shifted = mover.labels(tri, flow)
    assert set(np.unique(shifted)) <= {BG, 128, FG}
    assert (shifted[40:96, 100:156] == FG).all() and (shifted[40:96, 160:200] == BG).all()
    # No motion: nothing moves.
    still = mover.outputs({"coef": np.stack([ramp, rows])[None]}, mover.flow(source, source))["coef"]
    assert np.abs(still[0, 0] - ramp).max() < 0.05


def test_lagged_outputs_follow_the_frame_and_keep_its_certain_pixels(pan: list[np.ndarray],
                                                                     synced: list[Matte]) -> None:
    p = PipelinedSession(MattingSession(), lag=2)
    p.set_flash(uniform_flash(pan[0]), pan[0])
    ages, runs = [], []
    for i, frame in enumerate(pan):
        m = p.matte(frame)
        ages.append(p.age)
        runs.append(p.session.times.ms["graph"] > 0)
        assert m.alpha.shape == (H, W) and m.foreground.shape == (H, W, 3)
        assert _certain_exact(m), f"frame {i}: a certain pixel moved"
        if i == 0:  # nothing to reuse: the frame ran the graph itself, as the plain session does
            np.testing.assert_array_equal(m.alpha, synced[0].alpha)
        else:
            # The output of a frame `age` frames back, moved by the flow, is closer to this frame's own matte
            # than that frame's matte is: it followed the pan.
            err = np.abs(m.alpha - synced[i].alpha).mean()
            stale = np.abs(synced[i - p.age].alpha - synced[i].alpha).mean()
            assert err < 0.4 * stale, (i, err, stale)
    # Graph on frame 0 in the path, then on frames 1, 3, 5, ... beside them, each first used two frames later.
    assert ages == [0, 1, 2, 2, 3, 2, 3, 2, 3, 2]
    assert runs == [True] + [False] * 9
    assert p.graph_runs == 1 + 5 and p.graph_waits == 0  # lag mode never waits


def test_a_new_flash_runs_the_graph_in_the_next_frame(pan: list[np.ndarray], synced: list[Matte]) -> None:
    p = PipelinedSession(MattingSession(), lag=1)
    with pytest.raises(FlashNotSetError):
        p.matte(pan[0])
    p.set_flash(uniform_flash(pan[3]), pan[3])
    for frame in pan[3:6]:
        p.matte(frame)
    assert p.age == 1
    # A new flash: the outputs made with the old one are dropped, the next frame waits for none.
    p.set_flash(uniform_flash(pan[0]), pan[0])
    m = p.matte(pan[0])
    assert p.age == 0 and p.session.times.ms["graph"] > 0
    np.testing.assert_array_equal(m.alpha, synced[0].alpha)
    p.reset()
    assert not p.has_flash
    with pytest.raises(FlashNotSetError):
        p.matte(pan[0])


def test_the_background_thread_mattes_every_frame_and_stops(pan: list[np.ndarray]) -> None:
    p = PipelinedSession(MattingSession())
    p.set_flash(uniform_flash(pan[0]), pan[0])
    ages = []
    # Frames at a camera's pace (the thread runs at the lowest priority: a loop without pauses would starve it),
    # until the thread has made outputs that later frames took (or 60 s have passed, a test failure).
    deadline = time.monotonic() + 60.0
    i = 0
    while (p.graph_runs < 4 or i < 2 * len(pan)) and time.monotonic() < deadline:
        frame = pan[i % len(pan)]
        m = p.matte(frame)
        assert _certain_exact(m) and np.isfinite(m.alpha).all()
        if i > 0:  # only the first frame after the flash runs the graph in its own path
            assert p.times.ms["graph"] == 0.0
        ages.append(p.age)
        time.sleep(1 / 30)
        i += 1
    assert p.graph_runs >= 4 and p.times.ms["graph_background"] > 0
    assert ages[0] == 0 and min(ages[1:]) >= 1  # later frames never wait for the graph
    p.close(wait=True)  # a run still going when close is called would count after it: wait for it
    runs = p.graph_runs
    m = p.matte(pan[4])  # after close: the last output, moved; no thread is started again
    assert _certain_exact(m) and p._executor is None and p.graph_runs == runs


def test_frames_never_take_an_output_older_than_max_age(pan: list[np.ndarray]) -> None:
    """Frames faster than the graph (a loop without pauses starves its low-priority thread): a frame that would
    take an output more than ``max_age`` frames old waits for the run in progress instead."""
    p = PipelinedSession(MattingSession(), max_age=2)
    p.set_flash(uniform_flash(pan[0]), pan[0])
    ages, waited = [], 0
    for frame in pan + pan[::-1]:
        m = p.matte(frame)
        assert _certain_exact(m)
        ages.append(p.age)
        waited += p.times.ms["wait"] > 0
    p.close()
    assert max(ages) <= 2 and p.graph_runs >= len(ages) // 3, (ages, p.graph_runs)
    assert p.graph_waits == waited  # what the service's stats report as a share (graph_waited)


def test_lag_must_be_a_frame_or_more() -> None:
    with pytest.raises(InputError, match="lag"):
        PipelinedSession(MattingSession(), lag=0)
    with pytest.raises(InputError, match="max_age"):
        PipelinedSession(MattingSession(), max_age=0)
