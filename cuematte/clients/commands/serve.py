"""`cuematte serve`: the WebRTC matting service and its browser demo (aiohttp + aiortc)."""

from __future__ import annotations

import argparse
import functools
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

from cuematte.clients.commands import add_backend_arguments, add_graph_argument, add_temporal_argument, add_vp8_argument

if TYPE_CHECKING:
    from aiohttp.abc import AbstractAccessLogger
    from aiohttp.web import Application, AppRunner

HELP = "serve WebRTC matting and the browser demo (localhost by default; a token is required beyond it)"
TOKEN_ENV = "CUEMATTE_TOKEN"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (anything but loopback needs a token)")
    p.add_argument("--port", type=int, default=8080, help="port (0: any free port, printed at start)")
    p.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    p.add_argument("--parallax-model", type=Path,
                   help="parallax model folder for POST /matte (default: the shipped parallax-lite, if installed)")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (or ?token=TOKEN) on /offer and /metrics; "
                                   f"other users see it in `ps`: prefer --token-file or ${TOKEN_ENV}")
    p.add_argument("--token-file", type=Path, metavar="PATH",
                   help=f"read the token from the first line of PATH (overrides ${TOKEN_ENV})")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="also let pages from ORIGIN (https://host:port) open sessions; repeatable")
    p.add_argument("--max-sessions", type=int, default=4, help="concurrent peers; one more gets 503")
    p.add_argument("--cert", type=Path, help="TLS certificate (PEM); browsers need HTTPS for cameras off localhost")
    p.add_argument("--key", type=Path, help="TLS private key (PEM), with --cert")
    add_backend_arguments(p)
    p.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime intra-op threads (default: all cores but one, at most 4: one left to the codec)")
    add_temporal_argument(p)
    add_graph_argument(p)
    add_vp8_argument(p)
    p.add_argument("--max-side", type=int, default=1280, help="matte frames at most this long on their long side")


def resolve_token(token: str | None, token_file: Path | None, environ: Mapping[str, str]) -> str | None:
    """The service token: ``--token``, else the first line of ``--token-file``, else ``$CUEMATTE_TOKEN``
    (None when none is set). The file and the environment keep the token out of the process list."""
    from cuematte.server.config import ConfigError

    if token is not None and token_file is not None:
        raise ConfigError("give --token or --token-file, not both")
    if token is not None:
        if not token.strip():  # `--token "$UNSET"`: better refused than serving without the token meant
            raise ConfigError("--token is empty")
        return token
    if token_file is not None:
        try:
            lines = token_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"cannot read the token file {token_file}: {reason}") from None
        first = lines[0].strip() if lines else ""
        if not first:
            raise ConfigError(f"the token file {token_file} has no token on its first line")
        return first
    return environ.get(TOKEN_ENV, "").strip() or None


def plain_http_warning(host: str, tls: bool) -> str | None:
    """What to tell whoever serves beyond loopback without TLS, or None."""
    from cuematte.server.config import is_loopback

    if tls or is_loopback(host):
        return None
    return (f"serving {host} over plain http: browsers on other machines give the page no camera (getUserMedia "
            "needs https) and the token crosses the network in clear; serve with --cert/--key")


_QUERY_SEPARATORS = re.compile(r"([&;])")


def redact_token(target: str) -> str:
    """``target`` (a request path with its query, or a whole URL such as a Referer) with the value of every
    ``token`` query parameter replaced by ``***``. Names are compared decoded, as aiohttp reads them, so
    ``?%74oken=...`` is hidden too."""
    path, question, query = target.partition("?")
    if not question:
        return target
    query, hash_, fragment = query.partition("#")
    parts = _QUERY_SEPARATORS.split(query)
    for i in range(0, len(parts), 2):  # odd indices are the separators
        name = parts[i].partition("=")[0]
        if unquote_plus(name).strip().lower() == "token":
            parts[i] = f"{name}=***"
    return f"{path}?{''.join(parts)}{hash_}{fragment}"


@functools.cache
def access_logger_class() -> type[AbstractAccessLogger]:
    """aiohttp's access logger writes the request line as sent (``-v``), token and all; this one hides it.
    Built on first use: the CLI imports this module without the server extra installed."""
    from aiohttp.abc import AbstractAccessLogger
    from aiohttp.web_request import BaseRequest
    from aiohttp.web_response import StreamResponse

    class RedactingAccessLogger(AbstractAccessLogger):
        """aiohttp's default fields, with ``?token=`` values in the request target and the Referer as ``***``
        (the demo page's own URL carries ``?token=``, so every asset it loads sends it as the Referer)."""

        def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
            self.logger.info('%s "%s %s HTTP/%d.%d" %d %d %.1f ms "%s" "%s"', request.remote or "-",
                             request.method, redact_token(request.raw_path), request.version.major,
                             request.version.minor, response.status, response.body_length, time * 1000,
                             redact_token(request.headers.get("Referer", "-")),
                             request.headers.get("User-Agent", "-"))

        @property
        def enabled(self) -> bool:
            return self.logger.isEnabledFor(logging.INFO)

    return RedactingAccessLogger


def make_runner(app: Application) -> AppRunner:
    """The runner `serve` starts ``app`` with: signals are ours (Ctrl-C closes every peer), tokens stay out of
    the access log, and a connection without a complete request is closed after the service's
    ``keepalive_timeout_s``."""
    from aiohttp import web

    from cuematte.server.app import SERVICE

    return web.AppRunner(app, handle_signals=False, access_log_class=access_logger_class(),
                         keepalive_timeout=app[SERVICE].config.keepalive_timeout_s)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import os
    import signal
    import sys

    from aiohttp import web

    from cuematte.engine.allocator import freeze_startup_heap, keep_freed_memory
    from cuematte.server.app import create_app
    from cuematte.server.config import ServerConfig

    keep_freed_memory()  # frame-sized buffers reused from frame to frame (engine.allocator)
    token = resolve_token(args.token, args.token_file, os.environ)
    config = ServerConfig(host=args.host, port=args.port, model=args.model, parallax_model=args.parallax_model,
                          token=token,
                          max_sessions=args.max_sessions, cert=args.cert, key=args.key,
                          backend=args.backend, plans=args.plans, threads=args.threads,
                          max_side=args.max_side, temporal=args.temporal,
                          background_graph=not args.graph_in_path, fast_vp8=not args.aiortc_vp8,
                          allow_origins=tuple(args.allow_origin)).validate()
    ssl_context = config.ssl_context()
    app = create_app(config)  # loads the model: a missing one is an `error:` line before anything binds
    freeze_startup_heap()  # the collector's full passes walk only what sessions add (engine.allocator)
    warning = plain_http_warning(config.host, ssl_context is not None)
    if warning:
        log.warning(warning)

    async def serve() -> None:
        runner = make_runner(app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_context)
            await site.start()
            host, port = runner.addresses[0][:2]
            shown = f"[{host}]" if ":" in host else host
            print(f"serving on {config.scheme}://{shown}:{port}/ (Ctrl-C to stop)", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            print("stopping: closing all sessions", file=sys.stderr, flush=True)
        finally:
            await runner.cleanup()  # on_shutdown closes every peer connection

    try:
        asyncio.run(serve())
    except OSError as exc:  # port taken, address not on this machine
        from cuematte.engine.errors import CuematteError

        raise CuematteError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    return 0
