"""``POST /matte``: the parallax cue on two uploaded photos -> one PNG.

A ``multipart/form-data`` body with the fields

* ``view1`` (required): the photo to matte, PNG / JPEG / WebP / BMP;
* ``view2`` (required): a second photo of the scene, the camera moved a few centimetres;
* ``background`` (optional): an image to composite onto, or ``blur`` / ``green`` / ``#RRGGBB`` (default blur);
* ``output`` (optional): ``composite`` (default, RGB) or ``alpha`` (8-bit grey)

answers ``200 image/png`` at view1's size, with the measured parallax in ``X-Parallax-Px``. Bad input is a 400 with
``{"error": ..., "reason": ...}`` (reason: the engine error's name, e.g. ``NoParallaxError``); a body that is not
multipart is a 415, an oversized one a 413, and a service without the parallax model answers 503 (it starts
without one). Same token as ``/offer``. The model is opened on the first request and shared; matting runs on a
small pool of its own threads, at most ``ServerConfig.max_matte_jobs`` at once (more are answered 503, not queued).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from aiohttp import BodyPartReader, web

from cuematte.engine.compositing import Background, composite
from cuematte.engine.errors import CuematteError, ImageReadError, InputError, ModelError
from cuematte.engine.io import decode_image_bytes
from cuematte.server.config import ServerConfig
from cuematte.server.protocol import IMAGE_FORMATS, ProtocolError, image_size, parse_color

if TYPE_CHECKING:
    from cuematte.engine.parallax.session import ParallaxSession
    from cuematte.server.app import Service

log = logging.getLogger(__name__)

IMAGE_FIELDS = ("view1", "view2", "background")
TEXT_FIELDS = ("output",)
OUTPUTS = ("composite", "alpha")
TEXT_LIMIT = 64  # bytes of a text field (output, a background mode or colour)
MIN_SIDE = 16


class UploadError(CuematteError):
    """A /matte body the service cannot read; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class MatteRequest:
    view1: np.ndarray  # (H, W, 3) uint8 RGB
    view2: np.ndarray
    background: Background
    output: str


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def read_form(request: web.Request, cfg: ServerConfig) -> dict[str, bytes]:
    """The multipart body's fields, raw, each within its limit. Unknown, repeated or nested fields are refused:
    a client that misspells ``view2`` should hear so, not get a matte of something else."""
    fields: dict[str, bytes] = {}
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise UploadError("nested multipart parts are not accepted")
            name = part.name or ""
            if name not in IMAGE_FIELDS + TEXT_FIELDS:
                raise UploadError(f"unknown form field {name!r}; expected {list(IMAGE_FIELDS + TEXT_FIELDS)}")
            if name in fields:
                raise UploadError(f"form field {name!r} is sent twice")
            limit = cfg.max_image_bytes if name in IMAGE_FIELDS else TEXT_LIMIT
            chunks: list[bytes] = []
            size = 0
            while chunk := await part.read_chunk(1 << 16):
                size += len(chunk)
                if size > limit:
                    raise UploadError(f"form field {name!r} is over its {limit}-byte limit", 413)
                chunks.append(chunk)
            fields[name] = b"".join(chunks)
    except (ValueError, AssertionError, KeyError, RuntimeError) as exc:  # aiohttp's parser on a broken body
        raise UploadError(f"malformed multipart body: {exc}") from None
    return fields


def decode_upload(raw: bytes, what: str, max_pixels: int) -> np.ndarray:
    """An uploaded image file -> (H, W, 3) uint8 RGB. Its size is read from the header and checked against
    ``max_pixels`` before anything is decoded (a 30 kB PNG can state 16384x16384)."""
    size = image_size(raw)
    if size is None:
        raise InputError(f"{what} is not a PNG, JPEG, WebP or BMP image")
    w, h = size
    if w * h > max_pixels or min(w, h) < MIN_SIDE:
        raise InputError(f"{what} is {w}x{h}: outside {MIN_SIDE} px a side to {max_pixels} pixels")
    try:
        rgb = decode_image_bytes(raw, formats=IMAGE_FORMATS)
    except ImageReadError:
        raise InputError(f"{what} could not be decoded (a truncated or corrupt {w}x{h} image)") from None
    if sorted(rgb.shape[:2]) != sorted((h, w)):  # a header that lied (EXIF rotation may swap the sides)
        raise InputError(f"{what} decodes to {rgb.shape[1]}x{rgb.shape[0]}, not the {w}x{h} its header states")
    return rgb


def parse_request(fields: dict[str, bytes], cfg: ServerConfig) -> MatteRequest:
    """Raw form fields -> the decoded request. Decodes images: call off the event loop."""
    for name in ("view1", "view2"):
        if name not in fields:
            raise InputError(f"form field {name!r} is missing: send view1 (the photo to matte) and view2 (a second "
                             "photo, the camera moved a few centimetres)")
    output = fields.get("output", b"composite").decode("utf-8", "replace").strip()
    if output not in OUTPUTS:
        raise InputError(f"output must be one of {list(OUTPUTS)}, got {output!r}")
    view1 = decode_upload(fields["view1"], "view1", cfg.max_image_pixels)
    view2 = decode_upload(fields["view2"], "view2", cfg.max_image_pixels)
    return MatteRequest(view1, view2, _background(fields.get("background"), cfg), output)


