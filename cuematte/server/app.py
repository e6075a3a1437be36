"""The aiohttp application: demo page, ``POST /offer``, ``/health``, ``/metrics``; one :class:`PeerSession`
per accepted offer, all closed on shutdown.

    app = create_app(ServerConfig(model=Path("models/lite")))
    web.run_app(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from aiohttp import web

from cuematte.engine.errors import CuematteError
from cuematte.engine.model import FlashModel
from cuematte.engine.session import MattingSession
from cuematte.server.config import ServerConfig, resolve_segmenter
from cuematte.server.metrics import CONTENT_TYPE, Metrics
from cuematte.server.peer import PeerSession
from cuematte.server.protocol import ProtocolError, parse_background, parse_offer

log = logging.getLogger(__name__)

SERVICE: web.AppKey[Service] = web.AppKey("cuematte_service")


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


class Service:
    """The state of one running service: config, the loaded model, metrics and the open sessions."""

    def __init__(self, config: ServerConfig, model: FlashModel) -> None:
        self.config = config
        self.model = model
        self.segmenter = resolve_segmenter(config.segmenter)
        self.metrics = Metrics()
        self.sessions: dict[str, PeerSession] = {}
        self._pending = 0  # offers being negotiated: they hold a slot too, so a burst cannot overshoot

    # -- helpers ----------------------------------------------------------------------------------------------
    def authorized(self, request: web.Request) -> bool:
        token = self.config.token
        if not token:
            return True
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else request.query.get("token", "")
        return hmac.compare_digest(given.encode(), token.encode())

    def _closed(self, session: PeerSession) -> None:
        if self.sessions.pop(session.id, None) is not None:
            self.metrics.sessions.set(len(self.sessions))
            log.info("session %s closed (%d open)", session.id[:8], len(self.sessions))

    # -- routes -----------------------------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(self.config.web_dir / "index.html", headers={"Cache-Control": "no-cache"})

    async def health(self, request: web.Request) -> web.Response:
        info = self.model.info
        return web.json_response({"status": "ok", "sessions": len(self.sessions),
                                  "max_sessions": self.config.max_sessions, "model": info.name,
                                  "trained": info.trained, "segmenter": self.segmenter,
                                  "backend": self.model.backend, "backend_reason": self.model.backend_reason})

    async def metrics_route(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return _error(401, "missing or wrong token")
        return web.Response(body=self.metrics.render().encode(), headers={"Content-Type": CONTENT_TYPE})

    async def offer(self, request: web.Request) -> web.Response:
        cfg = self.config
        if not self.authorized(request):
            self.metrics.rejected.inc(reason="unauthorized")
            return _error(401, "missing or wrong token: send 'Authorization: Bearer TOKEN' or ?token=TOKEN")
        if request.content_length is not None and request.content_length > cfg.max_offer_bytes:
            self.metrics.rejected.inc(reason="bad_offer")
            return _error(400, f"offer of {request.content_length} bytes is over the {cfg.max_offer_bytes}-byte limit")
        body = await request.content.read(cfg.max_offer_bytes + 1)  # chunked bodies have no content_length
        try:
            sdp, bg_spec = parse_offer(body, cfg.max_offer_bytes)
            background = await asyncio.get_running_loop().run_in_executor(None, parse_background, bg_spec)
        except ProtocolError as exc:
            self.metrics.rejected.inc(reason="bad_offer")
            return _error(400, str(exc))
        if len(self.sessions) + self._pending >= cfg.max_sessions:
            self.metrics.rejected.inc(reason="capacity")
            return _error(503, f"the service is at its limit of {cfg.max_sessions} sessions; try again later",
                          max_sessions=cfg.max_sessions)
        self._pending += 1
        try:
            return await self._negotiate(sdp, background)
        finally:
            self._pending -= 1

    async def _negotiate(self, sdp: str, background: Any) -> web.Response:
        from aiortc import RTCSessionDescription

        cfg = self.config
        try:  # off the loop: the segmenter loads its own ONNX graph
            engine = await asyncio.get_running_loop().run_in_executor(
                None, lambda: MattingSession(self.model, segmenter=self.segmenter, max_side=cfg.max_side,
                                     temporal=cfg.temporal))
        except CuematteError as exc:
            return _error(500, f"cannot start a matting session: {exc}")
        session = PeerSession(cfg, engine, background, self.metrics, self._closed)
        try:
            await session.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await session.pc.setLocalDescription(await session.pc.createAnswer())
        except Exception as exc:  # aiortc raises ValueError, KeyError, InvalidStateError... on odd SDP
            log.info("bad offer: %r", exc)
            await session.close()
            self.metrics.rejected.inc(reason="bad_offer")
            return _error(400, f"cannot negotiate this offer: {exc or type(exc).__name__}")
        self.sessions[session.id] = session
        self.metrics.sessions.set(len(self.sessions))
        self.metrics.sessions_total.inc()
        session.start()
        log.info("session %s open (%d open)", session.id[:8], len(self.sessions))
        desc = session.pc.localDescription
        return web.json_response({"sdp": desc.sdp, "type": desc.type, "session_id": session.id})

    async def close_all(self, app: web.Application | None = None) -> None:
        sessions = list(self.sessions.values())
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


def create_app(config: ServerConfig, model: FlashModel | None = None) -> web.Application:
    """The service's aiohttp app. Loads the model once (a broken or missing model fails here, before
    anyone connects); every session shares its ONNX Runtime sessions, which are safe to run concurrently."""
    config.validate()
    if model is None:
        model = FlashModel(config.model, backend=config.backend, threads=config.threads, plans=config.plans)
    service = Service(config, model)
    # Offers are capped by max_offer_bytes in the handler (400, not aiohttp's 413).
    app = web.Application(client_max_size=max(config.max_offer_bytes * 2, 1024))
    app[SERVICE] = service
    app.router.add_get("/", service.index)
    app.router.add_get("/health", service.health)
    app.router.add_get("/metrics", service.metrics_route)
    app.router.add_post("/offer", service.offer)
    app.router.add_static("/static/", config.web_dir, show_index=False)
    app.on_shutdown.append(service.close_all)
    return app
