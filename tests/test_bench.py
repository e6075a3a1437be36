"""Latency benchmark: the frame-number code through real codecs, --compare, and `bench --webrtc --report`."""

from __future__ import annotations

import fractions
import json
from pathlib import Path

import numpy as np
import pytest

from cuematte.clients.bench import framecode
from cuematte.clients.cli import main
from cuematte.clients.scenes import make_pair


# -- the frame-number code ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("number", [0, 1, 2, 255, 256, 4097, 40000, 65535])
def test_framecode_round_trip(number: int) -> None:
    _, frame, _ = make_pair(360, 640)
    assert framecode.read(framecode.stamp(frame.copy(), number)) == number


def test_framecode_rejects_what_it_did_not_write() -> None:
    _, frame, _ = make_pair(360, 640)
    assert framecode.read(frame) is None
    stamped = framecode.stamp(frame.copy(), 1234)
    stamped[: framecode.band_height(360), 300:400] = 128  # part of the band composited away
    assert framecode.read(stamped) in (None, 1234)
    assert framecode.read(np.full((360, 640, 3), 200, np.uint8)) is None


def _codec_round_trip(codec: str, frames: list[np.ndarray], bitrate: int) -> list[np.ndarray]:
    """Frames through aiortc's own encoder, packetiser, depacketiser and decoder: the WebRTC media path."""
    from aiortc.codecs.h264 import H264Decoder, H264Encoder, h264_depayload
    from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder, vp8_depayload
    from aiortc.jitterbuffer import JitterFrame
    from av import VideoFrame

    enc, dec, depay = ((Vp8Encoder(), Vp8Decoder(), vp8_depayload) if codec == "vp8"
                       else (H264Encoder(), H264Decoder(), h264_depayload))
    enc.target_bitrate = bitrate  # clamped to the codec's minimum: the worst case congestion control picks
    out = []
    for i, img in enumerate(frames):
        vf = VideoFrame.from_ndarray(img, format="rgb24")
        vf.pts, vf.time_base = i * 3000, fractions.Fraction(1, 90000)
        payloads, timestamp = enc.encode(vf, False)
        data = b"".join(depay(p) for p in payloads)
        for f in dec.decode(JitterFrame(data, timestamp)):
            assert isinstance(f, VideoFrame)
            out.append(f.to_ndarray(format="rgb24"))
    return out


@pytest.mark.parametrize("codec", ["vp8", "h264"])
@pytest.mark.parametrize(("h", "w"), [(360, 640), (180, 320)])
def test_framecode_survives_the_video_codec(codec: str, h: int, w: int) -> None:
    _, base, _ = make_pair(h, w, seed=2)
    rng = np.random.default_rng(0)
    numbers = [int(n) for n in rng.integers(0, framecode.MODULO, 16)]
    frames = []
    for i, n in enumerate(numbers):
        noisy = np.roll(base, 3 * i, axis=1).astype(np.int16) + rng.integers(-12, 12, base.shape)  # costly to code
        frames.append(framecode.stamp(np.clip(noisy, 0, 255).astype(np.uint8), n))
    decoded = _codec_round_trip(codec, frames, bitrate=1)
    assert len(decoded) >= len(frames) - 1  # H.264 may hold one frame back
    read = [framecode.read(d) for d in decoded]
    assert read == numbers[: len(read)]


def test_framecode_reads_the_luma_plane() -> None:
    """The bench reads numbers from the decoded Y plane (no RGB conversion): limited range, padded lines."""
    from av import VideoFrame

    from cuematte.clients.bench.webrtc import read_number

    _, base, _ = make_pair(360, 640)
    vf = VideoFrame.from_ndarray(framecode.stamp(base.copy(), 31337), format="rgb24").reformat(format="yuv420p")
    assert read_number(vf) == 31337


