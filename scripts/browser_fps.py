"""The browser demo's frame rate on a real clip: what a user sees in the page's stats line.

Starts ``cuematte serve`` (its own process, shipped model), plays a clip through Chromium's fake camera at
640x360 and 30 fps, presses Start and Flash as a user would, then reads the page's stats (the service's
``stats`` messages) once a second. Speed lives here, in a benchmark, never in a test.

    .venv/bin/python scripts/browser_fps.py --clip ../shared/realclips/talking_man_office_640x480.mp4 --out runs/browser

The clip is centre-cropped to 16:9 and looped; a few of its frames carry a flash rendered onto the person
(``cuematte.training.photo_flash``), so the page's flash window (longer than the loop) always holds one.
A clip without a person can not reach matting (the service answers "no one found").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

H, W, FPS = 360, 640, 30
LOOP = 90  # frames per loop (3 s)
LIT = (60, 61, 62)  # flash-lit frames in each loop
CHROMIUM = Path("/usr/bin/chromium")


def write_clip(src: Path, out: Path) -> Path:
    """A Y4M loop of the clip's first LOOP frames at 640x360 (centre crop), a rendered flash on LIT."""
    from cuematte.engine.cues.segmenter import MediaPipeSegmenter
    from cuematte.training.photo_flash import render_flash

    cap = cv2.VideoCapture(str(src))
    frames: list[np.ndarray] = []
    while len(frames) < LOOP:
        ok, bgr = cap.read()
        if not ok:
            break
        h, w = bgr.shape[:2]
        ch = round(w * H / W)
        y0 = max(0, (h - ch) // 3)  # keep the head: crop more from the bottom than the top
        frames.append(cv2.resize(cv2.cvtColor(bgr[y0:y0 + ch], cv2.COLOR_BGR2RGB), (W, H),
                                 interpolation=cv2.INTER_AREA))
    cap.release()
    if len(frames) < LOOP:
        raise SystemExit(f"error: {src} has {len(frames)} frames, {LOOP} needed")
    seg = MediaPipeSegmenter()
    with out.open("wb") as f:
        f.write(f"YUV4MPEG2 W{W} H{H} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for i, rgb in enumerate(frames):
            if i in LIT:
                rgb = render_flash(rgb, seg.segment(rgb), exposure=1.0, shift=(0.0, 0.0))
            f.write(b"FRAME\n" + cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def measure(clip: Path, url: str, seconds: float) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    args = ["--no-sandbox", "--headless", "--disable-gpu", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={clip}"]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=args, timeout=60_000)
        try:
            page = await browser.new_page()
            await page.goto(f"{url}/?flash_ms={int(LOOP / FPS * 1000) + 500}")
            await page.get_by_test_id("start").click()
            await page.wait_for_selector('[data-testid="state"][data-state="waiting-flash"]', timeout=60_000)
            await page.get_by_test_id("background").select_option("blur")
            for _ in range(4):
                await page.wait_for_selector('[data-testid="flash"]:not([disabled])', timeout=30_000)
                await page.get_by_test_id("flash").click()
                await page.wait_for_selector('[data-testid="state"][data-state="capturing"]', timeout=10_000)
                await page.wait_for_selector('[data-testid="state"]:not([data-state="capturing"])', timeout=60_000)
                if await page.get_by_test_id("state").get_attribute("data-state") == "matting":
                    break
                print("flash failed:", await page.get_by_test_id("message").inner_text(), file=sys.stderr)
                await page.wait_for_selector('[data-testid="state"]:not([data-state="error"])', timeout=10_000)
            else:
                raise SystemExit("error: the page never reached matting: "
                                 + await page.get_by_test_id("message").inner_text())
            await asyncio.sleep(3.0)  # the rate meter's window fills with matted frames
            samples: list[dict[str, float]] = []
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:
                await asyncio.sleep(1.0)
                text = await page.get_by_test_id("stats").inner_text()
                fps = await page.get_by_test_id("stats").get_attribute("data-fps")
                samples.append({"fps": float(fps or 0), "text": text})  # type: ignore[dict-item]
        finally:
            await browser.close()
    fps_values = [float(s["fps"]) for s in samples]
    return {"samples": samples, "fps_median": statistics.median(fps_values), "fps_min": min(fps_values),
            "last_stats_line": samples[-1]["text"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", type=Path, required=True, help="a video of a person (any size; cropped to 16:9)")
    ap.add_argument("--out", type=Path, default=Path("runs/browser"))
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                    help="passed on to `cuematte serve` (e.g. --serve-arg=--graph-in-path); repeatable")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    clip = write_clip(args.clip, args.out / "clip.y4m")
    port = free_port()
    command = [sys.executable, "-m", "cuematte.clients.cli", "serve", "--port", str(port), *args.serve_arg]
    service = subprocess.Popen(command, stdout=(args.out / "service.log").open("w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(120):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.5)
        result = asyncio.run(measure(clip, f"http://127.0.0.1:{port}", args.seconds))
    finally:
        service.terminate()
        service.wait(timeout=30)
    result["clip"] = str(args.clip)
    (args.out / "browser.json").write_text(json.dumps(result, indent=1))
    print(f"browser demo, {W}x{H} at {FPS} fps offered, background blur: median {result['fps_median']:.1f} fps "
          f"(min {result['fps_min']:.1f}) over {len(result['samples'])} s")
    print(f"last stats line: {result['last_stats_line']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
