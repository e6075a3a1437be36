"""`cuematte serve`: the WebRTC matting service and its browser demo (aiohttp + aiortc)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cuematte.clients.commands import add_backend_arguments, add_temporal_argument

HELP = "serve WebRTC matting and the browser demo (localhost by default; a token is required beyond it)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (anything but loopback needs --token)")
    p.add_argument("--port", type=int, default=8080, help="port (0: any free port, printed at start)")
    p.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (or ?token=TOKEN) on /offer and /metrics")
    p.add_argument("--max-sessions", type=int, default=4, help="concurrent peers; one more gets 503")
    p.add_argument("--cert", type=Path, help="TLS certificate (PEM); browsers need HTTPS for cameras off localhost")
    p.add_argument("--key", type=Path, help="TLS private key (PEM), with --cert")
    add_backend_arguments(p)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    add_temporal_argument(p)
    p.add_argument("--max-side", type=int, default=1280, help="matte frames at most this long on their long side")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import signal
    import sys

    from aiohttp import web

    from cuematte.server.app import create_app
    from cuematte.server.config import ServerConfig

    config = ServerConfig(host=args.host, port=args.port, model=args.model, token=args.token,
                          max_sessions=args.max_sessions, cert=args.cert, key=args.key,
                          backend=args.backend, plans=args.plans, threads=args.threads,
                          max_side=args.max_side, temporal=args.temporal).validate()
    ssl_context = config.ssl_context()
    app = create_app(config)  # loads the model: a missing one is an `error:` line before anything binds

    async def serve() -> None:
        runner = web.AppRunner(app, handle_signals=False)
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
