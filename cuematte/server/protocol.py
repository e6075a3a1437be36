"""The ``control`` data channel's JSON messages and the offer's ``options``: parsing and validation.

Everything a client can get wrong raises :class:`ProtocolError` (a :class:`CuematteError`), which the
service answers with a ``state: error`` message (data channel) or a 400 (offer); nothing a client sends
closes the peer.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from typing import Any

import numpy as np

from cuematte.engine.compositing import GREEN, MODES, Background
from cuematte.engine.errors import CuematteError, ImageReadError
from cuematte.engine.io import decode_image_bytes

STATES = ("waiting-flash", "capturing", "matting", "error", "parallax-waiting", "parallax-matting")
CLIENT_TYPES = ("flash-begin", "flash-end", "set-background", "reset", "set-cue")
CUES = ("flash", "parallax")
MAX_IMAGE_SIDE = 4096
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")
_DATA_URL = re.compile(r"^data:image/(png|jpeg|jpg|webp|bmp);base64,(.*)$", re.DOTALL)


class ProtocolError(CuematteError):
    """A client message or offer the service cannot act on."""


def parse_message(raw: str | bytes, max_bytes: int) -> dict[str, Any]:
    """One control message -> dict with a known ``type``."""
    if len(raw) > max_bytes:
        raise ProtocolError(f"control message of {len(raw)} bytes is over the {max_bytes}-byte limit")
    try:
        msg = json.loads(raw)
    except (TypeError, ValueError, RecursionError):  # RecursionError: JSON nested past the parser's stack
        raise ProtocolError("control message is not JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError("control message must be a JSON object")
    kind = msg.get("type")
    if kind not in CLIENT_TYPES:
        raise ProtocolError(f"unknown control message type {kind!r}; expected one of {CLIENT_TYPES}")
    if kind == "set-cue" and (not isinstance(msg.get("cue"), str) or msg["cue"] not in CUES):
        raise ProtocolError(f"unknown cue {repr(msg.get('cue'))[:40]}; set-cue takes one of {list(CUES)}")
    return msg


def parse_color(value: Any) -> tuple[int, int, int]:
    """'#rrggbb' / 'rrggbb' or [r, g, b] in 0..255."""
    if isinstance(value, str):
        m = _HEX.match(value.strip())
        if not m:
            raise ProtocolError(f"colour {value!r} is not #RRGGBB")
        h = m.group(1)
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    if (isinstance(value, list | tuple) and len(value) == 3
            and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)):
        return int(value[0]), int(value[1]), int(value[2])
    raise ProtocolError(f"colour must be '#RRGGBB' or [r, g, b] in 0..255, got {value!r}")


IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # Pillow's names: the formats image_size reads headers of


def image_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, WebP or BMP header, without decoding; None if the header is not one.

    A decompression bomb (a 33 kB PNG of 16384x16384) is refused on these few bytes, before a decoder
    allocates its pixels."""
    if raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR" and len(raw) >= 24:
        w, h = struct.unpack(">II", raw[16:24])
        return w, h
    if raw[:2] == b"BM" and len(raw) >= 26:
        w, h = struct.unpack("<ii", raw[18:26])
        return abs(w), abs(h)  # a negative height is a top-down bitmap
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP" and len(raw) >= 30:
        chunk = raw[12:16]
        if chunk == b"VP8 " and raw[23:26] == b"\x9d\x01\x2a":
            w, h = struct.unpack("<HH", raw[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L" and raw[20] == 0x2F:
            bits = int.from_bytes(raw[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            return int.from_bytes(raw[24:27], "little") + 1, int.from_bytes(raw[27:30], "little") + 1
        return None
    if raw[:2] == b"\xff\xd8":  # JPEG: walk the markers to the first start-of-frame
        i = 2
        while i + 9 <= len(raw):
            if raw[i] != 0xFF:
                return None
            marker = raw[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
                i += 2
                continue
            (length,) = struct.unpack(">H", raw[i + 2:i + 4])
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", raw[i + 5:i + 9])
                return w, h
            i += 2 + length
    return None


def decode_image(data_url: Any) -> np.ndarray:
    """A ``data:image/...;base64,`` URL -> (H, W, 3) uint8 RGB."""
    if not isinstance(data_url, str):
        raise ProtocolError("background image must be a data URL string (data:image/jpeg;base64,...)")
    m = _DATA_URL.match(data_url)
    if not m:
        raise ProtocolError("background image must be a data:image/(png|jpeg|webp);base64 URL")
    try:
        raw = base64.b64decode(m.group(2), validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("background image: invalid base64") from None
    size = image_size(raw)
    if size is None:
        raise ProtocolError("background image could not be decoded: not a PNG, JPEG, WebP or BMP")
    if max(size) > MAX_IMAGE_SIDE or min(size) < 16:
        raise ProtocolError(f"background image of {size[0]}x{size[1]} is outside 16..{MAX_IMAGE_SIDE} px")
    try:
        rgb = decode_image_bytes(raw, formats=IMAGE_FORMATS)
    except ImageReadError:
        raise ProtocolError("background image could not be decoded (truncated or corrupt)") from None
    if sorted(rgb.shape[:2]) != sorted(size):  # a header that lied (EXIF rotation may swap the sides)
        raise ProtocolError(f"background image decodes to {rgb.shape[1]}x{rgb.shape[0]}, not the {size[0]}x{size[1]} "
                            "its header states")
    return rgb


def parse_background(spec: dict[str, Any]) -> Background:
    """``{"mode": ..., "color": ..., "image": ...}`` -> Background. May decode an image: call off the loop."""
    mode = spec.get("mode", "blur")
    if mode not in MODES:
        raise ProtocolError(f"unknown background mode {mode!r}; choose one of {MODES}")
    color = parse_color(spec["color"]) if spec.get("color") is not None else GREEN
    image = decode_image(spec.get("image")) if mode == "image" else None
    try:
        return Background(mode=mode, color=color, image=image)
    except CuematteError as exc:
        raise ProtocolError(str(exc)) from None


OFFER_OPTION_KEYS = ("background", "color", "image")


def parse_offer(body: bytes, max_bytes: int) -> tuple[str, dict[str, Any]]:
    """The POST /offer body -> (sdp, background spec for :func:`parse_background`)."""
    if len(body) > max_bytes:
        raise ProtocolError(f"offer of {len(body)} bytes is over the {max_bytes}-byte limit")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # ValueError: bad UTF-8 too; RecursionError: nested past the stack
        raise ProtocolError("offer body is not JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("offer must be a JSON object {sdp, type, options}")
    sdp, kind, options = data.get("sdp"), data.get("type"), data.get("options", {})
    if kind != "offer":
        raise ProtocolError(f"type must be 'offer', got {kind!r}")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise ProtocolError("sdp must be an SDP string (starting with v=0)")
    if "\nm=video " not in sdp.replace("\r\n", "\n"):
        raise ProtocolError("the offer has no video track: send the camera with addTrack/addTransceiver")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ProtocolError("options must be a JSON object")
    unknown = sorted(set(options) - set(OFFER_OPTION_KEYS))
    if unknown:
        raise ProtocolError(f"unknown option(s) {unknown}; known: {list(OFFER_OPTION_KEYS)}")
    background = options.get("background", "blur")
    spec: dict[str, Any]
    if isinstance(background, dict):
        spec = dict(background)
    elif isinstance(background, str):
        spec = {"mode": background, "color": options.get("color"), "image": options.get("image")}
    else:
        raise ProtocolError("options.background must be a mode string or {mode, color, image}")
    return sdp, spec


def state_message(state: str, detail: str, reflash: bool = False) -> str:
    assert state in STATES
    return json.dumps({"type": "state", "state": state, "detail": detail, "reflash": reflash})
