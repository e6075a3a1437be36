"""The demo page in a real Chromium (the Debian package) driven by Playwright, with a fake camera playing a
generated clip: start, flash, reach ``matting``, and read the processed video's pixels from a canvas.

The clip is the generated scene (a person-shaped subject before a textured wall) at 10 fps: no-flash frames
with a few flash-lit frames in every 2 s loop. The page's flash window is set longer than the loop
(``?flash_ms=2500``), so a lit frame always falls inside it and the service keeps it as the flash frame.
The no-flash reference is the last frame before ``flash-begin``, which can be one of the lit frames when
the click lands at the wrong moment of the loop; the service then answers ``error`` (no brighter flash) and
the test flashes again, as a user would.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp import web

from cuematte.clients.scenes import make_pair
from cuematte.engine.compositing import GREEN
from cuematte.engine.model import FlashModel, UntrainedModelWarning
from cuematte.server.app import create_app
from cuematte.server.config import ServerConfig

CHROMIUM = Path("/usr/bin/chromium")
H, W, FPS = 360, 640, 10
LOOP, LIT = 20, (12, 13, 14)  # frames per loop; which of them are flash-lit
FLASH_MS = 2500
# Regions (x0, y0, x1, y1) as fractions of the frame: wall only, and inside the subject (head, chest).
BACKGROUND = (0.03, 0.05, 0.2, 0.25)
HEAD = (0.46, 0.3, 0.54, 0.42)
CHEST = (0.42, 0.82, 0.58, 0.95)
# The same in the astronaut clip: grey wall between her and the shuttle, her face, the suit's shoulder.
PHOTO_WALL, PHOTO_FACE, PHOTO_SUIT = (0.55, 0.05, 0.7, 0.2), (0.38, 0.3, 0.46, 0.45), (0.15, 0.85, 0.3, 0.97)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the Debian Chromium at /usr/bin/chromium "
                       "(apt-get install -y chromium chromium-driver; `make chromium`)"),
]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Y4M clip (what Chromium's --use-file-for-fake-video-capture reads) of the scene, looped by Chromium."""
    flash, noflash, _ = make_pair(H, W, seed=1)
    return write_y4m(tmp_path_factory.mktemp("browser") / "clip.y4m", flash, noflash)