# -- --compare ----------------------------------------------------------------------------------------------------
def _rvm_like(path: Path) -> Path:
    """A tiny ONNX graph with Robust Video Matting's input signature: src, r1i (recurrent), downsample_ratio."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["src", "downsample_ratio"], ["fgr"]),
         helper.make_node("ReduceMean", ["fgr"], ["pha"], axes=[1], keepdims=1),
         helper.make_node("Identity", ["r1i"], ["r1o"])],
        "rvm_like",
        [helper.make_tensor_value_info("src", TensorProto.FLOAT, [1, 3, "h", "w"]),
         helper.make_tensor_value_info("r1i", TensorProto.FLOAT, ["b", "c", "y", "x"]),
         helper.make_tensor_value_info("downsample_ratio", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("fgr", TensorProto.FLOAT, [1, 3, "h", "w"]),
         helper.make_tensor_value_info("pha", TensorProto.FLOAT, [1, 1, "h", "w"]),
         helper.make_tensor_value_info("r1o", TensorProto.FLOAT, ["b", "c", "y", "x"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.usefixtures("quiet_untrained")
def test_compare_reports_ratios_to_ours(lite_model_dir: Path, tmp_path: Path) -> None:
    from cuematte.clients.bench.compare import compare_models
    from cuematte.engine.session import MattingSession

    rvm = _rvm_like(tmp_path / "rvm_like.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    flash, noflash, _ = make_pair(180, 320)
    session = MattingSession(lite_model_dir, segmenter="grabcut")
    cmp = compare_models([lite_model_dir / "frame.onnx", rvm, broken], session, flash, noflash, (180, 320),
                         warmup=1, repeat=5)
    ours, like, bad = cmp.results
    # Reported; how fast is bench's business, not a test's.
    assert np.isfinite(cmp.ours_p50_ms) and np.isfinite(cmp.path_p50_ms) and cmp.path_p50_ms > 0
    # Our own frame graph as a foreign model: guided graphs are static, so it runs at its CMN grid.
    assert ours.error is None and ours.ratio is not None and ours.ratio > 0 and ours.size == "256x144"
    assert like.error is None and like.ratio is not None and like.ratio > 0
    assert like.ratio_to_path is not None and like.ratio_to_path > 0
    assert bad.ratio_to_path is None and "ratio_to_path" in like.as_dict()
    assert like.inputs == {"src": [1, 3, 180, 320], "r1i": [1, 1, 1, 1], "downsample_ratio": [1]}
    assert bad.error and bad.ratio is None


def test_synthesised_inputs_follow_the_declared_shapes() -> None:
    from types import SimpleNamespace as NS

    from cuematte.clients.bench.compare import synthesise_inputs

    metas = [NS(name="input", shape=["batch", 3, "h", "w"], type="tensor(float)"),
             NS(name="trimap", shape=[1, 1, "h", "w"], type="tensor(float)"),
             NS(name="fixed", shape=[1, 512, 512, 3], type="tensor(uint8)"),
             NS(name="hidden_state", shape=[1, 16, None, None], type="tensor(float)")]
    feeds = synthesise_inputs(metas, (360, 640))
    assert feeds["input"].shape == (1, 3, 360, 640) and feeds["input"].dtype == np.float32
    assert feeds["trimap"].shape == (1, 1, 360, 640)
    assert feeds["fixed"].shape == (1, 512, 512, 3) and feeds["fixed"].dtype == np.uint8
    assert feeds["hidden_state"].shape == (1, 16, 1, 1) and not feeds["hidden_state"].any()


# -- the stage bench keeps its shape; --report without --webrtc ---------------------------------------------------
@pytest.mark.usefixtures("quiet_untrained")
def test_stage_bench_json_and_report(lite_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    rc = main(["bench", "--model", str(lite_model_dir), "--sizes", "320x180",
               "--warmup", "1", "--repeat", "3", "--json", str(out), "--report", str(tmp_path / "report")])
    assert rc == 0
    payload = json.loads(out.read_text())
    assert set(payload) == {"machine", "records"}
    assert {r["stage"] for r in payload["records"]} >= {"trimap", "flash", "frame", "frame_graph"}
    report = tmp_path / "report"
    assert (report / "report.md").is_file() and (report / "stages.png").stat().st_size > 1000
    assert not (report / "latency_cdf.png").exists()


# -- bench --webrtc against the service in-process ----------------------------------------------------------------
@pytest.mark.usefixtures("quiet_untrained")
def test_webrtc_bench_writes_a_report(lite_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("cuematte.server.app", reason="the WebRTC service is not in this checkout")
    import matplotlib.image

    report = tmp_path / "report"
    rc = main(["bench", "--webrtc", "--model", str(lite_model_dir), "--sizes", "320x180",
               "--seconds", "2", "--warmup", "1", "--repeat", "3", "--report", str(report)])
    assert rc == 0
    md = (report / "report.md").read_text()
    for png in ("latency_cdf.png", "stages.png", "fps.png"):
        assert f"]({png})" in md
        assert matplotlib.image.imread(report / png).shape[0] > 200  # a real, decodable plot
    payload = json.loads((report / "bench.json").read_text())
    (result,) = payload["results"]
    assert result["size"] == "320x180"
    assert set(result["added_latency_ms"]) == {"p50", "p95", "p99"}
    assert all(np.isfinite(v) for v in result["added_latency_ms"].values())
    assert np.isfinite(result["latency_ms"]["p50"]) and np.isfinite(result["passthrough"]["latency_ms"]["p50"])
    assert result["frames"]["sent"] > 0 and result["frames"]["received"] > 0
    assert 0 <= result["dropped"] <= result["frames"]["sent"]
    assert np.isfinite(result["fps"])
    assert "graph" in result["service_stages_ms"]  # the service really ran (and timed) the per-frame graph
    # The background graph's figures, from the service's stats: a rate, ages, and the share of frames that
    # waited for it (the median stage time would hide waits on fewer than half the frames).
    graph = result["service_graph"]
    assert graph["fps"] > 0 and 0 <= graph["age_p50"] <= graph["age_max"] and 0.0 <= graph["waited"] <= 1.0
    assert "| waited |" in md


def test_inprocess_service_gets_the_bench_settings(lite_model_dir: Path) -> None:
    """--max-side, --threads, --graph-in-path and --aiortc-vp8 reach the WebRTC service the benchmark starts, not
    only the stage bench."""
    pytest.importorskip("cuematte.server.app", reason="the WebRTC service is not in this checkout")
    import argparse

    from cuematte.clients.commands.bench import _inprocess_app
    from cuematte.engine.model import UntrainedModelWarning
    from cuematte.server.app import SERVICE

    args = argparse.Namespace(model=lite_model_dir, backend="cpu", plans=None, threads=1, max_side=960,
                              graph_in_path=True, aiortc_vp8=True)
    with pytest.warns(UntrainedModelWarning):  # the random-init test model, said so at start as to any user
        app = _inprocess_app(args)()
    config = app[SERVICE].config
    assert (config.max_side, config.threads, config.model) == (960, 1, lite_model_dir)
    assert not config.background_graph and not config.fast_vp8


class _Channel:
    """The control channel's sending end, as the bench uses it: what was sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, text: str) -> None:
        self.sent.append(json.loads(text)["type"])


async def test_the_bench_tries_a_failed_flash_again_then_gives_up() -> None:
    """A flash the service answers with 'error' (the video trailing the control channel on a loaded machine) is
    flashed again, as a user would; three such answers are a named BenchError."""
    import asyncio
    from types import SimpleNamespace

    from cuematte.clients.bench.webrtc import FLASH_ATTEMPTS, BenchError, StreamConfig, _flash

    cfg = StreamConfig(size=(180, 320), fps=100.0, timeout=5.0)
    channel, track = _Channel(), SimpleNamespace(flashing=False)
    states: asyncio.Queue[str] = asyncio.Queue()
    for s in ("capturing", "error", "waiting-flash", "capturing", "matting"):
        states.put_nowait(s)
    await _flash(channel, track, states, cfg)  # type: ignore[arg-type]
    assert channel.sent == ["flash-begin", "flash-end"] * 2 and not track.flashing

    channel = _Channel()
    for _ in range(FLASH_ATTEMPTS):
        states.put_nowait("error")
    with pytest.raises(BenchError, match=f"{FLASH_ATTEMPTS} flashes"):
        await _flash(channel, track, states, cfg)  # type: ignore[arg-type]
    assert channel.sent.count("flash-begin") == FLASH_ATTEMPTS
