"""Virtual webcam: the file-to-file path, the missing-backend message, latest-frame-wins in the live loop."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cuematte.clients.cli import main
from cuematte.clients.scenes import make_pair
from cuematte.engine.io import VideoReader, VideoWriter, write_image

H, W, N = 180, 320, 12


def _green_excess(frame: np.ndarray, where: np.ndarray) -> float:
    f = frame.astype(np.float32)
    return float((f[..., 1] - (f[..., 0] + f[..., 2]) / 2)[where].mean())


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | np.ndarray]:
    """A short clip of the generated scene with the subject sliding sideways, and its flash photo."""
    d = tmp_path_factory.mktemp("virtualcam")
    flash, noflash, alpha = make_pair(H, W, seed=1)
    write_image(d / "flash.png", flash)
    write_image(d / "noflash.png", noflash)
    with VideoWriter(d / "clip.mp4", (W, H), 15) as w:
        for i in range(N):
            w.write(np.roll(noflash, i, axis=1))
    return {"dir": d, "clip": d / "clip.mp4", "flash": d / "flash.png", "noflash": d / "noflash.png",
            "alpha": alpha}


@pytest.mark.usefixtures("quiet_untrained")
def test_file_to_file_mattes_every_frame(clip: dict, lite_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = clip["dir"] / "out.mp4"
    rc = main(["virtualcam", "--input", str(clip["clip"]), "--output", str(out), "--flash", str(clip["flash"]),
               "--model", str(lite_model_dir), "--background", "green"])
    assert rc == 0, capsys.readouterr().err
    assert f"wrote {N} frames {W}x{H}" in capsys.readouterr().out
    with VideoReader(clip["clip"]) as r:
        inputs = list(r)
    with VideoReader(out) as r:
        outputs = list(r)
    assert len(outputs) == N
    assert all(o.shape == (H, W, 3) for o in outputs)
    # The wall (alpha 0 in the first frame, the subject moves by at most N px) went green.
    wall = np.roll(clip["alpha"] < 0.01, 0) & np.roll(clip["alpha"] < 0.01, N, axis=1)
    for i, o in zip(inputs, outputs, strict=True):
        assert _green_excess(o, wall) > _green_excess(i, wall) + 20


@pytest.mark.usefixtures("quiet_untrained")
def test_file_to_file_resizes_to_size_with_the_default_segmenter(clip: dict, lite_model_dir: Path) -> None:
    out = clip["dir"] / "out_small.mp4"
    rc = main(["virtualcam", "--input", str(clip["clip"]), "--output", str(out), "--flash", str(clip["flash"]),
               "--noflash", str(clip["noflash"]), "--model", str(lite_model_dir), "--size", "160x120"])
    assert rc == 0
    with VideoReader(out) as r:
        frames = list(r)
    assert len(frames) == N and frames[0].shape == (120, 160, 3)


def test_file_mode_needs_a_flash(clip: dict, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["virtualcam", "--input", str(clip["clip"]), "--output", str(clip["dir"] / "x.mp4")])
    assert rc == 2
    assert "--flash FILE" in capsys.readouterr().err


def test_missing_backend_says_how_to_set_it_up(clip: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_a_camera = tmp_path / "video42"
    not_a_camera.write_bytes(b"")
    rc = main(["virtualcam", "--input", str(clip["clip"]), "--flash", str(clip["flash"]),
               "--device", str(not_a_camera)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no virtual camera available" in err
    assert 'modprobe v4l2loopback devices=1 video_nr=10 card_label="cuematte" exclusive_caps=1' in err
    assert "--output FILE" in err
    assert "Traceback" not in err


@pytest.mark.skipif(Path("/sys/module/v4l2loopback").exists(), reason="a v4l2loopback device is loaded here")
def test_missing_backend_without_device(clip: dict, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["virtualcam", "--input", str(clip["clip"]), "--flash", str(clip["flash"])])
    err = capsys.readouterr().err
    assert rc == 2 and "modprobe v4l2loopback" in err and "Traceback" not in err


@pytest.mark.usefixtures("quiet_untrained")
def test_live_loop_takes_the_newest_frame(clip: dict, lite_model_dir: Path) -> None:
    """Frames that arrive while a frame is being processed are not queued: the loop then takes only the newest
    and counts the rest as dropped. The camera is played by the processor itself, which delivers the rest of
    the clip during its first frame, so the outcome does not depend on how fast this machine is."""
    from cuematte.clients.virtualcam.latest import LatestFrame
    from cuematte.clients.virtualcam.pipeline import LiveLoop, Processor
    from cuematte.clients.virtualcam.sinks import FileSink
    from cuematte.engine.compositing import Background
    from cuematte.engine.io import read_image
    from cuematte.engine.session import MattingSession

    with VideoReader(clip["clip"]) as r:
        frames = list(r)
    slot = LatestFrame()
    seen: list[np.ndarray] = []

    class Busy(Processor):
        def process(self, frame: np.ndarray) -> np.ndarray:
            seen.append(frame)
            if len(seen) == 1:  # the camera keeps delivering while this frame is processed, then the clip ends
                for later in frames[1:]:
                    slot.put(later)
                slot.close()
            return super().process(frame)

    sink = FileSink(clip["dir"] / "live.mp4", W, H, 30)
    processor = Busy(MattingSession(lite_model_dir, segmenter="grabcut"), Background("blur"), (H, W))
    processor.set_flash(read_image(clip["flash"]), read_image(clip["noflash"]))
    slot.put(frames[0])
    LiveLoop(processor, slot, sink).run()  # returns when the slot is closed and drained
    sink.close()
    assert len(seen) == sink.written == 2
    assert seen[0] is frames[0] and seen[1] is frames[-1]  # the newest frame, not the next in line
    assert slot.dropped == N - 2  # every other frame was skipped, none queued


@pytest.mark.usefixtures("quiet_untrained")
def test_status_line_says_how_far_a_background_graph_trails(clip: dict, lite_model_dir: Path) -> None:
    """Live runs matte with the graph beside the frames: the status line gives its own time and lag, not the
    0 ms it takes in each frame's path."""
    from cuematte.clients.virtualcam.pipeline import Processor, status_text
    from cuematte.engine.compositing import Background
    from cuematte.engine.io import read_image
    from cuematte.engine.pipelined import PipelinedSession
    from cuematte.engine.session import MattingSession
    from cuematte.live import RateMeter

    with VideoReader(clip["clip"]) as r:
        frames = list(r)
    plain = MattingSession(lite_model_dir, segmenter="grabcut")
    processor = Processor(PipelinedSession(plain, lag=2), Background("blur"), (H, W))
    assert "graph" not in status_text(RateMeter(), processor.session, 0, "waiting for a flash")
    processor.set_flash(read_image(clip["flash"]), read_image(clip["noflash"]))
    for frame in frames[:4]:
        processor.process(frame)
    line = status_text(RateMeter(), processor.session, 0, "matting")
    assert re.search(r"graph beside \d+\.\d ms, [23] frames behind", line), line
    processor.close()
    in_path = Processor(plain, Background("blur"), (H, W))
    in_path.process(frames[0])
    assert re.search(r"\(graph \d+\.\d\)", status_text(RateMeter(), in_path.session, 0, "matting"))


def test_file_source_plays_the_whole_clip_into_its_slot_then_closes_it(clip: dict) -> None:
    """A file stands in for a camera: every frame is delivered to the latest-frame slot, the last one is the
    clip's last, and the slot closes at the end so a live loop ends with the file."""
    from cuematte.clients.virtualcam.sources import FileSource

    with VideoReader(clip["clip"]) as r:
        frames = list(r)
    source = FileSource(clip["clip"], fps=1000.0)
    assert source.size == (H, W)
    taken: list[np.ndarray] = []
    source.start()
    while (frame := source.slot.take()) is not None:  # None only once closed and drained
        taken.append(frame)
    source.stop()
    assert source.frames == N and source.slot.closed
    assert len(taken) + source.slot.dropped == N
    np.testing.assert_array_equal(taken[-1], frames[-1])
