"""The aiohttp application: demo page, ``POST /offer``, ``/health``, ``/metrics``; one :class:`PeerSession`
per accepted offer, all closed on shutdown. ``POST /matte`` (two photos -> a PNG, the parallax cue) is
:mod:`cuematte.server.parallax`.

    app = create_app(ServerConfig(model=Path("models/lite")))
    web.run_app(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from cuematte.engine.errors import CuematteError
from cuematte.engine.model import FlashModel
from cuematte.engine.pipelined import PipelinedSession
from cuematte.engine.session import MattingSession, create_segmenter
from cuematte.server.auth import AuthFailures
from cuematte.server.config import ConfigError, ServerConfig, graph_threads, is_loopback, resolve_segmenter
from cuematte.server.metrics import CONTENT_TYPE, Metrics
from cuematte.server.parallax import ParallaxRoute
from cuematte.server.peer import PeerSession
from cuematte.server.protocol import ProtocolError, parse_background, parse_offer

if TYPE_CHECKING:
    from cuematte.engine.parallax.session import ParallaxSession

COLLECT_AFTER_CLOSE_S = 2.0  # aiortc finishes tearing a closed peer down within this

log = logging.getLogger(__name__)

SERVICE: web.AppKey[Service] = web.AppKey("cuematte_service")


def _error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, however many TCP writes it came in, up to ``limit`` + 1 bytes (so an oversized one
    is seen as such). ``content.read(n)`` alone returns only what has arrived so far."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def negotiation_reason(exc: BaseException) -> str:
    """What to tell a client whose SDP aiortc could not negotiate: aiortc's own message where it wrote one for
    people (a ValueError), never an empty reason or Python's internals ('coroutine raised StopIteration',
    "'NoneType' object has no attribute 'transport'"): those mean a line the SDP needs is missing or broken."""
    text = str(exc)
    if isinstance(exc, ValueError) and text:
        return text
    return "the SDP is malformed or lacks a line it needs (m=, a=mid, a=ice-ufrag, a=fingerprint, a=setup...)"


class Service:
    """The state of one running service: config, the loaded model, metrics and the open sessions."""

    def __init__(self, config: ServerConfig, model: FlashModel) -> None:
        self.config = config
        self.model = model
        self.segmenter = resolve_segmenter(config.segmenter)
        # One person segmenter for the process: its ONNX Runtime sessions run concurrently, and one per offer
        # cost a graph load and a thread pool each, freed only when the garbage collector got to them.
        self.person_segmenter = create_segmenter(self.segmenter, config.threads or graph_threads())
        self.metrics = Metrics()
        self.sessions: dict[str, PeerSession] = {}
        self._negotiating: Counter[str] = Counter()  # offers between their POST and their answer, by client
        self._client_of: dict[str, str] = {}  # session id -> the address its offer came from
        self._collect: asyncio.TimerHandle | None = None
        self.auth_failures = AuthFailures(config.max_auth_failures, config.auth_window_s)
        # The shared parallax session for ``set-cue parallax`` (the /matte route's, opened on first use).
        self.open_parallax: Callable[[], Awaitable[ParallaxSession]] | None = None

    # -- helpers ----------------------------------------------------------------------------------------------
    def authorized(self, request: web.Request) -> bool:
        token = self.config.token
        if not token:
            return True
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else request.query.get("token", "")
        ok = hmac.compare_digest(given.encode(), token.encode())
        if not ok:
            self.auth_failures.fail(request.remote or "", time.monotonic())
        return ok

    def _auth_refusal(self, request: web.Request, *, offer: bool) -> web.Response | None:
        """401 for a wrong token, 429 for an address that sent too many of them (checked first); counted in
        the rejected-offers metric when ``offer``."""
        if not self.config.token:
            return None
        wait = self.auth_failures.locked_for(request.remote or "", time.monotonic())
        if wait > 0:
            if offer:
                self.metrics.rejected.inc(reason="auth_throttled")
            return _error(429, f"too many wrong tokens from this address: try again in {wait:.0f} s",
                          headers={"Retry-After": str(max(1, round(wait)))})
        if not self.authorized(request):
            if offer:
                self.metrics.rejected.inc(reason="unauthorized")
            return _error(401, "missing or wrong token: send 'Authorization: Bearer TOKEN' or ?token=TOKEN")
        return None

    def _closed(self, session: PeerSession) -> None:
        self._client_of.pop(session.id, None)
        if self.sessions.pop(session.id, None) is not None:
            self.metrics.sessions.set(self.connected)
            log.info("session %s closed (%d open)", session.id[:8], len(self.sessions))
        if self._collect is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # a session finalised after its loop ended (shutdown): nothing left to collect for
                return
            self._collect = loop.call_later(COLLECT_AFTER_CLOSE_S, self._collect_closed)

    def _collect_closed(self) -> None:
        """A closed peer connection is a web of aiortc objects (transports, SCTP, codecs) that refer to each
        other: only the cyclic collector frees them, and its full pass comes rarely, so each closed session's
        frames and codec buffers stayed resident (the soak test's RSS ramp). One full pass a while after a
        close, coalesced when several close together. It holds the GIL, so every open session's frames wait for
        it: 44-88 ms over the whole heap on a slow host, 1-14 ms once `cuematte serve` has frozen the objects
        of its startup (``engine.allocator.freeze_startup_heap``)."""
        self._collect = None
        t0 = time.perf_counter()
        found = gc.collect()
        log.debug("collected %d objects of closed sessions in %.1f ms", found, (time.perf_counter() - t0) * 1e3)

    # -- routes -----------------------------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(self.config.web_dir / "index.html", headers={"Cache-Control": "no-cache"})

    async def health(self, request: web.Request) -> web.Response:
        info = self.model.info
        return web.json_response({"status": "ok", "sessions": self.connected, "pending": self.pending,
                                  "max_sessions": self.config.max_sessions, "model": info.name,
                                  "trained": info.trained, "segmenter": self.segmenter,
                                  "backend": self.model.backend, "backend_reason": self.model.backend_reason})

    async def metrics_route(self, request: web.Request) -> web.Response:
        refused = self._auth_refusal(request, offer=False)
        if refused is not None:
            return refused
        return web.Response(body=self.metrics.render().encode(), headers={"Content-Type": CONTENT_TYPE})

    async def offer(self, request: web.Request) -> web.Response:
        cfg = self.config
        denied = self._auth_refusal(request, offer=True)
        if denied is not None:
            return denied
        refused = self._cross_site(request)
        if refused:
            self.metrics.rejected.inc(reason="forbidden")
            return _error(403, refused)
        if request.content_type != "application/json":  # what a page may send cross-site without asking
            self.metrics.rejected.inc(reason="bad_offer")
            return _error(415, f"POST /offer takes Content-Type: application/json, not {request.content_type!r}")
        if request.content_length is not None and request.content_length > cfg.max_offer_bytes:
            self.metrics.rejected.inc(reason="bad_offer")
            return _error(400, f"offer of {request.content_length} bytes is over the {cfg.max_offer_bytes}-byte limit")
        try:
            async with asyncio.timeout(cfg.body_timeout_s):
                body = await read_body(request, cfg.max_offer_bytes)
            sdp, bg_spec = parse_offer(body, cfg.max_offer_bytes)
        except TimeoutError:
            self.metrics.rejected.inc(reason="bad_offer")
            return _error(408, f"the offer body did not arrive within {cfg.body_timeout_s:g} s")
        except ProtocolError as exc:
            self.metrics.rejected.inc(reason="bad_offer")
            return _error(400, str(exc))
        # Capacity before any work (a background image is decoded only for an offer that can be served).
        if self.connected >= cfg.max_sessions:
            self.metrics.rejected.inc(reason="capacity")
            return _error(503, f"the service is at its limit of {cfg.max_sessions} sessions; try again later",
                          max_sessions=cfg.max_sessions)
        if self.pending >= cfg.max_pending:
            self.metrics.rejected.inc(reason="pending")
            return _error(503, f"{self.pending} offers are waiting to connect (the limit is {cfg.max_pending}); try "
                               f"again in {cfg.connect_timeout_s:g} s", max_pending=cfg.max_pending)
        client = request.remote or ""
        if not is_loopback(client) and self.pending_of(client) >= cfg.max_pending_per_client:
            self.metrics.rejected.inc(reason="pending_client")
            return _error(503, f"{self.pending_of(client)} offers from {client} are waiting to connect (the limit is "
                               f"{cfg.max_pending_per_client} per client); connect or wait "
                               f"{cfg.connect_timeout_s:g} s", max_pending_per_client=cfg.max_pending_per_client)
        self._negotiating[client] += 1
        try:
            try:
                background = await asyncio.get_running_loop().run_in_executor(None, parse_background, bg_spec)
            except ProtocolError as exc:
                self.metrics.rejected.inc(reason="bad_offer")
                return _error(400, str(exc))
            return await self._negotiate(sdp, background, client)
        finally:
            self._negotiating[client] -= 1
            if not self._negotiating[client]:
                del self._negotiating[client]

    def _cross_site(self, request: web.Request) -> str | None:
        """Why a browser request from another site may not open a session here, or None.

        A page on any site can POST to localhost; the browser names that site in ``Origin``. Requests without
        one come from programs, not pages. Bound to loopback, the Host must be a loopback name too, so a page
        whose own name resolves to 127.0.0.1 (DNS rebinding) does not pass as same-origin."""
        if is_loopback(self.config.host) and not is_loopback(request.url.host or ""):
            return f"Host {request.host!r} is not this loopback service's address"
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        own = f"{request.scheme}://{request.host}"
        if origin == own or origin in self.config.allow_origins:
            return None
        return f"pages from {origin} may not open sessions here (this service is {own}; see --allow-origin)"

    @property
    def connected(self) -> int:
        return sum(s.connected for s in self.sessions.values())

    @property
    def pending(self) -> int:
        """Offers being negotiated or answered and not yet connected."""
        return self._negotiating.total() + sum(not s.connected for s in self.sessions.values())

    def pending_of(self, client: str) -> int:
        """:attr:`pending`, counting only the offers from one client address."""
        return self._negotiating[client] + sum(not s.connected and self._client_of.get(sid) == client
                                               for sid, s in self.sessions.items())

    def _on_connected(self, session: PeerSession) -> bool:
        """A peer connected: keep it if a session slot is free (offers are admitted against the slots free
        then, so a burst of them can connect one too many)."""
        if self.connected > self.config.max_sessions:
            self.metrics.rejected.inc(reason="capacity")
            log.info("session %s connected beyond the limit of %d sessions: closing", session.id[:8],
                     self.config.max_sessions)
            return False
        self.metrics.sessions.set(self.connected)
        return True

    async def _negotiate(self, sdp: str, background: Any, client: str) -> web.Response:
        from aiortc import RTCSessionDescription

        cfg = self.config
        try:
            session_ = MattingSession(self.model, segmenter=self.person_segmenter, max_side=cfg.max_side,
                                      temporal=cfg.temporal)
        except CuematteError as exc:
            return _error(500, f"cannot start a matting session: {exc}")
        # On a GPU the graph is a few ms and its executions share the session's stream: it stays in the path.
        beside = cfg.background_graph and self.model.backend == "cpu"
        engine = PipelinedSession(session_) if beside else session_
        session = PeerSession(cfg, engine, background, self.metrics, self._closed, self._on_connected,
                              open_parallax=self.open_parallax)
        try:
            await session.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await session.pc.setLocalDescription(await session.pc.createAnswer())
        except Exception as exc:  # aiortc raises ValueError, KeyError, InvalidStateError... on odd SDP
            log.info("bad offer: %r", exc)  # the internal reason, for whoever runs the service
            await session.close()
            self.metrics.rejected.inc(reason="bad_offer")
            return _error(400, f"cannot negotiate this offer: {negotiation_reason(exc)}")
        self.sessions[session.id] = session
        self._client_of[session.id] = client
        self.metrics.sessions_total.inc()
        session.start()
        log.info("session %s answered (%d open)", session.id[:8], len(self.sessions))
        desc = session.pc.localDescription
        return web.json_response({"sdp": desc.sdp, "type": desc.type, "session_id": session.id})

    async def close_all(self, app: web.Application | None = None) -> None:
        sessions = list(self.sessions.values())
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        if self._collect is not None:  # the process is ending: nothing left to collect for
            self._collect.cancel()
            self._collect = None


def create_app(config: ServerConfig, model: FlashModel | None = None) -> web.Application:
    """The service's aiohttp app. Loads the model once (a broken or missing model fails here, before
    anyone connects); every session shares its ONNX Runtime sessions, which are safe to run concurrently."""
    config.validate()
    if model is None:
        model = FlashModel(config.model, backend=config.backend, threads=config.threads or graph_threads(),
                           plans=config.plans)
    service = Service(config, model)
    if service.person_segmenter is None and (model.info.person_mask or model.info.align_flash):
        # Found here, not as a 500 on every offer.
        raise ConfigError(f"model {model.info.path} needs the person segmenter; segmenter "
                          f"{config.segmenter!r} gives none")
    # Offers are capped by max_offer_bytes in the handler (400, not aiohttp's 413).
    app = web.Application(client_max_size=max(config.max_offer_bytes * 2, 1024))
    app[SERVICE] = service
    app.router.add_get("/", service.index)
    app.router.add_get("/health", service.health)
    app.router.add_get("/metrics", service.metrics_route)
    app.router.add_post("/offer", service.offer)
    # The parallax model is opened on the first /matte, so the service starts (and /matte answers 503) without it.
    stills = ParallaxRoute(service)
    service.open_parallax = stills.session  # live sessions' set-cue parallax shares it
    app.router.add_post("/matte", stills.matte)
    app.on_cleanup.append(stills.close)
    app.router.add_static("/static/", config.web_dir, show_index=False)
    app.on_shutdown.append(service.close_all)
    return app
