"""Fuzzing every input surface with Hypothesis: ``POST /offer`` bodies against a real running service, the
control channel's messages (the parser, and a burst over a real data channel), the files ``cuematte matte``
reads, and model folders. What a user relies on: bad input is always a named error (a 4xx with a JSON reason,
a ``state: error`` message, ``error: ...`` and exit code 2, a :class:`CuematteError`), never a 500, a traceback
or a dead session.

``CUEMATTE_FUZZ_EXAMPLES`` examples per surface (default 40); ``make fuzz`` runs 1000. Seeds are fixed
(``derandomize``), so ``make test`` runs the same cases every time; a failure prints the falsifying input,
which then stays here as a regression case (``@example``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import warnings
import zlib
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from cuematte.clients.cli import main
from cuematte.clients.scenes import make_pair
from cuematte.engine.compositing import MODES
from cuematte.engine.errors import CuematteError
from cuematte.engine.io import VideoWriter, write_image
from cuematte.engine.model import FlashModel, UntrainedModelWarning
from cuematte.live import LiveState
from cuematte.server.app import SERVICE
from cuematte.server.protocol import (
    ProtocolError,
    decode_image,
    parse_background,
    parse_message,
    parse_offer,
)
from tests.test_server import BASE, TIMEOUT, Client, serving, until

T = TypeVar("T")

EXAMPLES = int(os.environ.get("CUEMATTE_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example, HealthCheck.filter_too_much])
# pyproject's 600 s per test is plenty for the default size; `make fuzz` needs more.
pytestmark = [pytest.mark.timeout(600 + 3 * EXAMPLES)] if "CUEMATTE_FUZZ_EXAMPLES" in os.environ else []

OFFER_STATUSES = (200, 400, 403, 408, 415, 503)
# The service's loop thread (aiortc: ICE, SCTP, RTP) draws from `random` while Hypothesis generates an example.
SERVICE_RUNNING = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module:hypothesis.errors.HypothesisDeprecationWarning")
MAX_MESSAGE = BASE.max_message_bytes
MAX_OFFER = BASE.max_offer_bytes


# -- strategies ---------------------------------------------------------------------------------------------------
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-(10**30), 10**30) | st.floats() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=10,
)


def _nested(depth: int, kind: str) -> str:
    """JSON nested ``depth`` deep: a classic parser stack exhaustion."""
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth


DEEP = st.builds(_nested, st.one_of(st.integers(1, 50), st.integers(900, 30_000)), st.sampled_from(["list", "dict"]))
# Whether JSON some 1000-3000 deep parses depends on the thread's stack and on the recursion limit Hypothesis
# raises while it runs an example: over a real peer (another thread), only depths on one side or the other.
DEEP_CLEAR = st.builds(_nested, st.one_of(st.integers(1, 50), st.integers(5000, 30_000)),
                       st.sampled_from(["list", "dict"]))


def _image(ext: str, params: list[int] | None = None, h: int = 24, w: int = 32, grey: bool = False) -> bytes:
    rng = np.random.default_rng(len(ext) + h)
    img = rng.integers(0, 255, (h, w) if grey else (h, w, 3), np.uint8)
    ok, buf = cv2.imencode(ext, img, params or [])
    assert ok
    return buf.tobytes()


# Well-formed images of every format a background may be (and one grey), mutated below.
IMAGES = [_image(".png"), _image(".jpg"), _image(".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), _image(".webp"),
          _image(".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), _image(".bmp"), _image(".png", grey=True),
          _image(".png", h=16, w=16)]
# Sides a lying header may claim: the limits, a bomb, nonsense.
SIDES = st.sampled_from([0, 1, 15, 16, 17, 4096, 4097, 16384, 65535]) | st.integers(0, 2**31 - 1)


def _sof(data: bytearray) -> int | None:
    """Offset of a JPEG start-of-frame marker (baseline or progressive)."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        i = data.find(marker)
        if i >= 0:
            return i
    return None


