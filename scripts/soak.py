"""Soak test for `cuematte serve`: many sessions in a row against a real service process, watching for leaks.

    make soak                                   # = .venv/bin/python scripts/soak.py
    .venv/bin/python scripts/soak.py --cycles 20 --out runs/soak-dev
    .venv/bin/python scripts/soak.py --cycles 0 --long 30    # one 30-minute matting session only

What it does:

1. starts `cuematte serve --port 0 --max-sessions 4` as a subprocess (shipped model, MediaPipe segmenter);
2. 3 warm-up cycles, then ``--cycles`` (100) connect / negotiate / stream / flash / close cycles with aiortc
   clients sending a synthetic camera (cuematte.clients.scenes.make_pair). Every 5th client is killed instead
   of closed, alternately a client process SIGKILLed while streaming (the service must notice on its own: idle
   timeout or ICE failure) and an offer that is answered and never connected (the connect deadline); the
   script then times how long /health takes to show its slot free again;
3. samples the service's open fds, threads and RSS (from /proc) every second and after every cycle, idles 30 s
   after the last cycle, and writes soak.csv, soak.png and the service's stderr (service.log) to ``--out``;
4. exits 1 when a target is missed: fds and threads back to the post-warm-up baseline +-2, RSS at most 20 MB
   above it, the cuematte_sessions gauge at 0, every killed client's slot reclaimed within the service's
   connect_timeout_s (ghost offer) or idle_timeout_s (killed peer) + 5 s, and no cycle failed;
5. with ``--long MINUTES``, one session flashed into matting streams at 15 fps for that long: RSS every 10 s,
   every stats message's latency_ms (once a second); mean RSS and p95 latency of the last 5 minutes against
   the first 5 (a third of the run when shorter), written to long.csv / long.png. Targets: RSS growth <= 20 MB,
   p95 drift <= 10 %.

To look for where memory or threads go: ``--no-flash`` (pass-through sessions only), ``--max-sessions 1``,
``--env MALLOC_ARENA_MAX=2`` (the service's environment), ``--gdb`` (threads by library at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import fractions
import json
import os
import re
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from cuematte.clients.scenes import make_pair
from cuematte.server.config import ServerConfig

FPS = 15
WARMUP_CYCLES = 3
KILL_EVERY = 5
IDLE_AFTER_S = 30.0
FD_THREAD_TOLERANCE = 2
RSS_LIMIT_MB = 20.0
LATENCY_DRIFT_LIMIT = 0.10
RECLAIM_SLACK_S = 5.0
LEAK_SLOPE_MB = 0.05  # MB per cycle over the second half: 5 MB per 100 sessions reads as still climbing
STEP_TIMEOUT_S = 30.0  # a hang guard per client step; CPU-starved flashes take a few seconds, not thirty
DEFAULTS = ServerConfig()  # connect_timeout_s / idle_timeout_s are not CLI flags: the service runs these


# -- the service process ------------------------------------------------------------------------------------
@dataclass
class Sample:
    t: float  # seconds since the service printed its URL
    phase: str  # cold, warmup, cycles, idle, long
    cycle: int
    point: str  # tick (every second), cycle (after a cycle, sessions reclaimed), mark (baseline, end...)
    fds: int
    threads: int
    rss_mb: float
    sessions: int = -1
    pending: int = -1


def thread_libraries(pid: int) -> dict[str, int]:
    """Threads of ``pid`` by the first library in their stack that is not libc/libstdc++ ("python" for Python
    threads), read with gdb: C threads have no names in /proc. Empty without gdb or ptrace rights."""
    import shutil
    import subprocess

    if not shutil.which("gdb"):
        return {}
    try:
        out = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt 40"],
                             capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    tally: dict[str, int] = {}
    for block in re.split(r"\n(?=Thread \d+ )", out)[1:]:
        libs = [Path(m).name for m in re.findall(r" from (\S+)", block)
                if not re.search(r"/(libc|libstdc\+\+|libpthread|libgcc_s)[.-]", m)]
        label = libs[0] if libs else ("python" if "PyEval" in block or "pythread" in block else "?")
        label = re.sub(r"[-.](so|abi3|cpython).*$", "", label)
        tally[label] = tally.get(label, 0) + 1
    return dict(sorted(tally.items(), key=lambda kv: -kv[1]))


def proc_stats(pid: int) -> tuple[int, int, float]:
    """(open fds, threads, RSS in MB) of ``pid`` from /proc."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads, rss_kb = 0, 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return fds, threads, rss_kb / 1024.0