def write_y4m(path: Path, flash: np.ndarray, noflash: np.ndarray) -> Path:
    """A looping Y4M clip of the no-flash frame with the flash frame at the LIT positions."""
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{W} H{H} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(LOOP):
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(flash if i in LIT else noflash, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def photo_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real person: the top 16:9 of scikit-image's astronaut portrait, with a flash rendered for it."""
    from cuematte.engine.cues.segmenter import MediaPipeSegmenter
    from cuematte.engine.cues.simulated_flash import render_flash
    from cuematte.training.photo_flash import skimage_photo

    noflash = cv2.resize(skimage_photo("astronaut.png")[:288], (W, H), interpolation=cv2.INTER_AREA)
    flash = render_flash(noflash, MediaPipeSegmenter().segment(noflash), exposure=1.0, shift=(0.0, 0.0))
    return write_y4m(tmp_path_factory.mktemp("browser") / "photo.y4m", flash, noflash)


@contextlib.asynccontextmanager
async def serving(config: ServerConfig, model: FlashModel | None = None) -> AsyncIterator[str]:
    app = create_app(config, model=model)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def browser_page(clip: Path, allow_camera: bool = True) -> AsyncIterator[tuple[Any, list[str]]]:
    """A Chromium page with the clip as its camera, and the page's console lines (shown when a test fails).
    ``allow_camera=False``: the camera permission prompt is answered "block", as a user who denies it."""
    from playwright.async_api import async_playwright

    prompt = "--use-fake-ui-for-media-stream" if allow_camera else "--deny-permission-prompts"
    args = ["--no-sandbox", "--headless", "--disable-gpu", prompt,
            "--use-fake-device-for-media-stream", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--use-file-for-fake-video-capture={clip}"]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=args, timeout=60_000)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            logs: list[str] = []
            page.on("console", lambda m: logs.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: logs.append(f"pageerror: {e}"))
            yield page, logs
        finally:
            await browser.close()


SAMPLE_JS = """
(regions) => {
  const v = document.querySelector('[data-testid="processed-video"]');
  if (!v || !v.videoWidth) return null;
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d', { willReadFrequently: true });
  g.drawImage(v, 0, 0);
  return regions.map(([x0, y0, x1, y1]) => {
    const x = Math.floor(x0 * c.width), y = Math.floor(y0 * c.height);
    const w = Math.max(1, Math.floor((x1 - x0) * c.width)), h = Math.max(1, Math.floor((y1 - y0) * c.height));
    const d = g.getImageData(x, y, w, h).data;
    let r = 0, gg = 0, b = 0;
    for (let i = 0; i < d.length; i += 4) { r += d[i]; gg += d[i + 1]; b += d[i + 2]; }
    const n = d.length / 4;
    return [r / n, gg / n, b / n];
  });
}
"""


async def sample(page: Any, *regions: tuple[float, float, float, float]) -> list[np.ndarray]:
    """Mean RGB of each region of the processed video: the median over 7 shots 0.15 s apart, so the clip's
    lit frames (0.3 s of every 2 s loop, at most 3 of the shots) never decide the result."""
    shots = []
    for _ in range(7):
        got = await page.evaluate(SAMPLE_JS, [list(r) for r in regions])
        assert got is not None, "the processed video has no frames"
        shots.append(np.asarray(got, np.float64))
        await asyncio.sleep(0.15)
    return list(np.median(shots, axis=0))


async def sample_once_changed(page: Any, changed: Callable[[list[np.ndarray]], bool],
                              *regions: tuple[float, float, float, float],
                              timeout: float = 30.0) -> list[np.ndarray]:
    """:func:`sample` again until ``changed(samples)`` holds or ``timeout`` s have passed; the last samples. A
    switch goes through the data channel, the service, the encoder and the page's jitter buffer, which on two
    loaded cores can take seconds; the caller's assertions then judge the last samples."""
    deadline = asyncio.get_running_loop().time() + timeout
    got = await sample(page, *regions)
    while not changed(got) and asyncio.get_running_loop().time() < deadline:
        got = await sample(page, *regions)
    return got


def green_excess(rgb: np.ndarray) -> float:
    return float(rgb[1] - (rgb[0] + rgb[2]) / 2)


FRAMES_JS = """
() => ['local-video', 'processed-video'].map((id) => {
  const v = document.querySelector(`[data-testid="${id}"]`);
  if (!v || !v.videoWidth) return null;
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  c.getContext('2d').drawImage(v, 0, 0);
  return c.toDataURL('image/png');
})
"""


def _decode(data_url: str) -> np.ndarray:
    import base64

    raw = np.frombuffer(base64.b64decode(data_url.split(",", 1)[1]), np.uint8)
    return cv2.cvtColor(cv2.imdecode(raw, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


async def kept_person_iou(page: Any, segmenter: Any, shots: int = 5) -> list[float]:
    """With the green background on: per shot, the IoU of the person the processed video keeps (not green)
    with MediaPipe's person (>= 0.5) in the camera frame shown beside it at the same moment."""
    ious = []
    for _ in range(shots):
        local_url, processed_url = await page.evaluate(FRAMES_JS)
        local, processed = _decode(local_url), _decode(processed_url)
        processed = cv2.resize(processed, (local.shape[1], local.shape[0]), interpolation=cv2.INTER_AREA)
        p = processed.astype(np.float32)
        kept = (p[..., 1] - (p[..., 0] + p[..., 2]) / 2) < 60  # GREEN is (0, 177, 64): excess ~145
        person = segmenter.segment(local) >= 0.5
        ious.append(float((kept & person).sum() / max(1, (kept | person).sum())))
        await asyncio.sleep(0.3)
    return ious


async def start_and_flash(page: Any, logs: list[str], url: str, background: str) -> None:
    """Open the page, start the camera, pick a background, flash until the service is matting."""
    await page.goto(f"{url}/?flash_ms={FLASH_MS}")
    state = page.get_by_test_id("state")
    await page.get_by_test_id("start").click()
    await page.wait_for_selector('[data-testid="state"][data-state="waiting-flash"]', timeout=60_000)
    # Before any flash the processed video plays (pass-through), it is not black or frozen.
    await page.wait_for_function(
        "() => { const v = document.querySelector('[data-testid=\"processed-video\"]');"
        " return v && v.videoWidth > 0 && v.currentTime > 0.5; }", timeout=60_000)
    assert "Flash" in await state.inner_text()
    await page.get_by_test_id("background").select_option(background)
    for _attempt in range(4):
        await page.wait_for_selector('[data-testid="flash"]:not([disabled])', timeout=30_000)
        await page.get_by_test_id("flash").click()
        await page.wait_for_selector('[data-testid="state"][data-state="capturing"]', timeout=10_000)
        # A failed flash is an ``error`` message at once followed by the state it returns to, so the error
        # state can be gone before a poll sees it: wait for the window to close, then look where it went.
        await page.wait_for_selector('[data-testid="state"]:not([data-state="capturing"])', timeout=60_000)
        if await state.get_attribute("data-state") == "matting":
            break
        await page.wait_for_selector('[data-testid="state"]:not([data-state="error"])', timeout=10_000)
    else:
        message = await page.get_by_test_id("message").inner_text()
        raise AssertionError(f"never reached matting: {await state.inner_text()} ({message})\n" + "\n".join(logs))
    await page.wait_for_function(
        "() => (document.querySelector('[data-testid=\"stats\"]').dataset.fps || 0) > 0", timeout=30_000)


async def test_background_changes_in_the_processed_video(clip: Path, lite_model_dir: Path, tmp_path: Path) -> None:
    """Independent of model quality (random-init weights, alpha about 0.5): switching the background from
    'none' to 'green' must move the processed video's wall pixels towards green."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        model = FlashModel(lite_model_dir)
    async with serving(ServerConfig(max_sessions=2), model) as url, browser_page(clip) as (page, logs):
        await start_and_flash(page, logs, url, "none")
        assert await page.get_by_test_id("state").get_attribute("data-state") == "matting"
        await asyncio.sleep(1.0)
        (none_bg,) = await sample(page, BACKGROUND)
        await page.get_by_test_id("background").select_option("green")
        (green_bg,) = await sample_once_changed(
            page, lambda got: green_excess(got[0]) > green_excess(none_bg) + 25, BACKGROUND)
        assert green_excess(green_bg) > green_excess(none_bg) + 25, (none_bg, green_bg)
        assert float(np.abs(green_bg - none_bg).mean()) > 15, (none_bg, green_bg)
        # An uploaded image (solid magenta) as the background: the page downsizes it and sends it as a data URL.
        magenta = tmp_path / "magenta.png"
        cv2.imwrite(str(magenta), np.full((300, 400, 3), (255, 0, 255), np.uint8))
        await page.get_by_test_id("image").set_input_files(str(magenta))
        await page.get_by_test_id("background").select_option("image")
        (image_bg,) = await sample_once_changed(
            page, lambda got: got[0][0] > none_bg[0] + 30 and got[0][2] > none_bg[2] + 30, BACKGROUND)
        assert image_bg[0] > none_bg[0] + 30 and image_bg[2] > none_bg[2] + 30, (none_bg, image_bg)
        assert await page.get_by_test_id("state").get_attribute("data-state") == "matting"
        stats = await page.get_by_test_id("stats").inner_text()
        # The graph runs beside the frames (the service's default): its own rate and lag are shown, not hidden.
        assert "fps" in stats and re.search(r"graph \d+\.\d fps, \d+ frames? behind", stats), stats


async def test_green_background_keeps_the_person(photo_clip: Path) -> None:
    """With the shipped trained model on a real portrait: the wall turns green, the face and suit do not."""
    async with serving(ServerConfig(max_sessions=2)) as url, browser_page(photo_clip) as (page, logs):
        await start_and_flash(page, logs, url, "none")
        await asyncio.sleep(1.0)
        raw_bg, raw_head, raw_chest = await sample(page, PHOTO_WALL, PHOTO_FACE, PHOTO_SUIT)
        await page.get_by_test_id("background").select_option("green")
        bg, head, chest = await sample_once_changed(
            page, lambda got: float(np.abs(got[0] - np.asarray(GREEN)).max()) < 45, PHOTO_WALL, PHOTO_FACE, PHOTO_SUIT)
        assert float(np.abs(bg - np.asarray(GREEN)).max()) < 45, f"wall {raw_bg} -> {bg}, not green"
        for name, raw, now in (("head", raw_head, head), ("chest", raw_chest, chest)):
            assert float(np.abs(now - raw).mean()) < 25, f"{name} changed {raw} -> {now}"
            assert green_excess(now) < green_excess(raw) + 20, f"{name} turned green {raw} -> {now}"
        # The whole person, not a few regions: what the page keeps is MediaPipe's person, give or take edges.
        from cuematte.engine.cues.segmenter import MediaPipeSegmenter

        ious = await kept_person_iou(page, MediaPipeSegmenter())
        assert float(np.median(ious)) >= 0.9, ious


async def test_page_says_when_the_camera_is_denied_or_the_server_is_down(clip: Path, lite_model_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        model = FlashModel(lite_model_dir)
    message = '[data-testid="message"]:not([hidden])'
    async with serving(ServerConfig(), model) as url, browser_page(clip, allow_camera=False) as (page, _):
        await page.goto(url)
        await page.get_by_test_id("start").click()
        await page.wait_for_selector(message, timeout=20_000)
        assert "Camera access was denied" in await page.get_by_test_id("message").inner_text()
        assert await page.get_by_test_id("start").is_enabled()  # the user can try again
    async with browser_page(clip) as (page, _):
        async with serving(ServerConfig(), model) as url:
            await page.goto(url)
        # the page is loaded, the service has stopped
        await page.get_by_test_id("start").click()
        await page.wait_for_selector(message, timeout=20_000)
        assert "Cannot reach the cuematte server" in await page.get_by_test_id("message").inner_text()
        assert await page.get_by_test_id("start").is_enabled()