def _resize_header(data: bytearray, w: int, h: int) -> None:
    """Rewrite the size an image's header states (PNG with a valid CRC, so the decoder believes it)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 33:
        data[16:24] = struct.pack(">II", w, h)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    elif data[:2] == b"BM" and len(data) >= 26:
        data[18:26] = struct.pack("<ii", min(w, 2**31 - 1), min(h, 2**31 - 1))
    elif data[:4] == b"RIFF" and len(data) >= 30:
        data[26:30] = struct.pack("<HH", w & 0xFFFF, h & 0xFFFF)
    elif (i := _sof(data)) is not None and i + 9 <= len(data):
        data[i + 5 : i + 9] = struct.pack(">HH", h & 0xFFFF, w & 0xFFFF)


def _resized(data: bytes, w: int, h: int) -> bytes:
    out = bytearray(data)
    _resize_header(out, w, h)
    return bytes(out)


BYTE_OPS = ("truncate", "flip", "set-header", "insert", "zero", "append", "resize-header", "empty")


@st.composite
def mutated_bytes(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A well-formed file damaged the ways files get damaged: cut short, bits flipped, header bytes rewritten,
    junk inserted or appended, a range zeroed, a size that lies."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for op in draw(st.lists(st.sampled_from(BYTE_OPS), max_size=4)):
        n = len(data)
        if op == "truncate":
            del data[draw(st.integers(0, n)):]
        elif op == "flip" and n:
            for i in draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=8)):
                data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set-header" and n:
            data[draw(st.integers(0, min(n, 64) - 1))] = draw(st.integers(0, 255))
        elif op == "insert":
            i = draw(st.integers(0, n))
            data[i:i] = draw(st.binary(min_size=1, max_size=32))
        elif op == "zero" and n:
            i = draw(st.integers(0, n - 1))
            end = min(n, i + draw(st.integers(1, 256)))
            data[i:end] = bytes(end - i)
        elif op == "append":
            data += draw(st.binary(max_size=64))
        elif op == "resize-header":
            _resize_header(data, draw(SIDES), draw(SIDES))
        elif op == "empty":
            data.clear()
    return bytes(data)


DATA_URL_PREFIXES = ["data:image/png;base64,", "data:image/jpeg;base64,", "data:image/jpg;base64,",
                     "data:image/webp;base64,", "data:image/bmp;base64,", "data:image/gif;base64,",
                     "data:text/plain;base64,", "data:image/png,", ""]


@st.composite
def data_urls(draw: st.DrawFn) -> Any:
    """A background image as the page sends it (a data URL), damaged; or not a string at all."""
    kind = draw(st.sampled_from(["image", "image", "image", "text", "whitespace", "not-a-string"]))
    if kind == "not-a-string":
        return draw(JSON)
    prefix = draw(st.sampled_from(DATA_URL_PREFIXES))
    if kind == "text":
        return prefix + draw(st.text(max_size=80))
    payload = base64.b64encode(draw(mutated_bytes(IMAGES))).decode()
    if kind == "whitespace" and payload:
        i = draw(st.integers(0, len(payload)))
        payload = payload[:i] + draw(st.sampled_from([" ", "\n", "=", "-", "\u00e9"])) + payload[i:]
    return prefix + payload


MODE_VALUES = st.sampled_from(MODES) | st.text(max_size=10) | JSON
COLORS = st.one_of(st.from_regex(r"#?[0-9a-fA-F]{5,7}", fullmatch=True), st.text(max_size=10),
                   st.lists(st.integers(-10, 300), max_size=4), JSON)
BACKGROUND_SPECS = st.fixed_dictionaries(
    {}, optional={"mode": MODE_VALUES, "color": COLORS, "image": data_urls(), "blur": JSON})
OFFER_OPTIONS = st.one_of(
    st.none(), JSON,
    st.fixed_dictionaries({}, optional={"background": MODE_VALUES | BACKGROUND_SPECS, "color": COLORS,
                                        "image": data_urls()}),
)
# What the page sends: offers that get past the options to aiortc's SDP parsing.
GOOD_OPTIONS = st.sampled_from([None, {}, {"background": "green"}, {"background": "none"},
                                {"background": "color", "color": "#ff8800"}, {"background": {"mode": "blur"}}])


@st.composite
def control_messages(draw: st.DrawFn, deep: st.SearchStrategy[str] = DEEP) -> str | bytes:
    """What a client may send on the control channel: unknown types, wrong field types, broken and huge
    background images, not JSON, binary, oversized, nested past the parser's stack."""
    kind = draw(st.sampled_from(["message", "message", "message", "json", "text", "binary", "huge", "deep"]))
    if kind == "message":
        msg = draw(st.fixed_dictionaries(
            {"type": st.sampled_from(["set-background", "set-background", "flash-end"]) | st.text(max_size=12) | JSON},
            optional={"mode": MODE_VALUES, "color": COLORS, "image": data_urls()}))
        raw = json.dumps(msg)
    elif kind == "json":
        raw = json.dumps(draw(JSON))
    elif kind == "text":
        raw = draw(st.text(max_size=200))
    elif kind == "binary":
        return draw(st.binary(max_size=200))
    elif kind == "huge":
        # up to what an aiortc peer may send at all (its max-message-size, 256 KiB)
        size = draw(st.integers(MAX_MESSAGE - 100, MAX_MESSAGE + 5000))
        raw = json.dumps({"type": "set-background", "mode": "image", "image": "data:image/png;base64," + "A" * size})
    else:
        raw = draw(deep)
    return raw.encode("utf-8", "surrogatepass") if draw(st.booleans()) else raw


