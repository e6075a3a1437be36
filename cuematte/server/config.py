"""Everything the service is configured with, in one frozen object handed to :func:`cuematte.server.app.create_app`
(nothing is read from module globals, so tests and the benchmark can run several differently configured
services in one process)."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cuematte.engine.errors import CuematteError
from cuematte.engine.temporal import VIDEO_SMOOTHING

WEB_DIR = Path(__file__).resolve().parent.parent / "clients" / "web"
SEGMENTERS = ("mediapipe", "grabcut")


class ConfigError(CuematteError):
    """The service cannot start with these settings (printed as ``error: ...`` by the CLI)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1, an IPv4 client of a dual-stack socket
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def resolve_segmenter(name: str) -> str:
    if name not in SEGMENTERS:
        raise ConfigError(f"unknown segmenter {name!r}; choose one of {SEGMENTERS}")
    return name


def graph_threads(cores: int | None = None) -> int:
    """ONNX Runtime's intra-op threads in the service when none are asked for: one core is left to the codec
    threads that decode and encode every frame beside the graphs (all cores but one, at most 4). Measured on 2
    cores with the engine applying the guided filter (docs/service.md): one graph thread against two, 1280x720
    added latency p50 77 vs 101 ms and p95 100 vs 122 ms, 640x360 unchanged; a graph pool as wide as the
    machine waits on whichever of its threads the encoder has preempted."""
    n = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, min(4, n - 1))


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    model: Path | None = None  # None: the shipped default model
    token: str | None = None  # required (Bearer or ?token=) on /offer and /metrics when set
    max_sessions: int = 4
    cert: Path | None = None
    key: Path | None = None
    backend: str = "cpu"  # cuematte.engine.model.BACKENDS; the CLI's default is "auto"
    plans: Path | None = None  # TensorRT plans folder (None: where build-engines puts them)
    threads: int | None = None  # ONNX Runtime intra-op threads; None: graph_threads()
    segmenter: str = "mediapipe"  # person segmenter for the flash trimap; "grabcut" needs no weights
    max_side: int = 1280  # frames are matted at most this long on their long side
    temporal: float = VIDEO_SMOOTHING  # motion-aware alpha smoothing strength in [0, 1); 0 = off
    # The per-frame graph on a background thread, each frame matted with its newest output moved onto it
    # (cuematte.engine.pipelined; the CPU backend only); False: the graph in every frame's path (docs/service.md
    # has both measured).
    background_graph: bool = True
    # VP8 out at libvpx's fastest real-time speed, denoiser off (cuematte.server.encoder); False: aiortc's settings.
    fast_vp8: bool = True
    max_offer_bytes: int = 65536  # a browser offer is 3-10 kB; anything near this is not an offer
    # POST /matte (the parallax cue on two photos): each uploaded image's file size and decoded pixels, and how
    # many run at once (each takes the CPU for a while; more are answered 503, not queued).
    parallax_model: Path | None = None  # None: the shipped default parallax model, if installed
    max_image_bytes: int = 16 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_matte_jobs: int = 2
    upload_timeout_s: float = 60.0  # a /matte body (up to three images) still arriving after this is answered 408
    body_timeout_s: float = 10.0  # an offer body still arriving after this is answered 408
    # A connection is closed after this long without a complete request: idle keep-alive connections and
    # half-sent request headers alike (aiohttp's own default is an hour, so 300 half-sent requests held 300 fds).
    keepalive_timeout_s: float = 15.0
    max_message_bytes: int = 196608  # control messages (a background image as a data URL is the big one)
    max_messages_per_s: int = 20  # per peer; the page sends a few per flash, beyond this is a flood
    flash_window_s: float = 5.0  # a window never closed by flash-end is closed by the server after this
    flash_grace_s: float = 0.25  # keep capturing after flash-end: video lags the data channel by a few frames
    drift_every: int = 5  # check scene drift every N matted frames
    stats_interval_s: float = 1.0
    # Offers answered but not yet connected hold no session slot: they have their own small cap and are
    # reclaimed after connect_timeout_s (ICE on a LAN completes in about a second), so offers that never
    # connect cannot lock real clients out for long.
    max_pending: int = 2
    # Beyond loopback, one client address may hold at most this many of them, so one client cannot fill
    # max_pending for everyone. Loopback clients are not told apart: they all share 127.0.0.1.
    max_pending_per_client: int = 1
    connect_timeout_s: float = 10.0
    idle_timeout_s: float = 20.0  # a connected peer that sent no camera frame for this long is closed
    # Origins allowed to POST /offer besides the service's own ("scheme://host:port"); requests without an
    # Origin header (non-browser clients) are not browser cross-site requests and are allowed.
    allow_origins: tuple[str, ...] = ()
    # Wrong tokens: after this many from one address within auth_window_s, that address is answered 429
    # (right token or not) until the window has passed since its last failure: guessing is slowed to a crawl.
    max_auth_failures: int = 10
    auth_window_s: float = 60.0
    web_dir: Path = field(default=WEB_DIR)

    def validate(self) -> ServerConfig:
        """Raise :class:`ConfigError` for settings the service must refuse; returns self."""
        if not is_loopback(self.host) and not self.token:
            raise ConfigError(f"binding {self.host} exposes the camera service beyond this machine; "
                              "set a token with --token-file PATH, $CUEMATTE_TOKEN or --token TOKEN (clients send "
                              "'Authorization: Bearer TOKEN' or ?token=TOKEN)")
        if bool(self.cert) != bool(self.key):
            raise ConfigError("--cert and --key go together")
        for path in (self.cert, self.key):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"TLS file not found: {path}")
        if self.max_sessions < 1 or self.max_pending < 1 or self.max_pending_per_client < 1:
            raise ConfigError("--max-sessions, max_pending and max_pending_per_client must be at least 1")
        if self.max_messages_per_s < 1:
            raise ConfigError("max_messages_per_s must be at least 1")
        if self.max_image_bytes < 1024 or self.max_image_pixels < 256 * 256 or self.max_matte_jobs < 1:
            raise ConfigError("max_image_bytes must be at least 1024, max_image_pixels at least 65536 and "
                              "max_matte_jobs at least 1")
        if self.keepalive_timeout_s <= 0 or self.body_timeout_s <= 0 or self.upload_timeout_s <= 0:
            raise ConfigError("keepalive_timeout_s, body_timeout_s and upload_timeout_s must be positive")
        if self.max_auth_failures < 1 or self.auth_window_s <= 0:
            raise ConfigError("max_auth_failures must be at least 1 and auth_window_s positive")
        if self.connect_timeout_s <= 0 or self.idle_timeout_s <= 0:
            raise ConfigError("connect_timeout_s and idle_timeout_s must be positive")
        for origin in self.allow_origins:
            if not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ConfigError(f"--allow-origin {origin!r} is not an origin like https://example.com:8443")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be in 0..65535, got {self.port}")
        if self.drift_every < 1 or self.max_side < 64:
            raise ConfigError("drift_every must be >= 1 and max_side >= 64")
        resolve_segmenter(self.segmenter)
        if not 0.0 <= self.temporal < 1.0:
            raise ConfigError(f"--temporal must be in [0, 1), got {self.temporal}")
        if not (self.web_dir / "index.html").is_file():
            raise ConfigError(f"the demo page is missing: {self.web_dir / 'index.html'}")
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(str(self.cert), str(self.key))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the TLS certificate/key: {exc}") from exc
        return ctx

    @property
    def scheme(self) -> str:
        return "https" if self.cert else "http"