class Service:
    """`cuematte serve` in a subprocess, its /health and /metrics, and the samples taken of it."""

    def __init__(self, exe: Path, out: Path, max_sessions: int, env: dict[str, str]) -> None:
        self.exe = exe
        self.env = env
        self.out = out
        self.max_sessions = max_sessions
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self.t0 = 0.0
        self.samples: list[Sample] = []
        self.phase = "cold"
        self.cycle = 0
        # Fresh connections: pooled keep-alive ones would be server-side fds counted against the baseline.
        self.http: aiohttp.ClientSession | None = None
        self._log: Any = None

    async def start(self) -> None:
        self._log = open(self.out / "service.log", "wb")  # noqa: SIM115 - lives as long as the service
        self.proc = await asyncio.create_subprocess_exec(
            str(self.exe), "serve", "--port", "0", "--max-sessions", str(self.max_sessions),
            stdout=asyncio.subprocess.PIPE, stderr=self._log, env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 180)).decode()
        m = re.match(r"serving on (http://127\.0\.0\.1:\d+)/", line)
        if not m:
            raise RuntimeError(f"the service did not start: {line!r} (see {self.out / 'service.log'})")
        self.url = m.group(1)
        self.t0 = time.monotonic()
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                          timeout=aiohttp.ClientTimeout(total=15))

    async def stop(self) -> int | None:
        if self.http is not None:
            await self.http.close()
        rc = None
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                rc = await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._log is not None:
            self._log.close()
        return rc

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def health(self) -> dict[str, Any]:
        assert self.http is not None
        async with self.http.get(self.url + "/health") as r:
            return dict(await r.json())

    async def metrics(self) -> dict[str, float]:
        """Every unlabelled or labelled sample of /metrics, keyed by its series text."""
        assert self.http is not None
        async with self.http.get(self.url + "/metrics") as r:
            text = await r.text()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    async def sample(self, point: str) -> Sample:
        fds, threads, rss = proc_stats(self.pid)
        try:
            h = await self.health()
            sessions, pending = int(h["sessions"]), int(h["pending"])
        except (aiohttp.ClientError, TimeoutError):
            sessions = pending = -1
        s = Sample(round(self.now(), 2), self.phase, self.cycle, point, fds, threads, round(rss, 2), sessions, pending)
        self.samples.append(s)
        return s

    async def ticker(self, every: float = 1.0) -> None:
        while True:
            await self.sample("tick")
            await asyncio.sleep(every)

    async def settle(self, timeout: float) -> float | None:
        """Seconds until /health shows no session and no pending offer, or None after ``timeout``."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            h = await self.health()
            if h["sessions"] == 0 and h["pending"] == 0:
                return time.monotonic() - t0
            await asyncio.sleep(0.1)
        return None


# -- the client ---------------------------------------------------------------------------------------------
def scene_frames(h: int, w: int) -> dict[str, np.ndarray]:
    flash, noflash, _ = make_pair(h, w, seed=1)
    return {"noflash": noflash, "flash": flash}


class Camera(MediaStreamTrack):
    """A camera at FPS showing ``frames[self.scene]``, paced by the clock (a 30-minute run must stay at 15 fps)."""

    kind = "video"

    def __init__(self, frames: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.frames = frames
        self.scene = "noflash"
        self.n = 0
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        now = time.monotonic()
        if self._start is None:
            self._start = now
        await asyncio.sleep(max(0.0, self._start + self.n / FPS - now))
        frame = VideoFrame.from_ndarray(self.frames[self.scene], format="rgb24")
        frame.pts, frame.time_base = self.n * (90000 // FPS), fractions.Fraction(1, 90000)
        self.n += 1
        return frame


class Client:
    """An aiortc peer speaking the demo page's protocol: camera track, "control" channel, processed video back."""

    def __init__(self, frames: dict[str, np.ndarray]) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.camera = Camera(frames)
        self.pc.addTrack(self.camera)
        self.channel = self.pc.createDataChannel("control")
        self.states: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.stats: list[tuple[float, dict[str, Any]]] = []  # (monotonic, message)
        self.received = 0
        self.retries = 0  # 503s before an offer was taken
        self.opened = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.channel.on("open", self.opened.set)
        self.channel.on("message", self._on_message)
        self.pc.on("track", lambda t: self._tasks.append(asyncio.ensure_future(self._consume(t))))

    def _on_message(self, raw: str | bytes) -> None:
        msg = json.loads(raw)
        if msg.get("type") == "state":
            self.states.put_nowait(msg)
        elif msg.get("type") == "stats":
            self.stats.append((time.monotonic(), msg))

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            self.received += 1

    async def offer(self, http: aiohttp.ClientSession, url: str, patience: float = STEP_TIMEOUT_S) -> dict[str, Any]:
        """POST the offer; 503 (slots or pending offers full) is retried until ``patience`` runs out."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        deadline = time.monotonic() + patience
        while True:
            async with http.post(url + "/offer", json=body) as r:
                answer = await r.json()
                if r.status == 200:
                    return dict(answer)
                if r.status != 503 or time.monotonic() > deadline:
                    raise RuntimeError(f"offer answered {r.status}: {answer}")
            self.retries += 1
            await asyncio.sleep(0.5)

    async def connect(self, http: aiohttp.ClientSession, url: str) -> None:
        answer = await self.offer(http, url)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await asyncio.wait_for(self.opened.wait(), STEP_TIMEOUT_S)

    async def frames_back(self, count: int) -> None:
        target = self.received + count
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while self.received < target:
                await asyncio.sleep(0.02)

    async def state(self, wanted: str) -> dict[str, Any]:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while True:
                msg = await self.states.get()
                if msg["state"] == wanted:
                    return msg
                if msg["state"] == "error":
                    raise RuntimeError(f"the service answered error: {msg['detail']}")

    async def flash(self) -> None:
        """What the page does: flash-begin, half a second of a brighter frame, flash-end; then wait for matting."""
        self.channel.send(json.dumps({"type": "flash-begin"}))
        self.camera.scene = "flash"
        await asyncio.sleep(0.5)
        self.camera.scene = "noflash"
        self.channel.send(json.dumps({"type": "flash-end"}))
        await self.state("matting")

    async def session(self, http: aiohttp.ClientSession, url: str, flash: bool) -> None:
        """Connect, a few frames back, optionally flash into matting and a few matted frames back."""
        await self.connect(http, url)
        await self.frames_back(5)
        if flash:
            await self.flash()
            await self.frames_back(5)

    async def close(self) -> None:
        await self.pc.close()
        for t in self._tasks:
            t.cancel()


async def child_main(url: str, h: int, w: int, flash: bool) -> None:
    """A client in its own process: streams until the parent SIGKILLs it (no close, no DTLS/SCTP goodbye)."""
    frames = scene_frames(h, w)
    async with aiohttp.ClientSession() as http:
        client = Client(frames)
        try:
            await client.session(http, url, flash)
        except Exception as exc:
            print(f"error: {exc!r}", flush=True)
            raise SystemExit(1) from None
        print("ready", flush=True)
        await asyncio.Event().wait()


# -- the soak -----------------------------------------------------------------------------------------------
@dataclass
class Killed:
    cycle: int
    kind: str  # "sigkill" (a streaming client process killed) or "ghost" (an answered offer never connected)
    limit_s: float
    reclaim_s: float | None = None
    how: str = ""

    @property
    def ok(self) -> bool:
        return self.reclaim_s is not None and self.reclaim_s <= self.limit_s


@dataclass
class Soak:
    service: Service
    args: argparse.Namespace
    frames: dict[str, np.ndarray]
    killed: list[Killed] = field(default_factory=list)
    close_reclaim_s: list[float] = field(default_factory=list)  # normal closes, for comparison
    retries: int = 0
    errors: list[str] = field(default_factory=list)
    cycle_time_s: list[float] = field(default_factory=list)

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self.service.http is not None
        return self.service.http

    async def normal(self) -> None:
        client = Client(self.frames)
        try:
            await client.session(self.http, self.service.url, not self.args.no_flash)
        finally:
            self.retries += client.retries
            await client.close()
        took = await self.service.settle(STEP_TIMEOUT_S)
        if took is None:
            raise RuntimeError("a closed client's session was still open after 30 s")
        self.close_reclaim_s.append(took)

    async def ghost(self, k: Killed) -> None:
        client = Client(self.frames)
        try:
            await client.offer(self.http, self.service.url)
            t_kill = time.monotonic()  # the service starts its connect deadline as it answers
        finally:
            self.retries += client.retries
            await client.close()  # never had a remote description: closing sends the service nothing
        await self._reclaimed(k, t_kill)

    async def sigkill(self, k: Killed) -> None:
        a = self.args
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", self.service.url,
               "--size", f"{a.size[0]}x{a.size[1]}", *(["--no-flash"] if a.no_flash else [])]
        with open(self.service.out / "children.log", "ab") as log:
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=log)
        assert proc.stdout is not None
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), 90)).decode().strip()
        finally:
            proc.kill()  # SIGKILL
            await proc.wait()
        t_kill = time.monotonic()
        if line != "ready":
            raise RuntimeError(f"the child client failed: {line or 'no output'}")
        await self._reclaimed(k, t_kill)

    async def _reclaimed(self, k: Killed, t_kill: float) -> None:
        idle_before = await self._idle_closes()
        took = await self.service.settle(k.limit_s + 30)
        k.reclaim_s = None if took is None else round(time.monotonic() - t_kill, 2)
        if k.kind == "ghost":
            k.how = "connect deadline"
        elif await self._idle_closes() > idle_before:
            k.how = "idle timeout"
        else:
            k.how = "connection failed/closed (ICE consent or DTLS)"

    async def _idle_closes(self) -> float:
        return (await self.service.metrics()).get('cuematte_offers_rejected_total{reason="idle"}', 0.0)

    async def cycle(self, n: int) -> None:
        self.service.cycle = n
        t0 = time.monotonic()
        try:
            if n > 0 and n % KILL_EVERY == 0:
                kind = "sigkill" if n % (2 * KILL_EVERY) else "ghost"
                limit = (DEFAULTS.idle_timeout_s if kind == "sigkill" else DEFAULTS.connect_timeout_s) + RECLAIM_SLACK_S
                k = Killed(n, kind, limit)
                self.killed.append(k)
                await (self.sigkill(k) if kind == "sigkill" else self.ghost(k))
            else:
                await self.normal()
        except Exception as exc:
            self.errors.append(f"cycle {n}: {exc!r}")
            print(f"  cycle {n} failed: {exc!r}", flush=True)
            await self.service.settle(max(DEFAULTS.idle_timeout_s, DEFAULTS.connect_timeout_s) + 10)
        self.cycle_time_s.append(time.monotonic() - t0)
        await self.service.sample("cycle")

    async def run_cycles(self) -> tuple[Sample, Sample, Sample]:
        """Warm-up, the cycles, the idle wait. Returns the (cold, baseline, end) samples."""
        svc = self.service
        cold = await svc.sample("mark")
        svc.phase = "warmup"
        for i in range(WARMUP_CYCLES):
            await self.cycle(-(WARMUP_CYCLES - i))
        await asyncio.sleep(2)  # let the last session's threads wind down before the baseline
        base = await svc.sample("baseline")
        svc.phase = "cycles"
        for n in range(1, self.args.cycles + 1):
            await self.cycle(n)
            if n % 10 == 0:
                s = svc.samples[-1]
                print(f"  cycle {n:3d}: fds {s.fds} threads {s.threads} RSS {s.rss_mb:.1f} MB", flush=True)
        svc.phase = "idle"
        svc.cycle = self.args.cycles
        await asyncio.sleep(self.args.idle)
        end = await svc.sample("end")
        return cold, base, end


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope (0 with fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    return float(np.polyfit(np.asarray(xs), np.asarray(ys), 1)[0])


def report_cycles(soak: Soak, cold: Sample, base: Sample, end: Sample, gauge: float) -> list[tuple[str, bool]]:
    """Print the cycle summary; the targets with whether each was met."""
    n = soak.args.cycles
    ends = [s for s in soak.service.samples if s.point == "cycle" and s.phase == "cycles"]
    half = n // 2
    first = [s for s in ends if s.cycle <= half]
    second = [s for s in ends if s.cycle >= half]
    rss_half = first[-1].rss_mb if first else base.rss_mb
    slope1 = slope([s.cycle for s in first], [s.rss_mb for s in first])
    slope2 = slope([s.cycle for s in second], [s.rss_mb for s in second])
    peak = max((s.rss_mb for s in soak.service.samples), default=0.0)
    growth = end.rss_mb - base.rss_mb
    print("\n== soak summary ==")
    print(f"cycles: {n} after {WARMUP_CYCLES} warm-up ({sum(1 for k in soak.killed if k.cycle > 0)} killed), "
          f"{sum(soak.cycle_time_s):.0f} s; 503 retries {soak.retries}; failed cycles {len(soak.errors)}")
    for e in soak.errors:
        print(f"  {e}")
    print(f"baseline = after the {WARMUP_CYCLES} warm-up cycles with no session open (t={base.t:.0f} s); "
          f"end = after {soak.args.idle:g} s idle (t={end.t:.0f} s)")
    print(f"{'':8}{'cold':>10}{'baseline':>10}{'end':>10}{'end-base':>10}")
    print(f"{'fds':8}{cold.fds:>10}{base.fds:>10}{end.fds:>10}{end.fds - base.fds:>+10}")
    print(f"{'threads':8}{cold.threads:>10}{base.threads:>10}{end.threads:>10}{end.threads - base.threads:>+10}")
    print(f"{'RSS MB':8}{cold.rss_mb:>10.1f}{base.rss_mb:>10.1f}{end.rss_mb:>10.1f}{growth:>+10.1f}"
          f"   (peak {peak:.1f})")
    print(f"RSS after cycles: first half (1-{half}) {rss_half - base.rss_mb:+.1f} MB, {slope1:+.3f} MB/cycle; "
          f"second half ({half}-{n}) {(ends[-1].rss_mb if ends else base.rss_mb) - rss_half:+.1f} MB, "
          f"{slope2:+.3f} MB/cycle -> {'still climbing' if slope2 > LEAK_SLOPE_MB else 'plateau'} "
          f"(climbing: > {LEAK_SLOPE_MB} MB/cycle)")
    if soak.close_reclaim_s:
        print(f"closed clients: slot free {statistics.median(soak.close_reclaim_s):.2f} s after close (median), "
              f"max {max(soak.close_reclaim_s):.2f} s")
    print("killed clients (slot reclaimed after the kill / the unanswered answer):")
    for k in soak.killed:
        took = f"{k.reclaim_s:6.2f} s" if k.reclaim_s is not None else "  never"
        print(f"  cycle {k.cycle:4d} {k.kind:8} {took} (limit {k.limit_s:.0f} s) by {k.how}"
              f"{'' if k.ok else '  MISSED'}")
    idle_threads = [s.threads for s in ends]
    if idle_threads:
        print(f"threads after each cycle (no session open): min {min(idle_threads)}, max {max(idle_threads)}")
    print(f"cuematte_sessions gauge at the end: {gauge:g}")
    tol = FD_THREAD_TOLERANCE
    return [
        (f"fds back to baseline +-{tol} ({base.fds} -> {end.fds})", abs(end.fds - base.fds) <= tol),
        (f"threads back to baseline +-{tol} ({base.threads} -> {end.threads})",
         abs(end.threads - base.threads) <= tol),
        (f"RSS growth <= {RSS_LIMIT_MB:g} MB over the post-warm-up baseline ({growth:+.1f} MB)",
         growth <= RSS_LIMIT_MB),
        (f"cuematte_sessions gauge 0 ({gauge:g})", gauge == 0),
        (f"every killed client's slot reclaimed in time ({sum(k.ok for k in soak.killed)}/{len(soak.killed)})",
         all(k.ok for k in soak.killed)),
        (f"no failed cycle ({len(soak.errors)})", not soak.errors),
    ]


def plot_cycles(samples: list[Sample], base: Sample, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    ticks = [s for s in samples if s.point == "tick"]
    ends = [s for s in samples if s.point == "cycle"]
    tol = FD_THREAD_TOLERANCE
    for ax, attr, label, lo, hi in (
            (axes[0], "fds", "open fds", base.fds - tol, base.fds + tol),
            (axes[1], "threads", "threads", base.threads - tol, base.threads + tol),
            (axes[2], "rss_mb", "RSS (MB)", None, base.rss_mb + RSS_LIMIT_MB)):
        ax.plot([s.t for s in ticks], [getattr(s, attr) for s in ticks], color="0.6", lw=0.8, label="every second")
        ax.plot([s.t for s in ends], [getattr(s, attr) for s in ends], ".", ms=4, label="after each cycle")
        ax.axhline(getattr(base, attr), color="g", ls="--", lw=0.8, label="baseline (after warm-up)")
        for y in (lo, hi):
            if y is not None:
                ax.axhline(y, color="r", ls=":", lw=0.8)
        ax.set_ylabel(label)
        for phase, color in (("warmup", "y"), ("idle", "c")):
            ts = [s.t for s in samples if s.phase == phase]
            if ts:
                ax.axvspan(min(ts), max(ts), color=color, alpha=0.15)
    axes[0].legend(loc="upper left", fontsize=7)
    axes[2].set_xlabel("seconds since the service started (yellow: warm-up, cyan: idle)")
    top = axes[0].secondary_xaxis("top")
    marks = [s for s in ends if s.cycle > 0 and s.cycle % 10 == 0]
    top.set_xticks([s.t for s in marks], [str(s.cycle) for s in marks])
    top.set_xlabel("cycle")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


# -- the long session ---------------------------------------------------------------------------------------
def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95)) if values else float("nan")


async def run_long(svc: Service, frames: dict[str, np.ndarray], minutes: float, out: Path) -> list[tuple[str, bool]]:
    svc.phase = "long"
    assert svc.http is not None
    client = Client(frames)
    rss: list[tuple[float, Sample]] = []
    try:
        await client.session(svc.http, svc.url, flash=True)
        t0 = time.monotonic()
        end = t0 + minutes * 60
        while True:
            rss.append((time.monotonic() - t0, await svc.sample("long")))
            if time.monotonic() >= end:
                break
            await asyncio.sleep(min(10.0, end - time.monotonic()))
        stats = [(t - t0, m) for t, m in client.stats if t >= t0]
    finally:
        await client.close()
    window = min(300.0, minutes * 60 / 3)  # 5 minutes, or a third of a shorter run
    span = minutes * 60
    lat = [(t, float(m["latency_ms"])) for t, m in stats if m.get("latency_ms") is not None]
    lat_first = [v for t, v in lat if t <= window]
    lat_last = [v for t, v in lat if t >= span - window]
    rss_first = [s.rss_mb for t, s in rss if t <= window]
    rss_last = [s.rss_mb for t, s in rss if t >= span - window]
    # Window means, not first and last sample: the first seconds of matting still allocate (arenas, buffers).
    growth = statistics.mean(rss_last) - statistics.mean(rss_first)
    p_first, p_last = p95(lat_first), p95(lat_last)
    drift = (p_last - p_first) / p_first if p_first else float("nan")
    states = {m["state"] for _, m in stats}
    fps = [float(m["fps"]) for _, m in stats]
    # Each stats message's stage times (the last matted frame's, ms) as their own columns: when the latency
    # drifts, the stage that grew shows where.
    stage_names = sorted({k for _, m in stats for k in (m.get("stages") or {})})
    no_stages = dict.fromkeys(stage_names, "")
    write_csv(out / "long.csv", [{"t_s": round(t, 1), "kind": "rss", "rss_mb": s.rss_mb, "fds": s.fds,
                                  "threads": s.threads, "latency_ms": "", "fps": "", "ms": ""} | no_stages
                                 for t, s in rss]
              + [{"t_s": round(t, 1), "kind": "stats", "rss_mb": "", "fds": "", "threads": "",
                  "latency_ms": m.get("latency_ms"), "fps": m.get("fps"), "ms": m.get("ms")}
                 | {k: (m.get("stages") or {}).get(k, "") for k in stage_names} for t, m in stats])
    plot_long(rss, lat, window, span, out / "long.png")
    print(f"\n== long session: {minutes:g} min at {FPS} fps, matting ==")
    print(f"frames back {client.received}; stats states {sorted(states)}; fps median "
          f"{statistics.median(fps) if fps else float('nan'):.1f}; last stats: dropped "
          f"{stats[-1][1].get('dropped') if stats else '?'} of {stats[-1][1].get('received') if stats else '?'}")
    print(f"windows: the first and the last {window / 60:.3g} min")
    print(f"RSS MB: window means {statistics.mean(rss_first):.1f} -> {statistics.mean(rss_last):.1f} "
          f"({growth:+.1f}); first sample {rss[0][1].rss_mb:.1f}, last {rss[-1][1].rss_mb:.1f}; "
          f"fds {rss[0][1].fds} -> {rss[-1][1].fds}, threads {rss[0][1].threads} -> {rss[-1][1].threads}")
    print(f"latency_ms p95 (every stats message, {len(lat_first)} / {len(lat_last)} of them): "
          f"{p_first:.1f} -> {p_last:.1f} ({drift:+.1%}); median {statistics.median(lat_first):.1f} -> "
          f"{statistics.median(lat_last):.1f}")
    for name in ["ms", *stage_names]:  # medians, first vs last window: which stage moved
        def values(lo: float, hi: float, name: str = name) -> list[float]:
            return [float(v) for t, m in stats if lo <= t <= hi
                    for v in [m.get(name) if name == "ms" else (m.get("stages") or {}).get(name)] if v is not None]

        first, last = values(0, window), values(span - window, span)
        if first and last:
            print(f"  {name:>10}: median {statistics.median(first):7.2f} -> {statistics.median(last):7.2f} ms")
    print(f"plot: {out / 'long.png'}")
    return [(f"long: RSS growth <= {RSS_LIMIT_MB:g} MB, last vs first window ({growth:+.1f} MB)",
             growth <= RSS_LIMIT_MB),
            (f"long: p95 latency drift <= {LATENCY_DRIFT_LIMIT:.0%} ({drift:+.1%})", drift <= LATENCY_DRIFT_LIMIT),
            ("long: matting throughout", states == {"matting"})]


def plot_long(rss: list[tuple[float, Sample]], lat: list[tuple[float, float]], window: float, span: float,
              path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    a.plot([t / 60 for t, _ in rss], [s.rss_mb for _, s in rss], ".-")
    a.set_ylabel("RSS (MB)")
    b.plot([t / 60 for t, _ in lat], [v for _, v in lat], lw=0.8)
    b.set_ylabel("stats latency_ms")
    b.set_xlabel("minutes streaming (shaded: the compared windows)")
    for ax in (a, b):
        ax.axvspan(0, window / 60, color="y", alpha=0.15)
        ax.axvspan((span - window) / 60, span / 60, color="y", alpha=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main ---------------------------------------------------------------------------------------------------
def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def build_parser() -> argparse.ArgumentParser:
    here = Path(sys.executable).parent / "cuematte"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--cycles", type=int, default=100, help="connect/close cycles after the warm-up (0: none)")
    p.add_argument("--long", type=float, default=0.0, metavar="MINUTES",
                   help="then one matting session streaming for MINUTES (the issue asks for 30)")
    p.add_argument("--idle", type=float, default=IDLE_AFTER_S, help="seconds to idle after the last cycle")
    p.add_argument("--out", type=Path, default=Path("runs/soak"), help="folder for the CSV, PNG and logs")
    p.add_argument("--size", type=parse_size, default=(640, 360), help="camera frame size WIDTHxHEIGHT")
    p.add_argument("--max-sessions", type=int, default=4)
    p.add_argument("--no-flash", action="store_true", help="clients never flash (pass-through sessions only)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the service (e.g. MALLOC_ARENA_MAX=2 to compare); repeatable")
    p.add_argument("--gdb", action="store_true",
                   help="at the end, attach gdb to tell the service's threads apart by library")
    p.add_argument("--cuematte", type=Path, default=here if here.exists() else Path(".venv/bin/cuematte"),
                   help="the cuematte executable to serve with")
    p.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)  # internal: a client process to SIGKILL
    return p


async def amain(args: argparse.Namespace) -> int:
    w, h = args.size
    frames = scene_frames(h, w)
    args.out.mkdir(parents=True, exist_ok=True)
    svc = Service(args.cuematte, args.out, args.max_sessions, dict(kv.split("=", 1) for kv in args.env))
    await svc.start()
    print(f"service pid {svc.pid} at {svc.url}; connect_timeout_s {DEFAULTS.connect_timeout_s:g}, "
          f"idle_timeout_s {DEFAULTS.idle_timeout_s:g}; frames {w}x{h} at {FPS} fps; "
          f"flash {'off' if args.no_flash else 'on'}; max sessions {args.max_sessions}"
          f"{'; env ' + ' '.join(args.env) if args.env else ''}", flush=True)
    ticker = asyncio.ensure_future(svc.ticker())
    targets: list[tuple[str, bool]] = []
    try:
        if args.cycles > 0:
            soak = Soak(svc, args, frames)
            cold, base, end = await soak.run_cycles()
            gauge = (await svc.metrics()).get("cuematte_sessions", float("nan"))
            targets += report_cycles(soak, cold, base, end, gauge)
            if args.gdb:  # after the end sample: attaching stops the service for a moment
                libs = await asyncio.to_thread(thread_libraries, svc.pid)
                print(f"service threads by library at the end (gdb): {libs or 'gdb unavailable'}")
            write_csv(args.out / "soak.csv", [asdict(s) for s in svc.samples])
            plot_cycles(svc.samples, base, args.out / "soak.png")
            print(f"csv: {args.out / 'soak.csv'}  plot: {args.out / 'soak.png'}")
        if args.long > 0:
            targets += await run_long(svc, frames, args.long, args.out)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        rc = await svc.stop()
    print(f"service exit status {rc} after SIGINT")
    print("\n== targets ==")
    for text, ok in targets:
        print(f"  {'met   ' if ok else 'MISSED'} {text}")
    return 0 if all(ok for _, ok in targets) else 1


def main() -> int:
    args = build_parser().parse_args()
    if args.child:
        asyncio.run(child_main(args.child, args.size[1], args.size[0], not args.no_flash))
        return 0
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