# -- the parsers, directly: only ProtocolError ----------------------------------------------------------------------
def _handle(raw: str | bytes) -> None:
    """What the peer does with a control message: parse it; a set-background is also parsed into a background."""
    msg = parse_message(raw, MAX_MESSAGE)
    if msg["type"] == "set-background":
        parse_background(msg)


@FUZZ
@given(control_messages())
@example("[" * 5000)  # once a RecursionError out of json.loads, past the peer's error handling
def test_control_messages_raise_only_protocol_errors(raw: str | bytes) -> None:
    try:
        _handle(raw)
    except ProtocolError as exc:
        assert str(exc)


@FUZZ
@given(BACKGROUND_SPECS)
def test_background_specs_raise_only_protocol_errors(spec: dict[str, Any]) -> None:
    try:
        background = parse_background(spec)
    except ProtocolError:
        return
    assert background.mode in MODES


@FUZZ
@given(data_urls())
def test_background_images_decode_or_raise_protocol_errors(url: Any) -> None:
    try:
        rgb = decode_image(url)
    except ProtocolError:
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and min(rgb.shape[:2]) >= 16


# -- offers -------------------------------------------------------------------------------------------------------
SDP_OPS = ("delete", "delete", "duplicate", "truncate-line", "swap", "insert", "retype", "flip", "cut")


@st.composite
def mutated_sdp(draw: st.DrawFn, lines: list[str]) -> str:
    """A real aiortc offer with lines deleted, duplicated, swapped, cut or invented, characters flipped."""
    out = list(lines)
    for op in draw(st.lists(st.sampled_from(SDP_OPS), min_size=1, max_size=5)):
        if not "".join(out):
            break
        i = draw(st.integers(0, len(out) - 1))
        if op == "delete":
            del out[i]
        elif op == "duplicate":
            out.insert(i, out[i])
        elif op == "truncate-line":
            out[i] = out[i][: draw(st.integers(0, len(out[i])))] + "\r\n"
        elif op == "swap":
            j = draw(st.integers(0, len(out) - 1))
            out[i], out[j] = out[j], out[i]
        elif op == "insert":
            out.insert(i, draw(st.text(max_size=60)) + "\r\n")
        elif op == "retype":  # keep the field name, change its value: "a=setup:" + junk
            head = out[i].split(":", 1)[0] if ":" in out[i] else out[i][:2]
            out[i] = head + ":" + draw(st.text(max_size=30)) + "\r\n"
        elif op == "flip":
            chars = list("".join(out))
            for k in draw(st.lists(st.integers(0, len(chars) - 1), min_size=1, max_size=6)):
                chars[k] = draw(st.characters()) if draw(st.booleans()) else chr(ord(chars[k]) ^ 1 << draw(
                    st.integers(0, 6)))
            out = "".join(chars).splitlines(keepends=True)
        elif op == "cut":
            text = "".join(out)
            out = [text[: draw(st.integers(0, len(text)))]]
    return "".join(out)


@dataclass(frozen=True)
class OfferRequest:
    body: bytes
    headers: dict[str, str]

    def __repr__(self) -> str:  # what Hypothesis prints for a failing case: enough to reproduce it by eye
        body = self.body if len(self.body) < 600 else self.body[:300] + b"..." + self.body[-100:]
        return f"OfferRequest(body={body!r} ({len(self.body)} bytes), headers={self.headers!r})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # Hypothesis' printer, instead of every byte
        p.text(repr(self))


