"""The WebRTC service end to end: a real aiohttp server on an ephemeral loopback port, real aiortc peers that
send a generated scene and read the processed video back, the control protocol on the `control` channel.

Random-init lite model (its alpha is about 0.5 everywhere), so compositing shows up as "the frame changed
towards the background colour", never as a clean cut-out; the browser test checks real mattes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fractions
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import warnings
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from cuematte.clients.scenes import make_pair
from cuematte.engine.model import FlashModel, UntrainedModelWarning
from cuematte.server.app import SERVICE, create_app
from cuematte.server.config import ConfigError, ServerConfig
from cuematte.server.encoder import FastVp8Encoder

H, W, FPS = 180, 320, 15
TICKS = 90000 // FPS  # RTP clock ticks between two frames we send
TIMEOUT = 20.0
pytestmark = pytest.mark.timeout(120)


# -- scenes and the client ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scenes() -> dict[str, np.ndarray]:
    flash, noflash, alpha = make_pair(H, W, seed=1)
    wide = make_pair(H, W + 80, seed=1)[1]
    return {"noflash": noflash, "flash": flash, "dim": (noflash * 0.8).astype(np.uint8),
            "panned": np.ascontiguousarray(wide[:, 60 : 60 + W]), "background": alpha < 0.01}


@pytest.fixture(scope="module")
def model(lite_model_dir: Path) -> FlashModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        return FlashModel(lite_model_dir)


class SceneTrack(MediaStreamTrack):
    """A camera at FPS showing ``scenes[self.scene]``; pts count frames in a 90 kHz clock."""

    kind = "video"

    def __init__(self, scenes: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.scenes = scenes
        self.scene = "noflash"
        self.n = 0

    async def recv(self) -> VideoFrame:
        if self.n:  # paced by sleeping a frame interval, not by reading a clock: the pts carry the timing
            await asyncio.sleep(1 / FPS)
        frame = VideoFrame.from_ndarray(self.scenes[self.scene], format="rgb24")
        frame.pts, frame.time_base = self.n * TICKS, fractions.Fraction(1, 90000)
        self.n += 1
        return frame


class Client:
    """An aiortc peer speaking the demo page's protocol."""

    def __init__(self, scenes: dict[str, np.ndarray]) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track = SceneTrack(scenes)
        self.pc.addTrack(self.track)
        self.channel = self.pc.createDataChannel("control")
        self.states: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.seen: list[dict[str, Any]] = []
        self.stats: list[dict[str, Any]] = []
        self.frames: deque[tuple[int, np.ndarray]] = deque(maxlen=40)  # (pts, rgb) of the latest frames back
        self.received = 0
        self.opened = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.channel.on("open", self.opened.set)
        self.channel.on("message", self._on_message)
        self.pc.on("track", lambda t: self._tasks.append(asyncio.ensure_future(self._consume(t))))

    def _on_message(self, raw: str) -> None:
        msg = json.loads(raw)
        if msg["type"] == "state":
            self.seen.append(msg)
            self.states.put_nowait(msg)
        elif msg["type"] == "stats":
            self.stats.append(msg)

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, VideoFrame)
            self.frames.append((int(frame.pts or 0), frame.to_ndarray(format="rgb24")))
            self.received += 1

    async def offer(self, url: str, options: dict[str, Any] | None = None,
                    headers: dict[str, str] | None = None, query: str = "") -> tuple[int, dict[str, Any]]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer", "options": options or {}}
        async with aiohttp.ClientSession() as http, \
                http.post(url + "/offer" + query, json=body, headers=headers) as r:
            return r.status, await r.json()

    async def connect(self, url: str, options: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        status, answer = await self.offer(url, options, **kw)
        assert status == 200, answer
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await asyncio.wait_for(self.opened.wait(), TIMEOUT)
        return answer

    def send(self, msg: dict[str, Any] | str) -> None:
        self.channel.send(msg if isinstance(msg, str) else json.dumps(msg))

    async def state(self, *wanted: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next state message whose state is one of ``wanted`` (others are skipped, still in .seen)."""
        async with asyncio.timeout(timeout):  # a hang guard, not a speed check
            while True:
                msg = await self.states.get()
                if msg["state"] in wanted:
                    return msg

    async def frames_back(self, count: int, timeout: float = TIMEOUT) -> np.ndarray:
        """Wait for ``count`` more frames back; the newest one."""
        target = self.received + count
        await until(lambda: self.received >= target, lambda: f"only {self.received} of {target} frames came back",
                    timeout)
        return self.frames[-1][1]

    async def flash(self, scene: str = "flash", seconds: float = 0.5) -> None:
        """What the page does: flash-begin, the lit frames, flash-end."""
        self.send({"type": "flash-begin"})
        self.track.scene = scene
        await asyncio.sleep(seconds)
        self.track.scene = "noflash"
        self.send({"type": "flash-end"})

    async def close(self) -> None:
        await self.pc.close()
        for t in self._tasks:
            t.cancel()


async def until(condition: Callable[[], bool], what: Callable[[], str], timeout: float = TIMEOUT) -> None:
    """Poll until ``condition`` holds. The timeout only guards against a hang (it fails the test with ``what``,
    the state it got stuck in); how fast things happen is ``cuematte bench``'s business."""
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        pytest.fail(f"stuck: {what()}")


@contextlib.asynccontextmanager
async def serving(config: ServerConfig, model: FlashModel) -> AsyncIterator[tuple[str, web.Application]]:
    app = create_app(config, model=model)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", app
    finally:
        await runner.cleanup()


# A long flash grace: on a loaded machine the video may trail the data channel by more than the default.
BASE = ServerConfig(segmenter="grabcut", max_sessions=3, drift_every=2, flash_grace_s=1.0)


def _close(a: np.ndarray, b: np.ndarray, tol: float = 12.0) -> bool:
    """Same picture up to VP8 twice over."""
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()) < tol


def _green_excess(img: np.ndarray, where: np.ndarray) -> float:
    f = img.astype(np.float32)
    return float((f[..., 1] - (f[..., 0] + f[..., 2]) / 2)[where].mean())


async def _get(url: str, **kw: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, **kw) as r:
        return r.status, await r.text()


# -- the protocol ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("background_graph", [True, False], ids=["graph-beside", "graph-in-path"])
async def test_passthrough_then_flash_to_matting_with_stats_and_timestamps(
        scenes: dict[str, np.ndarray], model: FlashModel, background_graph: bool) -> None:
    async with serving(replace(BASE, background_graph=background_graph), model) as (url, app):
        c = Client(scenes)
        try:
            answer = await c.connect(url, {"background": "green"})
            assert answer["type"] == "answer" and re.fullmatch(r"[0-9a-f]{32}", answer["session_id"])
            first = await c.state("waiting-flash")
            assert first == {"type": "state", "state": "waiting-flash", "detail": "flash to start", "reflash": False}

            # Before any flash the user sees their own video, not a frozen or black one.
            raw = await c.frames_back(10)
            assert _close(raw, scenes["noflash"])
            # ... sent by the service's own VP8 encoder (cuematte.server.encoder), which has encoded them.
            session = next(iter(app[SERVICE].sessions.values()))
            sender = next(s for s in session.pc.getSenders() if s.track is not None and s.track.kind == "video")
            enc = sender._RTCRtpSender__encoder  # type: ignore[attr-defined]  # aiortc's own slot
            assert isinstance(enc, FastVp8Encoder) and enc.codec is not None
            # The camera's timestamps come back: frames are TICKS apart (or a multiple, for a dropped one),
            # not re-stamped by the server's clock. (aiortc's VP8 decoder rounds pts by a tick or two.)
            gaps = np.diff([p for p, _ in list(c.frames)[-8:]])
            assert all(abs(g - TICKS * round(g / TICKS)) <= 3 and g > 0 for g in gaps), gaps

            await c.flash()
            assert (await c.state("capturing", "matting", "error"))["state"] == "capturing"
            done = await c.state("matting", "error")
            assert done["state"] == "matting" and done["detail"].startswith("flash cached") and not done["reflash"]
            assert " ms" not in done["detail"]  # timings are the stats line's

            await asyncio.sleep(0.3)
            out = await c.frames_back(8)
            bg = scenes["background"]
            assert not _close(out, scenes["noflash"], tol=8.0), "matting mode must composite"
            assert _green_excess(out, bg) > _green_excess(scenes["noflash"], bg) + 20

            # An uploaded image as the background (solid magenta): the wall moves towards magenta.
            _, png = cv2.imencode(".png", np.full((40, 60, 3), (255, 0, 255), np.uint8))
            c.send({"type": "set-background", "mode": "image",
                    "image": "data:image/png;base64," + base64.b64encode(png.tobytes()).decode()})
            await asyncio.sleep(0.5)
            img_out = await c.frames_back(5)
            magenta = img_out[bg].astype(np.float32).mean(0) - scenes["noflash"][bg].astype(np.float32).mean(0)
            assert magenta[0] > 30 and magenta[2] > 30 and magenta[1] < 0, magenta
            assert not any(m["state"] == "error" for m in c.seen)

            await asyncio.sleep(1.2)  # a stats message about once a second
            s = c.stats[-1]
            assert s["state"] == "matting" and {"graph", "refine"} <= set(s["stages"])  # figures; speed is bench's
            # The graph's own rate and how far its output lags: beside the frames, it runs on some of them and
            # its output is a frame or more old; in the path, on every frame matted.
            assert s["graph_fps"] > 0 and isinstance(s["graph_age"], int) and 0.0 <= s["graph_waited"] <= 1.0
            if background_graph:
                assert s["stages"]["graph_background"] > 0
                # Counts, not the two rates (their windows differ: 1 s against 2 s): never more graph runs than
                # frames matted, the first in the frame's own path and one still in the worker.
                peer = next(iter(app[SERVICE].sessions.values()))
                assert peer.matter.graph_runs <= peer.processed + 2, (peer.matter.graph_runs, peer.processed)
            else:
                assert "graph_background" not in s["stages"] and s["graph_age"] == 0 and s["stages"]["graph"] > 0
                assert s["graph_waited"] == 0.0  # every frame runs the graph itself: none waits for another
            assert np.isfinite(s["fps"]) and np.isfinite(s["ms"])
            assert s["frames"] > 0 and s["received"] >= s["frames"] and isinstance(s["dropped"], int)
            assert s["size"] == [W, H]
            assert s["flash"]["method"] == "grabcut" and s["flash"]["trimap_ms"] > 0 and s["flash"]["frames"] > 0
            service = app[SERVICE]
            assert service.metrics.flashes.value(result="ok") == 1
            assert service.metrics.frames_processed.value(mode="matting") > 0
        finally:
            await c.close()


async def test_reflash_failed_flash_and_reset(scenes: dict[str, np.ndarray], model: FlashModel) -> None:
    async with serving(BASE, model) as (url, app):
        c = Client(scenes)
        try:
            await c.connect(url, {"background": "color", "color": "#ff00ff"})
            await c.state("waiting-flash")
            await c.frames_back(3)

            # A flash before any flash worked: no brighter frame -> error, and still waiting for a flash.
            await c.flash(scene="dim")
            err = await c.state("error", "matting")
            assert err["state"] == "error" and "no brighter" in err["detail"]
            assert (await c.state("waiting-flash", "matting"))["state"] == "waiting-flash"
            assert _close(await c.frames_back(5), scenes["noflash"])

            await c.flash()
            await c.state("matting")
            # Re-flash any time: replaces the cache.
            await c.flash()
            assert (await c.state("matting", "error"))["state"] == "matting"
            assert app[SERVICE].metrics.flashes.value(result="ok") == 2

            # A failed re-flash keeps the previous cache: error, then back to matting, frames still matted.
            await c.flash(scene="dim")
            assert (await c.state("error", "matting"))["state"] == "error"
            assert (await c.state("matting", "waiting-flash"))["state"] == "matting"
            await asyncio.sleep(0.3)
            assert not _close(await c.frames_back(5), scenes["noflash"], tol=8.0)

            c.send({"type": "reset"})
            assert (await c.state("waiting-flash", "matting"))["state"] == "waiting-flash"
            await asyncio.sleep(0.3)
            assert _close(await c.frames_back(5), scenes["noflash"])
        finally:
            await c.close()


async def test_scene_drift_asks_for_a_reflash(scenes: dict[str, np.ndarray], model: FlashModel) -> None:
    async with serving(BASE, model) as (url, app):
        c = Client(scenes)
        try:
            await c.connect(url, {"background": "blur"})
            await c.frames_back(3)
            await c.flash()
            await c.state("matting")
            await c.frames_back(10)
            assert not any(m["reflash"] for m in c.seen), "a still scene must not drift"

            c.track.scene = "panned"  # the camera moved
            drifted = await c.state("matting")
            assert drifted["reflash"] is True and "flash again" in drifted["detail"]
            assert app[SERVICE].metrics.drift.value() == 1

            await c.flash(scene="flash")  # flashing in the panned view replaces the reference
            c.track.scene = "panned"
            fresh = await c.state("matting")
            assert fresh["reflash"] is False and "flash cached" in fresh["detail"]
            await c.frames_back(15)
            assert not c.seen[-1]["reflash"]
        finally:
            await c.close()


async def test_bad_control_messages_answer_error_and_keep_the_state(
        scenes: dict[str, np.ndarray], model: FlashModel) -> None:
    async with serving(BASE, model) as (url, app):
        c = Client(scenes)
        try:
            await c.connect(url)
            await c.state("waiting-flash")
            cases: list[tuple[Any, str]] = [
                ("not json", "not JSON"),
                ([1, 2], "JSON object"),
                ({"type": "teleport"}, "unknown control message"),
                ({"type": "flash-end"}, "without flash-begin"),
                ({"type": "set-background", "mode": "plaid"}, "unknown background mode"),
                ({"type": "set-background", "mode": "color", "color": "#12345"}, "RRGGBB"),
                ({"type": "set-background", "mode": "image"}, "data URL"),
                ({"type": "set-background", "mode": "image", "image": "data:image/png;base64,AAAA"}, "decoded"),
                ("x" * 250_000, "limit"),
            ]
            for msg, why in cases:
                c.send(msg if isinstance(msg, str) else json.dumps(msg))
                err = await c.state("error")
                assert why in err["detail"], (msg if len(str(msg)) < 100 else "big", err)
                assert (await c.state("waiting-flash", "matting", "capturing"))["state"] == "waiting-flash"
            # ...and the peer is still served.
            assert _close(await c.frames_back(5), scenes["noflash"])
            # A flood is dropped past the rate limit, said once, and costs neither the video nor the channel.
            for _ in range(300):
                c.send({"type": "teleport"})
            await until(lambda: any("control messages a second" in m["detail"] for m in c.seen),
                        lambda: "the flood was never reported")
            assert sum("control messages a second" in m["detail"] for m in c.seen) == 1
            assert app[SERVICE].metrics.rejected.value(reason="message_rate") > 0
            assert _close(await c.frames_back(5), scenes["noflash"])
            await asyncio.sleep(2.5)  # the bucket refills
            c.send({"type": "flash-end"})
            await until(lambda: "without flash-begin" in c.seen[-2]["detail"] if len(c.seen) > 1 else False,
                        lambda: f"no answer after the flood: {c.seen[-2:]}")
        finally:
            await c.close()


# -- limits and safety ----------------------------------------------------------------------------------------
async def test_session_limit_answers_503_and_frees_the_slot_on_close(
        scenes: dict[str, np.ndarray], model: FlashModel) -> None:
    config = replace(BASE, max_sessions=2)
    async with serving(config, model) as (url, app):
        clients = [Client(scenes) for _ in range(2)]
        extra = Client(scenes)
        try:
            for c in clients:
                await c.connect(url)
            await asyncio.gather(*(c.frames_back(2) for c in clients))
            status, body = await extra.offer(url)
            assert status == 503 and "limit of 2 sessions" in body["error"] and body["max_sessions"] == 2
            assert app[SERVICE].metrics.rejected.value(reason="capacity") == 1

            first = weakref.ref(next(iter(app[SERVICE].sessions.values())))
            await clients[0].close()  # the server sees the peer close and frees its slot
            await until(lambda: len(app[SERVICE].sessions) <= 1, lambda: "closed peer still holds a slot")
            # ... and its memory: the session and its peer connection are freed soon after, not whenever the
            # cyclic collector next runs a full pass.
            await until(lambda: first() is None, lambda: "a closed session is still in memory", timeout=10.0)
            late = Client(scenes)
            clients.append(late)
            await late.connect(url)
            await late.frames_back(2)
        finally:
            for c in [*clients, extra]:
                await c.close()


def _padded(sdp: str, size: int) -> str:
    pad = "".join(f"a=x-pad:{i:07d}\r\n" for i in range(size // 18))
    return sdp + pad


async def test_bad_offers_answer_400_with_json(scenes: dict[str, np.ndarray], model: FlashModel) -> None:
    async with serving(BASE, model) as (url, app):
        probe = Client(scenes)
        await probe.pc.setLocalDescription(await probe.pc.createOffer())
        good = probe.pc.localDescription.sdp
        audio_only = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        audio_only.createDataChannel("control")
        await audio_only.setLocalDescription(await audio_only.createOffer())
        no_video = audio_only.localDescription.sdp
        garbage = "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nbogus\r\n"
        cases: list[tuple[bytes, str]] = [
            (b"not json", "not JSON"),
            (b"[1, 2]", "JSON object"),
            (json.dumps({"type": "offer"}).encode(), "sdp must be"),
            (json.dumps({"sdp": good, "type": "answer"}).encode(), "type must be 'offer'"),
            (json.dumps({"sdp": no_video, "type": "offer"}).encode(), "no video track"),
            (json.dumps({"sdp": garbage, "type": "offer"}).encode(), "cannot negotiate"),
            (json.dumps({"sdp": good, "type": "offer", "options": {"background": "plaid"}}).encode(), "mode"),
            (json.dumps({"sdp": good, "type": "offer", "options": {"fps": 60}}).encode(), "unknown option"),
            (json.dumps({"sdp": good, "type": "offer", "options": {"background": "color", "color": [1, 2]}})
             .encode(), "colour"),
            (json.dumps({"sdp": _padded(good, 70_000), "type": "offer"}).encode(), "byte limit"),
            (b"{" + b" " * 200_000 + b"}", "byte limit"),
        ]
        try:
            async with aiohttp.ClientSession() as http:
                for body, why in cases:
                    async with http.post(url + "/offer", data=body,
                                         headers={"Content-Type": "application/json"}) as r:
                        assert r.status == 400, (body[:80], r.status)
                        assert why in (await r.json())["error"], body[:80]
                # A chunked body has no Content-Length: still capped.
                async def chunks() -> AsyncIterator[bytes]:
                    for _ in range(20):
                        yield b" " * 5000

                async with http.post(url + "/offer", data=chunks(),
                                     headers={"Content-Type": "application/json"}) as r:
                    assert r.status == 400 and "byte limit" in (await r.json())["error"]
            assert not app[SERVICE].sessions
            assert app[SERVICE].metrics.rejected.value(reason="bad_offer") == len(cases) + 1
        finally:
            await probe.close()
            await audio_only.close()


def _bomb_png(side: int = 16384) -> str:
    """A 1-bit PNG of side x side pixels, all black: some 30 kB that decode to side**2 * 3 bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (side // 8 + 1) * side, 9)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
           + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def test_image_sizes_are_read_from_headers_and_bombs_refused_before_decoding() -> None:
    from cuematte.server.protocol import ProtocolError, decode_image, image_size

    img = np.random.default_rng(0).integers(0, 255, (37, 53, 3), np.uint8)
    for ext, params in ((".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".webp", []),
                        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".bmp", [])):
        ok, buf = cv2.imencode(ext, img, params)
        assert ok and image_size(buf.tobytes()) == (53, 37), ext
    assert image_size(b"GIF89a....") is None and image_size(b"") is None
    bomb = _bomb_png()
    assert len(bomb) < 60_000
    with pytest.raises(ProtocolError, match="16384x16384 is outside"):
        decode_image(bomb)


def _drop_line(sdp: str, prefix: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefix))


async def test_mutated_offers_never_answer_500_and_leave_no_session(
        scenes: dict[str, np.ndarray], model: FlashModel) -> None:
    """Offers aiortc cannot negotiate (a real offer with a line deleted, seeded mutations) answer 400 with a
    reason, and the half-built peer is closed without an exception escaping (it once did: 500)."""
    rng = np.random.default_rng(7)
    async with serving(replace(BASE, max_pending=50), model) as (url, app):
        probe = Client(scenes)
        await probe.pc.setLocalDescription(await probe.pc.createOffer())
        good = probe.pc.localDescription.sdp
        await probe.close()
        lines = good.splitlines(keepends=True)
        bodies = [_drop_line(good, "a=mid:0"), _drop_line(good, "a=ice-ufrag"), _drop_line(good, "a=fingerprint")]
        for _ in range(24):  # seeded: drop two lines, or cut one in half
            mutated = list(lines)
            for i in sorted(rng.choice(np.arange(4, len(lines)), 2, replace=False), reverse=True):
                mutated[i] = mutated[i][: len(mutated[i]) // 2] + "\r\n" if rng.random() < 0.5 else ""
            bodies.append("".join(mutated))
        statuses = []
        async with aiohttp.ClientSession() as http:
            for sdp in bodies:
                async with http.post(url + "/offer", json={"sdp": sdp, "type": "offer"}) as r:
                    body = await r.json()
                    statuses.append(r.status)
                    assert r.status in (200, 400), (r.status, body)
                    if r.status == 400:
                        reason = body["error"]
                        assert not reason.endswith(": ") and "StopIteration" not in reason, reason
        assert statuses[0] == 400 and statuses.count(400) >= 3
        # Accepted mutations are pending offers that never connect: none of them holds a session slot.
        assert app[SERVICE].connected == 0
        ok = Client(scenes)
        try:
            await ok.connect(url)
            await ok.frames_back(2)
        finally:
            await ok.close()


async def test_an_offer_split_across_tcp_writes_is_read_whole(
        scenes: dict[str, np.ndarray], model: FlashModel) -> None:
    async with serving(BASE, model) as (url, _):
        c = Client(scenes)
        try:
            await c.pc.setLocalDescription(await c.pc.createOffer())
            body = json.dumps({"sdp": c.pc.localDescription.sdp, "type": "offer"}).encode()
            host, port = url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"POST /offer HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body[:1000])
            await writer.drain()
            await asyncio.sleep(0.3)  # the rest arrives later, as over a slow or lossy link
            writer.write(body[1000:])
            await writer.drain()
            response = await asyncio.wait_for(reader.read(), TIMEOUT)
            writer.close()
            head, _, payload = response.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), response[:300]
            answer = json.loads(payload)
            await c.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            await asyncio.wait_for(c.opened.wait(), TIMEOUT)
        finally:
            await c.close()


async def test_cross_site_pages_and_bombs_cannot_open_sessions(
        scenes: dict[str, np.ndarray], model: FlashModel) -> None:
    """What a page on another site can send (a simple POST, any Origin, a rebinding Host) is refused before any
    work; a decompression-bomb background is refused from its header."""
    config = replace(BASE, allow_origins=("https://meet.example",))
    async with serving(config, model) as (url, app):
        c = Client(scenes)
        try:
            await c.pc.setLocalDescription(await c.pc.createOffer())
            offer = {"sdp": c.pc.localDescription.sdp, "type": "offer"}
            text = json.dumps(offer)
            port = url.rsplit(":", 1)[1]
            async with aiohttp.ClientSession() as http:
                cases: list[tuple[dict[str, str], str, int, str]] = [
                    ({"Content-Type": "text/plain"}, text, 415, "application/json"),
                    ({"Content-Type": "application/json", "Origin": "http://evil.example"}, text, 403,
                     "evil.example"),
                    ({"Content-Type": "application/json", "Origin": "null"}, text, 403, "null"),
                    ({"Content-Type": "application/json", "Host": f"rebind.example:{port}",
                      "Origin": f"http://rebind.example:{port}"}, text, 403, "rebind.example"),
                    ({"Content-Type": "application/json"},
                     json.dumps({**offer, "options": {"background": "image", "image": _bomb_png()}}), 400,
                     "16384x16384"),
                ]
                for headers, body, status, why in cases:
                    async with http.post(url + "/offer", data=body, headers=headers) as r:
                        assert r.status == status, (headers, r.status)
                        assert why in (await r.json())["error"]
                assert not app[SERVICE].sessions
                assert app[SERVICE].metrics.rejected.value(reason="forbidden") == 3
                for origin in (url, "https://meet.example"):  # its own page, and an allowed one
                    peer = Client(scenes)
                    try:
                        await peer.connect(url, headers={"Origin": origin})
                    finally:
                        await peer.close()
        finally:
            await c.close()


def _own_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: routes like any address, never answers
        except OSError:
            return None
        addr = s.getsockname()[0]
    return None if ipaddress.ip_address(addr).is_loopback else addr


async def test_one_remote_client_cannot_fill_the_pending_offers(
        scenes: dict[str, np.ndarray], model: FlashModel) -> None:
    """Beyond loopback, each client address holds at most max_pending_per_client offers that have not connected
    yet: one client's ghost offers leave the rest of max_pending to others (loopback clients, all 127.0.0.1,
    are only held by the global cap)."""
    own = _own_address()
    if own is None:
        pytest.skip("no non-loopback address to connect from")
    config = replace(BASE, host="0.0.0.0", token="s3cret", max_pending=3, connect_timeout_s=6.0)
    runner = web.AppRunner(create_app(config, model=model))
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", 0)
    await site.start()
    port = runner.addresses[0][1]
    service = runner.app[SERVICE]
    auth = {"Authorization": "Bearer s3cret"}
    ghosts = [Client(scenes) for _ in range(4)]
    try:
        remote = [await g.offer(f"http://{own}:{port}", headers=auth) for g in ghosts[:2]]
        assert remote[0][0] == 200
        assert remote[1][0] == 503 and "per client" in remote[1][1]["error"], remote[1]
        assert remote[1][1]["max_pending_per_client"] == 1
        assert service.metrics.rejected.value(reason="pending_client") == 1
        local = [(await g.offer(f"http://127.0.0.1:{port}", headers=auth))[0] for g in ghosts[2:]]
        assert local == [200, 200] and service.pending == 3  # the global cap is what holds loopback
        await until(lambda: service.pending == 0, lambda: f"{service.pending} pending offers not reclaimed")
        ghosts.append(Client(scenes))
        assert (await ghosts[-1].offer(f"http://{own}:{port}", headers=auth))[0] == 200  # its slot came back
    finally:
        await asyncio.gather(*(g.close() for g in ghosts), return_exceptions=True)
        await runner.cleanup()


async def test_offers_that_never_connect_do_not_lock_clients_out(
        scenes: dict[str, np.ndarray], model: FlashModel) -> None:
    """Answered offers whose client never connects are pending: their own cap, no session slot, reclaimed
    after the connect timeout. Connected peers that send no camera frames are closed after the idle timeout."""
    config = replace(BASE, max_sessions=1, max_pending=2, connect_timeout_s=6.0, idle_timeout_s=4.0)
    async with serving(config, model) as (url, app):
        service = app[SERVICE]
        ghosts = [Client(scenes) for _ in range(3)]
        try:
            statuses = [(await g.offer(url))[0] for g in ghosts]  # answered, never connected
            assert statuses == [200, 200, 503]
            assert service.metrics.rejected.value(reason="pending") == 1
            assert service.pending == 2 and service.connected == 0
            await until(lambda: service.pending == 0, lambda: f"{service.pending} pending offers not reclaimed")
            real = Client(scenes)
            ghosts.append(real)
            await real.connect(url)
            await real.frames_back(2)
            assert service.connected == 1
            # A receive-only peer (no camera) connects but sends nothing: reclaimed after the idle timeout.
            await real.close()
            await until(lambda: not service.sessions, lambda: "closed peer still holds a slot")
            silent = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            silent.addTransceiver("video", direction="recvonly")
            opened = asyncio.Event()
            silent.createDataChannel("control").on("open", opened.set)
            await silent.setLocalDescription(await silent.createOffer())
            async with aiohttp.ClientSession() as http, http.post(
                    url + "/offer", json={"sdp": silent.localDescription.sdp, "type": "offer"}) as r:
                answer = await r.json()
            await silent.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            await asyncio.wait_for(opened.wait(), TIMEOUT)
            await until(lambda: service.connected == 1, lambda: "the silent peer never connected")
            await until(lambda: not service.sessions, lambda: "a peer sending no frames kept its slot")
            assert service.metrics.rejected.value(reason="idle") == 1
            await silent.close()
        finally:
            for g in ghosts:
                await g.close()


class _FailingEncoder:
    """Fault injection: a video encoder that raises, as libvpx or a hardware encoder might mid-call."""

    def encode(self, frame: Any, force_keyframe: bool = False) -> Any:
        raise RuntimeError("injected encoder failure")


async def test_a_failed_video_encoder_closes_its_session_only(scenes: dict[str, np.ndarray],
                                                              model: FlashModel) -> None:
    config = replace(BASE, idle_timeout_s=4.0)
    async with serving(config, model) as (url, app):
        service = app[SERVICE]
        broken, later = Client(scenes), Client(scenes)
        try:
            await broken.connect(url)
            await broken.frames_back(3)
            session = next(iter(service.sessions.values()))
            sender = next(s for s in session.pc.getSenders() if s.track is not None and s.track.kind == "video")
            sender._RTCRtpSender__encoder = _FailingEncoder()  # type: ignore[attr-defined]  # aiortc's own slot
            # Camera frames keep arriving, so the idle timeout alone would never free this slot.
            await until(lambda: not service.sessions, lambda: "a session whose video stopped kept its slot")
            assert service.metrics.rejected.value(reason="video_stalled") == 1
            await later.connect(url)  # the service carries on
            await later.frames_back(3)
        finally:
            await broken.close()
            await later.close()


async def test_token_is_required_when_set(scenes: dict[str, np.ndarray], model: FlashModel) -> None:
    with pytest.raises(ConfigError, match="--token"):
        ServerConfig(host="0.0.0.0").validate()
    ServerConfig(host="0.0.0.0", token="t").validate()  # any address with a token is fine
    with pytest.raises(ConfigError, match="--temporal"):
        ServerConfig(temporal=1.0).validate()
    config = replace(BASE, token="s3cret")
    async with serving(config, model) as (url, app):
        for headers, query in [({}, ""), ({"Authorization": "Bearer wrong"}, ""), ({}, "?token=wrong"),
                               ({"Authorization": "s3cret"}, "")]:
            c = Client(scenes)
            try:
                await c.pc.setLocalDescription(await c.pc.createOffer())
                body = {"sdp": c.pc.localDescription.sdp, "type": "offer"}
                async with aiohttp.ClientSession() as http, \
                        http.post(url + "/offer" + query, json=body, headers=headers) as r:
                    assert r.status == 401 and "token" in (await r.json())["error"]
            finally:
                await c.close()
        assert (await _get(url + "/metrics"))[0] == 401
        assert (await _get(url + "/metrics?token=s3cret"))[0] == 200
        assert (await _get(url + "/health"))[0] == 200  # liveness stays open
        ok = [Client(scenes), Client(scenes)]
        try:
            await ok[0].connect(url, headers={"Authorization": "Bearer s3cret"})
            await ok[1].connect(url, query="?token=s3cret")
        finally:
            for c in ok:
                await c.close()
        assert app[SERVICE].metrics.rejected.value(reason="unauthorized") == 4


def _matting_processed(metrics: str) -> int:
    found = re.search(r'cuematte_frames_processed_total\{mode="matting"\} (\d+)', metrics)
    return int(found.group(1)) if found else 0


async def test_health_metrics_and_page(scenes: dict[str, np.ndarray], model: FlashModel) -> None:
    async with serving(replace(BASE, segmenter="mediapipe"), model) as (url, _):  # the default segmenter
        c = Client(scenes)
        try:
            await c.connect(url)
            await c.frames_back(3)
            status, text = await _get(url + "/health")
            health = json.loads(text)
            assert status == 200 and health["status"] == "ok" and health["sessions"] == 1
            assert health["backend"] == model.backend and health["backend_reason"] == model.backend_reason
            assert health["max_sessions"] == 3 and health["trained"] is False and health["segmenter"] == "mediapipe"
            await c.flash()
            await c.state("matting")
            # Frames already in the pipe when matting began come back as pass-through, so wait on the
            # counter itself rather than on frames received.
            async with asyncio.timeout(TIMEOUT):  # a hang guard, not a speed check
                while _matting_processed((await _get(url + "/metrics"))[1]) < 5:
                    await asyncio.sleep(0.1)
        finally:
            await c.close()
        status, text = await _get(url + "/metrics")
        assert status == 200
        for line in ("# TYPE cuematte_sessions gauge", "# TYPE cuematte_frames_processed_total counter",
                     "# TYPE cuematte_frames_dropped_total counter", "# TYPE cuematte_stage_seconds histogram",
                     'cuematte_stage_seconds_bucket{stage="graph",le="+Inf"}',
                     'cuematte_stage_seconds_count{stage="trimap"} 1', 'cuematte_flashes_total{result="ok"} 1',
                     'cuematte_frame_seconds_bucket{mode="matting",le="0.1"}'):
            assert line in text, line
        assert _matting_processed(text) >= 5

        status, page = await _get(url + "/")
        assert status == 200
        for tid in ("start", "flash", "background", "state", "stats", "processed-video"):
            assert f'data-testid="{tid}"' in page
        assert (await _get(url + "/static/app.js"))[0] == 200


async def test_shutdown_closes_every_peer(scenes: dict[str, np.ndarray], model: FlashModel) -> None:
    clients = [Client(scenes), Client(scenes)]
    try:
        async with serving(BASE, model) as (url, app):
            for c in clients:
                await c.connect(url)
            await asyncio.gather(*(c.frames_back(2) for c in clients))
            sessions = list(app[SERVICE].sessions.values())
            assert len(sessions) == 2
        # runner.cleanup() ran on_shutdown
        assert all(s.pc.connectionState == "closed" for s in sessions)
        assert not app[SERVICE].sessions
        await until(lambda: all(c.pc.connectionState in ("closed", "failed") for c in clients),
                    lambda: str([c.pc.connectionState for c in clients]))
    finally:
        for c in clients:
            await c.close()


async def test_cli_serve_exits_cleanly_on_ctrl_c(scenes: dict[str, np.ndarray], lite_model_dir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cuematte.clients.cli", "serve", "--port", "0", "--model", str(lite_model_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parent.parent, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    c = Client(scenes)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        m = re.match(r"serving on (http://127\.0\.0\.1:\d+)/", line)
        assert m, line
        await c.connect(m.group(1))
        await c.frames_back(2)
        proc.send_signal(signal.SIGINT)
        rc = await asyncio.wait_for(asyncio.to_thread(proc.wait), 30)
        assert rc == 0
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
        # the server closed our peer on the way out
        await until(lambda: c.pc.connectionState in ("closed", "failed"), lambda: c.pc.connectionState)
    finally:
        await c.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_model_the_segmenter_cannot_feed_fails_at_start_not_per_offer(lite_prior_model_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        needs_mask = FlashModel(lite_prior_model_dir)
    with pytest.raises(ConfigError, match="needs the person segmenter"):
        create_app(BASE, model=needs_mask)


def test_cli_refuses_a_public_address_without_token(capsys: pytest.CaptureFixture[str]) -> None:
    from cuematte.clients.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--token" in capsys.readouterr().err


def test_the_service_leaves_one_core_to_the_codec_unless_told() -> None:
    """ONNX Runtime's pool in the service: all cores but one (at most 4) by default, --threads when given."""
    from cuematte.server.config import graph_threads

    assert [graph_threads(n) for n in (1, 2, 3, 4, 8, 64)] == [1, 1, 2, 3, 4, 4]
    for asked, want in ((None, graph_threads()), (3, 3)):
        service = create_app(replace(BASE, segmenter="mediapipe", threads=asked))[SERVICE]
        assert service.model.frame.session.get_session_options().intra_op_num_threads == want
