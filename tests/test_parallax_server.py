"""`POST /matte` (two photos -> a PNG, the parallax cue) on the real aiohttp app: a random-init tiny parallax model,
real ONNX Runtime and MediaPipe sessions, multipart bodies as a client sends them."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from cuematte.engine.model import FlashModel, UntrainedModelWarning
from cuematte.server.app import create_app
from cuematte.server.config import ServerConfig
from tests.test_parallax_engine import astronaut_pair, texture, tiny_parallax_model

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.filterwarnings("ignore::cuematte.engine.model.UntrainedModelWarning")]


@pytest.fixture(scope="module")
def parallax_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_parallax_model(tmp_path_factory)


@pytest.fixture(scope="module")
def flash_model(lite_model_dir: Path) -> FlashModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        return FlashModel(lite_model_dir)


def png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def uploads() -> dict[str, bytes]:
    v1, v0 = astronaut_pair()
    empty = texture(512, 512, seed=9)
    plate = np.zeros((64, 64, 3), np.uint8)
    plate[:] = (200, 30, 90)
    return {"view1": png(v1), "view0": png(v0), "small": png(v0[:256, :320]), "empty1": png(empty),
            "empty0": png(np.roll(empty, 4, 1)), "plate": png(plate)}


def form(**fields: bytes | str) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for name, value in fields.items():
        if isinstance(value, bytes):
            data.add_field(name, value, filename=f"{name}.png", content_type="image/png")
        else:
            data.add_field(name, value)
    return data


@contextlib.asynccontextmanager
async def client(flash_model: FlashModel, **config: Any) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(ServerConfig(segmenter="grabcut", **config), model=flash_model)
    async with TestClient(TestServer(app)) as c:
        yield c


def decode(body: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return np.asarray(image)


async def test_a_pair_answers_a_png_at_the_reference_size(flash_model: FlashModel, parallax_dir: Path,
                                                          uploads: dict[str, bytes]) -> None:
    async with client(flash_model, parallax_model=parallax_dir) as c:
        r = await c.post("/matte", data=form(view1=uploads["view1"], view2=uploads["view0"]))
        assert r.status == 200, await r.text()
        assert r.content_type == "image/png" and float(r.headers["X-Parallax-Px"]) > 1
        assert decode(await r.read()).shape == (512, 512, 3)
        r = await c.post("/matte", data=form(view1=uploads["view1"], view2=uploads["view0"], output="alpha"))
        alpha = decode(await r.read())
        assert r.status == 200 and alpha.shape == (512, 512) and alpha.dtype == np.uint8
        assert (alpha == 0).mean() > 0.2 and (alpha == 255).mean() > 0.2  # the guidance's certain pixels
        r = await c.post("/matte", data=form(view1=uploads["view1"], view2=uploads["view0"],
                                             background=uploads["plate"]))
        comp = cv2.cvtColor(decode(await r.read()), cv2.COLOR_BGR2RGB)
        assert r.status == 200 and (comp[alpha == 0] == (200, 30, 90)).all()  # the uploaded plate shows there
        r = await c.post("/matte", data=form(view1=uploads["view1"], view2=uploads["view0"], background="#00ff00"))
        comp = cv2.cvtColor(decode(await r.read()), cv2.COLOR_BGR2RGB)
        assert r.status == 200 and (comp[alpha == 0] == (0, 255, 0)).all()


async def test_bad_requests_answer_400_415_413_with_json(flash_model: FlashModel, parallax_dir: Path,
                                                         uploads: dict[str, bytes]) -> None:
    v1, v0 = uploads["view1"], uploads["view0"]
    cases: list[tuple[aiohttp.FormData, str]] = [
        (form(view1=v1, view2=uploads["small"]), "the reference view is 512x512 but the second view is 320x256"),
        (form(view1=v1, view2=v1), "the two views show no parallax"),
        (form(view1=uploads["empty1"], view2=uploads["empty0"]), "no one found in the reference view"),
        (form(view1=b"not an image at all", view2=v0), "view1 is not a PNG, JPEG, WebP or BMP image"),
        (form(view1=v1[:200], view2=v0), "view1 could not be decoded"),
        (form(view1=v1), "form field 'view2' is missing"),
        (form(view1=v1, view3=v0), "unknown form field 'view3'"),
        (form(view1=v1, view2=v0, output="mask"), "output must be one of"),
        (form(view1=v1, view2=v0, background="sepia"), "background must be an image"),
    ]
    limit = max(len(b) for b in uploads.values()) + 1000
    async with client(flash_model, parallax_model=parallax_dir, max_image_bytes=limit) as c:
        for data, message in cases:
            r = await c.post("/matte", data=data)
            body = await r.json()
            assert r.status == 400 and message in body["error"], (message, r.status, body)
        r = await c.post("/matte", json={"view1": "x"})
        assert r.status == 415 and "multipart/form-data" in (await r.json())["error"]
        r = await c.post("/matte", data=form(view1=v1, view2=v0 + b"\0" * limit))
        assert r.status == 413 and f"over its {limit}-byte limit" in (await r.json())["error"]
        r = await c.post("/matte", data=form(view1=v1, view2=v0))  # the service still serves
        assert r.status == 200


async def test_a_token_is_required_when_the_service_has_one(flash_model: FlashModel, parallax_dir: Path,
                                                            uploads: dict[str, bytes]) -> None:
    async with client(flash_model, parallax_model=parallax_dir, token="s3cret") as c:
        r = await c.post("/matte", data=form(view1=uploads["view1"], view2=uploads["view0"]))
        assert r.status == 401 and "token" in (await r.json())["error"]
        r = await c.post("/matte", data=form(view1=uploads["view1"], view2=uploads["view0"]),
                         headers={"Authorization": "Bearer s3cret"})
        assert r.status == 200


async def test_without_the_model_the_service_starts_and_matte_answers_503(flash_model: FlashModel, tmp_path: Path,
                                                                         uploads: dict[str, bytes]) -> None:
    async with client(flash_model, parallax_model=tmp_path / "parallax-lite") as c:
        assert (await c.get("/health")).status == 200
        for _ in range(2):  # looked for again, and still refused cleanly
            r = await c.post("/matte", data=form(view1=uploads["view1"], view2=uploads["view0"]))
            body = await r.json()
            assert r.status == 503 and "parallax model folder not found" in body["error"], body