def _background(raw: bytes | None, cfg: ServerConfig) -> Background:
    """An image file, or the text ``blur`` / ``green`` / ``#RRGGBB``; none: blur."""
    if raw is None:
        return Background(mode="blur")
    if image_size(raw) is not None:
        return Background(mode="image", image=decode_upload(raw, "background", cfg.max_image_pixels))
    text = raw[:TEXT_LIMIT].decode("utf-8", "replace").strip()
    if text in ("blur", "green"):
        return Background(mode=text)  # type: ignore[arg-type]
    try:
        return Background(mode="color", color=parse_color(text))
    except ProtocolError:
        raise InputError("background must be an image (PNG, JPEG, WebP, BMP), blur, green or #RRGGBB") from None


def render(session: ParallaxSession, req: MatteRequest) -> tuple[bytes, float]:
    """Matte and encode -> (PNG bytes, parallax px). Runs on the route's pool."""
    m = session.matte(req.view1, req.view2)
    image: np.ndarray
    if req.output == "alpha":
        image = (m.alpha * 255.0 + 0.5).astype(np.uint8)
    else:
        image = cv2.cvtColor(composite(req.view1, m.alpha, m.foreground, req.background), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image)
    if not ok:  # cannot happen for uint8 images; named in case it does
        raise CuematteError("could not encode the result as PNG")
    return buf.tobytes(), m.parallax_px


class ParallaxRoute:
    """``POST /matte`` for one service: the lazily opened parallax session and the pool that runs it."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.config = service.config
        self._session: ParallaxSession | None = None
        self._opening = asyncio.Lock()
        self._running = 0  # requests between admission and their answer (bodies held in memory included)
        self._pool = ThreadPoolExecutor(max_workers=self.config.max_matte_jobs, thread_name_prefix="matte")

    def _open(self) -> ParallaxSession:
        from cuematte.engine.cues.segmenter import MediaPipeSegmenter
        from cuematte.engine.parallax.model import ParallaxModel
        from cuematte.engine.parallax.session import ParallaxSession

        cfg = self.config
        model = ParallaxModel(cfg.parallax_model, cfg.threads)
        # The service's segmenter when it runs MediaPipe (its sessions are shared); the cue needs it either way.
        shared = self.service.person_segmenter
        return ParallaxSession(model, shared if isinstance(shared, MediaPipeSegmenter) else None, threads=cfg.threads)

    async def session(self) -> ParallaxSession:
        """The shared session, opened on first use; :class:`ModelError` while the model folder is missing (it is
        looked for again on the next request)."""
        if self._session is None:
            async with self._opening:
                if self._session is None:
                    self._session = await asyncio.get_running_loop().run_in_executor(self._pool, self._open)
        return self._session

    async def matte(self, request: web.Request) -> web.Response:
        cfg = self.config
        denied = self.service._auth_refusal(request, offer=False)
        if denied is not None:
            return denied
        refused = self.service._cross_site(request)
        if refused:
            return _error(403, refused)
        if request.content_type != "multipart/form-data":
            return _error(415, f"POST /matte takes Content-Type: multipart/form-data (fields view1, view2), not "
                               f"{request.content_type!r}")
        body_limit = len(IMAGE_FIELDS) * cfg.max_image_bytes + 65536
        if request.content_length is not None and request.content_length > body_limit:
            return _error(413, f"body of {request.content_length} bytes is over the {body_limit}-byte limit")
        if self._running >= cfg.max_matte_jobs:
            return web.json_response({"error": f"{self._running} mattes are running (the limit is "
                                               f"{cfg.max_matte_jobs}); try again shortly"},
                                     status=503, headers={"Retry-After": "2"})
        self._running += 1
        try:
            return await self._serve(request)
        finally:
            self._running -= 1

    async def _serve(self, request: web.Request) -> web.Response:
        cfg = self.config
        loop = asyncio.get_running_loop()
        try:
            session = await self.session()
        except ModelError as exc:
            return _error(503, f"the parallax cue is not available on this service: {exc}", reason="no_model")
        try:
            async with asyncio.timeout(cfg.upload_timeout_s):
                fields = await read_form(request, cfg)
        except TimeoutError:
            return _error(408, f"the body did not arrive within {cfg.upload_timeout_s:g} s")
        except UploadError as exc:
            return _error(exc.status, str(exc))
        try:
            req = await loop.run_in_executor(self._pool, parse_request, fields, cfg)
            del fields
            png, parallax = await loop.run_in_executor(self._pool, render, session, req)
        except InputError as exc:
            return _error(400, str(exc), reason=type(exc).__name__)
        except CuematteError as exc:  # a backend failure: this request's result is lost, the service is not
            log.warning("POST /matte failed: %s", exc)
            return _error(500, f"matting failed: {exc}", reason=type(exc).__name__)
        return web.Response(body=png, content_type="image/png", headers={"X-Parallax-Px": f"{parallax:.2f}"})

    async def close(self, app: web.Application | None = None) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
