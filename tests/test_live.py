"""cuematte.live: the flash capture, matter and rate meter that the service and the virtual webcam share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cuematte.clients.scenes import make_pair
from cuematte.engine.compositing import Background
from cuematte.engine.errors import InferenceError
from cuematte.engine.session import MattingSession
from cuematte.live import FlashCapture, FlashCaptureError, LiveMatter, LiveState, RateMeter
from cuematte.live.capture import mean_luma

H, W = 180, 320


def test_flash_capture_keeps_the_brightest_frame_after_the_delay() -> None:
    flash, noflash, _ = make_pair(H, W)
    cap: FlashCapture[np.ndarray] = FlashCapture(mean_luma, delay=0.1, duration=0.5)
    cap.begin(noflash, now=0.0)
    dim = (flash * 0.8).astype(np.uint8)
    assert not cap.offer(np.full_like(flash, 255), now=0.05)  # before the screen can be white: ignored
    assert not cap.offer(dim, now=0.15)
    assert not cap.offer(flash, now=0.25)
    assert cap.offer(dim, now=0.55) and not cap.active  # the burst is over by itself
    assert cap.frames == 3
    got_flash, got_noflash = cap.end()
    assert got_flash is flash and got_noflash is noflash
    assert not cap.offer(flash, now=0.6)  # nothing is measured after the end


def test_flash_capture_ended_by_the_caller_says_which_frame_is_missing() -> None:
    frame = np.zeros((8, 8, 3), np.uint8)
    cap: FlashCapture[np.ndarray] = FlashCapture(mean_luma)  # no duration: the caller ends it
    cap.begin(None, now=0.0)
    cap.offer(frame, now=10.0)
    assert cap.active
    with pytest.raises(FlashCaptureError, match="before the flash"):
        cap.end()
    cap.begin(frame, now=0.0)
    with pytest.raises(FlashCaptureError, match="while the flash was lit"):
        cap.end()


def test_capture_takes_any_frame_type_with_its_own_luma() -> None:
    cap: FlashCapture[tuple[str, float]] = FlashCapture(lambda f: f[1])
    cap.begin(("before", 10.0), now=0.0)
    for f in (("a", 40.0), ("b", 90.0), ("c", 60.0)):
        cap.offer(f, now=0.1)
    assert cap.end() == (("b", 90.0), ("before", 10.0))


def test_rate_meter_counts_frames_in_its_window() -> None:
    meter = RateMeter(window=1.0)
    assert meter.fps(now=0.0) == 0.0 and meter.ms is None and meter.latency_ms is None
    for i in range(31):  # 30 intervals of 1/30 s
        meter.tick(ms=10.0 if i % 2 else None, latency_ms=20.0, now=i / 30)
    assert meter.fps(now=1.0) == pytest.approx(30.0, rel=0.05)
    assert meter.ms == 10.0 and meter.latency_ms == 20.0 and meter.frames == 31
    assert meter.fps(now=5.0) == 0.0  # a stalled loop reads as stalled


@pytest.mark.usefixtures("quiet_untrained")
def test_live_matter_passes_through_until_a_flash_then_mattes(lite_model_dir: Path) -> None:
    flash, noflash, _ = make_pair(H, W)
    matter = LiveMatter(MattingSession(lite_model_dir, segmenter="grabcut"), Background("green"), drift_every=1)
    before = matter.process(noflash)
    assert not before.matted and before.frame is noflash and before.error is None
    matter.set_flash(flash, noflash)
    done = matter.process(noflash)
    assert done.matted and done.frame.shape == noflash.shape and not np.array_equal(done.frame, noflash)
    assert {"graph", "refine", "composite", "drift"} <= set(done.ms) and "trimap" not in done.ms
    bad = matter.process(np.zeros((H, W), np.uint8))  # a grey frame: this frame's error, the loop goes on
    assert not bad.matted and bad.error is not None and "grayscale" in bad.error
    assert matter.process(noflash).matted  # and the next good frame is matted again
    matter.reset()
    assert not matter.has_flash and not matter.process(noflash).matted


@pytest.mark.usefixtures("quiet_untrained")
def test_live_matter_takes_a_rescaled_no_flash_frame(lite_model_dir: Path) -> None:
    """A stream rescaled between the two frames (same aspect) still caches a flash, at the flash's size."""
    flash, noflash, _ = make_pair(H, W)
    matter = LiveMatter(MattingSession(lite_model_dir, segmenter="grabcut"), Background("blur"))
    small = noflash[::2, ::2].copy()
    matter.set_flash(flash, small)
    assert matter.has_flash and matter.process(noflash).matted


def test_live_states_are_the_service_wire_names() -> None:
    assert [s.value for s in LiveState] == ["waiting-flash", "capturing", "matting", "error", "parallax-waiting",
                                            "parallax-matting"]
    assert f"{LiveState.MATTING}" == "matting"


class _Outage:
    """A real graph that fails inside ONNX Runtime itself (it is run with no inputs) while ``down``: a device
    or memory error mid-session, which cannot be provoked on demand otherwise."""

    def __init__(self, graph: Any) -> None:
        self.graph, self.down = graph, True
        self.input_names, self.output_names = graph.input_names, graph.output_names

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(self.graph.run({} if self.down else feeds))


@pytest.mark.usefixtures("quiet_untrained")
def test_an_inference_failure_costs_frames_never_the_session_or_its_flash(lite_model_dir: Path) -> None:
    flash, noflash, _ = make_pair(H, W)
    matter = LiveMatter(MattingSession(lite_model_dir, segmenter="grabcut"), Background("green"))
    matter.set_flash(flash, noflash)
    session = matter.session
    cached = session._flash
    frame_outage, flash_outage = _Outage(session.frame_graph), _Outage(session.flash_graph)
    session.frame_graph = frame_outage
    failed = matter.process(noflash)
    assert not failed.matted and failed.frame is noflash  # the camera frame passes through
    assert failed.error is not None and "ONNX Runtime failed running frame.onnx" in failed.error
    assert matter.has_flash and session._flash is cached
    frame_outage.down = False
    assert matter.process(noflash).matted  # back as soon as the backend is
    session.flash_graph = flash_outage
    with pytest.raises(InferenceError, match=r"flash\.onnx"):
        matter.set_flash(flash, noflash)
    assert session._flash is cached and matter.process(noflash).matted  # the previous flash stays in use
    matter.reset()
    flash_outage.down = False
    matter.set_flash(flash, noflash)
    assert matter.process(noflash).matted