@st.composite
def offer_requests(draw: st.DrawFn, lines: list[str], port: int) -> OfferRequest:
    """POST /offer bodies: not JSON, JSON of any shape, offers with fields missing or of the wrong type, huge
    ones, mutated real SDP with random options; mostly as application/json, some with another type or a
    browser's Origin / a rebinding Host."""
    good = "".join(lines)
    kind = draw(st.sampled_from(["binary", "json", "fields", "huge", "broken", *["mutated"] * 5]))
    if kind == "binary":
        body = draw(st.binary(max_size=2000))
    elif kind == "json":
        body = json.dumps(draw(JSON)).encode()
    elif kind in ("fields", "mutated", "broken"):
        if kind == "fields":
            offer = draw(st.fixed_dictionaries({}, optional={
                "sdp": st.just(good) | JSON, "type": st.just("offer") | JSON, "options": OFFER_OPTIONS}))
        else:
            options = draw(OFFER_OPTIONS if kind == "broken" or draw(st.booleans()) else GOOD_OPTIONS)
            offer = {"sdp": draw(mutated_sdp(lines)), "type": "offer", "options": options}
        body = json.dumps(offer, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        if kind == "broken":  # valid JSON no more
            body = draw(mutated_bytes([body]))
    else:
        body = draw(st.one_of(
            st.integers(MAX_OFFER - 2000, 3 * MAX_OFFER).map(lambda n: json.dumps(
                {"sdp": good + "a=x-pad:" + "x" * max(0, n - len(good)), "type": "offer"}).encode()),
            DEEP.map(str.encode),
            st.integers(1, 20_000).map(lambda n: json.dumps({"sdp": good, "type": "offer", "options": {
                "background": "image", "image": "data:image/png;base64," + "A" * n * 4}}).encode()),
        ))
    headers = {"Content-Type": draw(st.sampled_from(["application/json"] * 6 + [
        "application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
        "application/octet-stream"]))}
    browser = draw(st.sampled_from(["none"] * 6 + ["own", "foreign", "rebind"]))
    if browser == "own":
        headers["Origin"] = f"http://127.0.0.1:{port}"
    elif browser == "foreign":
        headers["Origin"] = draw(st.sampled_from(["null", "http://evil.example"]) | st.from_regex(
            r"[a-z]{1,8}://[a-z0-9.:]{1,20}", fullmatch=True))
    elif browser == "rebind":
        headers["Host"] = f"rebind.example:{port}"
    return OfferRequest(body, headers)


@FUZZ
@given(st.binary(max_size=3000) | DEEP.map(str.encode) | OFFER_OPTIONS.map(
    lambda o: json.dumps({"sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "type": "offer", "options": o}).encode()))
@example(b"[" * 5000)  # once a RecursionError out of json.loads: a 500 with a traceback
def test_offer_bodies_parse_or_raise_protocol_errors(body: bytes) -> None:
    try:
        _, spec = parse_offer(body, MAX_OFFER)
        parse_background(spec)
    except ProtocolError as exc:
        assert str(exc)


class LoopThread:
    """An event loop in a background thread, so that synchronous Hypothesis examples can drive a real service
    and real aiortc peers living in it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 3 * TIMEOUT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="module")
def scenes() -> dict[str, np.ndarray]:
    flash, noflash, _ = make_pair(180, 320, seed=1)
    return {"noflash": noflash, "flash": flash}


@pytest.fixture(scope="module")
def model(lite_model_dir: Path) -> FlashModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        return FlashModel(lite_model_dir)


async def _client(scenes: dict[str, np.ndarray]) -> Client:
    return Client(scenes)  # made on the loop's thread: aiortc binds to the running loop


async def _http() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


async def _offer_sdp(scenes: dict[str, np.ndarray]) -> str:
    probe = Client(scenes)
    await probe.pc.setLocalDescription(await probe.pc.createOffer())
    sdp: str = probe.pc.localDescription.sdp
    await probe.close()
    return sdp


async def _post(http: aiohttp.ClientSession, url: str, request: OfferRequest) -> tuple[int, str]:
    async with http.post(url + "/offer", data=request.body, headers=request.headers) as r:
        return r.status, await r.text()


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records of the service (and aiohttp, asyncio underneath it) that carry an exception."""
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.exc_info or "Traceback" in r.getMessage() or "exception was never retrieved" in r.getMessage()]


@SERVICE_RUNNING
def test_fuzzed_offers_answer_4xx_json_and_the_service_stays_up(
        scenes: dict[str, np.ndarray], model: FlashModel, loop: LoopThread, caplog: pytest.LogCaptureFixture) -> None:
    """Every fuzzed offer is answered 200 or a 4xx/503 with a JSON reason, nothing is logged with a traceback,
    a client connected through the run keeps its flash and its video, and a new client still connects."""
    caplog.set_level(logging.WARNING)
    # Answered fuzz offers never connect: let them all be pending, reclaimed a second later.
    config = replace(BASE, max_pending=10_000, connect_timeout_s=1.0)
    server = serving(config, model)
    url, app = loop.run(server.__aenter__())
    port = int(url.rsplit(":", 1)[1])
    keeper = loop.run(_client(scenes))
    http = loop.run(_http())
    try:
        loop.run(keeper.connect(url))
        loop.run(keeper.state("waiting-flash"))
        loop.run(keeper.frames_back(5))  # the no-flash reference has arrived
        loop.run(keeper.flash())
        assert loop.run(keeper.state("matting", "error"))["state"] == "matting", keeper.seen
        seen = len(keeper.seen)
        lines = loop.run(_offer_sdp(scenes)).splitlines(keepends=True)
        statuses: dict[int, int] = {}

        @FUZZ
        @given(offer_requests(lines, port))
        @example(OfferRequest(b"[" * 5000, {"Content-Type": "application/json"}))  # was a 500 and a traceback
        def post(request: OfferRequest) -> None:
            status, text = loop.run(_post(http, url, request))
            statuses[status] = statuses.get(status, 0) + 1
            assert status in OFFER_STATUSES, (status, text[:500])
            body = json.loads(text)
            if status == 200:
                assert body["type"] == "answer" and body["sdp"].startswith("v=0") and body["session_id"]
            else:
                assert isinstance(body, dict) and isinstance(body["error"], str) and body["error"], body

        post()
        print(f"offer statuses: {dict(sorted(statuses.items()))}")
        assert not _tracebacks(caplog)
        # The connected client lost nothing: still matting on its flash, still getting frames.
        loop.run(keeper.frames_back(5))
        assert all(m["state"] == "matting" for m in keeper.seen[seen:]), keeper.seen[seen:]
        service = app[SERVICE]
        (session,) = [s for s in service.sessions.values() if s.connected]
        assert session.state is LiveState.MATTING and session.matter.has_flash
        loop.run(until(lambda: service.pending == 0, lambda: f"{service.pending} fuzzed offers still pending"))
        fresh = loop.run(_client(scenes))
        try:
            loop.run(fresh.connect(url))
            loop.run(fresh.frames_back(3))
        finally:
            loop.run(fresh.close())
        assert not _tracebacks(caplog)
    finally:
        loop.run(http.close())
        loop.run(keeper.close())
        loop.run(server.__aexit__(None, None, None))


# -- control channel over a real peer ------------------------------------------------------------------------------
FLASH_END = '{"type": "flash-end"}'  # answered "flash-end without flash-begin" outside a flash


@SERVICE_RUNNING
def test_fuzzed_control_messages_over_a_real_peer_answer_errors_and_keep_the_video(
        scenes: dict[str, np.ndarray], model: FlashModel, loop: LoopThread, caplog: pytest.LogCaptureFixture) -> None:
    """Each bad message is answered with ``state: error`` and the reason the parser gives; a good background
    changes it silently (a ``flash-end`` after it still gets its answer). The peer keeps its video."""
    caplog.set_level(logging.WARNING)
    server = serving(BASE, model)
    url, _ = loop.run(server.__aenter__())
    client = loop.run(_client(scenes))
    # Paced under the per-peer limit (20 messages/s), so every message is parsed, not dropped as a flood.
    interval = 1.5 / BASE.max_messages_per_s
    last = [0.0]

    async def exchange(messages: list[str | bytes]) -> dict[str, Any]:
        """Send the messages; the error state that answers the last, after which the peer is back waiting."""
        for raw in messages:
            now = asyncio.get_running_loop().time()
            await asyncio.sleep(max(0.0, last[0] + interval - now))
            last[0] = asyncio.get_running_loop().time()
            client.channel.send(raw)
        error = await client.state("error")
        assert (await client.state("waiting-flash", "capturing", "matting"))["state"] == "waiting-flash"
        return error

    try:
        loop.run(client.connect(url))
        loop.run(client.state("waiting-flash"))

        @FUZZ
        @given(control_messages(deep=DEEP_CLEAR))
        @example("[" * 5000)  # once the end of this peer: its DTLS transport died, no answers and no video
        def send(raw: str | bytes) -> None:
            try:
                kind = parse_message(raw, MAX_MESSAGE)["type"]
                _handle(raw)
            except ProtocolError as exc:
                expected, messages = str(exc), [raw]
            else:
                assume(kind in ("set-background", "flash-end"))  # flash-begin and reset change the state
                expected = "flash-end without flash-begin"
                messages = [raw] if kind == "flash-end" else [raw, FLASH_END]
            answer = loop.run(exchange(messages))
            assert answer["detail"] == expected

        send()
        loop.run(client.frames_back(5))
        assert not [m for m in client.seen if "control messages a second" in m["detail"]]
        assert not _tracebacks(caplog)
    finally:
        loop.run(client.close())
        loop.run(server.__aexit__(None, None, None))


# -- cuematte matte: the files it reads ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def matte_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small well-formed inputs (a flash pair, a clip, a background): the seeds the fuzzer damages."""
    d = tmp_path_factory.mktemp("fuzz_inputs")
    flash, noflash, _ = make_pair(96, 128, seed=11, shift=3, exposure=0.9)
    out: dict[str, Path] = {}
    for name, img in (("flash", flash), ("noflash", noflash)):
        for ext in (".png", ".jpg"):
            out[name + ext] = d / f"{name}{ext}"
            write_image(out[name + ext], img)
    out["background.png"] = d / "background.png"
    write_image(out["background.png"], np.full((40, 60, 3), (10, 200, 30), np.uint8))
    out["clip.mp4"] = d / "clip.mp4"
    with VideoWriter(out["clip.mp4"], (128, 96), 15) as w:
        for i in range(6):
            w.write(np.roll(noflash, i, axis=1))
    return out


ROLE_SEEDS = {"flash": ("flash.png", "flash.jpg"), "noflash": ("noflash.png", "noflash.jpg"),
              "input": ("noflash.png", "noflash.jpg"), "folder": ("noflash.png", "noflash.jpg"),
              "background": ("background.png",), "video": ("clip.mp4",)}
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".mp4", ".avi", ".mkv", ".y4m", ".txt", "")


@dataclass(frozen=True)
class MatteCase:
    role: str  # which argument gets the damaged file
    seed: str
    data: bytes
    suffix: str
    with_noflash: bool

    def __repr__(self) -> str:
        return (f"MatteCase(role={self.role!r}, seed={self.seed!r}, data=<{len(self.data)} bytes, crc32 "
                f"{zlib.crc32(self.data):08x}>, suffix={self.suffix!r}, with_noflash={self.with_noflash})")

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


@st.composite
def matte_cases(draw: st.DrawFn, files: dict[str, Path]) -> MatteCase:
    role = draw(st.sampled_from(list(ROLE_SEEDS)))
    seed = draw(st.sampled_from(ROLE_SEEDS[role]))
    data = draw(mutated_bytes([files[seed].read_bytes()]))
    natural = Path(seed).suffix
    suffix = draw(st.sampled_from([natural] * 4 + list(SUFFIXES)))
    return MatteCase(role, seed, data, suffix, draw(st.booleans()))


def _matte_argv(case: MatteCase, files: dict[str, Path], work: Path, model: Path) -> list[str]:
    damaged = work / f"damaged{case.suffix}"
    flash, noflash, inp = files["flash.png"], files["noflash.png"], files["noflash.png"]
    background = "blur"
    if case.role == "folder":
        inp = work / "frames"
        inp.mkdir()
        shutil.copy(files["noflash.jpg"], inp / "a.jpg")
        damaged = inp / f"b{case.suffix}"
    damaged.write_bytes(case.data)
    if case.role == "flash":
        flash = damaged
    elif case.role == "noflash":
        noflash = damaged
    elif case.role in ("input", "video"):
        inp = damaged
    elif case.role == "background":
        background = str(damaged)
    argv = ["matte", "--flash", str(flash), "--input", str(inp), "--out-dir", str(work / "out"), "--model",
            str(model), "--background", background]
    if case.with_noflash or case.role == "noflash":
        argv += ["--noflash", str(noflash)]
    return argv


def _screen(err: str) -> list[str]:
    """The lines a terminal shows for ``err``: a carriage return starts its line over (progress bars)."""
    return [shown for line in err.split("\n") if (shown := line.rsplit("\r", 1)[-1].rstrip())]


PROGRESS = re.compile(r"\[\d+:\d\d[<,\]]")  # a tqdm bar's elapsed time: what a successful run leaves on stderr


def _one_error_line(code: int, err: str) -> bool:
    """Exit code 2 and exactly one line on the screen: cuematte's ``error: ...``."""
    lines = _screen(err)
    return code == 2 and len(lines) == 1 and lines[0].startswith("error: ")


def test_fuzzed_matte_inputs_are_one_error_line_or_a_result(
        matte_files: dict[str, Path], lite_model_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Damaged flash, no-flash, input image, folder member, video or background file: ``cuematte matte`` either
    mattes it or says what is wrong in one ``error:`` line with exit code 2 (no traceback, no progress bar
    left half drawn, and nothing the C libraries print themselves: ``capfd`` reads the process's stderr)."""
    outcomes = {"ok": 0, "error": 0}

    @FUZZ
    @given(matte_cases(matte_files))
    # A folder whose second image is empty: the first one's progress bar stayed on screen above the error.
    @example(MatteCase("folder", "noflash.png", b"", ".png", with_noflash=False))
    # A PNG whose header states 65535x65535: OpenCV raised cv2.error (its pixel limit), a traceback.
    @example(MatteCase("flash", "flash.png", _resized(matte_files["flash.png"].read_bytes(), 65535, 65535), ".png",
                       with_noflash=False))
    def matte(case: MatteCase) -> None:
        with tempfile.TemporaryDirectory(dir=tmp_path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", UntrainedModelWarning)
            capfd.readouterr()
            code = main(_matte_argv(case, matte_files, Path(tmp), lite_model_dir))
            _, err = capfd.readouterr()
        assert (code == 0 and all(PROGRESS.search(line) for line in _screen(err))) or _one_error_line(code, err), \
            (code, err)
        outcomes["ok" if code == 0 else "error"] += 1

    matte()
    print(f"matte outcomes: {outcomes}")


@pytest.mark.parametrize("role, seed, cut", [
    ("video", "clip.mp4", 3000),
    ("flash", "flash.jpg", 200),
    ("background", "background.png", 8),  # OpenCV logged its own [ WARN] and [ERROR] lines above cuematte's
])
def test_the_console_script_prints_one_error_line_for_a_damaged_file(
        matte_files: dict[str, Path], lite_model_dir: Path, tmp_path: Path, role: str, seed: str, cut: int) -> None:
    """As a user runs it, on the terminal's stderr (the C libraries' own output included): a cut-short video or
    image is one ``error:`` line and exit code 2."""
    case = MatteCase(role, seed, matte_files[seed].read_bytes()[:cut], Path(seed).suffix, with_noflash=False)
    exe = Path(sys.executable).with_name("cuematte")
    proc = subprocess.run([str(exe), *_matte_argv(case, matte_files, tmp_path, lite_model_dir)],
                          capture_output=True, text=True, timeout=120)
    assert _one_error_line(proc.returncode, proc.stderr), (proc.returncode, proc.stderr)


def _damaged_images(files: dict[str, Path]) -> dict[str, bytes]:
    """Images that OpenCV's libpng and libjpeg complained about on stderr (found by the fuzzer)."""
    png, jpg = files["noflash.png"].read_bytes(), files["noflash.jpg"].read_bytes()
    idat = png.index(b"IDAT") + 40
    sof = jpg.index(b"\xff\xc0")
    return {
        "png, a flipped byte in its pixel data": png[:idat] + bytes([png[idat] ^ 0x5A]) + png[idat + 1:],
        "png, cut inside its pixel data": png[:idat + 20],
        "jpeg, garbage before a marker": jpg[:sof] + b"\x00" * 72 + jpg[sof:],
        "jpeg, cut inside its scan": jpg[: len(jpg) // 2],
    }


def test_damaged_images_decode_or_raise_named_errors_and_print_nothing(
        matte_files: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Every image decoder (the CLI's files, a background by data channel, a ``/matte`` upload) gives an image or
    its own named error, and no C library writes to the process's stderr: a service log stays cuematte's."""
    from cuematte.engine.io import read_image
    from cuematte.server.parallax import decode_upload

    for name, data in _damaged_images(matte_files).items():
        path = tmp_path / ("damaged.png" if name.startswith("png") else "damaged.jpg")
        path.write_bytes(data)
        url = f"data:image/{'png' if name.startswith('png') else 'jpeg'};base64," + base64.b64encode(data).decode()
        capfd.readouterr()
        decoders: list[tuple[Callable[[], np.ndarray], type[Exception]]] = [
            (partial(read_image, path), CuematteError), (partial(decode_image, url), ProtocolError),
            (partial(decode_upload, data, "view1", 10**7), CuematteError)]
        for decode, named in decoders:
            try:
                rgb = decode()
                assert rgb.shape == (96, 128, 3) and rgb.dtype == np.uint8, name
            except named as exc:
                assert str(exc), name
        out, err = capfd.readouterr()
        assert out == "" and err == "", (name, err)


# -- model folders ------------------------------------------------------------------------------------------------
def _paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path in a JSON document."""
    yield at
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*at, i))


def _set(doc: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    if not path:
        return value
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


MODEL_OPS = ("json-value", "json-value", "json-delete", "json-bytes", "delete", "truncate", "flip", "swap-graphs",
             "directory")
GRAPHS = ("flash.onnx", "frame.onnx")


@dataclass(frozen=True)
class ModelCase:
    files: dict[str, bytes | None]  # replaced files (None: deleted); the others stay as exported
    directories: tuple[str, ...]  # names turned into folders

    def __repr__(self) -> str:
        shown = {k: v if v is None or k == "model.json" else f"<{len(v)} bytes>" for k, v in self.files.items()}
        return f"ModelCase(files={shown!r}, directories={self.directories!r})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


@st.composite
def model_cases(draw: st.DrawFn, folder: Path) -> ModelCase:
    """A model folder with files missing, graphs cut short or bit-flipped (with and without the sha256 that
    catches that), graphs swapped, model.json damaged as bytes or with any of its values replaced or removed."""
    manifest = json.loads((folder / "model.json").read_text())
    files: dict[str, bytes | None] = {}
    directories: list[str] = []
    paths = list(_paths(manifest))
    for op in draw(st.lists(st.sampled_from(MODEL_OPS), min_size=1, max_size=3)):
        graph = draw(st.sampled_from(GRAPHS))
        if op == "json-delete" and len(paths) < 2:
            continue  # an earlier op left a scalar: nothing to delete
        if op in ("json-value", "json-delete"):
            path = draw(st.sampled_from(paths[1:] if op == "json-delete" else paths))
            value = draw(JSON | st.sampled_from([[], {}, [1], [1, 2, 3], -1, 0, 10**30, "", "../flash.onnx"]))
            with contextlib.suppress(KeyError, IndexError, TypeError):  # an earlier op changed what is there
                manifest = _set(manifest, path, value, op == "json-delete")
            paths = list(_paths(manifest))
        elif op == "json-bytes":
            files["model.json"] = draw(mutated_bytes([json.dumps(manifest).encode()]))
        elif op == "delete":
            files[draw(st.sampled_from([*GRAPHS, "model.json"]))] = None
        elif op in ("truncate", "flip"):
            data = bytearray((folder / graph).read_bytes())
            if op == "truncate":
                del data[draw(st.integers(0, len(data))):]
            else:
                for i in draw(st.lists(st.integers(0, len(data) - 1) | st.integers(0, 4096), min_size=1, max_size=8)):
                    data[i] ^= 1 << draw(st.integers(0, 7))
            files[graph] = bytes(data)
            if draw(st.booleans()) and isinstance(manifest, dict):
                manifest.pop("sha256", None)  # past the checksum, into ONNX Runtime
        elif op == "swap-graphs":
            files["flash.onnx"], files["frame.onnx"] = (folder / "frame.onnx").read_bytes(), (
                folder / "flash.onnx").read_bytes()
            if isinstance(manifest, dict):
                manifest.pop("sha256", None)
        elif op == "directory":
            directories.append(draw(st.sampled_from([*GRAPHS, "model.json"])))
    files.setdefault("model.json", json.dumps(manifest).encode())
    return ModelCase(files, tuple(directories))


def _build_model_folder(case: ModelCase, source: Path, work: Path) -> None:
    for name in ("model.json", *GRAPHS):
        if name in case.directories:
            (work / name).mkdir()
        elif name not in case.files:
            (work / name).symlink_to(source / name)  # the untouched graphs, without copying 18 MB
        elif (data := case.files[name]) is not None:
            (work / name).write_bytes(data)


def test_fuzzed_model_folders_raise_only_named_errors(lite_model_dir: Path, tmp_path: Path) -> None:
    outcomes = {"loaded": 0, "error": 0}
    manifest = json.loads((lite_model_dir / "model.json").read_text())

    def edited(text: str | bytes | None = None, **fields: Any) -> ModelCase:
        text = json.dumps({**manifest, **fields}) if text is None else text
        return ModelCase({"model.json": text.encode() if isinstance(text, str) else text}, ())

    @FUZZ
    @given(model_cases(lite_model_dir))
    # What escaped as raw exceptions (UnicodeDecodeError, AttributeError, KeyError, ValueError, TypeError,
    # OverflowError, RecursionError) before read_model_info named them:
    @example(edited(b"\x80" + json.dumps(manifest).encode()))
    @example(edited("[]"))
    @example(edited("[" * 5000))
    @example(edited(graphs=None))
    @example(edited(graphs={"flash": 3, "frame": "frame.onnx"}))
    @example(edited(config=[]))
    @example(edited(flash_features_shape=[1, 2, 3]))
    @example(edited(flash_features_shape=[float("inf"), 64]))
    @example(edited(config={**manifest["config"], "cmn_size": "x"}))
    @example(edited(config={**manifest["config"], "guidance_bands": 1}))
    def load(case: ModelCase) -> None:
        with tempfile.TemporaryDirectory(dir=tmp_path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", UntrainedModelWarning)
            _build_model_folder(case, lite_model_dir, Path(tmp))
            try:
                FlashModel(Path(tmp))
                outcomes["loaded"] += 1
            except CuematteError as exc:
                assert str(exc)
                outcomes["error"] += 1

    load()
    print(f"model outcomes: {outcomes}")

