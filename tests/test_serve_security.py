"""Issue 27's hardening of `cuematte serve`, as a user relies on it: where the token comes from (and that it never
reaches the process list or the access log), the plain-http warning, /static refusing to leave the web folder,
and no pickle anywhere in the package. Real subprocesses and real aiohttp servers on ephemeral loopback ports."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from cuematte.clients.commands.serve import (
    TOKEN_ENV,
    make_runner,
    plain_http_warning,
    redact_token,
    resolve_token,
)
from cuematte.engine.model import FlashModel, UntrainedModelWarning
from cuematte.server.app import create_app
from cuematte.server.config import ConfigError, ServerConfig

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cuematte"
SECRET = "s3cret-Tok_27"
HANG_GUARD = 60.0  # seconds; only against a hang, never a speed check
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def model(lite_model_dir: Path) -> FlashModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        return FlashModel(lite_model_dir)


@contextlib.asynccontextmanager
async def serving(config: ServerConfig, model: FlashModel) -> AsyncIterator[str]:
    """The app `cuematte serve` builds, started with serve's own runner on an ephemeral loopback port."""
    runner = make_runner(create_app(config, model=model))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


async def _raw_get(url: str, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written: HTTP clients normalise ``..`` away before sending."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(HANG_GUARD):
            raw = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    return int(status_line.split()[1]), rest


# -- where the token comes from -------------------------------------------------------------------------------
def test_token_sources_precedence_and_conflicts(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"  {SECRET}  \nsecond line is not the token\n")
    env = {TOKEN_ENV: "from-env"}

    assert resolve_token(None, None, {}) is None
    assert resolve_token(None, None, {TOKEN_ENV: "  \n"}) is None  # blank is unset, not an empty token
    assert resolve_token(None, None, env) == "from-env"
    assert resolve_token(None, token_file, env) == SECRET  # first line, stripped; the file beats the environment
    assert resolve_token("from-flag", None, env) == "from-flag"  # the flag beats both
    with pytest.raises(ConfigError, match="--token or --token-file, not both"):
        resolve_token("from-flag", token_file, env)
    with pytest.raises(ConfigError, match="--token is empty"):
        resolve_token("", None, env)

    missing, empty, directory, binary = tmp_path / "missing", tmp_path / "empty", tmp_path / "dir", tmp_path / "bin"
    empty.write_text("\n  \nnot-first\n")
    directory.mkdir()
    binary.write_bytes(b"\xff\xfe\x00token")
    for path in (missing, empty, directory, binary):
        with pytest.raises(ConfigError) as err:
            resolve_token(None, path, env)  # a broken file is an error, never a fall-back to the environment
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_cli_refuses_a_public_address_without_any_token() -> None:
    proc = subprocess.run([sys.executable, "-m", "cuematte.clients.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
                          capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=HANG_GUARD)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: binding 0.0.0.0") and "--token" in lines[0], proc.stderr
    assert proc.stdout == ""


async def _status(url: str, headers: dict[str, str] | None = None) -> int:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        await r.read()
        return r.status


async def test_cli_serves_a_public_address_with_the_token_from_the_environment(lite_model_dir: Path) -> None:
    """CUEMATTE_TOKEN alone lets `serve` bind beyond loopback; the token it got is the one enforced, it is not in
    the command line, and with -v the access log shows ***, not the token. No TLS: one warning says so."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cuematte.clients.cli", "-v", "serve", "--host", "0.0.0.0", "--port", "0",
         "--model", str(lite_model_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=_env(**{TOKEN_ENV: SECRET}))
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), HANG_GUARD)
        m = re.match(r"serving on http://0\.0\.0\.0:(\d+)/", line)
        assert m, (line, proc.poll())
        url = f"http://127.0.0.1:{m.group(1)}"  # bound on every address; spoken to on loopback only
        assert SECRET not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")

        assert await _status(f"{url}/health") == 200
        assert await _status(f"{url}/metrics") == 401
        assert await _status(f"{url}/metrics?token=wrong") == 401
        assert await _status(f"{url}/metrics?token={SECRET}") == 200
        assert await _status(f"{url}/metrics", headers={"Authorization": f"Bearer {SECRET}"}) == 200

        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(asyncio.to_thread(proc.wait), HANG_GUARD) == 0
        err = proc.stderr.read()
        assert SECRET not in err
        assert re.search(r'"GET /metrics\?token=\*\*\* HTTP/1\.1" 200', err), err
        assert "over plain http" in err and "--cert/--key" in err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- the access log -------------------------------------------------------------------------------------------
def test_redact_token_hides_every_spelling_of_the_parameter() -> None:
    assert redact_token(f"/metrics?token={SECRET}") == "/metrics?token=***"
    assert redact_token(f"/offer?a=1&token={SECRET}&b=2") == "/offer?a=1&token=***&b=2"
    assert redact_token(f"/offer?%74oken={SECRET}&TOKEN={SECRET};token") == "/offer?%74oken=***&TOKEN=***;token=***"
    assert redact_token(f"http://host:8080/?token={SECRET}#x") == "http://host:8080/?token=***#x"
    assert redact_token("/static/app.js") == "/static/app.js"
    assert redact_token("/health?tokens=1&mytoken=2") == "/health?tokens=1&mytoken=2"


async def test_access_log_never_contains_the_token(model: FlashModel, caplog: pytest.LogCaptureFixture) -> None:
    def lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "aiohttp.access"]

    caplog.set_level(logging.INFO, logger="aiohttp.access")
    async with serving(ServerConfig(segmenter="grabcut", token=SECRET), model) as url:
        assert await _status(f"{url}/metrics?token={SECRET}") == 200
        # Sent as written (a client would normalise %74 to t): aiohttp decodes the name, so this token works.
        assert (await _raw_get(url, f"/metrics?x=1&%74oken={SECRET}"))[0] == 200
        assert await _status(f"{url}/metrics", headers={"Authorization": f"Bearer {SECRET}"}) == 200
        # The demo page opened as /?token=...: every asset it loads names that URL as its Referer.
        assert await _status(f"{url}/static/app.js", headers={"Referer": f"{url}/?token={SECRET}"}) == 200
        async with asyncio.timeout(HANG_GUARD):  # each line is written just after its response
            while len(lines()) < 4:
                await asyncio.sleep(0.02)
    messages = [r.getMessage() for r in lines()]
    for record in lines():
        assert SECRET not in record.getMessage() and SECRET not in repr(vars(record)), record.getMessage()
    assert any('"GET /metrics?token=*** HTTP/1.1" 200' in m for m in messages), messages
    assert any("/metrics?x=1&%74oken=***" in m for m in messages), messages
    assert any('"GET /static/app.js HTTP/1.1" 200' in m and f'"{url}/?token=***"' in m for m in messages), messages


async def test_repeated_wrong_tokens_are_answered_429_until_the_window_passes(model: FlashModel) -> None:
    config = ServerConfig(token=SECRET, max_auth_failures=3, auth_window_s=4.0)
    right = {"Authorization": f"Bearer {SECRET}"}
    async with serving(config, model) as url, aiohttp.ClientSession() as http:
        async with http.get(url + "/metrics", headers=right) as r:
            assert r.status == 200
        for _ in range(3):
            async with http.post(url + "/offer", json={}, headers={"Authorization": "Bearer guess"}) as r:
                assert r.status == 401
        # Locked: even the right token waits, so guessing gains nothing from trying on.
        async with http.get(url + "/metrics", headers=right) as r:
            assert r.status == 429 and 1 <= int(r.headers["Retry-After"]) <= 4
            assert "too many wrong tokens" in (await r.json())["error"]
        async with http.post(url + "/offer", json={}, headers=right) as r:
            assert r.status == 429
        await asyncio.sleep(4.1)  # the window since the last failure has passed
        async with http.get(url + "/metrics", headers=right) as r:
            assert r.status == 200
            text = await r.text()
        assert 'cuematte_offers_rejected_total{reason="auth_throttled"} 1' in text  # offers only
        assert 'cuematte_offers_rejected_total{reason="unauthorized"} 3' in text


def test_auth_failures_forget_old_failures_and_old_addresses() -> None:
    from cuematte.server.auth import AuthFailures

    f = AuthFailures(limit=3, window=10.0, max_addresses=2)
    for t in (0.0, 5.0, 11.0):  # three failures, but never three within 10 s
        f.fail("a", t)
    assert f.locked_for("a", 11.0) == 0.0
    f.fail("a", 12.0)  # 5, 11, 12: three within 10 s
    assert f.locked_for("a", 12.0) == pytest.approx(10.0) and f.locked_for("a", 22.5) == 0.0
    f.fail("b", 13.0)
    f.fail("c", 14.0)  # a third address pushes out the oldest ("a")
    assert f.locked_for("a", 13.0) == 0.0


async def test_half_sent_and_idle_connections_are_closed(model: FlashModel) -> None:
    """Slowloris: a connection that never completes its request headers must not hold an fd for an hour."""
    config = ServerConfig(keepalive_timeout_s=1.0)
    async with serving(config, model) as url:
        port = int(url.rsplit(":", 1)[1])
        for first in (b"", b"POST /offer HTTP/1.1\r\nHost: 127.0.0.1\r\n"):  # nothing, half the headers
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(first)
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), HANG_GUARD) == b""  # closed by the service
            writer.close()
        async with aiohttp.ClientSession() as http, http.get(url + "/health") as r:
            assert r.status == 200  # whole requests are served as before


def test_plain_http_beyond_loopback_is_warned_about() -> None:
    for host in ("127.0.0.1", "localhost", "::1"):
        assert plain_http_warning(host, tls=False) is None
    assert plain_http_warning("0.0.0.0", tls=True) is None
    for host in ("0.0.0.0", "::", "192.0.2.7"):
        warning = plain_http_warning(host, tls=False)
        assert warning and "getUserMedia" in warning and "--cert/--key" in warning


# -- /static stays inside the web folder ----------------------------------------------------------------------
TRAVERSALS = [
    "/static/../../../pyproject.toml",
    "/static/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
    "/static/%2e%2e%2f%2e%2e%2f%2e%2e%2fpyproject.toml",
    "/static/..%2f..%2f..%2fpyproject.toml",
    "/static/..%5c..%5c..%5cpyproject.toml",
    "/static/....//....//....//pyproject.toml",
    "/static/../../server/config.py",
    "/static/%2e%2e/%2e%2e/server/config.py",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/",
]


async def test_static_refuses_paths_outside_the_web_folder(model: FlashModel) -> None:
    secrets = (b'name = "cuematte"', b"class ServerConfig", b"root:x:0:0")
    async with serving(ServerConfig(segmenter="grabcut"), model) as url:
        status, body = await _raw_get(url, "/static/app.js")
        assert status == 200 and body  # the route works: the refusals below are not a missing route
        for target in TRAVERSALS:
            status, body = await _raw_get(url, target)
            assert status in (400, 403, 404), (target, status)
            assert not any(s in body for s in secrets), target


# -- no pickle ------------------------------------------------------------------------------------------------
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _unpickling(source: str) -> list[str]:
    """Where ``source`` could load a pickle: the two calls as text (the issue's check), then as code, however
    spelled (imports of pickling modules, ``from torch import load``, ``allow_pickle`` set to anything but False,
    any name with pickle in it)."""
    found = [s for s in ("torch." + "load(", "allow_pickle=True") if s in source]
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module.split(".")[0]]
            if modules == ["torch"] and any(a.name == "load" for a in node.names):
                found.append(f"{line}: from torch import load")
        if any(m in PICKLE_MODULES for m in modules):
            found.append(f"{line}: imports {modules}")
        if isinstance(node, ast.Attribute) and node.attr == "load" and getattr(node.value, "id", "") == "torch":
            found.append(f"{line}: torch.load")
        if isinstance(node, ast.keyword) and node.arg == "allow_pickle" and not (
                isinstance(node.value, ast.Constant) and node.value.value is False):
            found.append(f"{line}: allow_pickle")
        ident = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
        if "pickle" in ident.lower():
            found.append(f"{line}: uses {ident}")
    return found


def test_the_pickle_scan_finds_every_spelling() -> None:
    for code in ("import pickle", "from joblib import load", "import torch\ntorch.load ( 'ckpt.pt' )",
                 "from torch import load", "np.load(p, allow_pickle = 1)", "df = pd.read_pickle(p)"):
        assert _unpickling(code), code
    assert not _unpickling('"""Checkpoints as safetensors (never pickle)."""\nnp.load(p, allow_pickle=False)')


def test_package_never_unpickles() -> None:
    """Loading a pickle runs whatever code it names: checkpoints are safetensors, models ONNX, caches .npy
    (np.load refuses pickled arrays by default). The word may appear in prose; never as code."""
    found = [f"{path.relative_to(ROOT)}: {hit}" for path in sorted(PACKAGE.rglob("*.py"))
             for hit in _unpickling(path.read_text(encoding="utf-8"))]
    assert len(list(PACKAGE.rglob("*.py"))) > 50  # the scan read the package, not an empty folder
    assert not found, found
